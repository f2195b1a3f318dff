"""Faults: a database that is down, killed mid-request or overloaded answers 503
problem+json with ``Retry-After``, writes nothing, and the next request recovers.

Each fault is provoked for real and bounded in time: the request's own backend is killed
from a second connection (``pg_terminate_backend`` / ``KILL``, filtered by this test's
database and backend id), a statement or a lock times out after tens of milliseconds, an
engine points at a closed port. The shared servers and PgBouncer are never stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import request
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from resources_kit import CreateMixin, ListMixin, Resource
from resources_kit.errors import is_unavailable

from .conftest import DB_URL, ENGINE_OPTIONS, make_app, running, seed
from .models import Counter, CounterSchema, db
from .test_errors import assert_problem

BACKEND = make_url(DB_URL).get_backend_name()
needs_server = pytest.mark.skipif(BACKEND == "sqlite", reason="SQLite has no server")


def other_connection() -> Any:
    """A connection of its own, outside every app's pool."""
    return create_engine(DB_URL, poolclass=NullPool, **ENGINE_OPTIONS).connect()


def kill_own_backend(session: Any) -> None:
    """Kill the server process serving ``session`` from a second connection, and wait
    (at most 5 s) until it is gone."""
    if BACKEND == "postgresql":
        pid = session.execute(text("SELECT pg_backend_pid()")).scalar_one()
        with other_connection() as other:
            # The timeout (ms, PostgreSQL 14+) makes it wait until the backend is gone.
            other.execute(
                text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                    "WHERE pid = :pid AND datname = current_database()"
                ),
                {"pid": pid},
            )
    else:
        connection_id = int(session.execute(text("SELECT CONNECTION_ID()")).scalar_one())
        with other_connection() as other:
            other.execute(text(f"KILL {connection_id}"))


def time_out_a_statement(session: Any) -> None:
    if BACKEND == "postgresql":
        session.execute(text("SET LOCAL statement_timeout = '50ms'"))
        session.execute(text("SELECT pg_sleep(5)"))
    else:
        session.execute(text("SET STATEMENT max_statement_time = 0.05 FOR SELECT SLEEP(5)"))


def wait_for_a_held_lock(session: Any) -> None:
    if BACKEND == "postgresql":
        session.execute(text("SET LOCAL lock_timeout = '50ms'"))
    else:
        session.execute(text("SET SESSION innodb_lock_wait_timeout = 1"))  # its least
    session.execute(select(Counter).with_for_update())


#: What a request's hook does to its own database connection, by ``X-Fault``.
FAULTS = {"kill": kill_own_backend, "timeout": time_out_a_statement, "lock": wait_for_a_held_lock}


class Fragile(ListMixin, CreateMixin, Resource):
    """Counters whose hooks provoke the fault the request names in ``X-Fault``."""

    name, model, schema = "fragile", Counter, CounterSchema

    def get_list_query(self, args: Any) -> Any:
        fault = request.headers.get("X-Fault")
        if fault:
            FAULTS[fault](self.get_session())
        return super().get_list_query(args)

    def perform_create(self, data: dict[str, Any]) -> Any:
        obj = super().perform_create(data)
        self.get_session().flush()  # the INSERT is sent: the fault comes before the commit
        fault = request.headers.get("X-Fault")
        if fault:
            FAULTS[fault](self.get_session())
        return obj


@pytest.fixture
def fragile(database: Any) -> Iterator[Any]:
    with running(make_app(lambda router: router.register(Fragile))) as client:
        yield client


def stored_counters() -> int:
    with other_connection() as other:
        return int(other.execute(select(func.count()).select_from(Counter)).scalar_one())


def assert_unavailable(response: Any) -> None:
    problem = assert_problem(response, 503)
    assert response.headers["Retry-After"] == "1"
    assert "unavailable" in problem["detail"]


@needs_server
@pytest.mark.parametrize("fault", ["kill", "timeout"])
def test_a_read_whose_connection_fails_is_503_and_the_next_recovers(
    fragile: Any, fault: str
) -> None:
    seed(Counter(label="a"))
    started = time.monotonic()
    assert_unavailable(fragile.get("/api/fragile", headers={"X-Fault": fault}))
    assert time.monotonic() - started < 5
    listed = fragile.get("/api/fragile")
    assert listed.status_code == 200
    assert [c["label"] for c in listed.json["items"]] == ["a"]


@needs_server
@pytest.mark.parametrize("fault", ["kill", "timeout"])
def test_a_write_whose_connection_fails_is_503_and_writes_nothing(fragile: Any, fault: str) -> None:
    body = {"label": "lost"}
    assert_unavailable(fragile.post("/api/fragile", json=body, headers={"X-Fault": fault}))
    assert stored_counters() == 0
    assert fragile.post("/api/fragile", json={"label": "kept"}).status_code == 201
    assert stored_counters() == 1


@needs_server
def test_a_lock_timeout_is_503(fragile: Any) -> None:
    """Another transaction holds the rows past the lock timeout: overloaded, retry."""
    seed(Counter(label="held"))
    holder = other_connection()
    transaction = holder.begin()
    holder.execute(select(Counter).with_for_update())
    try:
        started = time.monotonic()
        assert_unavailable(fragile.get("/api/fragile", headers={"X-Fault": "lock"}))
        assert time.monotonic() - started < 5
    finally:
        transaction.rollback()
        holder.close()
    assert fragile.get("/api/fragile").status_code == 200


def closed_database_url() -> str:
    """A database nobody serves: a closed port, or an SQLite file in no directory."""
    if BACKEND == "sqlite":
        return "sqlite:////nonexistent/resources_kit/refused.sqlite3"
    return make_url(DB_URL).set(host="127.0.0.1", port=1).render_as_string(hide_password=False)


def test_a_refused_connection_is_503_fast(database: Any) -> None:
    app = make_app(
        lambda router: router.register(Fragile),
        SQLALCHEMY_DATABASE_URI=closed_database_url(),
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        RESOURCES_KIT_RETRY_AFTER=7,
    )
    client = app.test_client()
    started = time.monotonic()
    for response in (client.get("/api/fragile"), client.post("/api/fragile", json={})):
        problem = assert_problem(response, 503)
        assert response.headers["Retry-After"] == "7"
        assert "refused" not in problem["detail"]  # no driver text
    assert time.monotonic() - started < 5


def test_errors_that_are_not_faults_stay_what_they_were(database: Any) -> None:
    """A wrong statement is a bug (500), not an outage: ``is_unavailable`` says no."""
    with pytest.raises(DBAPIError) as raised:
        db.session.execute(text("SELECT no_such_column FROM counters"))
    db.session.rollback()
    assert not is_unavailable(raised.value)
