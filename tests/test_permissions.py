"""Permissions: per action and per row, composed, failing closed, checked at every level.

Roles (``X-User: <role>[:<teacher id>]``, in the school of ``X-School``): an admin does
everything; a teacher reads every teacher, sees and changes only their own students (not
adults) and their grades (not final ones, and deletes none); an auditor only reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources_kit import (
    ImproperlyConfigured,
    ModelResource,
    Permission,
    ReadOnly,
    Router,
    action,
)

from .conftest import make_app, running, seed, seed_two_schools
from .models import Grade, GradeSchema, ScopedTeacherResource, Student, StudentSchema
from .test_errors import assert_problem, snapshot


@dataclass(frozen=True)
class User:
    role: str
    teacher_id: int | None = None


def user_from_header() -> User | None:
    raw = request.headers.get("X-User")
    if not raw:
        return None
    role, _, teacher = raw.partition(":")
    return User(role, int(teacher) if teacher else None)


class Role(Permission):
    requires_authentication = True
    roles: tuple[str, ...] = ()

    def has_permission(self, view: Any) -> bool:
        user = view.current_user()
        return user is not None and user.role in self.roles


class Admin(Role):
    roles = ("admin",)


class Auditor(Role):
    roles = ("auditor",)


class Teacher(Role):
    roles = ("teacher",)


class OwnStudents(Teacher):
    message = "Only your own students, and adults only by an admin."

    def visible(self, view: Any) -> Any:
        return Student.teacher_id == view.current_user().teacher_id

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return obj.teacher_id == view.current_user().teacher_id and (obj.age or 0) < 18


class OwnGrades(Teacher):
    message = "Final grades, and deleting, are for an admin."

    def has_permission(self, view: Any) -> bool:
        return super().has_permission(view) and view.action != "destroy"

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return obj.score < 100


class FromHeader:
    def get_current_user(self) -> Any:
        return user_from_header()


class Teachers(FromHeader, ScopedTeacherResource):
    permissions = [Admin | (Teacher & ReadOnly) | (Auditor & ReadOnly)]


class Students(FromHeader, ModelResource):
    name, model, schema = "students", Student, StudentSchema
    permissions = [Admin | OwnStudents | (Auditor & ReadOnly)]

    @action(detail=True)
    def promote(self, obj: Student) -> Any:
        obj.age = (obj.age or 0) + 1
        return self.serialize(obj)


class Grades(FromHeader, ModelResource):
    name, model, schema = "grades", Grade, GradeSchema
    permissions = [Admin | OwnGrades | (Auditor & ReadOnly)]

    @action(detail=True)
    def curve(self, obj: Grade) -> Any:
        obj.score += 1
        return self.serialize(obj)


def register(router: Router) -> None:
    router.register(Teachers)
    router.register(Students, parent=Teachers)
    router.register(Grades, parent=Students)


@pytest.fixture
def tc(app: Flask, database: Any) -> Iterator[Any]:
    with running(make_app(register)) as client:
        yield client


@pytest.fixture
def rows(tc: Any) -> dict[str, int]:
    """School one: Ada (teacher) with Cy (minor) and Al (adult); Eve (teacher) with Fy.
    Grades: Cy's math (open) and art (final 100); Fy's math."""
    ids = seed_two_schools()
    from .models import Teacher as TeacherRow

    eve = TeacherRow(name="Eve", school_id=ids["one"])
    seed(eve)
    al = Student(name="Al", teacher_id=ids["ada"], age=19)
    fy = Student(name="Fy", teacher_id=eve.id, age=9)
    seed(al, fy)
    math, art = (
        Grade(student_id=ids["cy"], subject="math", score=50),
        Grade(student_id=ids["cy"], subject="art", score=100),
    )
    fy_math = Grade(student_id=fy.id, subject="math", score=70)
    seed(math, art, fy_math)
    return ids | {
        "eve": eve.id,
        "al": al.id,
        "fy": fy.id,
        "math": math.id,
        "art": art.id,
        "fy_math": fy_math.id,
    }


def as_user(user: str | None, school: int) -> dict[str, str]:
    headers = {"X-School": str(school)}
    if user is not None:
        headers["X-User"] = user
    return headers


def students(rows: dict[str, int], teacher: str = "ada") -> str:
    return f"/api/teachers/{rows[teacher]}/students"


def grades(rows: dict[str, int], teacher: str = "ada", student: str = "cy") -> str:
    return f"{students(rows, teacher)}/{rows[student]}/grades"


def requests_at(rows: dict[str, int], depth: int, item: str) -> list[tuple[str, str, Any]]:
    """Every action at ``depth`` (1: students, 2: grades) on ``item``."""
    if depth == 1:
        base, body, replace = students(rows), {"name": "Zed", "age": 5}, {"name": "Yu", "age": 6}
        extra = [("post", f"{base}/{rows[item]}/promote", None)]
    else:
        base, body, replace = (
            grades(rows),
            {"subject": "bio", "score": 10},
            {"subject": "chem", "score": 9},
        )
        extra = []
    return [
        ("get", base, None),
        ("post", base, body),
        ("get", f"{base}/{rows[item]}", None),
        ("put", f"{base}/{rows[item]}", replace),
        ("patch", f"{base}/{rows[item]}", {"name": "Zed"} if depth == 1 else {"score": 11}),
        ("delete", f"{base}/{rows[item]}", None),
        *extra,
    ]


def call(tc: Any, method: str, path: str, body: Any, headers: dict[str, str]) -> Any:
    return getattr(tc, method)(path, json=body, headers=headers)


@pytest.mark.parametrize(("depth", "item"), [(1, "cy"), (2, "math")])
def test_no_credentials_is_401_with_a_challenge(
    tc: Any, rows: dict[str, int], depth: int, item: str
) -> None:
    before = snapshot()
    for method, path, body in requests_at(rows, depth, item):
        response = call(tc, method, path, body, as_user(None, rows["one"]))
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"] == "Bearer", (method, path)
    assert snapshot() == before


@pytest.mark.parametrize(("depth", "item"), [(1, "cy"), (2, "math")])
def test_forbidden_action_is_403(tc: Any, rows: dict[str, int], depth: int, item: str) -> None:
    before = snapshot()
    auditor = as_user("auditor", rows["one"])
    for method, path, body in requests_at(rows, depth, item):
        response = call(tc, method, path, body, auditor)
        expected = 200 if method == "get" else 403
        assert response.status_code == expected, (method, path, response.json)
    teacher = as_user(f"teacher:{rows['ada']}", rows["one"])
    assert_problem(tc.delete(f"{grades(rows)}/{rows['math']}", headers=teacher), 403)
    assert snapshot() == before


@pytest.mark.parametrize(("depth", "item"), [(1, "fy"), (2, "fy_math")])
def test_invisible_object_and_everything_under_it_is_404(
    tc: Any, rows: dict[str, int], depth: int, item: str
) -> None:
    """Ada may not see Eve's students: Fy is a 404, and so is every grade under Fy."""
    before = snapshot()
    ada = as_user(f"teacher:{rows['ada']}", rows["one"])
    if depth == 1:
        targets = [
            (m, p.replace(students(rows), students(rows, "eve")), b)
            for m, p, b in requests_at(rows, 1, item)
            if p != students(rows)  # the collection itself is Eve's, which Ada can read
        ]
    else:
        base = grades(rows, "eve", "fy")
        body = {"subject": "bio", "score": 10}
        targets = [
            ("get", base, None),
            ("post", base, body),
            ("get", f"{base}/{rows[item]}", None),
            ("put", f"{base}/{rows[item]}", body),
            ("patch", f"{base}/{rows[item]}", {"score": 1}),
            ("post", f"{base}/{rows[item]}/curve", None),
        ]
    for method, path, body in targets:
        assert_problem(call(tc, method, path, body, ada), 404)
    if depth == 2:
        # A teacher may never delete a grade: the action is refused (403) before any row
        # is looked up, the same answer for every URL, so it tells nothing about Fy.
        assert_problem(tc.delete(f"{grades(rows, 'eve', 'fy')}/{rows[item]}", headers=ada), 403)
    assert snapshot() == before


@pytest.mark.parametrize(("depth", "item"), [(1, "al"), (2, "art")])
def test_visible_but_unchangeable_object_is_403(
    tc: Any, rows: dict[str, int], depth: int, item: str
) -> None:
    """Ada sees her adult student Al and Cy's final art grade, but may not change them."""
    before = snapshot()
    ada = as_user(f"teacher:{rows['ada']}", rows["one"])
    requests = [
        (m, p, b)
        for m, p, b in requests_at(rows, depth, item)
        if p.rstrip("/").split("/")[-1] in (str(rows[item]), "promote", "curve") and m != "get"
    ]
    assert requests
    for method, path, body in requests:
        expected = 403
        assert_problem(call(tc, method, path, body, ada), expected)
    item_url = requests[0][1].removesuffix("/promote").removesuffix("/curve")
    assert tc.get(item_url, headers=ada).status_code == 200  # visible, yet unchangeable
    assert snapshot() == before


def test_created_row_must_be_one_the_caller_may_change(tc: Any, rows: dict[str, int]) -> None:
    before = snapshot()
    ada = as_user(f"teacher:{rows['ada']}", rows["one"])
    assert_problem(tc.post(students(rows, "eve"), json={"name": "X"}, headers=ada), 403)
    assert_problem(tc.post(students(rows), json={"name": "X", "age": 30}, headers=ada), 403)
    assert snapshot() == before
    assert tc.post(students(rows), json={"name": "Kid", "age": 7}, headers=ada).status_code == 201


def test_admin_does_everything_in_the_school(tc: Any, rows: dict[str, int]) -> None:
    admin = as_user("admin", rows["one"])
    for depth, item in ((1, "al"), (2, "art")):
        for method, path, body in requests_at(rows, depth, item):
            if method == "delete" or path.endswith(("promote", "curve")):
                continue
            response = call(tc, method, path, body, admin)
            assert response.status_code in (200, 201), (method, path, response.json)
    assert tc.delete(f"{grades(rows)}/{rows['art']}", headers=admin).status_code == 204
    other_school = as_user("admin", rows["two"])
    assert_problem(tc.get(f"{students(rows)}/{rows['cy']}", headers=other_school), 404)


USERS = st.sampled_from(["admin", "auditor", "teacher:ada", "teacher:eve", None])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(user=USERS, teacher=st.sampled_from(["ada", "eve"]))
def test_property_list_and_item_agree_and_nothing_excluded_is_shown(
    tc: Any, rows: dict[str, int], user: str | None, teacher: str
) -> None:
    if user is not None and user.startswith("teacher:"):
        user = f"teacher:{rows[user.split(':')[1]]}"
    headers = as_user(user, rows["one"])
    listed = tc.get(students(rows, teacher), headers=headers)
    if user is None:
        assert listed.status_code == 401
        return
    shown = {item["id"] for item in listed.json["items"]}
    role = user.split(":")[0]
    for name in ("cy", "al", "fy"):
        student = tc.get(f"{students(rows, teacher)}/{rows[name]}", headers=headers)
        owner = "eve" if name == "fy" else "ada"
        allowed = owner == teacher and (role != "teacher" or user == f"teacher:{rows[owner]}")
        assert (rows[name] in shown) == allowed, (user, teacher, name)
        assert student.status_code == (200 if allowed else 404), (user, teacher, name)


def test_openapi_documents_security_and_refusals(tc: Any, rows: dict[str, int]) -> None:
    paths = tc.get("/api/openapi.json").json["paths"]
    operation = paths["/api/teachers/{teacher_id}/students/{student_id}"]["patch"]
    assert {"401", "403", "404"} <= set(operation["responses"])


def test_permissions_must_be_permissions() -> None:
    class Wrong(Teachers):
        name = "wrong"
        permissions = ["admin"]

    with pytest.raises(ImproperlyConfigured, match="Permission"):
        Router().register(Wrong)


def test_get_current_user_is_called_once_per_request_at_any_depth(database: Any) -> None:
    """docs/permissions.rst: at most once per request, though IsAuthenticated guards every
    level of a depth-2 list and the child's own hook asks for the caller again."""
    from resources_kit import IsAuthenticated

    calls: list[str] = []

    class Counting:
        def get_current_user(self) -> Any:
            calls.append(request.path)
            return user_from_header()

    class CountedTeachers(Counting, ScopedTeacherResource):
        permissions = [IsAuthenticated]

    class CountedStudents(Counting, ModelResource):
        name, model, schema = "students", Student, StudentSchema
        permissions = [IsAuthenticated]

    class CountedGrades(Counting, ModelResource):
        name, model, schema = "grades", Grade, GradeSchema
        permissions = [IsAuthenticated]

        def get_list_query(self, args: Any) -> Any:
            assert self.current_user() is not None  # a hook asking again
            return super().get_list_query(args)

    def counted(router: Router) -> None:
        router.register(CountedTeachers)
        router.register(CountedStudents, parent=CountedTeachers)
        router.register(CountedGrades, parent=CountedStudents)

    with running(make_app(counted)) as client:
        ids = seed_two_schools()
        headers = {"X-School": str(ids["one"]), "X-User": "admin"}
        url = f"/api/teachers/{ids['ada']}/students/{ids['cy']}/grades"
        assert client.get(url, headers=headers).status_code == 200
        assert calls == [url]
        calls.clear()
        assert client.get(url, headers={"X-School": str(ids["one"])}).status_code == 401
        assert calls == [url]
