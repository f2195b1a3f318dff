from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, got_request_exception
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Select

from resources_kit import CreateMixin, ModelResource, Resource, Router

from .conftest import make_app, reset_database, running, seed
from .models import (
    Counter,
    CounterSchema,
    LoneTeacherResource,
    Student,
    StudentResource,
    Teacher,
    TeacherResource,
    TeacherSchema,
    db,
)
from .test_errors import snapshot

# -- strategies for Teacher bodies (kept inside what the columns accept) -------------------

names = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)),
    min_size=1,
    max_size=50,
)
emails = st.one_of(st.none(), st.from_regex(r"[a-z]{1,10}@[a-z]{1,10}\.org", fullmatch=True))
years = st.one_of(st.none(), st.integers(-(2**31), 2**31 - 1))
regions = st.one_of(
    st.none(),
    st.text(
        st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)),
        max_size=20,
    ),
)
teacher_bodies = st.fixed_dictionaries(
    {"name": names},
    optional={"email": emails, "years_teaching": years, "region": regions},
)
patch_bodies = st.fixed_dictionaries(
    {}, optional={"name": names, "email": emails, "years_teaching": years, "region": regions}
)
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture
def teacher(database: Any) -> int:
    t = Teacher(name="Ada", email="ada@example.org", years_teaching=3, region="north")
    seed(t)
    return t.id


def test_create_is_201_with_location_and_etag(client: Any, database: Any) -> None:
    response = client.post("/api/teachers", json={"name": "Eve"})
    assert response.status_code == 201
    assert response.headers["Location"] == f"/api/teachers/{response.json['id']}"
    assert response.headers["ETag"]
    assert response.json == {
        "id": response.json["id"],
        "name": "Eve",
        "email": None,
        "years_teaching": None,
        "region": None,
        "school_id": None,
    }


def test_create_runs_no_select(client: Any, database: Any, statements: list[str]) -> None:
    assert client.post("/api/teachers", json={"name": "Eve"}).status_code == 201
    assert [s.split()[0] for s in statements] == ["INSERT"]


def test_create_without_item_route_has_no_location(database: Any) -> None:
    class Inbox(CreateMixin, Resource):
        name = "inbox"
        model = Counter
        schema = CounterSchema

    with running(make_app(lambda r: r.register(Inbox))) as client:
        response = client.post("/api/inbox", json={"label": "a"})
        assert response.status_code == 201
        assert "Location" not in response.headers
        assert db.session.get(Counter, response.json["id"]).label == "a"


def test_retrieve_etag_and_if_none_match(client: Any, teacher: int) -> None:
    first = client.get(f"/api/teachers/{teacher}")
    assert first.status_code == 200
    etag = first.headers["ETag"]
    cached = client.get(f"/api/teachers/{teacher}", headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.data == b""
    assert cached.headers["ETag"] == etag
    client.patch(f"/api/teachers/{teacher}", json={"name": "Adele"})
    changed = client.get(f"/api/teachers/{teacher}", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] != etag


def test_write_responses_carry_the_etag_a_get_would(client: Any, teacher: int) -> None:
    patched = client.patch(f"/api/teachers/{teacher}", json={"region": "south"})
    assert patched.headers["ETag"] == client.get(f"/api/teachers/{teacher}").headers["ETag"]


def test_head_is_served_like_get(client: Any, teacher: int) -> None:
    response = client.head(f"/api/teachers/{teacher}")
    assert response.status_code == 200
    assert response.data == b""


def test_put_writes_the_fields_given(client: Any, teacher: int) -> None:
    response = client.put(f"/api/teachers/{teacher}", json={"name": "Adele", "region": None})
    assert response.status_code == 200
    row = db.session.get(Teacher, teacher)
    assert (row.name, row.region, row.email) == ("Adele", None, "ada@example.org")


def test_a_plain_patch_and_a_plain_delete_cost_one_statement_each(
    client: Any, teacher: int, statements: list[str]
) -> None:
    client.patch(f"/api/teachers/{teacher}", json={"name": "Adele"})
    one = ["UPDATE"] if db.engine.dialect.update_returning else ["SELECT", "UPDATE"]  # MariaDB
    assert [s.split()[0] for s in statements] == one  # see tests/test_fast_paths.py
    statements.clear()
    assert client.delete(f"/api/teachers/{teacher}").status_code == 204
    assert [s.split()[0] for s in statements] == ["DELETE"]  # see tests/test_fast_paths.py


def test_delete_is_204_empty_then_404(client: Any, teacher: int) -> None:
    response = client.delete(f"/api/teachers/{teacher}")
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(f"/api/teachers/{teacher}").status_code == 404
    assert client.delete(f"/api/teachers/{teacher}").status_code == 404


def test_get_query_override_narrows_every_action(database: Any) -> None:
    class NorthTeachers(LoneTeacherResource):
        name = "north"

        def get_query(self) -> Select[Any]:
            return super().get_query().where(Teacher.region == "north")

    with running(make_app(lambda r: r.register(NorthTeachers))) as client:
        north, south = Teacher(name="N", region="north"), Teacher(name="S", region="south")
        seed(north, south)
        assert [t["name"] for t in client.get("/api/north").json["items"]] == ["N"]
        for method in ("get", "put", "patch", "delete"):
            response = getattr(client, method)(f"/api/north/{south.id}", json={"name": "x"})
            assert response.status_code == 404
        assert db.session.get(Teacher, south.id).name == "S"


def test_overridden_perform_create_cannot_move_a_child(database: Any) -> None:
    class Sneaky(StudentResource):
        def perform_create(self, data: dict[str, Any]) -> Any:
            obj = super().perform_create(data)
            obj.teacher_id = other_id  # e.g. a bug mapping a body field
            return obj

    def register(router: Router) -> None:
        router.register(LoneTeacherResource)
        router.register(Sneaky, parent=LoneTeacherResource)

    with running(make_app(register)) as client:
        mine, other = Teacher(name="Mine"), Teacher(name="Other")
        seed(mine, other)
        other_id = other.id
        response = client.post(f"/api/teachers/{mine.id}/students", json={"name": "Cy"})
        assert response.status_code == 201
        assert db.session.get(Student, response.json["id"]).teacher_id == mine.id


def test_per_operation_schemas(database: Any) -> None:
    class CreateSchema(TeacherSchema):
        years_teaching = ma.fields.Integer(required=True)

    class DetailSchema(ma.Schema):
        id = ma.fields.Integer()
        name = ma.fields.String()
        label = ma.fields.Function(lambda t: f"{t.name} ({t.years_teaching})")

    class Detailed(LoneTeacherResource):
        name = "detailed"
        create_schema = CreateSchema
        detail_schema = DetailSchema

    with running(make_app(lambda r: r.register(Detailed))) as client:
        assert client.post("/api/detailed", json={"name": "Eve"}).status_code == 422
        created = client.post("/api/detailed", json={"name": "Eve", "years_teaching": 2})
        assert created.json == {"id": created.json["id"], "name": "Eve", "label": "Eve (2)"}
        listed = client.get("/api/detailed").json["items"][0]
        assert "label" not in listed
        assert listed["years_teaching"] == 2
        assert (
            client.patch(f"/api/detailed/{created.json['id']}", json={"years_teaching": 5}).json[
                "label"
            ]
            == "Eve (5)"
        )


def test_explicit_session_attribute_is_used(database: Any, app: Flask) -> None:
    from sqlalchemy.orm import scoped_session, sessionmaker

    with app.app_context():
        own = scoped_session(sessionmaker(bind=db.engine))

    class OwnSession(LoneTeacherResource):
        name = "own"
        session = own

    flask_app = Flask(__name__)
    Router(flask_app).register(OwnSession)  # no Flask-SQLAlchemy on this app at all
    with app.app_context():
        response = flask_app.test_client().post("/own", json={"name": "Eve"})
        assert response.status_code == 201
        assert db.session.get(Teacher, response.json["id"]).name == "Eve"
    own.remove()


def test_missing_session_is_improperly_configured() -> None:
    app = Flask(__name__)
    app.config["PROPAGATE_EXCEPTIONS"] = True
    Router(app).register(LoneTeacherResource)
    from resources_kit import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match="Flask-SQLAlchemy"):
        app.test_client().get("/teachers")


def test_model_resource_has_every_action() -> None:
    for action in (
        "list",
        "retrieve",
        "create",
        "update",
        "partial_update",
        "destroy",
        "run_callbacks",
    ):
        assert callable(getattr(ModelResource, action))


# -- properties -----------------------------------------------------------------------------


def _stored(body: dict[str, Any]) -> dict[str, Any]:
    return {"email": None, "years_teaching": None, "region": None, **body}


@EXAMPLES
@given(body=teacher_bodies)
def test_create_then_get_returns_what_was_sent(client: Any, body: dict[str, Any]) -> None:
    reset_database()
    created = client.post("/api/teachers", json=body)
    assert created.status_code == 201, created.json
    fetched = client.get(created.headers["Location"])
    assert fetched.status_code == 200
    expected = {**_stored(body), "id": created.json["id"], "school_id": None}
    assert fetched.json == created.json == expected


@EXAMPLES
@given(original=teacher_bodies, change=patch_bodies)
def test_patch_changes_exactly_the_fields_sent(
    client: Any, original: dict[str, Any], change: dict[str, Any]
) -> None:
    reset_database()
    created = client.post("/api/teachers", json=original).json
    patched = client.patch(f"/api/teachers/{created['id']}", json=change)
    assert patched.status_code == 200
    assert patched.json == {**created, **change}
    assert client.get(f"/api/teachers/{created['id']}").json == {**created, **change}


invalid_bodies = st.one_of(
    st.fixed_dictionaries({"name": st.one_of(st.integers(), st.booleans(), st.none())}),
    st.fixed_dictionaries({"name": names, "years_teaching": st.text("abcxyz", min_size=1)}),
    st.fixed_dictionaries({"name": names, "unknown": st.integers()}),
    st.fixed_dictionaries({"name": names, "id": st.integers()}),
    st.fixed_dictionaries({"name": st.text(min_size=51, max_size=80)}),
    st.fixed_dictionaries({"name": names, "years_teaching": st.integers(min_value=2**31)}),
    st.fixed_dictionaries({"name": names, "email": st.text(alphabet="abc ", max_size=5)}),
)


@EXAMPLES
@given(body=invalid_bodies, method=st.sampled_from(["post", "put", "patch"]))
def test_request_failing_validation_leaves_tables_unchanged(
    client: Any, body: dict[str, Any], method: str
) -> None:
    reset_database()
    seed(Teacher(name="Ada", email="ada@example.org"))
    ada = db.session.query(Teacher).one().id
    before = snapshot()
    path = "/api/teachers" if method == "post" else f"/api/teachers/{ada}"
    response = getattr(client, method)(path, json=body)
    assert response.status_code == 422
    assert response.content_type == "application/problem+json"
    assert response.json["errors"]
    assert snapshot() == before


# -- the write steps an override can change, and what it cannot -------------------------------


def _perform_create_app(perform_create: Any, **attributes: Any) -> Flask:
    resource = type(
        "Custom", (LoneTeacherResource,), {"name": "custom", "perform_create": perform_create}
    )
    for key, value in attributes.items():
        setattr(resource, key, value)
    return make_app(lambda r: r.register(resource), PROPAGATE_EXCEPTIONS=False)


def test_perform_create_without_return_uses_the_object_it_added(database: Any) -> None:
    def perform_create(self: Any, data: dict[str, Any]) -> None:
        self.get_session().add(Teacher(**data))  # no return, as in Django REST framework

    with running(_perform_create_app(perform_create)) as client:
        response = client.post("/api/custom", json={"name": "Eve"})
        assert response.status_code == 201
        assert response.headers["Location"].endswith(f"/api/custom/{response.json['id']}")
        assert snapshot()["teachers"][0][2] == "Eve"


@pytest.mark.parametrize(
    "perform_create",
    [
        # two new rows and no word on which is the one created
        lambda self, data: self.get_session().add_all(
            [Teacher(name=data["name"]), Teacher(name=data["name"])]
        ),
        # an existing row handed back: stamping it would move it
        lambda self, data: self.get_session().get(Teacher, data["existing"]),
        # not a row of the model at all
        lambda self, data: {"name": data["name"]},
    ],
    ids=["two-added", "existing-row", "not-a-model"],
)
def test_perform_create_returning_a_wrong_object_writes_nothing(
    database: Any, perform_create: Any
) -> None:
    class Body(TeacherSchema):
        existing = ma.fields.Integer(load_default=None)

    app = _perform_create_app(perform_create, create_schema=Body)
    seen: list[BaseException] = []

    def record(sender: Flask, exception: BaseException, **extra: Any) -> None:
        seen.append(exception)

    with running(app) as client, got_request_exception.connected_to(record, app):
        seed(Teacher(name="Old", region="north"))
        before = snapshot()
        existing = before["teachers"][0][0]
        response = client.post("/api/custom", json={"name": "Eve", "existing": existing})
        assert response.status_code == 500
        assert "Eve" not in response.get_data(as_text=True)
        assert snapshot() == before
    assert [type(exc).__name__ for exc in seen] == ["ImproperlyConfigured"]
    assert "perform_create()" in str(seen[0])


def test_perform_update_returning_another_object_writes_nothing(database: Any) -> None:
    class Swapping(LoneTeacherResource):
        name = "swapping"

        def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
            super().perform_update(obj, data)
            return Teacher(name="Other")

    app = make_app(lambda r: r.register(Swapping), PROPAGATE_EXCEPTIONS=False)
    with running(app) as client:
        seed(Teacher(name="Ada"))
        before = snapshot()
        teacher = before["teachers"][0][0]
        assert client.patch(f"/api/swapping/{teacher}", json={"name": "Zed"}).status_code == 500
        assert snapshot() == before


def test_create_with_no_value_for_a_nullable_lookup_field_is_422(database: Any) -> None:
    class ByEmail(LoneTeacherResource):
        name = "by-email"
        lookup_field = "email"

    with running(make_app(lambda r: r.register(ByEmail))) as client:
        response = client.post("/api/by-email", json={"name": "Eve"})
        assert response.status_code == 422
        assert "email" in response.json["errors"]
        assert snapshot()["teachers"] == []
        created = client.post("/api/by-email", json={"name": "Eve", "email": "e@x.org"})
        assert created.headers["Location"].endswith("/api/by-email/e@x.org")


@pytest.mark.parametrize("verb", ["get", "post", "put", "patch", "delete", "head"])
def test_a_resource_defining_an_http_verb_is_refused(verb: str) -> None:
    from resources_kit import ImproperlyConfigured

    with pytest.raises(ImproperlyConfigured, match=rf"defines {verb}\(\).*Override the action"):
        type("Verb", (TeacherResource,), {verb: lambda self: None})

    class VerbMixin:
        pass

    setattr(VerbMixin, verb, lambda self: None)
    with pytest.raises(ImproperlyConfigured, match=verb):
        type("FromMixin", (VerbMixin, TeacherResource), {})


def test_response_is_built_before_the_commit(database: Any) -> None:
    class FailingBody(LoneTeacherResource):
        name = "failing-body"

        def serialize(self, obj_or_objs: Any) -> Any:
            raise RuntimeError("cannot serialize")

    app = make_app(lambda r: r.register(FailingBody), PROPAGATE_EXCEPTIONS=False)
    with running(app) as client:
        assert client.post("/api/failing-body", json={"name": "Eve"}).status_code == 500
        assert snapshot()["teachers"] == []
