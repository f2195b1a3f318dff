from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, g
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, rule, run_state_machine_as_test
from sqlalchemy import Select, select

from resources_kit import ImproperlyConfigured, ModelResource, Router
from resources_kit.errors import ResourcesKitWarning

from .conftest import make_app, register_scoped, reset_database, running, seed, seed_two_schools
from .models import (
    School,
    ScopedStudentResource,
    ScopedTeacherResource,
    StudentSchema,
    Teacher,
    TeacherSchema,
    db,
)
from .test_errors import snapshot


@pytest.fixture(scope="module")
def scoped_app(app: Flask) -> Flask:
    return make_app(register_scoped)


@pytest.fixture
def tc(scoped_app: Flask, database: Any) -> Iterator[Any]:
    with running(scoped_app) as client:
        yield client


@pytest.fixture
def schools(tc: Any) -> dict[str, int]:
    return seed_two_schools()


def as_school(school: int) -> dict[str, str]:
    return {"X-School": str(school)}


ITEM_VERBS = [
    ("get", None),
    ("put", {"name": "Zed"}),
    ("patch", {"name": "Zed"}),
    ("delete", None),
]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/teachers"),
        ("post", "/api/teachers"),
        ("get", "/api/teachers/{ada}"),
        ("put", "/api/teachers/{ada}"),
        ("patch", "/api/teachers/{ada}"),
        ("delete", "/api/teachers/{ada}"),
        ("get", "/api/teachers/{ada}/students"),
        ("post", "/api/teachers/{ada}/students"),
        ("get", "/api/teachers/{ada}/students/{cy}"),
        ("delete", "/api/teachers/{ada}/students/{cy}"),
    ],
)
def test_no_scope_is_403_before_any_query(
    tc: Any, schools: dict[str, int], statements: list[str], method: str, path: str
) -> None:
    before = snapshot()
    statements.clear()
    response = getattr(tc, method)(path.format(**schools), json={"name": "Zed"})
    assert response.status_code == 403
    assert response.content_type == "application/problem+json"
    assert statements == []
    assert snapshot() == before


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_value_in_scope_fails_closed(tc: Any, schools: dict[str, int], value: Any) -> None:
    """None, "" and blank strings name no tenant: anonymous callers share none."""

    class NoneScoped(ScopedTeacherResource):
        name = "none-scoped"

        def get_base_query_kwargs(self) -> dict[str, Any]:
            return {"region": value}

    app = make_app(lambda r: r.register(NoneScoped))
    with app.app_context():
        db.create_all()
        seed(Teacher(name="Orphan", region=value))  # must not be served
        client = app.test_client()
        assert client.get("/api/none-scoped").status_code == 403
        assert client.post("/api/none-scoped", json={"name": "X"}).status_code == 403
        reset_database()


def test_each_tenant_lists_only_its_rows(tc: Any, schools: dict[str, int]) -> None:
    one = tc.get("/api/teachers", headers=as_school(schools["one"])).json
    two = tc.get("/api/teachers", headers=as_school(schools["two"])).json
    assert [t["name"] for t in one["items"]] == ["Ada"]
    assert [t["name"] for t in two["items"]] == ["Bob"]
    assert one["total"] == two["total"] == 1


@pytest.mark.parametrize(("method", "body"), ITEM_VERBS)
def test_other_tenants_row_is_404_and_unchanged(
    tc: Any, schools: dict[str, int], method: str, body: Any
) -> None:
    before = snapshot()
    response = getattr(tc, method)(
        f"/api/teachers/{schools['bob']}", json=body, headers=as_school(schools["one"])
    )
    assert response.status_code == 404
    assert snapshot() == before


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/api/teachers/{bob}/students", None),
        ("post", "/api/teachers/{bob}/students", {"name": "Eve"}),
        ("get", "/api/teachers/{bob}/students/{di}", None),
        ("put", "/api/teachers/{bob}/students/{di}", {"name": "Eve"}),
        ("patch", "/api/teachers/{bob}/students/{di}", {"name": "Eve"}),
        ("delete", "/api/teachers/{bob}/students/{di}", None),
        # own teacher, other tenant's student
        ("get", "/api/teachers/{ada}/students/{di}", None),
        ("patch", "/api/teachers/{ada}/students/{di}", {"name": "Eve"}),
        ("delete", "/api/teachers/{ada}/students/{di}", None),
    ],
)
def test_children_of_other_tenants_parent_are_404(
    tc: Any, schools: dict[str, int], method: str, path: str, body: Any
) -> None:
    before = snapshot()
    response = getattr(tc, method)(
        path.format(**schools), json=body, headers=as_school(schools["one"])
    )
    assert response.status_code == 404
    assert snapshot() == before


def test_create_stamps_the_tenant(tc: Any, schools: dict[str, int]) -> None:
    response = tc.post("/api/teachers", json={"name": "Eve"}, headers=as_school(schools["two"]))
    assert response.status_code == 201
    assert response.json["school_id"] == schools["two"]
    assert db.session.get(Teacher, response.json["id"]).school_id == schools["two"]


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_dump_only_scope_column_in_body_is_422(
    tc: Any, schools: dict[str, int], method: str
) -> None:
    before = snapshot()
    path = "/api/teachers" if method == "post" else f"/api/teachers/{schools['ada']}"
    response = getattr(tc, method)(
        path, json={"name": "Eve", "school_id": schools["two"]}, headers=as_school(schools["one"])
    )
    assert response.status_code == 422
    assert "school_id" in response.json["errors"]
    assert snapshot() == before


class WritableScopeSchema(TeacherSchema):
    school_id = ma.fields.Integer()  # loadable: the guard still refuses a change


class LooseTeachers(ScopedTeacherResource):
    name = "loose"
    schema = WritableScopeSchema


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_loadable_scope_column_cannot_move_the_row(
    tc: Any, schools: dict[str, int], method: str
) -> None:
    app = make_app(lambda r: r.register(LooseTeachers))
    with app.app_context():
        client = app.test_client()
        before = snapshot()
        path = "/api/loose" if method == "post" else f"/api/loose/{schools['ada']}"
        moved = getattr(client, method)(
            path,
            json={"name": "Eve", "school_id": schools["two"]},
            headers=as_school(schools["one"]),
        )
        assert moved.status_code == 422
        assert moved.json["errors"]["school_id"]
        assert snapshot() == before
        same = getattr(client, method)(
            path,
            json={"name": "Eve", "school_id": schools["one"]},
            headers=as_school(schools["one"]),
        )
        assert same.status_code in (200, 201)
        assert same.json["school_id"] == schools["one"]


def test_multi_column_scope(tc: Any, schools: dict[str, int]) -> None:
    class RegionalTeachers(ScopedTeacherResource):
        name = "regional"

        def get_base_query_kwargs(self) -> dict[str, Any]:
            return {"school_id": g.get("school_id"), "region": "n"}

    app = make_app(lambda r: r.register(RegionalTeachers))
    with app.app_context():
        seed(Teacher(name="Ann", school_id=schools["one"], region="s"))
        client = app.test_client()
        headers = as_school(schools["one"])
        # Emails are unique per school, not per (school, region): the scope's first request
        # says so, once.
        with pytest.warns(ResourcesKitWarning, match=r"unique on \(school_id, email\)"):
            listed = client.get("/api/regional", headers=headers).json["items"]
        assert [t["name"] for t in listed] == ["Ada"]
        created = client.post("/api/regional", json={"name": "Eve"}, headers=headers)
        assert (created.json["school_id"], created.json["region"]) == (schools["one"], "n")
        refused = client.patch(
            f"/api/regional/{schools['ada']}", json={"region": "s"}, headers=headers
        )
        assert refused.status_code == 422
        assert db.session.get(Teacher, schools["ada"]).region == "n"


def test_get_query_override_without_super_stays_scoped(tc: Any, schools: dict[str, int]) -> None:
    class Careless(ScopedTeacherResource):
        name = "careless"

        def get_query(self) -> Select[Any]:
            return select(Teacher)  # forgot super(): the scope is added anyway

    app = make_app(lambda r: r.register(Careless))
    with app.app_context():
        client = app.test_client()
        listed = client.get("/api/careless", headers=as_school(schools["one"])).json
        assert [t["name"] for t in listed["items"]] == ["Ada"]
        other = client.get(f"/api/careless/{schools['bob']}", headers=as_school(schools["one"]))
        assert other.status_code == 404


def test_perform_create_override_cannot_change_tenant(tc: Any, schools: dict[str, int]) -> None:
    other_school = schools["two"]

    class Sneaky(ScopedTeacherResource):
        name = "sneaky"

        def perform_create(self, data: dict[str, Any]) -> Any:
            return super().perform_create({**data, "school_id": other_school})

        def perform_update(self, obj: Any, data: dict[str, Any]) -> None:
            super().perform_update(obj, data)
            obj.school_id = other_school

    app = make_app(lambda r: r.register(Sneaky))
    with app.app_context():
        client = app.test_client()
        headers = as_school(schools["one"])
        created = client.post("/api/sneaky", json={"name": "Eve"}, headers=headers)
        assert db.session.get(Teacher, created.json["id"]).school_id == schools["one"]
        client.patch(f"/api/sneaky/{schools['ada']}", json={"name": "Adele"}, headers=headers)
        db.session.expire_all()
        assert db.session.get(Teacher, schools["ada"]).school_id == schools["one"]


def test_child_mounted_at_top_level_is_not_scoped_by_its_parent(
    tc: Any, schools: dict[str, int]
) -> None:
    """Documented behaviour: scope flows down a nesting only. A child class mounted at the
    top level has no parent there, so it needs a scope of its own."""

    class StudentsEverywhere(ScopedStudentResource):
        name = "all-students"

    app = make_app(lambda r: r.register(StudentsEverywhere))
    with app.app_context():
        listed = app.test_client().get("/api/all-students", headers=as_school(schools["one"]))
        assert listed.json["total"] == 2  # both schools' students: no scope of its own


# -- a state machine with two tenants -------------------------------------------------------

names = st.text("abcdefgh", min_size=1, max_size=12)


class TenantIsolation(RuleBasedStateMachine):
    """Two schools do random writes and reads on teachers and their students. After every
    step each school sees exactly its own rows, and every cross-tenant attempt is a 404
    that changes nothing."""

    client: Any = None
    teachers = Bundle("teachers")
    students = Bundle("students")

    def __init__(self) -> None:
        super().__init__()
        reset_database()
        one, two = School(name="One"), School(name="Two")
        seed(one, two)
        self.schools = [one.id, two.id]
        self.teacher_rows: dict[int, dict[str, Any]] = {}  # id -> {"school", "name"}
        self.student_rows: dict[int, dict[str, Any]] = {}  # id -> {"teacher", "name"}

    def _visible_teacher(self, teacher: int, school: int) -> bool:
        return teacher in self.teacher_rows and self.teacher_rows[teacher]["school"] == school

    def _visible_student(self, student: int, teacher: int, school: int) -> bool:
        return (
            self._visible_teacher(teacher, school)
            and student in self.student_rows
            and self.student_rows[student]["teacher"] == teacher
        )

    def _check_unchanged(self, response: Any, before: dict[str, Any]) -> None:
        assert response.status_code == 404, response.get_data(as_text=True)
        assert snapshot() == before

    @rule(target=teachers, school=st.integers(0, 1), name=names)
    def create_teacher(self, school: int, name: str) -> int:
        school_id = self.schools[school]
        response = self.client.post(
            "/api/teachers", json={"name": name}, headers=as_school(school_id)
        )
        assert response.status_code == 201
        self.teacher_rows[response.json["id"]] = {"school": school_id, "name": name}
        return int(response.json["id"])

    @rule(target=students, teacher=teachers, school=st.integers(0, 1), name=names)
    def create_student(self, teacher: int, school: int, name: str) -> int:
        school_id = self.schools[school]
        before = snapshot()
        response = self.client.post(
            f"/api/teachers/{teacher}/students", json={"name": name}, headers=as_school(school_id)
        )
        if not self._visible_teacher(teacher, school_id):
            self._check_unchanged(response, before)
            return -1
        assert response.status_code == 201
        self.student_rows[response.json["id"]] = {"teacher": teacher, "name": name}
        return int(response.json["id"])

    @rule(teacher=teachers, school=st.integers(0, 1))
    def read_teacher(self, teacher: int, school: int) -> None:
        school_id = self.schools[school]
        response = self.client.get(f"/api/teachers/{teacher}", headers=as_school(school_id))
        if self._visible_teacher(teacher, school_id):
            assert response.json["name"] == self.teacher_rows[teacher]["name"]
        else:
            assert response.status_code == 404

    @rule(
        teacher=teachers,
        school=st.integers(0, 1),
        name=names,
        method=st.sampled_from(["put", "patch"]),
    )
    def change_teacher(self, teacher: int, school: int, name: str, method: str) -> None:
        school_id = self.schools[school]
        before = snapshot()
        response = getattr(self.client, method)(
            f"/api/teachers/{teacher}", json={"name": name}, headers=as_school(school_id)
        )
        if self._visible_teacher(teacher, school_id):
            assert response.status_code == 200
            self.teacher_rows[teacher]["name"] = name
        else:
            self._check_unchanged(response, before)

    @rule(teacher=teachers, school=st.integers(0, 1))
    def delete_teacher(self, teacher: int, school: int) -> None:
        school_id = self.schools[school]
        before = snapshot()
        response = self.client.delete(f"/api/teachers/{teacher}", headers=as_school(school_id))
        if not self._visible_teacher(teacher, school_id):
            self._check_unchanged(response, before)
        elif any(s["teacher"] == teacher for s in self.student_rows.values()):
            assert response.status_code == 409  # students still refer to it
            assert snapshot() == before
        else:
            assert response.status_code == 204
            del self.teacher_rows[teacher]

    @rule(
        student=students,
        teacher=teachers,
        school=st.integers(0, 1),
        method=st.sampled_from(["get", "patch", "delete"]),
        name=names,
    )
    def student_item(self, student: int, teacher: int, school: int, method: str, name: str) -> None:
        school_id = self.schools[school]
        before = snapshot()
        response = getattr(self.client, method)(
            f"/api/teachers/{teacher}/students/{student}",
            json={"name": name} if method == "patch" else None,
            headers=as_school(school_id),
        )
        if not self._visible_student(student, teacher, school_id):
            self._check_unchanged(response, before)
        elif method == "get":
            assert response.json["name"] == self.student_rows[student]["name"]
        elif method == "patch":
            assert response.status_code == 200
            self.student_rows[student]["name"] = name
        else:
            assert response.status_code == 204
            del self.student_rows[student]

    @rule(school=st.integers(0, 1))
    def list_teachers(self, school: int) -> None:
        school_id = self.schools[school]
        response = self.client.get("/api/teachers?limit=100", headers=as_school(school_id))
        expected = {i: r["name"] for i, r in self.teacher_rows.items() if r["school"] == school_id}
        assert {t["id"]: t["name"] for t in response.json["items"]} == expected
        assert response.json["total"] == len(expected)

    @rule(teacher=teachers, school=st.integers(0, 1))
    def list_students(self, teacher: int, school: int) -> None:
        school_id = self.schools[school]
        response = self.client.get(
            f"/api/teachers/{teacher}/students?limit=100", headers=as_school(school_id)
        )
        if not self._visible_teacher(teacher, school_id):
            assert response.status_code == 404
            return
        expected = {i: r["name"] for i, r in self.student_rows.items() if r["teacher"] == teacher}
        assert {s["id"]: s["name"] for s in response.json["items"]} == expected


def test_tenant_isolation_state_machine(tc: Any) -> None:
    TenantIsolation.client = tc
    run_state_machine_as_test(
        TenantIsolation,
        settings=settings(
            max_examples=40,
            stateful_step_count=25,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        ),
    )


def test_model_resource_can_be_scoped() -> None:
    router = Router()
    router.register(ScopedTeacherResource)
    assert issubclass(ScopedTeacherResource, ModelResource)


# -- rows cannot move through relationships, nor point at rows the caller cannot see -------


def test_relationship_in_the_body_cannot_move_a_row(tc: Any, schools: dict[str, int]) -> None:
    class Related(StudentSchema):
        teacher = ma.fields.Function(
            serialize=lambda s: s.teacher_id,
            deserialize=lambda value: db.session.get(Teacher, value),
        )

    class Students(ScopedStudentResource):
        schema = Related

    def register(router: Router) -> None:
        router.register(ScopedTeacherResource)
        router.register(Students, parent=ScopedTeacherResource)

    with running(make_app(register)) as client:
        before = snapshot()
        one = as_school(schools["one"])
        path = f"/api/teachers/{schools['ada']}/students"
        moved = client.patch(
            f"{path}/{schools['cy']}", json={"teacher": schools["bob"]}, headers=one
        )
        assert moved.status_code == 422
        assert "teacher_id" in moved.json["errors"]
        created = client.post(path, json={"name": "Zed", "teacher": schools["bob"]}, headers=one)
        assert created.status_code == 422
        assert snapshot() == before
        assert (
            client.get(
                f"/api/teachers/{schools['bob']}/students", headers=as_school(schools["two"])
            ).json["total"]
            == 1
        )


def test_perform_create_setting_another_tenant_through_a_relationship_is_refused(
    tc: Any, schools: dict[str, int]
) -> None:
    class Sneaky(ScopedTeacherResource):
        name = "sneaky"

        def perform_create(self, data: dict[str, Any]) -> Any:
            obj = super().perform_create(data)
            obj.school = db.session.get(School, schools["two"])
            return obj

    with running(make_app(lambda r: r.register(Sneaky))) as client:
        before = snapshot()
        response = client.post(
            "/api/sneaky", json={"name": "Eve"}, headers=as_school(schools["one"])
        )
        assert response.status_code == 422
        assert snapshot() == before


class MentoredSchema(TeacherSchema):
    mentor_id = ma.fields.Integer(allow_none=True)


def test_reference_to_another_tenants_row_is_422(tc: Any, schools: dict[str, int]) -> None:
    from .models import Gadget  # noqa: F401  (all models are created)

    class Mentored(ScopedTeacherResource):
        name = "mentored"
        schema = MentoredSchema
        references = {"mentor_id": "self"}

    app = make_app(lambda r: r.register(Mentored))
    with running(app) as client:
        one = as_school(schools["one"])
        before = snapshot()
        foreign = client.post(
            "/api/mentored", json={"name": "Eve", "mentor_id": schools["bob"]}, headers=one
        )
        assert foreign.status_code == 422
        assert foreign.json["errors"] == {"mentor_id": ["No such item."]}
        missing = client.patch(
            f"/api/mentored/{schools['ada']}", json={"mentor_id": 10**6}, headers=one
        )
        assert missing.status_code == 422
        assert snapshot() == before
        own = client.post(
            "/api/mentored", json={"name": "Eve", "mentor_id": schools["ada"]}, headers=one
        )
        assert own.status_code == 201
        assert own.json["mentor_id"] == schools["ada"]


def test_references_must_be_foreign_keys() -> None:
    class Wrong(ScopedTeacherResource):
        name = "wrong"
        references = {"region": "self"}

    with pytest.raises(ImproperlyConfigured, match="foreign key"):
        Router().register(Wrong)


def test_tenant_scope_without_its_values_is_refused_at_registration() -> None:
    """The recipe docs/tenancy.rst once showed: the mixin on a model without a tenant
    column and no get_base_query_kwargs() failed every request with a 500."""
    from flask import g

    from resources_kit import ImproperlyConfigured, ListMixin, Resource, TenantScopeMixin

    from .models import Student, StudentSchema, Teacher

    class AllStudents(TenantScopeMixin, ListMixin, Resource):
        name, model, schema = "all-students", Student, StudentSchema

        def get_query(self) -> Any:
            return super().get_query().join(Teacher).where(Teacher.school_id == g.school_id)

    with pytest.raises(ImproperlyConfigured, match="get_base_query_kwargs") as raised:
        Router().register(AllStudents)
    assert "get_query()" in str(raised.value)
