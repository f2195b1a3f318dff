"""The read and delete paths that skip the ORM session, and when they must not.

A read of rows runs on a pooled connection of its own only when nothing the session
holds could change its answer; a delete is one ``DELETE`` only when nothing would see
the object it no longer reads. Each test here is a case where taking the short path
would give a different answer, and checks the answer the session's path gives."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask, g, request
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, insert, inspect, select
from sqlalchemy.orm import scoped_session, sessionmaker, with_loader_criteria

from resources_kit import ListMixin, Resource, RetrieveMixin, Router, signals
from resources_kit.conditional import json_response

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
    """A client of the scoped teachers, the ids of two schools' teachers, and the SQL
    statements each request runs."""
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

    assert options_for(TeacherResource).direct_delete
    assert options_for(TeacherResource).retrieve_columns is not None
    assert not options_for(Archiving).direct_delete
    assert options_for(Listed).retrieve_columns is None


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
