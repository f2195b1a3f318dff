"""Bulk writes: a JSON array created or patched on a collection, all of it or nothing,
with every item through the write unit (validation, scope and parent stamping,
``references``, permissions, callbacks, the row policy), on every backend."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import g, request
from sqlalchemy import func, select

from resources_kit import (
    Callback,
    ImproperlyConfigured,
    ModelResource,
    Permission,
    Router,
    TenantScopeMixin,
    signals,
)
from resources_kit.mixins import CreateMixin, ListMixin, RetrieveMixin
from resources_kit.resource import Resource

from .conftest import make_app, seed
from .models import (
    Counter,
    CounterSchema,
    Gadget,
    GadgetSchema,
    School,
    Student,
    StudentSchema,
    Teacher,
    TeacherSchema,
    db,
)

#: What the callbacks and signal receivers saw, in order.
EVENTS: list[tuple[str, str, Any]] = []


def hidden() -> set[str]:
    return set(filter(None, request.headers.get("X-Hide", "").split(",")))


class HideTeachers(Permission):
    def visible(self, view: Any) -> Any:
        return Teacher.name.not_in(hidden()) if hidden() else None


class NoTrudy(Permission):
    message = "Trudy may not be written."

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return getattr(obj, "name", None) != "Trudy"


class Record(Callback):
    def execute(self) -> None:
        phase = "pre" if self.resource.id is None else "seen"
        EVENTS.append((self.operation, phase, self.resource.name))


class AfterCommit(Callback):
    def execute(self) -> None:
        EVENTS.append((self.operation, "after_commit", self.resource.name))


class RefuseVeto(Callback):
    def execute(self) -> None:
        if self.resource.name == "Veto":
            raise ma.ValidationError({"name": ["Vetoed by a callback."]})


class MentoredTeacherSchema(TeacherSchema):
    mentor_id = ma.fields.Integer(allow_none=True)


class Teachers(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = MentoredTeacherSchema
    permissions = [HideTeachers, NoTrudy]
    references = {"mentor_id": "self"}
    bulk = ("create", "patch")
    max_bulk_items = 60
    pre_create_callbacks = [Record, RefuseVeto]
    post_create_callbacks = [Record]
    after_commit_create_callbacks = [AfterCommit]
    pre_patch_callbacks = [RefuseVeto]
    after_commit_patch_callbacks = [AfterCommit]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}

    def get_current_user(self) -> Any:
        return "someone"  # a refusal is then a 403, not a 401


def batches_inserts() -> bool:
    """SQLAlchemy batches INSERT ... RETURNING (insertmanyvalues) where the backend
    returns the rows in order: PostgreSQL and MariaDB; not SQLite, whose RETURNING
    order is not guaranteed (without a sentinel column, one INSERT per row)."""
    return bool(db.engine.dialect.name != "sqlite")


class Students(ModelResource):
    name = "students"
    model = Student
    schema = StudentSchema.from_dict({"teacher_id": ma.fields.Integer(dump_only=True)})
    bulk = ("create", "patch")


class Counters(ModelResource):
    name = "counters"
    model = Counter
    schema = CounterSchema
    bulk = ("create",)


class QuietCounters(Counters):
    """A perform_create that adds its object and returns nothing."""

    name = "quiet-counters"

    def perform_create(self, data: dict[str, Any]) -> None:
        db.session.add(Counter(**data))


class Gadgets(ModelResource):
    name = "gadgets"
    model = Gadget
    schema = GadgetSchema
    bulk = ("create", "patch")


class PlainTeachers(ListMixin, RetrieveMixin, CreateMixin, Resource):
    """No opt-in: an array body stays a 400."""

    name = "plain"
    model = Teacher
    schema = TeacherSchema


def register(router: Router) -> None:
    router.register(Teachers)
    router.register(Students, parent=Teachers)
    router.register(Counters)
    router.register(QuietCounters)
    router.register(Gadgets)
    router.register(PlainTeachers)


@pytest.fixture(scope="module")
def app(app: Any) -> Any:
    return make_app(register)


@pytest.fixture
def world(app: Any, database: Any) -> dict[str, int]:
    EVENTS.clear()
    one, two = School(id=1, name="One"), School(id=2, name="Two")
    seed(one, two)
    ada, bob, eve = (
        Teacher(name="Ada", school_id=1),
        Teacher(name="Bob", school_id=2),
        Teacher(name="Eve", school_id=1),
    )
    seed(ada, bob, eve)
    cy, di = Student(name="Cy", teacher_id=ada.id), Student(name="Di", teacher_id=eve.id)
    seed(cy, di)
    return {"ada": ada.id, "bob": bob.id, "eve": eve.id, "cy": cy.id, "di": di.id}


ONE = {"X-School": "1"}


def teacher_count() -> int:
    db.session.rollback()
    return int(db.session.scalar(select(func.count()).select_from(Teacher)))


def names_in_school(school: int) -> list[str]:
    db.session.rollback()
    return sorted(db.session.scalars(select(Teacher.name).where(Teacher.school_id == school)))


# -- bulk create -----------------------------------------------------------------------------


def test_a_bulk_create_makes_every_item_in_order(client: Any, world: dict[str, int]) -> None:
    body = [{"name": f"T{i}", "mentor_id": world["ada"]} for i in range(3)]
    response = client.post("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 201, response.json
    assert [item["name"] for item in response.json] == ["T0", "T1", "T2"]
    assert all(item["school_id"] == 1 for item in response.json)  # the scope, stamped
    assert "Location" not in response.headers
    ids = [item["id"] for item in response.json]
    for item in response.json:
        assert client.get(f"/api/teachers/{item['id']}", headers=ONE).json == item
    assert len(set(ids)) == 3
    # pre callbacks of every item, then post callbacks, then after-commit per item
    assert [e for e in EVENTS if e[1] == "pre"] == [("create", "pre", f"T{i}") for i in range(3)]
    assert [e for e in EVENTS if e[1] == "after_commit"] == [
        ("create", "after_commit", f"T{i}") for i in range(3)
    ]
    assert EVENTS.index(("create", "pre", "T2")) < EVENTS.index(("create", "seen", "T0"))


def test_a_single_object_still_creates_one(client: Any, world: dict[str, int]) -> None:
    response = client.post("/api/teachers", json={"name": "Solo"}, headers=ONE)
    assert response.status_code == 201
    assert response.json["name"] == "Solo"
    assert "Location" in response.headers


def test_one_bad_item_writes_nothing_and_names_its_index(
    client: Any, world: dict[str, int]
) -> None:
    before = teacher_count()
    body: list[Any] = [{"name": f"T{i}"} for i in range(5)]
    body[3] = {"name": "T3", "email": "not an email"}
    body[4] = {"years_teaching": 3}
    response = client.post("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 422
    errors = response.json["errors"]
    assert set(errors) == {"3", "4"}
    assert set(errors["3"]) == {"email"}
    assert set(errors["4"]) == {"name"}
    assert teacher_count() == before
    assert EVENTS == []  # no callback ran: validation comes first


def test_a_non_object_item_is_a_422_naming_it(client: Any, world: dict[str, int]) -> None:
    response = client.post("/api/teachers", json=[{"name": "A"}, 7, None], headers=ONE)
    assert response.status_code == 422
    assert set(response.json["errors"]) == {"1", "2"}
    assert "not a number" in response.json["errors"]["1"]["_schema"][0]
    assert teacher_count() == 3


def test_a_server_value_in_an_item_is_refused_by_index(client: Any, world: dict[str, int]) -> None:
    response = client.post(
        f"/api/teachers/{world['ada']}/students",
        json=[{"name": "A"}, {"name": "B", "teacher_id": world["eve"]}],
        headers=ONE,
    )
    assert response.status_code == 422
    assert set(response.json["errors"]) == {"1"}


def test_a_reference_to_another_tenants_row_refuses_the_whole_bulk(
    client: Any, world: dict[str, int]
) -> None:
    body = [{"name": "A", "mentor_id": world["ada"]}, {"name": "B", "mentor_id": world["bob"]}]
    response = client.post("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 422
    assert response.json["errors"] == {"1": {"mentor_id": ["No such item."]}}
    hidden_mentor = client.post(
        "/api/teachers",
        json=[{"name": "A", "mentor_id": world["eve"]}],
        headers={**ONE, "X-Hide": "Eve"},
    )
    assert hidden_mentor.status_code == 422
    assert teacher_count() == 3


def test_an_object_permission_refusal_writes_nothing(client: Any, world: dict[str, int]) -> None:
    body = [{"name": "A"}, {"name": "Trudy"}]
    response = client.post("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 403
    assert teacher_count() == 3


def test_a_callback_refusal_writes_nothing(client: Any, world: dict[str, int]) -> None:
    response = client.post("/api/teachers", json=[{"name": "A"}, {"name": "Veto"}], headers=ONE)
    assert response.status_code == 422
    assert teacher_count() == 3
    assert not [e for e in EVENTS if e[1] == "after_commit"]


def test_a_row_left_outside_the_policy_writes_nothing(client: Any, world: dict[str, int]) -> None:
    response = client.post(
        "/api/teachers", json=[{"name": "A"}, {"name": "Zed"}], headers={**ONE, "X-Hide": "Zed"}
    )
    assert response.status_code == 403
    assert teacher_count() == 3


def test_a_nested_bulk_create_stamps_the_parent(client: Any, world: dict[str, int]) -> None:
    url = f"/api/teachers/{world['ada']}/students"
    response = client.post(url, json=[{"name": "S1"}, {"name": "S2"}], headers=ONE)
    assert response.status_code == 201
    assert {item["teacher_id"] for item in response.json} == {world["ada"]}
    other = f"/api/teachers/{world['bob']}/students"
    assert client.post(other, json=[{"name": "S3"}], headers=ONE).status_code == 404


def test_a_unique_violation_is_a_409_and_writes_nothing(client: Any, world: dict[str, int]) -> None:
    seed(Counter(label="taken"))
    body = [{"label": f"c{i}"} for i in range(9)]
    body[7] = {"label": "taken"}
    response = client.post("/api/counters", json=body)
    assert response.status_code == 409
    # the field, as a single create names it (the database does not say which item)
    single = client.post("/api/counters", json={"label": "taken"})
    assert (
        response.json["errors"]
        == single.json["errors"]
        == {"label": ["A row with this value already exists."]}
    )
    twice = client.post("/api/counters", json=[{"label": "x"}, {"label": "x"}])
    assert twice.status_code == 409
    assert set(twice.json["errors"]) == {"label"}
    db.session.rollback()
    assert db.session.scalars(select(Counter.label)).all() == ["taken"]


def test_a_perform_create_returning_none_creates_each_item_once(
    client: Any, world: dict[str, int]
) -> None:
    response = client.post("/api/quiet-counters", json=[{"label": "a"}, {"label": "b"}])
    assert response.status_code == 201
    assert [item["label"] for item in response.json] == ["a", "b"]
    assert len({item["id"] for item in response.json}) == 2
    db.session.rollback()
    assert sorted(db.session.scalars(select(Counter.label))) == ["a", "b"]


def test_limits_and_shapes(client: Any, world: dict[str, int]) -> None:
    too_many = client.post("/api/teachers", json=[{"name": "x"}] * 61, headers=ONE)
    assert too_many.status_code == 413
    assert too_many.content_type == "application/problem+json"
    assert "at most 60" in too_many.json["detail"]
    empty = client.post("/api/teachers", json=[], headers=ONE)
    assert empty.status_code == 422
    assert client.post("/api/teachers", json="x", headers=ONE).status_code == 400
    assert client.post("/api/teachers?x=1", json=[{"name": "a"}], headers=ONE).status_code == 400
    assert client.post("/api/plain", json=[{"name": "a"}]).status_code == 400
    assert client.patch("/api/plain", json=[{"id": 1}]).status_code == 405
    assert client.patch("/api/counters", json=[{"id": 1}]).status_code == 405
    raw = client.post(
        "/api/teachers", data=b"[{", headers={**ONE, "Content-Type": "application/json"}
    )
    assert raw.status_code == 400
    assert teacher_count() == 3


def test_signals_are_sent_per_item_after_the_commit(client: Any, world: dict[str, int]) -> None:
    seen: list[tuple[str, int]] = []

    def receiver(sender: Any, resource: Any, **kwargs: Any) -> None:
        seen.append((resource.name, teacher_count()))

    signals.resource_created.connect(receiver, sender=Teachers)
    try:
        response = client.post("/api/teachers", json=[{"name": "A"}, {"name": "B"}], headers=ONE)
        assert response.status_code == 201
    finally:
        signals.resource_created.disconnect(receiver, sender=Teachers)
    assert seen == [("A", 5), ("B", 5)]  # both rows committed before the first signal


# -- bulk patch ------------------------------------------------------------------------------


def test_a_bulk_patch_changes_every_row(client: Any, world: dict[str, int]) -> None:
    body = [
        {"id": world["ada"], "years_teaching": 5},
        {"id": world["eve"], "name": "Eva", "mentor_id": world["ada"]},
    ]
    response = client.patch("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 200, response.json
    assert [item["id"] for item in response.json] == [world["ada"], world["eve"]]
    assert response.json[0]["years_teaching"] == 5
    assert response.json[0]["name"] == "Ada"
    assert response.json[1]["name"] == "Eva"
    assert names_in_school(1) == ["Ada", "Eva"]
    assert [e for e in EVENTS if e[1] == "after_commit"] == [
        ("patch", "after_commit", "Ada"),
        ("patch", "after_commit", "Eva"),
    ]


@pytest.mark.parametrize(
    ("who", "headers"),
    [
        ("bob", ONE),  # another tenant's
        ("eve", {**ONE, "X-Hide": "Eve"}),  # hidden by visible
        ("missing", ONE),
    ],
)
def test_a_bulk_patch_naming_an_unreachable_id_writes_nothing(
    client: Any, world: dict[str, int], who: str, headers: dict[str, str]
) -> None:
    target = world.get(who, 10**6)
    body = [{"id": world["ada"], "name": "Changed"}, {"id": target, "name": "Changed"}]
    response = client.patch("/api/teachers", json=body, headers=headers)
    assert response.status_code == 422
    assert response.json["errors"] == {"1": {"id": ["No such item."]}}
    assert "Changed" not in names_in_school(1) + names_in_school(2)


def test_a_bulk_patch_of_another_parents_row_writes_nothing(
    client: Any, world: dict[str, int]
) -> None:
    url = f"/api/teachers/{world['ada']}/students"
    body = [{"id": world["cy"], "name": "X"}, {"id": world["di"], "name": "X"}]
    response = client.patch(url, json=body, headers=ONE)
    assert response.status_code == 422
    assert response.json["errors"] == {"1": {"id": ["No such item."]}}
    mine = client.patch(url, json=[{"id": world["cy"], "name": "Cyd"}], headers=ONE)
    assert mine.status_code == 200
    assert mine.json[0]["name"] == "Cyd"
    db.session.rollback()
    assert db.session.get(Student, world["di"]).name == "Di"


def test_bulk_patch_item_errors(client: Any, world: dict[str, int]) -> None:
    body: list[Any] = [
        {"name": "A"},  # no id
        {"id": "1"},  # an id no row could have
        {"id": world["ada"], "email": "bad"},
        {"id": world["ada"], "name": "again"},  # named twice
        [],
    ]
    response = client.patch("/api/teachers", json=body, headers=ONE)
    assert response.status_code == 422
    errors = response.json["errors"]
    assert set(errors) == {"0", "1", "2", "3", "4"}
    assert "id" in errors["0"]
    assert "id" in errors["1"]
    assert "email" in errors["2"]
    assert "item 2" in errors["3"]["id"][0]
    if_match = client.patch(
        "/api/teachers", json=[{"id": world["ada"]}], headers={**ONE, "If-Match": '"x"'}
    )
    assert if_match.status_code == 400
    assert client.patch("/api/teachers", json={"id": 1}, headers=ONE).status_code == 400
    assert names_in_school(1) == ["Ada", "Eve"]


def test_a_bulk_patch_moving_a_row_out_of_view_writes_nothing(
    client: Any, world: dict[str, int]
) -> None:
    body = [{"id": world["ada"], "name": "Ann"}, {"id": world["eve"], "name": "Zed"}]
    response = client.patch("/api/teachers", json=body, headers={**ONE, "X-Hide": "Zed"})
    assert response.status_code == 403
    assert names_in_school(1) == ["Ada", "Eve"]


# -- statements ------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [2, 50])
def test_statements_do_not_grow_with_the_items(
    client: Any, world: dict[str, int], statements: list[str], count: int
) -> None:
    body = [{"name": f"N{i}", "mentor_id": world["ada"]} for i in range(count)]
    statements.clear()
    response = client.post("/api/teachers", json=body, headers={**ONE, "X-Hide": "Zed"})
    assert response.status_code == 201
    made = [s for s in statements if not s.lstrip().upper().startswith(("SAVEPOINT", "RELEASE"))]
    inserts = [s for s in made if s.lstrip().upper().startswith("INSERT")]
    # one reference check (before the flush), the INSERT, one row policy check
    assert len(inserts) == (1 if batches_inserts() else count), made
    assert len(made) - len(inserts) == 2, made
    statements.clear()
    ids = [item["id"] for item in response.json]
    patch = [{"id": i, "years_teaching": 1} for i in ids]
    response = client.patch("/api/teachers", json=patch, headers={**ONE, "X-Hide": "Zed"})
    assert response.status_code == 200
    # the rows found (one SELECT), the UPDATEs (one executemany), the policy check
    assert len(statements) == 3, statements


def test_a_read_back_is_one_statement(
    client: Any, world: dict[str, int], statements: list[str]
) -> None:
    body = [
        {"label": f"g{i}", "price": "1.005", "seen_at": "2024-01-01T10:00:00+02:00"}
        for i in range(20)
    ]
    statements.clear()
    response = client.post("/api/gadgets", json=body)
    assert response.status_code == 201
    assert {item["price"] for item in response.json} == {"1.01"}
    inserts = 1 if batches_inserts() else 20
    assert len(statements) == inserts + 1, statements  # the INSERT, the read-back
    for item in response.json[:3]:
        assert client.get(f"/api/gadgets/{item['id']}").json == item


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"bulk": ("create", "merge")}, "'create' or 'patch'"),
        ({"bulk": ("delete",)}, "DELETE carries no body"),
        ({"bulk": "create"}, "must be a tuple"),
        ({"bulk": ("create",), "max_bulk_items": 0}, "positive integer"),
        ({"bulk": ("patch",), "require_if_match": True}, "require_if_match"),
    ],
)
def test_a_bad_bulk_setting_is_refused_at_registration(
    attributes: dict[str, Any], message: str
) -> None:
    resource = type(
        "BadBulk",
        (ModelResource,),
        {"name": "bad", "model": Counter, "schema": CounterSchema, **attributes},
    )
    with pytest.raises(ImproperlyConfigured, match=message):
        Router().register(resource)


def test_bulk_patch_needs_the_patch_action() -> None:
    resource = type(
        "CreateOnly",
        (ListMixin, CreateMixin, Resource),
        {"name": "c", "model": Counter, "schema": CounterSchema, "bulk": ("patch",)},
    )
    with pytest.raises(ImproperlyConfigured, match="PatchMixin"):
        Router().register(resource)


def test_bulk_patch_refuses_an_own_get_object() -> None:
    def get_object(self: Any) -> Any:
        return super(type(self), self).get_object()

    resource = type(
        "OwnObject",
        (ModelResource,),
        {
            "name": "o",
            "model": Counter,
            "schema": CounterSchema,
            "bulk": ("create", "patch"),
            "get_object": get_object,
        },
    )
    with pytest.raises(ImproperlyConfigured, match="get_object"):
        Router().register(resource)
    resource.bulk = ("create",)  # the failed compile was not kept
    Router().register(resource)  # a bulk create does not read an item


def test_an_own_get_request_data_needs_get_item_data() -> None:
    def get_request_data(self: Any, operation: str, server_values: Any) -> Any:
        return super(type(self), self).get_request_data(operation, server_values)

    resource = type(
        "OwnData",
        (ModelResource,),
        {
            "name": "o",
            "model": Counter,
            "schema": CounterSchema,
            "bulk": ("create",),
            "get_request_data": get_request_data,
        },
    )
    with pytest.raises(ImproperlyConfigured, match="get_item_data"):
        Router().register(resource)


# -- the OpenAPI document -----------------------------------------------------------------------


def test_the_document_shows_the_array_forms(app: Any) -> None:
    from openapi_spec_validator import validate

    document = app.test_client().get("/api/openapi.json").get_json()
    validate(document)
    schemas = document["components"]["schemas"]
    collection = document["paths"]["/api/teachers"]
    post = collection["post"]["requestBody"]["content"]["application/json"]["schema"]
    single, many = post["oneOf"]
    assert many == {"type": "array", "items": single, "minItems": 1, "maxItems": 60}
    created = collection["post"]["responses"]["201"]["content"]["application/json"]["schema"]
    assert created["oneOf"][1]["items"] == created["oneOf"][0]
    patch = collection["patch"]
    assert patch["operationId"] == "teachers_bulk_partial_update"
    body = patch["requestBody"]["content"]["application/json"]["schema"]
    assert body["maxItems"] == 60
    item = schemas[body["items"]["$ref"].rsplit("/", 1)[-1]]
    assert item["required"] == ["id"]
    assert item["properties"]["id"]["type"] == "integer"
    assert "name" in item["properties"]
    answered = patch["responses"]["200"]["content"]["application/json"]["schema"]
    assert answered["type"] == "array"
    assert {"413", "422"} <= set(patch["responses"])
    # No opt-in: no array form, no collection PATCH.
    plain = document["paths"]["/api/plain"]
    assert "patch" not in plain
    assert "oneOf" not in plain["post"]["requestBody"]["content"]["application/json"]["schema"]
    counters = document["paths"]["/api/counters"]
    assert "patch" not in counters
