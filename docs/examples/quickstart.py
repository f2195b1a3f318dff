"""The quickstart: a complete app with one resource, then a tour of it through Flask's
test client. ``python docs/examples/quickstart.py`` runs it; the test suite does too."""

import marshmallow as ma
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import ModelResource, Router


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    years_teaching: Mapped[int] = mapped_column(default=0)


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    years_teaching = ma.fields.Integer()


class TeacherResource(ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    filter_fields = ["name", "years_teaching"]
    sort_fields = ["name", "years_teaching"]


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    api = Router(app, url_prefix="/api")
    api.register(TeacherResource)
    with app.app_context():
        db.create_all()
    return app


def tour() -> None:
    client = create_app().test_client()

    created = client.post("/api/teachers", json={"name": "Ada", "years_teaching": 3})
    assert created.status_code == 201
    assert created.headers["Location"] == "/api/teachers/1"

    client.post("/api/teachers", json={"name": "Grace", "years_teaching": 9})
    page = client.get('/api/teachers?sort=years_teaching__desc&filters={"years_teaching__gte": 3}')
    assert page.json == {
        "items": [
            {"id": 2, "name": "Grace", "years_teaching": 9},
            {"id": 1, "name": "Ada", "years_teaching": 3},
        ],
        "total": 2,
        "limit": 20,
        "offset": 0,
        "links": {"next": None, "prev": None},  # the URLs of the pages around this one
    }

    patched = client.patch("/api/teachers/1", json={"years_teaching": 4})
    assert patched.json == {"id": 1, "name": "Ada", "years_teaching": 4}

    refused = client.post("/api/teachers", json={"years_teaching": "many"})
    assert refused.status_code == 422
    assert refused.json["errors"] == {
        "name": ["Missing data for required field."],
        "years_teaching": ["Not a valid integer."],
    }

    assert client.delete("/api/teachers/1").status_code == 204
    assert client.get("/api/teachers/1").status_code == 404


if __name__ == "__main__":
    tour()
    print("quickstart: all good")
