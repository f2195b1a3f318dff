"""The read and write paths that skip the ORM's objects, and when they must not.

A read of rows runs on a pooled connection of its own only when nothing the session
holds could change its answer; a create, a change or a delete is one ``INSERT``,
``UPDATE ... RETURNING`` or ``DELETE`` only when nothing would see the object it no
longer builds or reads. Each test here is a case where taking the short path would give
a different answer, and checks the answer the session's path gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, g, request
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, Integer, String, event, insert, inspect, select
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    scoped_session,
    sessionmaker,
    validates,
    with_loader_criteria,
)

from resources_kit import (
    Callback,
    CreateMixin,
    ListMixin,
    PatchMixin,
    Resource,
    RetrieveMixin,
    Router,
    signals,
)
from resources_kit.conditional import json_response
from resources_kit.permissions import ReadOnly

from .conftest import DB, make_app, register_scoped, reset_database, seed
from .models import School, Student, Teacher, TeacherResource, TeacherSchema, db


@pytest.fixture
def scoped_app() -> Iterator[Flask]:
    """An app whose requests run in app contexts of their own (as a server's do), so the
    session of each request starts empty; Ada and Cy in school 1, Bob in school 2."""
    app = make_app(register_scoped)
    with app.app_context():
        db.create_all()
        reset_database()
        one, two = School(name="One"), School(name="Two")
        seed(one, two)
        ada = Teacher(name="Ada", school_id=one.id, region="n")
        bob = Teacher(name="Bob", school_id=two.id, region="s")
        seed(ada, bob)
        seed(Student(name="Cy", teacher_id=ada.id))
        app.config["ids"] = {"one": one.id, "two": two.id, "ada": ada.id, "bob": bob.id}
        db.session.remove()
    sessions: list[bool] = []
    app.config["sessions"] = sessions

    @app.after_request
    def note_session(response: Any) -> Any:
        sessions.append(db.session.registry.has())
        return response

    yield app
    with app.app_context():
        db.session.remove()
        reset_database()


def names(response: Any) -> list[str]:
    return [item["name"] for item in response.get_json()["items"]]


def school(app: Flask, name: str = "one") -> dict[str, str]:
    return {"X-School": str(app.config["ids"][name])}


def test_a_clean_read_makes_no_session_and_answers_alike(scoped_app: Flask) -> None:
    client, ids = scoped_app.test_client(), scoped_app.config["ids"]
    listed = client.get("/api/teachers", headers=school(scoped_app))
    item = client.get(f"/api/teachers/{ids['ada']}", headers=school(scoped_app))
    nested = client.get(f"/api/teachers/{ids['ada']}/students", headers=school(scoped_app))
    hidden = client.get(f"/api/teachers/{ids['bob']}", headers=school(scoped_app))
    assert names(listed) == ["Ada"]
    assert item.get_json()["name"] == "Ada"
    assert names(nested) == ["Cy"]
    assert hidden.status_code == 404
    assert scoped_app.config["sessions"] == [False, False, False, False]


def test_reads_end_with_a_commit_and_keep_their_prepared_statements(scoped_app: Flask) -> None:
    """A request's reads outside the session end their transaction with COMMIT, never
    ROLLBACK: psycopg drops every statement it prepared on a connection at a rollback
    (how a pooled connection is otherwise returned), so that PostgreSQL would plan each
    read on every request. On PostgreSQL the list's statement is then prepared."""
    client, ids = scoped_app.test_client(), scoped_app.config["ids"]
    with scoped_app.app_context():
        engine = db.engine
    ends: list[str] = []

    def noting(name: str) -> Any:
        return lambda *args: ends.append(name)

    listeners = {name: noting(name) for name in ("commit", "rollback")}
    for name, listener in listeners.items():
        event.listen(engine, name, listener)
    try:
        for _ in range(6):  # psycopg prepares a statement at its fifth execution
            assert client.get("/api/teachers", headers=school(scoped_app)).status_code == 200
        nested = client.get(f"/api/teachers/{ids['ada']}/students", headers=school(scoped_app))
        assert nested.status_code == 200
    finally:
        for name, listener in listeners.items():
            event.remove(engine, name, listener)
    assert ends == ["commit"] * 7
    if engine.dialect.driver == "psycopg" and DB != "pgbouncer":
        with engine.connect() as connection:
            prepared = connection.exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
            assert prepared.scalar_one() >= 1


def test_changes_the_session_holds_are_read_through_it(scoped_app: Flask) -> None:
    """A hook that adds and flushes a row before the read: the list and the item see
    it (only the session's transaction has it), and it is gone after the request."""

    @scoped_app.before_request
    def add_pending() -> None:
        if "X-Pending" in request.headers:
            pending = Teacher(name="Pending", school_id=scoped_app.config["ids"]["one"])
            db.session.add(pending)
            db.session.flush()
            g.pending = pending.id

    client = scoped_app.test_client()
    headers = {**school(scoped_app), "X-Pending": "1"}
    assert names(client.get("/api/teachers", headers=headers)) == ["Ada", "Pending"]
    assert names(client.get("/api/teachers", headers=school(scoped_app))) == ["Ada"]


def test_do_orm_execute_criteria_keep_applying(scoped_app: Flask) -> None:
    """A soft-delete filter added by a ``do_orm_execute`` listener of the session class:
    reads go through the session, so the filtered row stays hidden."""

    def hide_north(state: Any) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Teacher, Teacher.region != "n", include_aliases=True)
            )

    target = db.session.session_factory.class_
    event.listen(target, "do_orm_execute", hide_north)
    try:
        client, ids = scoped_app.test_client(), scoped_app.config["ids"]
        assert names(client.get("/api/teachers", headers=school(scoped_app))) == []
        item = client.get(f"/api/teachers/{ids['ada']}", headers=school(scoped_app))
        assert item.status_code == 404
        # Nor may a write reach it: a change through the session, not one statement.
        changed = client.patch(
            f"/api/teachers/{ids['ada']}", json={"name": "Hidden"}, headers=school(scoped_app)
        )
        assert changed.status_code == 404
    finally:
        event.remove(target, "do_orm_execute", hide_north)
    assert names(scoped_app.test_client().get("/api/teachers", headers=school(scoped_app))) == [
        "Ada"
    ]


def test_a_session_bound_to_an_outer_transaction_reads_its_rows(database: Any) -> None:
    """As a test suite binds the session to a connection whose transaction it rolls back:
    rows written there and not committed are what the resource reads."""
    with db.engine.connect() as connection:
        outer = connection.begin()
        session = scoped_session(sessionmaker(bind=connection))

        class Bound(ListMixin, RetrieveMixin, Resource):
            name = "bound-teachers"
            model = Teacher
            schema = TeacherSchema

        Bound.session = session
        app = Flask(__name__)
        router = Router(url_prefix="/api")
        router.register(Bound)
        router.init_app(app)
        # Written on the connection, not through the session: no session exists yet.
        connection.execute(insert(Teacher).values(name="Uncommitted"))
        found = connection.execute(select(Teacher.id)).scalar_one()
        client = app.test_client()
        assert names(client.get("/api/bound-teachers")) == ["Uncommitted"]
        assert client.get(f"/api/bound-teachers/{found}").status_code == 200
        session.remove()
        outer.rollback()
    assert db.session.scalars(select(Teacher)).all() == []


def test_parsed_query_strings_are_copies_and_impure_arguments_are_parsed_again(
    database: Any,
) -> None:
    calls: list[int] = []

    def counted_default() -> int:
        calls.append(1)
        return len(calls)

    class Args(ListMixin, Resource):
        name = "args-teachers"
        model = Teacher
        schema = TeacherSchema
        list_args = {"seen": ma.fields.Integer(load_default=counted_default)}

        def filter_list_query(self, query: Any, args: Any) -> Any:
            args["offset"] += 1  # a hook that changes what it was given
            return query.where(Teacher.id > 0)

    class Plain(Args):
        name = "plain-args-teachers"
        list_args: dict[str, Any] = {}

    seed(*(Teacher(name=f"T{n}") for n in range(4)))
    app = make_app(lambda router: (router.register(Args), router.register(Plain)))
    client = app.test_client()
    for _ in range(3):
        assert client.get("/api/args-teachers?limit=1").get_json()["offset"] == 1
        assert client.get("/api/plain-args-teachers?limit=1").get_json()["offset"] == 1
    assert len(calls) == 3


# -- deletes ----------------------------------------------------------------------------------


@pytest.fixture
def deleting(database: Any) -> Iterator[tuple[Any, dict[str, int], list[str]]]:
    """A client of the scoped teachers, the ids of two schools' teachers, and the first
    word of each SQL statement the requests run."""
    app = make_app(register_scoped)
    one, two = School(name="One"), School(name="Two")
    seed(one, two)
    ada, bob = Teacher(name="Ada", school_id=one.id), Teacher(name="Bob", school_id=two.id)
    seed(ada, bob)
    ids = {"one": one.id, "two": two.id, "ada": ada.id, "bob": bob.id}
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.split()[0].upper())

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield app.test_client(), ids, seen
    event.remove(engine, "before_cursor_execute", record)


def remaining() -> list[str]:
    db.session.rollback()
    return sorted(db.session.scalars(select(Teacher.name)))


def test_a_plain_delete_is_one_statement_inside_the_policy(deleting: Any) -> None:
    client, ids, seen = deleting
    one = {"X-School": str(ids["one"])}
    assert client.delete(f"/api/teachers/{ids['bob']}", headers=one).status_code == 404
    assert remaining() == ["Ada", "Bob"]
    seen.clear()
    assert client.delete(f"/api/teachers/{ids['ada']}", headers=one).status_code == 204
    assert [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK")] == ["DELETE"]
    assert client.delete(f"/api/teachers/{ids['ada']}", headers=one).status_code == 404
    assert remaining() == ["Bob"]


def test_a_session_kept_across_requests_deletes_what_it_holds(deleting: Any) -> None:
    """Under an application context the caller pushed, the requests share its session:
    a teacher that session holds is deleted through the ORM, so it leaves the identity
    map with its row (a stale one would be replaced, with a warning, by the next
    object flushed with its key)."""
    client, ids, seen = deleting
    with client.application.app_context():
        ada = db.session.get(Teacher, ids["ada"])
        seen.clear()
        response = client.delete(
            f"/api/teachers/{ids['ada']}", headers={"X-School": str(ids["one"])}
        )
        assert response.status_code == 204
        assert "SELECT" in seen
        assert inspect(ada).was_deleted
        assert ada not in db.session
    assert remaining() == ["Bob"]


def test_a_delete_refused_by_the_database_leaves_the_row(deleting: Any) -> None:
    client, ids, _ = deleting
    seed(Student(name="Cy", teacher_id=ids["ada"]))
    response = client.delete(f"/api/teachers/{ids['ada']}", headers={"X-School": str(ids["one"])})
    assert response.status_code == 409
    assert response.mimetype == "application/problem+json"
    assert remaining() == ["Ada", "Bob"]


def test_whatever_would_see_the_object_gets_it(deleting: Any) -> None:
    """A signal receiver, a mapper listener and a flush listener each see the deleted
    teacher; with If-Match, a stale ETag is a 412 and nothing is deleted."""
    client, ids, _ = deleting
    one = {"X-School": str(ids["one"])}
    seen: list[Any] = []
    ada = seed_teacher("Ada2", ids["one"])

    def receiver(sender: Any, resource: Any, **kwargs: Any) -> None:
        seen.append(("signal", resource.name))

    with signals.resource_deleted.connected_to(receiver):
        assert client.delete(f"/api/teachers/{ada}", headers=one).status_code == 204

    def mapper_listener(mapper: Any, connection: Any, target: Any) -> None:
        seen.append(("mapper", target.name))

    event.listen(Teacher, "before_delete", mapper_listener)
    try:
        assert client.delete(f"/api/teachers/{ids['ada']}", headers=one).status_code == 204
    finally:
        event.remove(Teacher, "before_delete", mapper_listener)

    def flush_listener(session: Any, context: Any, instances: Any) -> None:
        seen.extend(("flush", obj.name) for obj in session.deleted)

    cid = seed_teacher("Cid", ids["one"])
    target = db.session.session_factory.class_
    event.listen(target, "before_flush", flush_listener)
    try:
        assert client.delete(f"/api/teachers/{cid}", headers=one).status_code == 204
    finally:
        event.remove(target, "before_flush", flush_listener)
    assert seen == [("signal", "Ada2"), ("mapper", "Ada"), ("flush", "Cid")]

    stale = {**one, "If-Match": '"0123"'}
    assert client.delete(f"/api/teachers/{ids['bob']}", headers=stale).status_code == 404
    dee = seed_teacher("Dee", ids["one"])
    assert client.delete(f"/api/teachers/{dee}", headers=stale).status_code == 412
    assert remaining() == ["Bob", "Dee"]


def seed_teacher(name: str, school_id: int) -> int:
    teacher = Teacher(name=name, school_id=school_id)
    seed(teacher)
    return int(teacher.id)


# -- creates and changes ----------------------------------------------------------------------


def sql(seen: list[str]) -> list[str]:
    return [s for s in seen if s not in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")]


def teachers() -> list[tuple[str, int, str | None, str | None]]:
    db.session.rollback()
    query = select(Teacher.name, Teacher.school_id, Teacher.email, Teacher.region)
    return sorted(tuple(row) for row in db.session.execute(query))


def test_a_plain_create_and_change_are_one_statement_inside_the_policy(deleting: Any) -> None:
    """Each answers what a GET then returns (body and ETag); another school's teacher or
    a missing one is a 404 whatever the body, before the body's 422; a refused value is
    a 409; nothing a refused request sent is written."""
    client, ids, seen = deleting
    one = {"X-School": str(ids["one"])}
    changes_by_update = db.engine.dialect.update_returning  # MariaDB's UPDATE returns nothing
    seen.clear()
    created = client.post("/api/teachers", json={"name": "Cid", "email": "c@x.org"}, headers=one)
    assert created.status_code == 201, created.json
    assert sql(seen) == ["INSERT"]
    fetched = client.get(created.headers["Location"], headers=one)
    assert (created.json, created.headers["ETag"]) == (fetched.json, fetched.headers["ETag"])
    assert created.json["school_id"] == ids["one"]
    cid = created.json["id"]
    for method in ("patch", "put"):
        seen.clear()
        body = {"name": f"Cid {method}", "region": method}
        changed = getattr(client, method)(f"/api/teachers/{cid}", json=body, headers=one)
        assert changed.status_code == 200, changed.json
        assert sql(seen) == (["UPDATE"] if changes_by_update else ["SELECT", "UPDATE"])
        fetched = client.get(f"/api/teachers/{cid}", headers=one)
        assert (changed.json, changed.headers["ETag"]) == (fetched.json, fetched.headers["ETag"])
    expected = sorted([("Ada", ids["one"], None, None), ("Bob", ids["two"], None, None)])
    expected = sorted([*expected, ("Cid put", ids["one"], "c@x.org", "put")])
    assert teachers() == expected
    refused = [
        ("patch", ids["bob"], {"name": "Mine"}, 404),
        ("put", ids["bob"], {"name": "Mine"}, 404),
        ("patch", ids["bob"], {"years_teaching": "many"}, 404),
        ("patch", 10**9, {"years_teaching": "many"}, 404),
        ("patch", cid, {"years_teaching": "many"}, 422),
        ("patch", cid, {"school_id": ids["two"]}, 422),
        ("patch", ids["ada"], {"email": "c@x.org"}, 409),
        ("put", ids["ada"], {"name": "Ada", "email": "c@x.org"}, 409),
    ]
    for method, teacher, body, status in refused:
        response = getattr(client, method)(f"/api/teachers/{teacher}", json=body, headers=one)
        assert (method, teacher, body, response.status_code) == (method, teacher, body, status)
        assert response.mimetype == "application/problem+json"
    duplicate = client.post("/api/teachers", json={"name": "Dee", "email": "c@x.org"}, headers=one)
    assert duplicate.status_code == 409
    assert teachers() == expected
    seen.clear()
    nothing = client.patch(f"/api/teachers/{cid}", json={}, headers=one)
    assert nothing.status_code == 200
    assert sql(seen) == ["SELECT"]  # nothing to set: the item read, no UPDATE


def test_whatever_would_see_the_written_object_gets_it(deleting: Any) -> None:
    """A signal receiver, a mapper listener, an attribute listener and a flush listener
    each see the object created or changed; If-Match is checked against the stored row;
    an object the session already holds is changed with its row."""
    client, ids, _ = deleting
    one = {"X-School": str(ids["one"])}
    seen: list[Any] = []

    def receiver(sender: Any, resource: Any, **kwargs: Any) -> None:
        seen.append(("signal", type(resource).__name__, resource.name))

    def mapper_listener(mapper: Any, connection: Any, target: Any) -> None:
        seen.append(("mapper", target.name))

    def name_listener(target: Any, value: Any, old: Any, initiator: Any) -> None:
        seen.append(("set", value))

    def flush_listener(session: Any, context: Any, instances: Any) -> None:
        seen.extend(("flush", obj.name) for obj in [*session.new, *session.dirty])

    target = db.session.session_factory.class_
    ada = f"/api/teachers/{ids['ada']}"
    hooks = [
        (signals.resource_created, "post", {"name": "A1"}),
        (signals.resource_updated, "put", {"name": "A2"}),
        (signals.resource_updated, "patch", {"name": "A3"}),
    ]
    for signal, method, body in hooks:
        with signal.connected_to(receiver):
            path = "/api/teachers" if method == "post" else ada
            assert getattr(client, method)(path, json=body, headers=one).status_code < 300
    listeners = [
        (Teacher, "before_insert", mapper_listener, "post", {"name": "B1"}),
        (Teacher, "before_update", mapper_listener, "patch", {"name": "B2"}),
        (Teacher.name, "set", name_listener, "post", {"name": "C1"}),
        (Teacher.name, "set", name_listener, "patch", {"name": "C2"}),
        (target, "before_flush", flush_listener, "post", {"name": "D1"}),
        (target, "before_flush", flush_listener, "patch", {"name": "D2"}),
    ]
    for owner, name, listener, method, body in listeners:
        event.listen(owner, name, listener)
        try:
            path = "/api/teachers" if method == "post" else ada
            assert getattr(client, method)(path, json=body, headers=one).status_code < 300
        finally:
            event.remove(owner, name, listener)
    assert seen == [
        ("signal", "Teacher", "A1"),
        ("signal", "Teacher", "A2"),
        ("signal", "Teacher", "A3"),
        ("mapper", "B1"),
        ("mapper", "B2"),
        ("set", "C1"),
        ("set", "C2"),
        ("flush", "D1"),
        ("flush", "D2"),
    ]

    etag = client.get(ada, headers=one).headers["ETag"]
    stale = client.patch(ada, json={"name": "E"}, headers={**one, "If-Match": '"0123"'})
    assert stale.status_code == 412
    fresh = client.patch(ada, json={"name": "E"}, headers={**one, "If-Match": etag})
    assert fresh.status_code == 200
    with client.application.app_context():
        held = db.session.get(Teacher, ids["ada"])
        assert client.patch(ada, json={"name": "F"}, headers=one).status_code == 200
        assert held.name == "F"  # changed through the session that holds it, not behind it
    assert ("F", ids["one"], None, None) in teachers()


def test_the_direct_paths_are_taken_only_where_the_class_allows() -> None:
    from resources_kit.options import options_for

    class Archiving(TeacherResource):
        name = "archiving-teachers"

        def perform_delete(self, obj: Any) -> None:
            obj.region = "archived"

    class Listed(TeacherResource):
        name = "listed-teachers"

        def serialize(self, obj_or_objs: Any) -> Any:
            return super().serialize(obj_or_objs)

    class Made(TeacherResource):
        name = "made-teachers"

        def perform_create(self, data: dict[str, Any]) -> Any:
            return super().perform_create({**data, "region": "made"})

    class Changed(TeacherResource):
        name = "changed-teachers"

        def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
            return super().perform_update(obj, {**data, "region": "changed"})

    class Noted(Callback):
        def execute(self) -> None:
            pass

    class CalledBack(TeacherResource):
        name = "called-back-teachers"
        post_patch_callbacks = [Noted]

    class Guarded(TeacherResource):
        name = "guarded-teachers"
        permissions = [ReadOnly]

    plain = options_for(TeacherResource)
    assert plain.direct_delete
    assert plain.direct_create is not None
    assert plain.direct_update is not None
    assert plain.retrieve_columns is not None
    assert not options_for(Archiving).direct_delete
    assert options_for(Archiving).direct_create is not None
    assert options_for(Archiving).direct_update is not None
    assert options_for(Listed).retrieve_columns is None
    assert options_for(Listed).direct_create is None  # its answer is its own serialize's
    assert options_for(Made).direct_create is None
    assert options_for(Made).direct_update is not None
    assert options_for(Changed).direct_update is None
    assert options_for(Changed).direct_create is not None
    assert options_for(CalledBack).direct_update is None
    assert options_for(CalledBack).direct_create is not None
    assert options_for(CalledBack).direct_delete
    assert options_for(Guarded).direct_create is None
    assert options_for(Guarded).direct_update is None

    class Schemed(TeacherResource):
        """Its schemas may be others than the compiled ones (a field reading more than a
        column, say): its bodies are dumped from objects."""

        name = "schemed-teachers"

        def get_schema(self, operation: str) -> Any:
            return super().get_schema(operation)

    schemed = options_for(Schemed)
    assert schemed.retrieve_columns is None
    assert schemed.list_config.row_columns is None
    assert schemed.direct_create is None
    assert schemed.direct_update is None
    assert plain.list_config.row_columns is not None

    class ByEmail(TeacherResource):
        """An email is unique only within a school: a statement on "the" item of an
        email would change every one of them in the policy, where reading it is an
        error."""

        name = "by-email-teachers"
        lookup_field = "email"

    assert options_for(ByEmail).direct_update is None
    assert not options_for(ByEmail).direct_delete
    assert options_for(ByEmail).direct_create is not None  # a create names no item


class _Apart(DeclarativeBase):
    """Models the library compiles options for, never created in a database."""


class Checked(_Apart):
    __tablename__ = "checked"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))

    @validates("name")
    def check_name(self, key: str, value: str) -> str:
        return value.strip()


class Built(_Apart):
    __tablename__ = "built"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "name": kwargs.get("name", "").title()})


class Stamped(_Apart):
    __tablename__ = "stamped"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    changed: Mapped[int] = mapped_column(Integer, default=0, onupdate=1)


class Drafted(_Apart):
    __tablename__ = "drafted"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(10), default="draft")
    note: Mapped[str | None] = mapped_column(String(20), server_default="none")
    extra: Mapped[Any] = mapped_column(JSON, nullable=True)


def test_a_direct_create_sends_what_the_orms_insert_would() -> None:
    """A ``None`` the body sets is left out where the column has a default (which then
    applies), and sent where the type stores it (JSON's ``null``); a column left out
    with no default is sent as ``NULL``."""
    from resources_kit.options import options_for

    class DraftSchema(ma.Schema):
        id = ma.fields.Integer(dump_only=True)
        name = ma.fields.String(allow_none=True)
        status = ma.fields.String(allow_none=True)
        note = ma.fields.String(allow_none=True)
        extra = ma.fields.Raw(allow_none=True)

    class Drafts(CreateMixin, Resource):
        name, model, schema = "drafts", Drafted, DraftSchema

    direct = options_for(Drafts).direct_create
    assert direct is not None
    sent = {"status": None, "note": None, "extra": None}
    assert direct.insert_values(sent) == {"name": None, "extra": None}
    assert direct.insert_values({"name": "a"}) == {"name": "a"}
    assert direct.insert_values({"name": "a", "status": "done"}) == {"name": "a", "status": "done"}


def test_a_model_that_acts_on_its_objects_is_written_through_them() -> None:
    """``@validates``, an ``__init__`` of its own, a column set on update: the ORM's
    object (and its flush) does what the model says; a column's default alone does not
    stop a create by one statement, which applies it too."""
    from resources_kit.options import options_for

    class NameSchema(ma.Schema):
        id = ma.fields.Integer(dump_only=True)
        name = ma.fields.String()

    def resource(model: Any) -> Any:
        attributes = {"name": model.__tablename__, "model": model, "schema": NameSchema}
        bases = (RetrieveMixin, CreateMixin, PatchMixin, Resource)
        return type(f"{model.__name__}Resource", bases, attributes)

    for model in (Checked, Built):
        options = options_for(resource(model))
        assert (options.direct_create, options.direct_update) == (None, None)
    options = options_for(resource(Stamped))
    assert options.direct_create is not None
    assert options.direct_update is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    body=json_values,
    sort_keys=st.booleans(),
    ensure_ascii=st.booleans(),
    compact=st.sampled_from([None, True, False]),
    debug=st.booleans(),
)
@settings(max_examples=200, deadline=None)
def test_json_responses_are_what_flasks_provider_sends(
    body: Any, sort_keys: bool, ensure_ascii: bool, compact: bool | None, debug: bool
) -> None:
    app = Flask(__name__)
    app.debug = debug
    app.json.sort_keys, app.json.ensure_ascii, app.json.compact = sort_keys, ensure_ascii, compact
    with app.app_context():
        try:
            expected = app.json.response(body).get_data()
        except (TypeError, ValueError) as exc:  # keys of mixed types when sorted
            with pytest.raises(type(exc)):
                json_response(body)
            return
        made = json_response(body)
        assert made.get_data() == expected
        assert made.headers == app.json.response(body).headers


def test_a_create_that_leaves_out_a_column_without_a_default_sends_it_as_null(
    client: Any, database: Any
) -> None:
    """As the ORM's insert does: the database refuses the NULL as a constraint (a 409
    problem on every backend) rather than a column left out (MariaDB's strict mode: an
    error that is no constraint's), and nothing is written."""
    from resources_kit.options import options_for

    from .models import Counter, CounterResource

    assert options_for(CounterResource).direct_create is not None
    for body in ({"value": 3}, {"label": None, "value": 3}):
        response = client.post("/api/counters", json=body)
        assert response.status_code == 409, response.json
        assert response.mimetype == "application/problem+json"
    created = client.post("/api/counters", json={"label": "kept"})
    assert (created.status_code, created.json["value"]) == (201, None)
    db.session.rollback()
    assert db.session.scalars(select(Counter.label)).all() == ["kept"]


class Nicknamed(TeacherResource):
    """Its body loads a value that is no column (set on the object, as an override may)."""

    name = "nicknamed-teachers"
    filter_fields = ["name"]

    def get_request_data(self, operation: str, server_values: Any) -> dict[str, Any]:
        data = super().get_request_data(operation, server_values)
        return data if operation == "create" else {**data, "nickname": "Di"}


def test_a_body_that_sets_what_is_no_column_is_written_through_the_object(
    database: Any,
) -> None:
    def register(router: Router) -> None:
        router.register(Nicknamed)

    app = make_app(register)
    teacher = Teacher(name="Di")
    seed(teacher)
    client = app.test_client()  # requests of their own, whose session holds nothing
    created = client.post("/api/nicknamed-teachers", json={"name": "Di"})
    patched = client.patch(f"/api/nicknamed-teachers/{teacher.id}", json={"name": "Dee"})
    assert (created.status_code, patched.status_code) == (201, 200)
    assert patched.json["name"] == "Dee"


def test_an_init_listener_of_the_model_sees_the_create(deleting: Any) -> None:
    client, ids, _ = deleting

    def region(target: Any, args: Any, kwargs: dict[str, Any]) -> None:
        kwargs.setdefault("region", "from init")

    event.listen(Teacher, "init", region)
    try:
        created = client.post(
            "/api/teachers", json={"name": "Eve"}, headers={"X-School": str(ids["one"])}
        )
    finally:
        event.remove(Teacher, "init", region)
    assert (created.status_code, created.json["region"]) == (201, "from init")


def test_a_session_that_routes_by_statement_writes_through_objects() -> None:
    """A ``get_bind`` of the session's own may send writes by statement or by flush (a
    primary/replica split): a write through the session's connection would miss it."""
    from sqlalchemy.orm import Session

    from resources_kit.database import writes_by_statement

    class Routing(Session):
        def get_bind(self, mapper: Any = None, **kwargs: Any) -> Any:
            return super().get_bind(mapper, **kwargs)

    assert writes_by_statement(Session(), ("before_flush",))
    assert not writes_by_statement(Routing(), ("before_flush",))
    assert not writes_by_statement(scoped_session(sessionmaker(class_=Routing)), ())
