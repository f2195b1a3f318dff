from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Select

from resources_kit import CreateMixin, ModelResource, Resource, Router

from .conftest import make_app, reset_database, running, seed
from .models import (
    Counter,
    CounterSchema,
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


def test_patch_and_delete_cost_two_statements(
    client: Any, teacher: int, statements: list[str]
) -> None:
    client.patch(f"/api/teachers/{teacher}", json={"name": "Adele"})
    assert [s.split()[0] for s in statements] == ["SELECT", "UPDATE"]
    statements.clear()
    assert client.delete(f"/api/teachers/{teacher}").status_code == 204
    assert [s.split()[0] for s in statements] == ["SELECT", "DELETE"]


def test_delete_is_204_empty_then_404(client: Any, teacher: int) -> None:
    response = client.delete(f"/api/teachers/{teacher}")
    assert response.status_code == 204
    assert response.data == b""
    assert client.get(f"/api/teachers/{teacher}").status_code == 404
    assert client.delete(f"/api/teachers/{teacher}").status_code == 404


def test_get_query_override_narrows_every_action(database: Any) -> None:
    class NorthTeachers(TeacherResource):
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
        router.register(TeacherResource)
        router.register(Sneaky, parent=TeacherResource)

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

    class Detailed(TeacherResource):
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

    class OwnSession(TeacherResource):
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
    Router(app).register(TeacherResource)
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
