"""@action: extra routes on the item or the collection, with the same guarantees as CRUD."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from resources_kit import Callback, ImproperlyConfigured, ModelResource, Router, action, signals

from .conftest import make_app, running, seed_two_schools
from .models import (
    Audit,
    ScopedStudentResource,
    ScopedTeacherResource,
    Student,
    Teacher,
    db,
)
from .test_errors import assert_problem, snapshot


class AuditAction(Callback):
    def execute(self) -> None:
        db.session.add(Audit(operation=self.operation, table="teachers", row_id=self.resource.id))


class RenameSchema(ma.Schema):
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1))


class CardSchema(ma.Schema):
    name = ma.fields.String(required=True)
    students = ma.fields.Integer(required=True)


class Teachers(ScopedTeacherResource):
    post_archive_callbacks = [AuditAction]

    @action(detail=True)
    def archive(self, obj: Teacher) -> Any:
        obj.region = "archived"
        return self.serialize(obj)

    @action(detail=True, methods=["POST"], schema=RenameSchema, status=204)
    def rename(self, obj: Teacher, data: dict[str, Any]) -> None:
        obj.name = data["name"]

    @action(detail=True, methods=["GET"], response=CardSchema)
    def card(self, obj: Teacher) -> Any:
        return {"name": obj.name, "students": len(obj.students), "school_id": obj.school_id}

    @action(detail=False, methods=["POST"], response=CardSchema, status=201, url_path="card")
    def new_card(self) -> Any:
        return None  # declares a body: a bug of the action, a 500

    @action(detail=True, url_path="archive-then-fail")
    def archive_then_fail(self, obj: Teacher) -> Any:
        obj.region = "archived"
        self.get_session().flush()
        raise RuntimeError("after the flush")

    @action(detail=False, methods=["GET"])
    def stats(self) -> Any:
        query = self.get_scoped_query().with_only_columns(func.count())
        return {"count": self.get_session().execute(query).scalar_one()}


class Students(ScopedStudentResource):
    @action(detail=True)
    def promote(self, obj: Student) -> Any:
        obj.age = (obj.age or 0) + 1
        return self.serialize(obj)


@pytest.fixture
def tc(app: Flask, database: Any) -> Iterator[Any]:
    def register(router: Router) -> None:
        router.register(Teachers)
        router.register(Students, parent=Teachers)

    with running(make_app(register, PROPAGATE_EXCEPTIONS=False)) as client:
        yield client


@pytest.fixture
def rows(tc: Any) -> dict[str, int]:
    return seed_two_schools()


def school(n: int) -> dict[str, str]:
    return {"X-School": str(n)}


def test_item_action_writes_runs_callbacks_and_signals(tc: Any, rows: dict[str, int]) -> None:
    seen: list[tuple[Any, str]] = []

    def receiver(sender: Any, resource: Any, kwargs: Any, operation: str) -> None:
        seen.append((resource.id, operation))

    with signals.action_performed.connected_to(receiver):
        response = tc.post(f"/api/teachers/{rows['ada']}/archive", headers=school(rows["one"]))
    assert response.status_code == 200
    assert response.json["region"] == "archived"
    assert db.session.get(Teacher, rows["ada"]).region == "archived"
    audits = db.session.execute(select(Audit.operation, Audit.row_id)).all()
    assert [tuple(a) for a in audits] == [("archive", rows["ada"])]
    assert seen == [(rows["ada"], "archive")]


def test_item_action_on_another_tenants_row_is_404_and_writes_nothing(
    tc: Any, rows: dict[str, int]
) -> None:
    before = snapshot()
    for path in ("archive", "rename"):
        response = tc.post(
            f"/api/teachers/{rows['bob']}/{path}", json={"name": "X"}, headers=school(rows["one"])
        )
        assert_problem(response, 404)
    assert snapshot() == before


def test_failing_action_leaves_the_database_unchanged(tc: Any, rows: dict[str, int]) -> None:
    before = snapshot()
    response = tc.post(
        f"/api/teachers/{rows['ada']}/archive-then-fail", headers=school(rows["one"])
    )
    body = assert_problem(response, 500)
    assert "flush" not in str(body)
    assert snapshot() == before


def test_action_body_is_validated(tc: Any, rows: dict[str, int]) -> None:
    path = f"/api/teachers/{rows['ada']}/rename"
    before = snapshot()
    problem = assert_problem(tc.post(path, json={"name": ""}, headers=school(rows["one"])), 422)
    assert "name" in problem["errors"]
    moved = tc.post(path, json={"name": "A", "school_id": 2}, headers=school(rows["one"]))
    assert_problem(moved, 422)
    assert_problem(tc.post(path, data="x", headers=school(rows["one"])), 415)
    assert snapshot() == before
    assert tc.post(path, json={"name": "Ann"}, headers=school(rows["one"])).status_code == 204
    assert db.session.get(Teacher, rows["ada"]).name == "Ann"


def test_collection_action_is_scoped_and_fails_closed(tc: Any, rows: dict[str, int]) -> None:
    assert_problem(tc.get("/api/teachers/stats"), 403)  # first: the test app keeps g
    assert tc.get("/api/teachers/stats", headers=school(rows["one"])).json == {"count": 1}
    assert_problem(tc.post("/api/teachers/stats", headers=school(rows["one"])), 405)


def test_nested_action_checks_every_level(tc: Any, rows: dict[str, int]) -> None:
    before = snapshot()
    for teacher, student, tenant in (
        ("ada", "di", "one"),  # a student of another teacher
        ("bob", "di", "one"),  # another tenant's chain
        ("ada", "cy", "two"),
    ):
        path = f"/api/teachers/{rows[teacher]}/students/{rows[student]}/promote"
        assert_problem(tc.post(path, headers=school(rows[tenant])), 404)
    assert snapshot() == before
    path = f"/api/teachers/{rows['ada']}/students/{rows['cy']}/promote"
    assert tc.post(path, headers=school(rows["one"])).json["age"] == 1


def test_actions_are_in_the_openapi_document(tc: Any, rows: dict[str, int]) -> None:
    paths = tc.get("/api/openapi.json").json["paths"]
    archive = paths["/api/teachers/{teacher_id}/archive"]["post"]
    assert archive["operationId"] == "teachers_archive"
    assert {"404", "409", "412"} <= set(archive["responses"])
    rename = paths["/api/teachers/{teacher_id}/rename"]["post"]
    assert "requestBody" in rename
    assert "422" in rename["responses"]
    assert "get" in paths["/api/teachers/stats"]
    assert "post" in paths["/api/teachers/{teacher_id}/students/{student_id}/promote"]


def test_response_schema_dumps_the_result_and_types_the_document(
    tc: Any, rows: dict[str, int]
) -> None:
    card = tc.get(f"/api/teachers/{rows['ada']}/card", headers=school(rows["one"]))
    assert card.status_code == 200
    assert card.json == {"name": "Ada", "students": 1}  # dumped: school_id is not in it
    assert_problem(tc.post("/api/teachers/card", headers=school(rows["one"])), 500)
    paths = tc.get("/api/openapi.json").json["paths"]
    documented = paths["/api/teachers/{teacher_id}/card"]["get"]["responses"]
    assert documented["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Card"
    }
    assert "204" not in documented
    assert "201" in paths["/api/teachers/card"]["post"]["responses"]
    rename = paths["/api/teachers/{teacher_id}/rename"]["post"]
    assert {s for s in rename["responses"] if int(s) < 300} == {"204"}
    archive = paths["/api/teachers/{teacher_id}/archive"]["post"]["responses"]
    assert {"200", "204"} <= set(archive)  # undeclared: either may come


def test_writing_item_actions_declare_and_honour_if_match(tc: Any, rows: dict[str, int]) -> None:
    paths = tc.get("/api/openapi.json").json["paths"]
    rename = paths["/api/teachers/{teacher_id}/rename"]["post"]
    assert [p["name"] for p in rename["parameters"]] == ["If-Match"]
    card = paths["/api/teachers/{teacher_id}/card"]["get"]
    assert card["parameters"] == []  # a read: nothing to match
    path = f"/api/teachers/{rows['ada']}/rename"
    stale = {**school(rows["one"]), "If-Match": '"not-the-etag"'}
    assert_problem(tc.post(path, json={"name": "X"}, headers=stale), 412)
    etag = tc.get(f"/api/teachers/{rows['ada']}", headers=school(rows["one"])).headers["ETag"]
    fresh = {**school(rows["one"]), "If-Match": etag}
    assert tc.post(path, json={"name": "X"}, headers=fresh).status_code == 204


def test_action_configuration_mistakes() -> None:
    def archive(self: Any, obj: Any) -> None:
        pass

    with pytest.raises(ImproperlyConfigured, match="one URL segment"):
        action(detail=True, url_path="a/b")(archive)
    with pytest.raises(ImproperlyConfigured, match="methods"):
        action(detail=True, methods=["BREW"])(archive)
    with pytest.raises(ImproperlyConfigured, match="status must be one of"):
        action(detail=True, status=418)(archive)
    with pytest.raises(ImproperlyConfigured, match="a 204 has no body"):
        action(detail=True, status=204, response=CardSchema)(archive)
    with pytest.raises(ImproperlyConfigured, match="marshmallow Schema"):
        action(detail=True, response=dict)(archive)

    class Clash(ModelResource):
        name, model = "clash", Teacher
        schema = Teachers.schema

        @action(detail=True)
        def list(self, obj: Any) -> None:  # type: ignore[override]
            pass

    with pytest.raises(ImproperlyConfigured, match="CRUD action"):
        Router().register(Clash)


# -- hardening: answers, server-set columns, names, keywords, commits ------------------------


class Answering(ScopedTeacherResource):
    name = "answering"

    @action(detail=True, url_path="conflict")
    def conflict(self, obj: Teacher) -> Any:
        obj.region = "changed"
        return Response(status=409)

    @action(detail=True, url_path="refused")
    def refused(self, obj: Teacher) -> Any:
        obj.region = "changed"
        return {"detail": "no"}, 403

    @action(detail=True, url_path="made")
    def made(self, obj: Teacher) -> Any:
        obj.region = "made"
        return {"region": obj.region}, 201, {"X-Made": "yes"}

    @action(detail=True, url_path="move")
    def move(self, obj: Teacher) -> Any:
        obj.school_id = obj.school_id + 1  # a scope column: the server sets it
        return self.serialize(obj)

    @action(detail=True)
    def return_(self, obj: Teacher) -> Any:
        obj.region = "returned"
        return self.serialize(obj)

    after_commit_return_callbacks = [AuditAction]

    @action(detail=True, url_path="commits")
    def commits(self, obj: Teacher) -> Any:
        obj.region = "committed"
        self.get_session().commit()  # the tutorial habit: refused while the write runs
        return self.serialize(obj)


@pytest.fixture
def answering(app: Flask, database: Any) -> Iterator[Any]:
    with running(make_app(lambda r: r.register(Answering), PROPAGATE_EXCEPTIONS=False)) as c:
        yield c


@pytest.mark.parametrize(("path", "status"), [("conflict", 409), ("refused", 403)])
def test_an_action_answering_an_error_writes_nothing(
    answering: Any, path: str, status: int
) -> None:
    rows = seed_two_schools()
    before = snapshot()
    response = answering.post(f"/api/answering/{rows['ada']}/{path}", headers=school(rows["one"]))
    assert response.status_code == status
    if path == "refused":
        assert response.json == {"detail": "no"}  # a (body, status) tuple, as in Flask
    assert snapshot() == before


def test_an_action_tuple_with_a_success_status_and_headers_commits(answering: Any) -> None:
    rows = seed_two_schools()
    response = answering.post(f"/api/answering/{rows['ada']}/made", headers=school(rows["one"]))
    assert (response.status_code, response.json, response.headers["X-Made"]) == (
        201,
        {"region": "made"},
        "yes",
    )
    assert db.session.get(Teacher, rows["ada"]).region == "made"


def test_an_action_changing_a_server_set_column_is_422_and_writes_nothing(answering: Any) -> None:
    rows = seed_two_schools()
    before = snapshot()
    response = answering.post(f"/api/answering/{rows['ada']}/move", headers=school(rows["one"]))
    assert_problem(response, 422)
    assert "school_id" in response.json["errors"]
    assert snapshot() == before


def test_a_keyword_named_action_has_a_natural_url_and_callback_list(answering: Any) -> None:
    rows = seed_two_schools()
    response = answering.post(f"/api/answering/{rows['ada']}/return", headers=school(rows["one"]))
    assert response.status_code == 200
    audits = db.session.execute(select(Audit.operation, Audit.row_id)).all()
    assert [tuple(a) for a in audits] == [("return", rows["ada"])]


def test_a_commit_inside_a_write_is_refused_and_rolled_back(answering: Any) -> None:
    rows = seed_two_schools()
    before = snapshot()
    response = answering.post(f"/api/answering/{rows['ada']}/commits", headers=school(rows["one"]))
    problem = assert_problem(response, 500)
    assert "session.commit()" in problem["detail"]
    assert "commits of Answering" in problem["detail"]
    assert snapshot() == before


class CommittingCallback(Callback):
    def execute(self) -> None:
        db.session.commit()


def test_a_callback_that_commits_is_refused_and_the_write_rolled_back(
    app: Flask, database: Any
) -> None:
    class Committing(ScopedTeacherResource):
        name = "committing"
        post_create_callbacks = [CommittingCallback]

    with running(make_app(lambda r: r.register(Committing))) as client:
        rows = seed_two_schools()
        before = snapshot()
        response = client.post("/api/committing", json={"name": "Eve"}, headers=school(rows["one"]))
        assert_problem(response, 500)
        assert snapshot() == before


@pytest.mark.parametrize("name", ["save", "get_object", "serialize", "check_parent"])
def test_an_action_named_like_a_library_method_is_refused(name: str) -> None:
    def method(self: Any, obj: Any) -> None:
        return None

    method.__name__ = name
    # A guard's name is refused when the class is made, a hook's at registration.
    attributes = {"name": "clash", name: action(detail=True)(method)}
    with pytest.raises(ImproperlyConfigured, match=f"{name}"):
        Router().register(type("Clash", (ScopedTeacherResource,), attributes))


def test_an_action_shadowing_a_child_segment_is_refused() -> None:
    class Parent(ScopedTeacherResource):
        @action(detail=True)
        def students(self, obj: Teacher) -> None:
            return None

    router = Router()
    router.register(Parent)
    with pytest.raises(ImproperlyConfigured, match="'students' is an @action"):
        router.register(ScopedStudentResource, parent=Parent)


@pytest.mark.parametrize(
    "attribute", ["after_commit_return__callbacks", "post_promote_callbacks", "pre_creat_callbacks"]
)
def test_a_callback_list_naming_no_action_is_refused(attribute: str) -> None:
    class Misnamed(ScopedTeacherResource):
        name = "misnamed"

        @action(detail=True)
        def return_(self, obj: Teacher) -> None:
            return None

    broken = type("Broken", (Misnamed,), {attribute: [AuditAction]})
    with pytest.raises(ImproperlyConfigured, match="names no operation"):
        Router().register(broken)


class OwnSessionAudit(Callback):
    """Writes through a session of its own, committed on its own: not the write's."""

    def execute(self) -> None:
        with Session(db.engine) as own:
            own.add(Audit(operation="side", table="teachers", row_id=None))
            own.commit()


def test_a_callback_may_commit_a_session_of_its_own(app: Flask, database: Any) -> None:
    class SideLogged(ScopedTeacherResource):
        name = "side-logged"
        pre_create_callbacks = [OwnSessionAudit]

    with running(make_app(lambda r: r.register(SideLogged))) as client:
        rows = seed_two_schools()
        response = client.post(
            "/api/side-logged", json={"name": "Eve"}, headers=school(rows["one"])
        )
        assert response.status_code == 201
        assert db.session.execute(select(Audit.operation)).scalars().all() == ["side"]
