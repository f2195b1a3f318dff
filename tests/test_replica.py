"""Reads routed to a real streaming replica (``.ci/services`` makes it: a second
PostgreSQL cluster on port 5433, copied with pg_basebackup). Replay on the replica is
paused to make the routing visible: a row written since is on the primary only."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine

from resources_kit import ImproperlyConfigured, Router

from . import models
from .conftest import DB_URL, ENGINE_OPTIONS, make_app, register_all, register_scoped, seed
from .models import Teacher, db

POSTGRES = make_url(DB_URL).get_backend_name() == "postgresql"
#: The replica of the test database (the primary's database on port 5433).
REPLICA_URL = os.environ.get(
    "RESOURCES_KIT_TEST_REPLICA",
    make_url(DB_URL).set(port=5433).render_as_string(hide_password=False) if POSTGRES else "",
)


def _replica_problem() -> str | None:
    if not POSTGRES:
        return "read replicas are tested on PostgreSQL"
    try:
        engine = create_engine(REPLICA_URL)
        with engine.connect() as connection:
            in_recovery = connection.execute(text("SELECT pg_is_in_recovery()")).scalar()
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no replica here
        problem = f"no replica at {REPLICA_URL} ({type(exc).__name__}); .ci/services makes one"
        if os.environ.get("RESOURCES_KIT_REQUIRE_SERVER"):
            raise pytest.UsageError(problem) from exc
        return problem
    return None if in_recovery else f"{REPLICA_URL} is not a replica"


PROBLEM = _replica_problem()
needs_replica = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def superuser(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT", **ENGINE_OPTIONS)


def wait_for_replay(timeout: float = 30) -> None:
    """Until the replica has replayed everything the primary has written."""
    primary, replica = superuser(DB_URL), superuser(REPLICA_URL)
    try:
        with primary.connect() as connection:
            target = connection.execute(text("SELECT pg_current_wal_lsn()::text")).scalar()
        deadline = time.monotonic() + timeout
        with replica.connect() as connection:
            while True:
                behind = connection.execute(
                    text(
                        "SELECT pg_wal_lsn_diff(CAST(:target AS pg_lsn), pg_last_wal_replay_lsn())"
                    ),
                    {"target": target},
                ).scalar()
                if behind is not None and behind <= 0:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"the replica is {behind} bytes behind after {timeout} s")
                time.sleep(0.02)
    finally:
        primary.dispose()
        replica.dispose()


@contextmanager
def replay_paused() -> Iterator[None]:
    """The replica stops applying the primary's changes inside the block."""
    wait_for_replay()
    engine = superuser(REPLICA_URL)
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_wal_replay_pause()"))
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_wal_replay_resume()"))
    engine.dispose()
    wait_for_replay()


def close(app: Flask) -> None:
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()
    # The bind made db keep a metadata for it; the suite's other apps have no such bind.
    db.metadatas.pop("replica", None)


def replica_app(register: Any = register_all) -> Flask:
    return make_app(
        register,
        SQLALCHEMY_BINDS={"replica": {"url": REPLICA_URL, **ENGINE_OPTIONS}},
        RESOURCES_KIT_READ_REPLICA="replica",
    )


@pytest.fixture(scope="module")
def routed(app: Flask) -> Iterator[Flask]:
    made = replica_app()
    yield made
    close(made)


@pytest.fixture
def client(routed: Flask, database: Any) -> Any:
    return routed.test_client()


@needs_replica
def test_reads_go_to_the_replica_and_writes_to_the_primary(client: Any) -> None:
    seed(Teacher(name="Ada"))
    wait_for_replay()
    with replay_paused():
        made = client.post("/api/teachers", json={"name": "Bob"})
        assert made.status_code == 201
        bob = made.json["id"]
        # The replica has not seen Bob: reads there do not find him...
        assert client.get(f"/api/teachers/{bob}").status_code == 404
        assert [t["name"] for t in client.get("/api/teachers").json["items"]] == ["Ada"]
        # ...a write reads the primary, inside its own transaction...
        assert client.patch(f"/api/teachers/{bob}", json={"years_teaching": 3}).status_code == 200
        # ...and a client that asks to read its own writes reads the primary too.
        own = client.get(f"/api/teachers/{bob}", headers={"Prefer": "read-your-writes"})
        assert own.status_code == 200
        assert own.json["years_teaching"] == 3
        assert own.headers["Preference-Applied"] == "read-your-writes"
        listed = client.get("/api/teachers", headers={"Prefer": "return=minimal, read-your-writes"})
        assert sorted(t["name"] for t in listed.json["items"]) == ["Ada", "Bob"]
    wait_for_replay()
    assert client.get(f"/api/teachers/{bob}").json["years_teaching"] == 3
    assert "Preference-Applied" not in client.get(f"/api/teachers/{bob}").headers


@needs_replica
def test_nested_reads_check_the_parent_on_the_same_engine(client: Any) -> None:
    with replay_paused():
        teacher = client.post("/api/teachers", json={"name": "Cy"}).json["id"]
        url = f"/api/teachers/{teacher}/students"
        assert client.get(url).status_code == 404  # the parent is not on the replica yet
        fresh = {"Prefer": "read-your-writes"}
        assert client.get(url, headers=fresh).status_code == 200
        assert client.post(url, json={"name": "Di"}).status_code == 201


@needs_replica
def test_statements_run_where_they_should(routed: Flask, client: Any) -> None:
    seed(Teacher(name="Ada"))
    wait_for_replay()
    with routed.app_context():
        primary, replica = db.engines[None], db.engines["replica"]
    ran: dict[str, list[str]] = {"primary": [], "replica": []}

    def recorder(name: str) -> Any:
        def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            ran[name].append(statement)

        return record

    listeners = [(primary, recorder("primary")), (replica, recorder("replica"))]
    for engine, listener in listeners:
        event.listen(engine, "before_cursor_execute", listener)
    try:
        assert client.get("/api/teachers").status_code == 200
        assert (len(ran["primary"]), len(ran["replica"])) == (0, 1)
        assert client.post("/api/teachers", json={"name": "Eve"}).status_code == 201
        assert len(ran["replica"]) == 1  # a write never touches the replica
        assert len(ran["primary"]) >= 1
    finally:
        for engine, listener in listeners:
            event.remove(engine, "before_cursor_execute", listener)


@needs_replica
def test_tenant_scope_holds_on_the_replica(database: Any) -> None:
    routed = replica_app(register_scoped)
    one, two = models.School(name="One"), models.School(name="Two")
    seed(one, two)
    seed(Teacher(name="Ada", school_id=one.id), Teacher(name="Bob", school_id=two.id))
    wait_for_replay()
    client = routed.test_client()
    listed = client.get("/api/teachers", headers={"X-School": str(one.id)}).json["items"]
    assert [t["name"] for t in listed] == ["Ada"]
    bob = db.session.query(Teacher).filter_by(name="Bob").one()
    assert (
        client.get(f"/api/teachers/{bob.id}", headers={"X-School": str(one.id)}).status_code == 404
    )
    with routed.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def test_a_replica_bind_the_app_lacks_is_refused_at_startup() -> None:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=DB_URL, RESOURCES_KIT_READ_REPLICA="reader")
    router = Router()
    router.register(models.LoneTeacherResource)
    with pytest.raises(ImproperlyConfigured, match="names the bind 'reader'"):
        router.init_app(app)


@needs_replica
def test_preference_applied_only_on_a_response_that_applied_it(client: Any) -> None:
    """An error answered the request without reading anything: no Preference-Applied."""
    fresh = {"Prefer": "read-your-writes"}
    assert client.get("/api/teachers", headers=fresh).headers["Preference-Applied"] == (
        "read-your-writes"
    )
    for response in (
        client.get("/api/teachers/999999", headers=fresh),  # 404
        client.get("/api/teachers?limit=0", headers=fresh),  # 400
        client.get("/api/teachers?filters=[", headers=fresh),  # 400
    ):
        assert response.status_code >= 400
        assert "Preference-Applied" not in response.headers, response.status_code
