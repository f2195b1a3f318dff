"""One request for every error status, and the exact problem body it gets. The errors
page of the docs shows ``EXAMPLES``; the test suite checks each against the real API."""

import marshmallow as ma
from flask import Flask, abort, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.datastructures import WWWAuthenticate

from resources_kit import ModelResource, Router, TenantScopeMixin


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    email: Mapped[str] = mapped_column(String(40))
    __table_args__ = (UniqueConstraint("school_id", "email"),)  # unique per school


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    email = ma.fields.Email(required=True)


class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    require_if_match = True  # so that 428 has an example too

    def get_base_query_kwargs(self):
        return {"school_id": g.get("school_id")}


def require_token(view):
    """A view decorator of your own: its abort(401) is a problem too."""

    def wrapped(*args, **kwargs):
        if request.headers.get("Authorization") != "Bearer secret":
            abort(401, www_authenticate=WWWAuthenticate("bearer"))
        return view(*args, **kwargs)

    return wrapped


class ReportResource(TeacherResource):
    """Behind a token (401 without it); its creates fail unexpectedly (500)."""

    name = "reports"
    decorators = [require_token]

    def perform_create(self, data):
        raise RuntimeError("the report service is down: SELECT * FROM secrets")


def problem(status, title, detail, errors=None):
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return {**body, "errors": errors} if errors else body


# (method, path, request kwargs) -> the body the API answers with
# examples-start
EXAMPLES = {
    400: (
        ("post", "/api/teachers", {"data": "{oops", "content_type": "application/json"}),
        problem(
            400,
            "Bad Request",
            "The request body is not valid JSON: Expecting "
            "property name enclosed in double quotes (line 1, column 2).",
        ),
    ),
    403: (
        ("get", "/api/teachers", {"headers": {"X-School": "none"}}),
        problem(403, "Forbidden", "No tenant scope for this request."),
    ),
    404: (("get", "/api/teachers/999", {}), problem(404, "Not Found", "No such resource.")),
    405: (
        ("delete", "/api/teachers", {}),
        problem(405, "Method Not Allowed", "The method is not allowed for the requested URL."),
    ),
    409: (
        ("post", "/api/teachers", {"json": {"email": "ada@example.org"}}),
        problem(
            409,
            "Conflict",
            "A row with the same unique value already exists: email.",
            {"email": ["A row with this value already exists."]},
        ),
    ),
    412: (
        ("patch", "/api/teachers/1", {"json": {}, "headers": {"If-Match": '"stale"'}}),
        problem(
            412,
            "Precondition Failed",
            "The resource has changed since it was read: If-Match does not match its ETag.",
        ),
    ),
    413: (
        ("post", "/api/teachers", {"json": {"email": "x" * 2000}}),
        problem(
            413,
            "Request Entity Too Large",
            "The data value transmitted exceeds the capacity limit.",
        ),
    ),
    415: (
        ("post", "/api/teachers", {"data": "email=ada"}),
        problem(
            415,
            "Unsupported Media Type",
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
        ),
    ),
    422: (
        ("post", "/api/teachers", {"json": {"email": "nope", "id": 5}}),
        problem(
            422,
            "Unprocessable Entity",
            "The request body failed validation; see 'errors'.",
            {"email": ["Not a valid email address."], "id": ["Unknown field."]},
        ),
    ),
    401: (
        ("get", "/api/reports", {}),
        problem(
            401,
            "Unauthorized",
            "The server could not verify that you are authorized "
            "to access the URL requested. You either supplied the wrong credentials (e.g. "
            "a bad password), or your browser doesn't understand how to supply the "
            "credentials required.",
        ),
    ),
    500: (
        (
            "post",
            "/api/reports",
            {"json": {"email": "b@example.org"}, "headers": {"Authorization": "Bearer secret"}},
        ),
        problem(
            500,
            "Internal Server Error",
            "The server encountered an internal error and "
            "was unable to complete your request. Either the server is overloaded or "
            "there is an error in the application.",
        ),
    ),
    428: (
        ("delete", "/api/teachers/1", {}),
        problem(
            428,
            "Precondition Required",
            "This resource requires If-Match with the ETag of the version you read.",
        ),
    ),
}
# examples-end


def check() -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://", MAX_CONTENT_LENGTH=1024, PROPAGATE_EXCEPTIONS=False
    )
    app.logger.disabled = True  # the 500 example logs its traceback; not needed here
    db.init_app(app)

    @app.before_request
    def school():
        g.school_id = 1 if request.headers.get("X-School") == "1" else None

    api = Router(app, url_prefix="/api")
    api.register(TeacherResource)
    api.register(ReportResource)
    with app.app_context():
        db.create_all()
        client = app.test_client()
        seeded = client.post(
            "/api/teachers", json={"email": "ada@example.org"}, headers={"X-School": "1"}
        )
        assert seeded.status_code == 201
        for status, ((method, path, kwargs), body) in EXAMPLES.items():
            headers = {"X-School": "1", **kwargs.get("headers", {})}
            response = getattr(client, method)(path, **{**kwargs, "headers": headers})
            assert response.status_code == status, (status, response.get_json())
            assert response.content_type == "application/problem+json"
            assert response.get_json() == body, (status, response.get_json())


if __name__ == "__main__":
    check()
    print("errors: every example matches the API")
