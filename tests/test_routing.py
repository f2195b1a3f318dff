from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Blueprint, Flask
from sqlalchemy import ForeignKey, Integer
from sqlalchemy.orm import Mapped, mapped_column

from resources_kit import (
    ImproperlyConfigured,
    ListMixin,
    Resource,
    RetrieveMixin,
    Router,
)

from .conftest import DB_URL, ENGINE_OPTIONS, make_app, running, seed
from .models import (
    Grade,
    GradeResource,
    LoneTeacherResource,
    School,
    Student,
    StudentResource,
    StudentSchema,
    Teacher,
    TeacherResource,
    db,
)


@pytest.fixture
def tree(database: Any) -> dict[str, Any]:
    """Two teachers, each with a student, each student with a grade."""
    t1, t2 = Teacher(name="Ada"), Teacher(name="Bob")
    seed(t1, t2)
    s1, s2 = Student(name="Cy", teacher_id=t1.id), Student(name="Di", teacher_id=t2.id)
    seed(s1, s2)
    g1, g2 = (
        Grade(student_id=s1.id, subject="math", score=7),
        Grade(student_id=s2.id, subject="art", score=9),
    )
    seed(g1, g2)
    return {"t1": t1.id, "t2": t2.id, "s1": s1.id, "s2": s2.id, "g1": g1.id, "g2": g2.id}


def rules(app: Flask) -> dict[str, set[str]]:
    return {
        r.rule: set(r.methods or ()) - {"HEAD", "OPTIONS"}
        for r in app.url_map.iter_rules()
        if r.endpoint != "static"
    }


def test_routes_have_exactly_the_supported_methods(app: Flask) -> None:
    found = rules(app)
    assert found["/api/teachers"] == {"GET", "POST"}
    assert found["/api/teachers/<int:teacher_id>"] == {"GET", "PUT", "PATCH", "DELETE"}
    assert found["/api/teachers/<int:teacher_id>/students/<int:student_id>/grades"] == {
        "GET",
        "POST",
    }
    assert found["/api/counters"] == {"GET", "POST"}
    assert found["/api/counters/<int:counter_id>"] == {"PATCH"}
    assert found["/api/readonly-teachers/<int:teacher_id>"] == {"GET"}


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("put", "/api/readonly-teachers/1", {"GET", "HEAD", "OPTIONS"}),
        ("post", "/api/readonly-teachers/1", {"GET", "HEAD", "OPTIONS"}),
        ("delete", "/api/readonly-teachers", {"GET", "HEAD", "OPTIONS"}),
        ("put", "/api/teachers", {"GET", "HEAD", "OPTIONS", "POST"}),
        ("get", "/api/counters/1", {"PATCH", "OPTIONS"}),
    ],
)
def test_unsupported_verb_is_405_with_allow(
    client: Any, method: str, path: str, allow: set[str]
) -> None:
    response = getattr(client, method)(path, json={})
    assert response.status_code == 405
    assert response.content_type == "application/problem+json"
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allow
    assert response.json["status"] == 405


def test_trailing_slash_answers_like_no_slash(client: Any, tree: dict[str, Any]) -> None:
    for path in (
        "/api/teachers",
        f"/api/teachers/{tree['t1']}",
        f"/api/teachers/{tree['t1']}/students",
    ):
        plain, slashed = client.get(path), client.get(path + "/")
        assert plain.status_code == slashed.status_code == 200
        assert plain.json == slashed.json
    created = client.post("/api/teachers/", json={"name": "Eve"})
    assert created.status_code == 201


def test_unknown_path_under_prefix_is_problem_404(client: Any) -> None:
    response = client.get("/api/nowhere/at/all")
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    assert response.json["title"] == "Not Found"


def test_paths_outside_prefix_keep_flask_errors(client: Any) -> None:
    response = client.get("/elsewhere")
    assert response.status_code == 404
    assert response.content_type.startswith("text/html")


def test_depth_three_happy_path(client: Any, tree: dict[str, Any]) -> None:
    base = f"/api/teachers/{tree['t1']}/students/{tree['s1']}/grades"
    assert [g["subject"] for g in client.get(base).json["items"]] == ["math"]
    assert client.get(f"{base}/{tree['g1']}").json["score"] == 7


def test_an_integer_written_another_way_is_404_at_every_level(
    client: Any, tree: dict[str, Any]
) -> None:
    """One URL per item: a key with a leading zero or a sign names no row, at the
    grandparent, the parent or the item (the rule's integer segments, read once)."""
    t, s, g = tree["t1"], tree["s1"], tree["g1"]
    assert client.get(f"/api/teachers/{t}/students/{s}/grades/{g}").status_code == 200
    for path in (
        f"/api/teachers/0{t}/students/{s}/grades/{g}",
        f"/api/teachers/{t}/students/0{s}/grades/{g}",
        f"/api/teachers/{t}/students/{s}/grades/0{g}",
        f"/api/teachers/0{t}/students/{s}/grades",
        f"/api/teachers/{t}/students/+{s}/grades",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.mimetype == "application/problem+json"


WRONG_CHAINS = [
    # (teacher, student, grade) keys: each mixes in one level from the other branch
    ("t2", "s1", "g1"),  # grandparent wrong
    ("t1", "s2", "g1"),  # parent wrong
    ("t1", "s1", "g2"),  # item wrong
    ("t1", "s2", "g2"),  # student of another teacher, its own grade
]


@pytest.mark.parametrize(("t", "s", "g"), WRONG_CHAINS)
@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("get", None),
        ("put", {"subject": "x", "score": 1}),
        ("patch", {"score": 1}),
        ("delete", None),
    ],
)
def test_grandchild_under_wrong_chain_is_404_on_every_verb(
    client: Any, tree: dict[str, Any], t: str, s: str, g: str, method: str, body: Any
) -> None:
    path = f"/api/teachers/{tree[t]}/students/{tree[s]}/grades/{tree[g]}"
    response = getattr(client, method)(path, json=body)
    assert response.status_code == 404
    assert response.content_type == "application/problem+json"
    grades = {g.id: (g.student_id, g.subject, g.score) for g in db.session.query(Grade)}
    assert grades == {tree["g1"]: (tree["s1"], "math", 7), tree["g2"]: (tree["s2"], "art", 9)}


@pytest.mark.parametrize("method", ["get", "post"])
def test_collection_under_wrong_chain_is_404(
    client: Any, tree: dict[str, Any], method: str
) -> None:
    path = f"/api/teachers/{tree['t2']}/students/{tree['s1']}/grades"
    response = getattr(client, method)(path, json={"subject": "x", "score": 1})
    assert response.status_code == 404
    assert db.session.query(Grade).count() == 2


@pytest.mark.parametrize("method", ["get", "post"])
def test_missing_parent_is_404_on_list_and_create(client: Any, database: Any, method: str) -> None:
    response = getattr(client, method)("/api/teachers/999/students", json={"name": "Zed"})
    assert response.status_code == 404
    assert db.session.query(Student).count() == 0


def test_empty_parent_lists_empty(client: Any, database: Any) -> None:
    teacher = Teacher(name="Ada")
    seed(teacher)
    response = client.get(f"/api/teachers/{teacher.id}/students")
    assert response.status_code == 200
    assert response.json == {
        "items": [], "total": 0, "limit": 20, "offset": 0,
        "links": {"next": None, "prev": None},
    }  # fmt: skip


def test_nested_create_sets_foreign_key_from_url(client: Any, tree: dict[str, Any]) -> None:
    response = client.post(f"/api/teachers/{tree['t2']}/students", json={"name": "Eli"})
    assert response.status_code == 201
    assert response.json["teacher_id"] == tree["t2"]
    assert response.headers["Location"] == (
        f"/api/teachers/{tree['t2']}/students/{response.json['id']}"
    )
    assert db.session.get(Student, response.json["id"]).teacher_id == tree["t2"]


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_body_cannot_move_child_to_another_parent(
    client: Any, tree: dict[str, Any], method: str
) -> None:
    base = f"/api/teachers/{tree['t1']}/students"
    path = base if method == "post" else f"{base}/{tree['s1']}"
    response = getattr(client, method)(path, json={"name": "Cy", "teacher_id": tree["t2"]})
    assert response.status_code == 422
    assert "teacher_id" in response.json["errors"]
    assert db.session.get(Student, tree["s1"]).teacher_id == tree["t1"]
    assert db.session.query(Student).count() == 2


def test_body_may_repeat_the_parent_key_from_the_url(client: Any, tree: dict[str, Any]) -> None:
    path = f"/api/teachers/{tree['t1']}/students/{tree['s1']}"
    response = client.put(path, json={"name": "Cyd", "teacher_id": tree["t1"]})
    assert response.status_code == 200
    assert response.json["name"] == "Cyd"


def test_nested_item_read_is_one_statement(
    client: Any, tree: dict[str, Any], statements: list[str]
) -> None:
    path = f"/api/teachers/{tree['t1']}/students/{tree['s1']}/grades/{tree['g1']}"
    statements.clear()
    assert client.get(path).status_code == 200
    assert len(statements) == 1


def test_nested_list_checks_chain_in_one_statement(
    client: Any, tree: dict[str, Any], statements: list[str]
) -> None:
    path = f"/api/teachers/{tree['t1']}/students/{tree['s1']}/grades"
    statements.clear()
    assert client.get(path).status_code == 200
    assert len(statements) == 1  # the page, its total and the chain in one statement


@pytest.mark.parametrize(
    "path",
    [
        "/api/teachers/99999999999999999999999",
        "/api/teachers/1/students/99999999999999999999999",
        "/api/teachers/99999999999999999999/students",
    ],
)
def test_ids_past_the_column_range_are_404(client: Any, database: Any, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404


# -- registration ---------------------------------------------------------------------------


def test_same_resource_at_two_places(database: Any) -> None:
    def register(router: Router) -> None:
        router.register(LoneTeacherResource)
        router.register(StudentResource)
        router.register(StudentResource, parent=LoneTeacherResource)

    with running(make_app(register)) as client:
        seed(Teacher(name="Ada"), Teacher(name="Bob"))
        ada, bob = db.session.query(Teacher).order_by(Teacher.id).all()
        seed(Student(name="Cy", teacher_id=ada.id), Student(name="Di", teacher_id=bob.id))
        assert client.get("/api/students").json["total"] == 2
        assert client.get(f"/api/teachers/{ada.id}/students").json["total"] == 1


def test_blueprint_and_router_prefixes(database: Any) -> None:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=DB_URL, SQLALCHEMY_ENGINE_OPTIONS=ENGINE_OPTIONS, TESTING=True
    )
    db.init_app(app)
    bp = Blueprint("v1", __name__, url_prefix="/v1")
    router = Router(bp, url_prefix="/api")
    router.register(LoneTeacherResource)
    router.register(StudentResource, parent=LoneTeacherResource)
    app.register_blueprint(bp)
    with running(app) as client:
        created = client.post("/v1/api/teachers", json={"name": "Ada"})
        assert created.status_code == 201
        assert created.headers["Location"] == f"/v1/api/teachers/{created.json['id']}"
        student = client.post(
            f"/v1/api/teachers/{created.json['id']}/students", json={"name": "Cy"}
        )
        assert student.headers["Location"].startswith("/v1/api/teachers/")
        missing = client.get("/v1/api/nothing")
        assert missing.content_type == "application/problem+json"
        assert client.delete("/v1/api/teachers").status_code == 405


def test_router_given_the_app_builds_on_register(database: Any) -> None:
    app = Flask(__name__)
    router = Router(app, url_prefix="/x")
    router.register(LoneTeacherResource)
    assert "/x/teachers" in rules(app)


def test_register_is_usable_as_decorator() -> None:
    router = Router()

    @router.register
    class Things(ListMixin, Resource):
        name = "things"
        model = Teacher
        schema = StudentSchema

    assert router.mounts[0].resource is Things


class _Other(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "others"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_teacher: Mapped[int] = mapped_column(ForeignKey("teachers.id"))
    second_teacher: Mapped[int] = mapped_column(ForeignKey("teachers.id"))
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))


class _OtherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)


class OtherResource(ListMixin, Resource):
    name = "others"
    model = _Other
    schema = _OtherSchema


class SchoolResource(ListMixin, RetrieveMixin, Resource):
    name = "schools"
    model = School
    schema = _OtherSchema


def test_two_foreign_keys_need_parent_field() -> None:
    router = Router()
    router.register(LoneTeacherResource)
    with pytest.raises(ImproperlyConfigured, match=r"2 foreign keys.*parent_field="):
        router.register(OtherResource, parent=LoneTeacherResource)
    router.register(OtherResource, parent=LoneTeacherResource, parent_field="second_teacher")
    assert router.mounts[-1].parent_key == "second_teacher"


def test_no_foreign_key_is_improperly_configured() -> None:
    router = Router()
    router.register(StudentResource)
    with pytest.raises(
        ImproperlyConfigured,
        match=r"TeacherResource: Teacher has no foreign "
        r"key to Student.*parent_field=",
    ):
        router.register(TeacherResource, parent=StudentResource)


@pytest.mark.parametrize("field", ["school_id", "nope"])
def test_parent_field_must_refer_to_the_parent(field: str) -> None:
    router = Router()
    router.register(LoneTeacherResource)
    with pytest.raises(ImproperlyConfigured, match="parent_field"):
        router.register(OtherResource, parent=LoneTeacherResource, parent_field=field)


def test_parent_must_be_registered_first() -> None:
    with pytest.raises(ImproperlyConfigured, match="register the parent LoneTeacherResource"):
        Router().register(StudentResource, parent=LoneTeacherResource)


def test_same_place_twice_is_refused() -> None:
    router = Router()
    router.register(LoneTeacherResource)
    with pytest.raises(ImproperlyConfigured, match="registered twice"):
        router.register(LoneTeacherResource)


class Node(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))


class NodeResource(ListMixin, RetrieveMixin, Resource):
    name = "nodes"
    model = Node
    schema = _OtherSchema


def test_url_variable_clash_in_chain_is_refused() -> None:
    class ChildNodes(ListMixin, Resource):
        name = "children"
        model = Node
        schema = _OtherSchema

    router = Router()
    router.register(NodeResource)
    with pytest.raises(ImproperlyConfigured, match=r"'node_id' is already used.*url_variable"):
        router.register(ChildNodes, parent=NodeResource)

    class NamedChildNodes(ChildNodes):
        url_variable = "child_id"

    router.register(NamedChildNodes, parent=NodeResource)
    assert router.mounts[-1].item_rule == "/nodes/<int:node_id>/children/<int:child_id>"


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"model": Teacher, "schema": StudentSchema}, "has no `name`"),
        ({"name": "x", "schema": StudentSchema}, "has no `model`"),
        ({"name": "x", "model": Teacher}, "has no `schema`"),
        ({"name": "a/b", "model": Teacher, "schema": StudentSchema}, "one URL segment"),
        ({"name": "x", "model": object, "schema": StudentSchema}, "mapped SQLAlchemy class"),
        ({"name": "x", "model": Teacher, "schema": dict}, "marshmallow Schema class"),
        (
            {"name": "x", "model": Teacher, "schema": StudentSchema, "lookup_field": "nope"},
            "lookup_field",
        ),
        ({"name": "x", "model": Teacher, "schema": StudentSchema, "page_size": 500}, "page_size"),
        (
            {"name": "x", "model": Teacher, "schema": StudentSchema, "default_sort": "nope"},
            "default_sort",
        ),
        (
            {"name": "x", "model": Teacher, "schema": StudentSchema, "default_sort": "a__up"},
            "default_sort",
        ),
    ],
)
def test_configuration_mistakes_are_improperly_configured(
    attrs: dict[str, Any], message: str
) -> None:
    resource = type("BadResource", (ListMixin, Resource), attrs)
    with pytest.raises(ImproperlyConfigured, match=message) as info:
        Router().register(resource)
    assert "BadResource" in str(info.value)


def test_resource_without_actions_is_refused() -> None:
    resource = type("Bare", (Resource,), {"name": "x", "model": Teacher, "schema": StudentSchema})
    with pytest.raises(ImproperlyConfigured, match="Bare has no actions"):
        Router().register(resource)


def test_register_takes_resource_classes_only() -> None:
    with pytest.raises(ImproperlyConfigured, match="takes a Resource class"):
        Router().register(Teacher)  # type: ignore[type-var]


def test_url_prefix_must_start_with_slash() -> None:
    with pytest.raises(ImproperlyConfigured, match="url_prefix"):
        Router(url_prefix="api")


def test_grade_resource_url_variable_defaults_to_snake_case() -> None:
    router = Router()
    router.register(GradeResource)
    assert router.mounts[0].item_rule == "/grades/<int:grade_id>"


@pytest.mark.parametrize("spelling", ["zeros", "arabic-indic", "fullwidth"])
def test_an_item_has_one_url(client: Any, database: Any, spelling: str) -> None:
    from urllib.parse import quote

    from .conftest import seed
    from .models import Teacher

    teacher = Teacher(name="One")
    seed(teacher)
    digits = str(teacher.id)
    written = {
        "zeros": "00" + digits,
        "arabic-indic": "".join(chr(0x660 + int(d)) for d in digits),
        "fullwidth": "".join(chr(0xFF10 + int(d)) for d in digits),
    }[spelling]
    assert client.get(f"/api/teachers/{quote(written)}").status_code == 404
    assert client.get(f"/api/teachers/{digits}").status_code == 200


def test_date_and_enum_lookups_refuse_what_no_row_can_hold(database: Any) -> None:
    from datetime import date

    from resources_kit import ModelResource

    from .conftest import make_app, running, seed
    from .models import Gadget, GadgetSchema

    class ByDay(ModelResource):
        name, model, schema = "by-day", Gadget, GadgetSchema
        lookup_field = "made_on"

    class ByKind(ModelResource):
        name, model, schema = "by-kind", Gadget, GadgetSchema
        lookup_field = "kind"

    def register(router: Router) -> None:
        router.register(ByDay)
        router.register(ByKind)

    with running(make_app(register)) as client:
        seed(Gadget(label="g", made_on=date(2026, 1, 2), kind="small"))
        assert client.get("/api/by-day/2026-01-02").json["label"] == "g"
        for bad in ("2026-13-01", "20260102", "yesterday", "2026-1-2"):
            assert client.get(f"/api/by-day/{bad}").status_code == 404
        assert client.get("/api/by-kind/small").json["label"] == "g"
        assert client.get("/api/by-kind/medium").status_code == 404
