"""The guarded query: overrides of get_object() and of the list steps, built on
get_scoped_query() (or, by mistake, on the unscoped get_query()), never reach another
tenant's row or a row under another parent, at depth 1 and 3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Select, select
from sqlalchemy.exc import StatementError

from resources_kit import ModelResource, Router

from .conftest import make_app, running, seed
from .models import (
    Grade,
    GradeResource,
    School,
    ScopedStudentResource,
    ScopedTeacherResource,
    Student,
    Teacher,
    db,
)
from .test_errors import snapshot


def by_id_on_scoped(view: Any, model: Any) -> Any:
    """A get_object() override written the recommended way."""
    query = view.get_scoped_query().where(model.id == view.url_kwargs[view.options.url_variable])
    return view.get_session().execute(query).scalar_one_or_none()


def by_id_on_unscoped(view: Any, model: Any) -> Any:
    """The natural mistake: built on get_query(), which is the unscoped base."""
    query = view.get_query().where(model.id == view.url_kwargs[view.options.url_variable])
    return view.get_session().execute(query).scalar_one_or_none()


def resources(lookup: Any) -> list[tuple[type[Any], type[Any] | None]]:
    class Teachers(ScopedTeacherResource):
        def get_object(self) -> Any:
            return lookup(self, Teacher)

        def get_list_query(self, args: Any) -> Select[Any]:
            base = self.get_scoped_query() if lookup is by_id_on_scoped else self.get_query()
            return base.where(Teacher.name != "Nobody")

    class Students(ScopedStudentResource):
        def get_object(self) -> Any:
            return lookup(self, Student)

    class Grades(GradeResource):
        def get_object(self) -> Any:
            return lookup(self, Grade)

        def get_list_query(self, args: Any) -> Select[Any]:
            return self.get_scoped_query() if lookup is by_id_on_scoped else select(Grade)

    return [(Teachers, None), (Students, Teachers), (Grades, Students)]


@pytest.fixture(params=[by_id_on_scoped, by_id_on_unscoped], ids=["scoped", "unscoped"])
def tc(request: pytest.FixtureRequest, app: Flask, database: Any) -> Iterator[Any]:
    def register(router: Router) -> None:
        for resource, parent in resources(request.param):
            router.register(resource, parent=parent)

    with running(make_app(register)) as client:
        yield client


@pytest.fixture
def rows(tc: Any) -> dict[str, int]:
    one, two = School(name="One"), School(name="Two")
    seed(one, two)
    ada = Teacher(name="Ada", school_id=one.id)
    bob = Teacher(name="Bob", school_id=two.id)
    seed(ada, bob)
    cy, eve = Student(name="Cy", teacher_id=ada.id), Student(name="Eve", teacher_id=ada.id)
    di = Student(name="Di", teacher_id=bob.id)
    seed(cy, eve, di)
    g1, g2, g3 = (
        Grade(student_id=cy.id, subject="math", score=1),
        Grade(student_id=di.id, subject="math", score=2),
        Grade(student_id=eve.id, subject="math", score=3),
    )
    seed(g1, g2, g3)
    ids = {"ada": ada.id, "bob": bob.id, "cy": cy.id, "eve": eve.id, "di": di.id}
    return ids | {"one": one.id, "two": two.id, "g1": g1.id, "g2": g2.id, "g3": g3.id}


def school(n: int) -> dict[str, str]:
    return {"X-School": str(n)}


def test_depth_1_item_of_another_tenant_is_404_for_every_verb(
    tc: Any, rows: dict[str, int]
) -> None:
    before = snapshot()
    path = f"/api/teachers/{rows['bob']}"
    assert tc.get(path, headers=school(rows["one"])).status_code == 404
    assert tc.patch(path, json={"name": "X"}, headers=school(rows["one"])).status_code == 404
    assert tc.delete(path, headers=school(rows["one"])).status_code == 404
    assert snapshot() == before
    assert tc.get(path, headers=school(rows["two"])).json["name"] == "Bob"


def test_depth_1_list_override_sees_only_the_tenant(tc: Any, rows: dict[str, int]) -> None:
    page = tc.get("/api/teachers", headers=school(rows["one"])).json
    assert [item["name"] for item in page["items"]] == ["Ada"]
    assert page["total"] == 1


@pytest.mark.parametrize(
    ("teacher", "student", "grade", "tenant"),
    [
        ("ada", "cy", "g2", "one"),  # grade of another teacher's student
        ("ada", "eve", "g1", "one"),  # grade of a sibling student
        ("ada", "cy", "g1", "two"),  # right chain, another tenant
        ("bob", "cy", "g1", "one"),  # student under another teacher
    ],
)
def test_depth_3_item_outside_the_chain_is_404(
    tc: Any, rows: dict[str, int], teacher: str, student: str, grade: str, tenant: str
) -> None:
    before = snapshot()
    path = f"/api/teachers/{rows[teacher]}/students/{rows[student]}/grades/{rows[grade]}"
    headers = school(rows[tenant])
    assert tc.get(path, headers=headers).status_code == 404
    assert tc.patch(path, json={"score": 9}, headers=headers).status_code == 404
    assert tc.delete(path, headers=headers).status_code == 404
    assert snapshot() == before


def test_depth_3_the_right_chain_answers(tc: Any, rows: dict[str, int]) -> None:
    base = f"/api/teachers/{rows['ada']}/students/{rows['cy']}/grades"
    headers = school(rows["one"])
    assert tc.get(f"{base}/{rows['g1']}", headers=headers).json["score"] == 1
    page = tc.get(base, headers=headers).json
    assert [item["id"] for item in page["items"]] == [rows["g1"]]
    assert tc.get(base, headers=school(rows["two"])).status_code == 404


def test_scoped_query_outside_its_request_fails_instead_of_running_unscoped(
    app: Flask, database: Any
) -> None:
    kept: list[Select[Any]] = []

    class Keeping(ScopedTeacherResource):
        name = "keeping"

        def get_list_query(self, args: Any) -> Select[Any]:
            kept.append(self.get_scoped_query())
            return kept[-1]

    with running(make_app(lambda router: router.register(Keeping))) as client:
        assert client.get("/api/keeping", headers={"X-School": "1"}).status_code == 200
        with pytest.raises(StatementError, match="inside the request"):
            db.session.execute(kept[0]).all()


def test_guard_methods_cannot_be_overridden() -> None:
    from resources_kit import ImproperlyConfigured

    for guard in ("get_scoped_query", "check_object", "save", "get_server_values"):
        with pytest.raises(ImproperlyConfigured, match=guard):
            type("Widening", (ModelResource,), {guard: lambda self, *a: None})


class TeacherByEmail(ScopedTeacherResource):
    """A parent looked up by a field other than the key its children refer to."""

    name = "by-email"
    lookup_field = "email"


class StudentOfTeacherByEmail(ScopedStudentResource):
    name = "students"


@pytest.mark.parametrize("lookup", ["id", "email"])
def test_the_parent_chain_holds_whichever_field_names_the_parent(
    database: Any, lookup: str
) -> None:
    """The parent in the URL by its key (the child compares its foreign key with the
    URL's value, and an ``EXISTS`` asks for the parent inside its policy) or by another
    field (a scalar subquery finds the key): the same answers, and neither reaches a
    parent of another tenant, a child of another parent, or writes under either."""

    def register(router: Router) -> None:
        router.register(ScopedTeacherResource)
        router.register(ScopedStudentResource, parent=ScopedTeacherResource)
        router.register(TeacherByEmail)
        router.register(StudentOfTeacherByEmail, parent=TeacherByEmail)

    with running(make_app(register)) as client:
        one, two = School(name="One"), School(name="Two")
        seed(one, two)
        ada = Teacher(name="Ada", school_id=one.id, email="ada@x.org")
        bob = Teacher(name="Bob", school_id=two.id, email="bob@x.org")
        seed(ada, bob)
        cy, di = Student(name="Cy", teacher_id=ada.id), Student(name="Di", teacher_id=bob.id)
        seed(cy, di)
        base = "/api/teachers" if lookup == "id" else "/api/by-email"
        a, b = (str(t.id) if lookup == "id" else str(t.email) for t in (ada, bob))
        first, second = school(one.id), school(two.id)

        listed = client.get(f"{base}/{a}/students", headers=first)
        assert [s["name"] for s in listed.json["items"]] == ["Cy"]
        assert client.get(f"{base}/{a}/students/{cy.id}", headers=first).json["name"] == "Cy"
        assert client.get(f"{base}/{b}/students/{cy.id}", headers=second).status_code == 404
        before = snapshot()
        for path, headers in (
            (f"{base}/{b}/students", first),  # another tenant's parent
            (f"{base}/{a}/students", second),  # this parent, as the other tenant
            (f"{base}/nobody/students", first),
        ):
            assert client.get(path, headers=headers).status_code == 404, path
            assert client.post(path, json={"name": "X"}, headers=headers).status_code == 404
        for path, headers in (
            (f"{base}/{a}/students/{di.id}", first),  # a child of another parent
            (f"{base}/{b}/students/{di.id}", first),  # the right parent, another tenant
        ):
            assert client.get(path, headers=headers).status_code == 404, path
            assert client.patch(path, json={"name": "X"}, headers=headers).status_code == 404
            assert client.delete(path, headers=headers).status_code == 404
        assert snapshot() == before
