"""``?include=``: related rows embedded in lists and items, inside the related resource's
row policy (its tenant scope, its ``visible``, its parent chain), one statement per
included level whatever the page size."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, g, request
from sqlalchemy import event, select

from resources_kit import (
    ImproperlyConfigured,
    ListMixin,
    ModelResource,
    Permission,
    Resource,
    RetrieveMixin,
    Router,
    TenantScopeMixin,
)
from resources_kit.guards import Guards, ResponseCache

from .conftest import make_app, running, seed
from .models import Grade, GradeSchema, School, Student, StudentSchema, Teacher, TeacherSchema, db


def hidden() -> set[str]:
    return set(filter(None, request.headers.get("X-Hide", "").split(",")))


class HideStudents(Permission):
    def visible(self, view: Any) -> Any:
        return Student.name.not_in(hidden()) if hidden() else None


class HideTeachers(Permission):
    def visible(self, view: Any) -> Any:
        return Teacher.name.not_in(hidden()) if hidden() else None


class Teachers(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    permissions = [HideTeachers]
    default_sort = "name"
    include_fields = ["students.grades", "school"]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


class CursorTeachers(Teachers):
    name = "cursor_teachers"
    pagination = "cursor"


class Students(ModelResource):
    name = "students"
    model = Student
    schema = StudentSchema
    permissions = [HideStudents]
    default_sort = "name"
    include_fields = ["teacher"]


class Grades(ModelResource):
    name = "grades"
    model = Grade
    schema = GradeSchema


class SchoolSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()


class HideSchools(Permission):
    def visible(self, view: Any) -> Any:
        return School.name.not_in(hidden()) if hidden() else None


class Schools(ListMixin, RetrieveMixin, Resource):
    """Each caller reaches its own school only."""

    name = "schools"
    model = School
    schema = SchoolSchema
    permissions = [HideSchools]

    def get_query(self) -> Any:
        return super().get_query().where(School.id == g.get("school_id"))


def register(router: Router) -> None:
    router.register(Teachers)
    router.register(CursorTeachers)
    router.register(Students, parent=Teachers)
    router.register(Grades, parent=Students)
    router.register(Schools)


@pytest.fixture(scope="module")
def app(app: Flask) -> Flask:
    return make_app(register)


@pytest.fixture
def client(app: Flask) -> Any:
    with running(app) as client:
        yield client


def world() -> dict[str, int]:
    """Two schools; Ada and Bea in one (Ada teaches Cy and Di, Cy has two grades), Eve in
    the other (she teaches Fy)."""
    one, two = School(name="One"), School(name="Two")
    seed(one, two)
    ada = Teacher(name="Ada", school_id=one.id)
    bea = Teacher(name="Bea", school_id=one.id)
    eve = Teacher(name="Eve", school_id=two.id)
    seed(ada, bea, eve)
    cy, di = Student(name="Cy", teacher_id=ada.id), Student(name="Di", teacher_id=ada.id)
    fy = Student(name="Fy", teacher_id=eve.id)
    seed(cy, di, fy)
    seed(
        Grade(student_id=cy.id, subject="art", score=3),
        Grade(student_id=cy.id, subject="math", score=5),
        Grade(student_id=fy.id, subject="art", score=4),
    )
    return {"one": one.id, "two": two.id, "ada": ada.id, "bea": bea.id, "eve": eve.id,
            "cy": cy.id, "di": di.id, "fy": fy.id}  # fmt: skip


def names(items: list[dict[str, Any]]) -> list[str]:
    return [item["name"] for item in items]


def test_a_list_embeds_each_rows_related_rows(client: Any) -> None:
    ids = world()
    page = client.get("/api/teachers?include=students", headers={"X-School": str(ids["one"])})
    assert page.status_code == 200, page.json
    by_name = {item["name"]: item for item in page.json["items"]}
    assert names(by_name["Ada"]["students"]) == ["Cy", "Di"]
    assert by_name["Bea"]["students"] == []
    assert "school" not in by_name["Ada"]
    student = by_name["Ada"]["students"][0]
    assert set(student) == {"id", "teacher_id", "school_id", "name", "age"}


def test_an_item_embeds_nested_levels_and_a_to_one(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"])}
    body = client.get(f"/api/teachers/{ids['ada']}?include=students.grades,school", headers=h).json
    assert body["school"] == {"id": ids["one"], "name": "One"}
    assert [s["name"] for s in body["students"]] == ["Cy", "Di"]
    assert [x["subject"] for x in body["students"][0]["grades"]] == ["art", "math"]
    assert body["students"][1]["grades"] == []
    repeated = client.get(
        f"/api/teachers/{ids['ada']}?include=students.grades&include=school", headers=h
    ).json
    assert repeated == body


def test_rows_another_tenant_parent_or_visible_hides_never_appear(client: Any) -> None:
    ids = world()
    # Fy is Eve's (the other school's); Di is hidden by visible; Cy's grades only hers.
    h = {"X-School": str(ids["one"]), "X-Hide": "Di"}
    page = client.get("/api/teachers?include=students.grades", headers=h).json
    students = [s for t in page["items"] for s in t["students"]]
    assert names(students) == ["Cy"]
    assert {x["student_id"] for s in students for x in s["grades"]} == {ids["cy"]}
    # A to-one back up the chain.
    alone = client.get(
        f"/api/teachers/{ids['ada']}/students/{ids['cy']}?include=teacher",
        headers={"X-School": str(ids["one"])},
    ).json
    assert alone["teacher"]["name"] == "Ada"


def test_a_to_one_the_related_policy_hides_is_null(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"])}
    url = f"/api/teachers/{ids['ada']}?include=school"
    assert client.get(url, headers=h).json["school"] == {"id": ids["one"], "name": "One"}
    hiding = {**h, "X-Hide": "One"}  # Schools' visible hides the school named One
    assert client.get(f"/api/schools/{ids['one']}", headers=hiding).status_code == 404
    assert client.get(url, headers=hiding).json["school"] is None
    page = client.get("/api/teachers?include=school", headers=hiding).json
    assert [t["school"] for t in page["items"]] == [None, None]


def test_unknown_or_not_allowed_paths_are_400s_naming_them(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"])}
    for url in (
        "/api/teachers?include=pupils",
        f"/api/teachers/{ids['ada']}?include=pupils",
        "/api/teachers?include=students.teacher",
        "/api/teachers?include=",
    ):
        answer = client.get(url, headers=h)
        assert answer.status_code == 400, url
        assert answer.mimetype == "application/problem+json"
        assert "include" in answer.json["errors"]
    bad = client.get("/api/teachers?include=pupils,students", headers=h).json
    assert "pupils" in str(bad["errors"]["include"])
    # Grades declares no include_fields: ?include= is an unknown parameter, as before.
    refused = client.get(
        f"/api/teachers/{ids['ada']}/students/{ids['cy']}/grades?include=student", headers=h
    )
    assert refused.status_code == 400
    assert "include" in refused.json["errors"]


def test_sparse_fields_pick_fields_of_included_rows(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"])}
    page = client.get(
        "/api/teachers?include=students.grades&fields=id,name,students.name,students.grades.score",
        headers=h,
    ).json
    ada = next(item for item in page["items"] if item["name"] == "Ada")
    assert set(ada) == {"id", "name", "students"}
    assert ada["students"][0] == {"name": "Cy", "grades": [{"score": 3}, {"score": 5}]}
    only_related = client.get(
        f"/api/teachers/{ids['ada']}?include=students&fields=students.id", headers=h
    ).json
    assert "email" in only_related  # no own names: every field of the teacher
    assert only_related["students"] == [{"id": ids["cy"]}, {"id": ids["di"]}]
    for url in (
        "/api/teachers?fields=id,students.name",  # students not included
        "/api/teachers?include=students&fields=id,students.nope",
        f"/api/teachers/{ids['ada']}?include=students&fields=students.nope",
        f"/api/teachers/{ids['ada']}?fields=school.name",
    ):
        answer = client.get(url, headers=h)
        assert answer.status_code == 400, url
        assert "fields" in answer.json["errors"], url


def test_one_statement_per_level_whatever_the_page_size(client: Any, app: Flask) -> None:
    with app.app_context():
        school = School(name="Big")
        seed(school)
        teachers = [Teacher(name=f"T{n:02}", school_id=school.id) for n in range(20)]
        seed(*teachers)
        students = [Student(name=f"S{n:02}", teacher_id=t.id) for n, t in enumerate(teachers)]
        seed(*students)
        seed(*(Grade(student_id=s.id, subject="art", score=1) for s in students))
        school_id = school.id
    h = {"X-School": str(school_id)}

    def counted(url: str, headers: dict[str, str] = h) -> tuple[int, Any]:
        seen: list[str] = []

        def record(*args: Any) -> None:
            seen.append(args[2])

        with app.app_context():
            bind = db.engine
        event.listen(bind, "before_cursor_execute", record)
        try:
            answer = client.get(url, headers=headers)
        finally:
            event.remove(bind, "before_cursor_execute", record)
        assert answer.status_code == 200, answer.json
        return len(seen), answer.json

    plain_1, _ = counted("/api/teachers?limit=1")
    plain_20, _ = counted("/api/teachers?limit=20")
    one_1, page_1 = counted("/api/teachers?limit=1&include=students")
    one_20, page_20 = counted("/api/teachers?limit=20&include=students")
    two_1, _ = counted("/api/teachers?limit=1&include=students.grades,school")
    two_20, deep = counted("/api/teachers?limit=20&include=students.grades,school")
    assert plain_1 == plain_20
    assert one_1 == one_20 == plain_1 + 1
    assert two_1 == two_20 == plain_1 + 3
    assert [len(t["students"]) for t in page_20["items"]] == [1] * 20
    assert all(len(s["grades"]) == 1 for t in deep["items"] for s in t["students"])
    cursor_1, _ = counted("/api/cursor_teachers?limit=1&include=students")
    cursor_20, _ = counted("/api/cursor_teachers?limit=20&include=students")
    assert cursor_1 == cursor_20
    empty, body = counted("/api/teachers?limit=20&include=students", {"X-School": "999"})
    assert body["items"] == []
    assert empty == plain_1  # no include statement for an empty page
    assert page_1["items"][0]["students"][0]["name"] == "S00"


def test_cursor_pages_keep_the_include_and_the_policy(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"]), "X-Hide": "Di"}
    url = "/api/cursor_teachers?limit=1&include=students"
    seen: dict[str, list[str]] = {}
    next_url = url
    for _ in range(5):
        body = client.get(next_url, headers=h).json
        seen |= {t["name"]: names(t["students"]) for t in body["items"]}
        if body["next"] is None:
            break
        next_url = f"{url}&cursor={body['next']}"
    assert seen == {"Ada": ["Cy"], "Bea": []}


def test_an_included_rows_change_changes_the_etag(client: Any) -> None:
    ids = world()
    h = {"X-School": str(ids["one"])}
    url = f"/api/teachers/{ids['ada']}?include=students"
    first = client.get(url, headers=h)
    plain = client.get(f"/api/teachers/{ids['ada']}", headers=h)
    assert first.headers["ETag"] != plain.headers["ETag"]
    again = client.get(url, headers={**h, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    # Through the requests' own session: its commit also ends the snapshot a MariaDB
    # (REPEATABLE READ) transaction would read the old row from.
    db.session.execute(Student.__table__.update().where(Student.id == ids["di"]).values(name="Dee"))
    db.session.commit()
    changed = client.get(url, headers={**h, "If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200
    assert names(changed.json["students"]) == ["Cy", "Dee"]
    # Hiding a student changes the body (and the ETag): no 304 for a stale version.
    hiding = client.get(
        url, headers={**h, "X-Hide": "Dee", "If-None-Match": changed.headers["ETag"]}
    )
    assert hiding.status_code == 200
    assert names(hiding.json["students"]) == ["Cy"]


def test_paths_the_policy_cannot_apply_to_are_refused_at_registration() -> None:
    class Orphans(ModelResource):
        name = "orphans"
        model = Teacher
        schema = TeacherSchema
        include_fields = ["students"]

    app = Flask(__name__)
    router = Router(url_prefix="/api")
    router.register(Orphans)
    with pytest.raises(ImproperlyConfigured, match="no registered resource serves Student"):
        router.init_app(app)

    class Misspelled(ModelResource):
        name = "misspelled"
        model = Teacher
        schema = TeacherSchema
        include_fields = ["pupils"]

    with pytest.raises(ImproperlyConfigured, match="'pupils' is not a relationship of Teacher"):
        Router(url_prefix="/api").register(Misspelled)

    class Clashing(ModelResource):
        name = "clashing"
        model = Teacher
        schema = type(
            "WithStudents",
            (TeacherSchema,),
            {"students": ma.fields.List(ma.fields.Integer(), dump_only=True)},
        )
        include_fields = ["students"]

    router = Router(url_prefix="/api")
    router.register(Clashing)
    router.register(Students, parent=Clashing)
    with pytest.raises(ImproperlyConfigured, match="already has a field 'students'"):
        router.init_app(Flask(__name__))


def test_included_rows_match_the_related_routes(client: Any) -> None:
    """Every included student is one the students route answers 200 for, and every
    student that route answers is included under its teacher."""
    ids = world()
    for school in ("one", "two"):
        for hide in ("", "Di", "Ada", "Cy,Eve"):
            h = {"X-School": str(ids[school]), "X-Hide": hide}
            page = client.get("/api/teachers?include=students&limit=100", headers=h).json
            for teacher in page["items"]:
                listed = client.get(f"/api/teachers/{teacher['id']}/students", headers=h).json
                assert teacher["students"] == listed["items"]


class CachedTeachers(Teachers):
    """Cached, naming no dependency: the included students' resource is one anyway."""

    name = "cached_teachers"
    cache = ResponseCache(per_caller=True)

    def get_current_user(self) -> Any:
        return request.headers.get("X-User", "ada")


class SharedCacheTeachers(CachedTeachers):
    name = "shared_teachers"
    cache = ResponseCache(per_caller=False)


class CachedStudents(Students):
    name = "cached_students"

    def get_current_user(self) -> Any:
        return request.headers.get("X-User", "ada")


def test_a_cached_answer_with_included_rows_is_stale_after_their_write(app: Flask) -> None:
    def register_cached(router: Router) -> None:
        register(router)
        router.register(CachedTeachers)
        router.register(SharedCacheTeachers)
        router.register(CachedStudents, parent=CachedTeachers)

    made = make_app(register_cached, RESOURCES_KIT_CACHE_IN_PROCESS=True)
    Guards(made)
    with running(made) as client:
        ids = world()
        h = {"X-School": str(ids["one"])}
        url = f"/api/cached_teachers/{ids['bea']}?include=students"
        assert client.get(url, headers=h).json["students"] == []
        assert client.get(url, headers=h).headers["Cache-Status"].endswith("hit")
        made_student = client.post(
            f"/api/cached_teachers/{ids['bea']}/cached_students", json={"name": "Gus"}, headers=h
        )
        assert made_student.status_code == 201, made_student.json
        fresh = client.get(url, headers=h)
        assert fresh.headers["Cache-Status"].endswith("stored")
        assert names(fresh.json["students"]) == ["Gus"]
        # Kept per caller: another caller's visible hides another set of students.
        assert names(client.get(url, headers={**h, "X-Hide": "Gus"}).json["students"]) == []
        # An answer shared between callers is never kept with included rows.
        shared = f"/api/shared_teachers/{ids['ada']}?include=students"
        client.get(shared, headers=h)
        again = client.get(shared, headers={**h, "X-Hide": "Cy"})
        assert "hit" not in again.headers.get("Cache-Status", "")
        assert names(again.json["students"]) == ["Di"]
        # The parameter's name percent-encoded is the same include: a write to the
        # included rows makes its answer stale too.
        bea = f"/api/cached_teachers/{ids['bea']}"
        encoded = "%69nclude=students"
        assert names(client.get(bea, query_string=encoded, headers=h).json["students"]) == ["Gus"]
        assert (
            client.get(bea, query_string=encoded, headers=h).headers["Cache-Status"].endswith("hit")
        )
        client.post(f"{bea}/cached_students", json={"name": "Hal"}, headers=h)
        again_encoded = client.get(bea, query_string=encoded, headers=h)
        assert names(again_encoded.json["students"]) == ["Gus", "Hal"]
        plain = f"/api/shared_teachers/{ids['ada']}"
        client.get(plain, headers=h)
        assert client.get(plain, headers=h).headers["Cache-Status"].endswith("hit")


def test_the_openapi_document_lists_the_paths_and_types_the_embedded_rows(client: Any) -> None:
    from openapi_schema_validator import OAS30Validator
    from openapi_spec_validator import validate
    from referencing import Registry
    from referencing import Resource as Document

    ids = world()
    document = client.get("/api/openapi.json").json
    validate(document)
    listing = document["paths"]["/api/teachers"]["get"]
    reading = document["paths"]["/api/teachers/{teacher_id}"]["get"]
    for operation in (listing, reading):
        parameters = {p["name"]: p for p in operation["parameters"]}
        include = parameters["include"]["schema"]
        assert include["items"]["enum"] == ["school", "students", "students.grades"]
        assert {"students.name", "students.grades.score", "school.name"} <= set(
            parameters["fields"]["schema"]["items"]["enum"]
        )
    # Grades has no include_fields: no parameter.
    grades = document["paths"]["/api/teachers/{teacher_id}/students/{student_id}/grades"]["get"]
    assert "include" not in {p["name"] for p in grades["parameters"]}

    registry = Registry().with_resource("urn:doc", Document.opaque(document))

    def check(schema: dict[str, Any], body: Any) -> None:
        wrapped = {**schema, "components": document["components"]}
        OAS30Validator(wrapped, registry=registry).validate(body)

    page_schema = listing["responses"]["200"]["content"]["application/json"]["schema"]
    item_schema = reading["responses"]["200"]["content"]["application/json"]["schema"]
    h = {"X-School": str(ids["one"])}
    for url, schema in (
        ("/api/teachers?include=students.grades,school", page_schema),
        ("/api/teachers?include=students&fields=id,students.name", page_schema),
        (f"/api/teachers/{ids['ada']}?include=students.grades,school", item_schema),
        (f"/api/teachers/{ids['ada']}?fields=name&include=school", item_schema),
    ):
        answer = client.get(url, headers=h)
        assert answer.status_code == 200, url
        check(schema, answer.json)
    # The documented shapes are exact: a stray property in an included row is refused.
    body = client.get(f"/api/teachers/{ids['ada']}?include=students", headers=h).json
    body["students"][0]["stray"] = 1
    with pytest.raises(Exception, match="stray"):
        check(item_schema, body)


class NameOnly(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()


class Pupils(ListMixin, Resource):
    """Students at the top level, scoped through their teacher, with a short schema."""

    name = "pupils"
    model = Student
    schema = NameOnly
    permissions = [HideStudents]

    def get_query(self) -> Any:
        school = select(Teacher.id).where(Teacher.school_id == g.get("school_id"))
        return super().get_query().where(Student.teacher_id.in_(school))


class TeachersWithPupils(Teachers):
    name = "teachers_with_pupils"
    include_fields = {"students": Pupils}


def test_include_fields_may_name_the_resource_of_a_path(app: Flask) -> None:
    def register_mapped(router: Router) -> None:
        register(router)
        router.register(Pupils)
        router.register(TeachersWithPupils)

    made = make_app(register_mapped)
    with running(made) as client:
        ids = world()
        h = {"X-School": str(ids["one"]), "X-Hide": "Di"}
        body = client.get(f"/api/teachers_with_pupils/{ids['ada']}?include=students", headers=h)
        assert body.json["students"] == [{"id": ids["cy"], "name": "Cy"}]
        # Writes take no ?include=.
        refused = client.post(
            "/api/teachers_with_pupils?include=students", json={"name": "Zed"}, headers=h
        )
        assert refused.status_code == 400

    class Wrong(Teachers):
        name = "wrong"
        include_fields = {"students": Grades}

    router = Router(url_prefix="/api")
    register(router)
    router.register(Wrong)
    with pytest.raises(ImproperlyConfigured, match="not a registered resource of Student"):
        router.init_app(Flask(__name__))
