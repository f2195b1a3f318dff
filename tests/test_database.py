"""Faults: a database that is down, killed mid-request or overloaded answers 503
problem+json with ``Retry-After``, writes nothing, and the next request recovers.

Each fault is provoked for real and bounded in time: the request's own backend is killed
from a second connection (``pg_terminate_backend`` / ``KILL``, filtered by this test's
database and backend id), a statement or a lock times out after tens of milliseconds, an
engine points at a closed port, and a PgBouncer of the test's own (started on a free port
in a temporary directory) is killed in the middle of a write and started again. The shared
servers and the shared PgBouncer are never stopped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from flask import request
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from resources_kit import CreateMixin, ListMixin, Resource, action
from resources_kit.database import pooled_engine_options
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
    kill_backend(lambda statement: session.execute(statement).scalar_one())


def kill_backend(scalar: Callable[[Any], Any]) -> None:
    """Kill the server process that answers ``scalar(statement)`` (one value)."""
    if BACKEND == "postgresql":
        pid = scalar(text("SELECT pg_backend_pid()"))
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
        connection_id = int(scalar(text("SELECT CONNECTION_ID()")))
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


class ReadsOnTheirOwn(ListMixin, Resource):
    """Reads of rows outside the session, on the request's one connection."""

    name, model, schema = "reads", Counter, CounterSchema

    @action(detail=False, methods=["GET"])
    def twice(self) -> Any:
        kill_backend(lambda statement: self.read_rows(statement)[0][0])
        return self.read_rows(select(func.count()).select_from(Counter))  # on the killed one


@needs_server
def test_a_read_outside_the_session_that_loses_its_connection_is_503(database: Any) -> None:
    """The request's own read connection dies between two reads: 503, and the request's
    end (which commits that connection's transaction) does not turn it into a 500; the
    pool replaces the connection for the next request."""
    with running(make_app(lambda router: router.register(ReadsOnTheirOwn))) as client:
        seed(Counter(label="a"))
        assert_unavailable(client.get("/api/reads/twice"))
        listed = client.get("/api/reads")
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


# -- PgBouncer down --------------------------------------------------------------------------

#: Where Debian's package installs PgBouncer (``.ci/services`` installs it).
PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def _pgbouncer_problem() -> str | None:
    """Why the PgBouncer test cannot run here, if it cannot."""
    if BACKEND != "postgresql":
        return "PgBouncer stands in front of PostgreSQL: run with RESOURCES_KIT_TEST_DB=postgresql"
    if PGBOUNCER is None:
        problem = "no pgbouncer binary (Debian: apt-get install pgbouncer; .ci/services does)"
        if os.environ.get("RESOURCES_KIT_REQUIRE_SERVER"):
            raise pytest.UsageError(f"{problem}, and CI needs it")
        return problem
    return None


PGBOUNCER_PROBLEM = _pgbouncer_problem()


class PrivateBouncer:
    """A PgBouncer of this test's own: transaction pooling on a free port, in front of the
    test database's PostgreSQL server (``127.0.0.1:5432``, or the port the test URL names
    when it is not the shared PgBouncer's), with its files in a temporary directory. It is
    started and killed by its process id, never by name."""

    def __init__(self, directory: Path) -> None:
        url = make_url(DB_URL)
        server_port = url.port if url.port not in (None, 6432) else 5432
        self.port = free_port()
        self.url = url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        self.directory = directory
        self.log = directory / "pgbouncer.log"
        users = "".join(f'"{user}" ""\n' for user in {"postgres", "root", url.username or ""})
        (directory / "users.txt").write_text(users)
        (directory / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\nunix_socket_dir =\n"
            "pool_mode = transaction\nauth_type = trust\n"
            f"auth_file = {directory / 'users.txt'}\n"
            "server_reset_query =\nignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.log}\n"
        )
        # PgBouncer refuses to run as root: as root, it runs as the postgres user.
        self.user = "postgres" if os.geteuid() == 0 else None
        if self.user is not None:
            shutil.chown(directory, self.user)
            for path in directory.iterdir():
                shutil.chown(path, self.user)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert PGBOUNCER is not None
        self.process = subprocess.Popen(
            [PGBOUNCER, "-q", str(self.directory / "pgbouncer.ini")],
            user=self.user,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        log = self.log.read_text() if self.log.exists() else ""
        self.stop()
        pytest.fail(f"PgBouncer did not listen on {self.port} within 10 s: {log[-500:]}")

    def stop(self) -> None:
        """Kill it (SIGKILL: no goodbye to its clients) and wait at most 5 s until gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        self.process = None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def bouncer() -> Iterator[PrivateBouncer]:
    if PGBOUNCER_PROBLEM is not None:
        pytest.skip(PGBOUNCER_PROBLEM)
    with tempfile.TemporaryDirectory(prefix="resources_kit_pgbouncer_") as directory:
        private = PrivateBouncer(Path(directory))
        private.start()
        try:
            yield private
        finally:
            private.stop()


class StopsTheBouncer(ListMixin, CreateMixin, Resource):
    """Counters; a create whose ``X-Fault: bouncer`` asks it kills the PgBouncer between
    its INSERT and its commit."""

    name, model, schema = "bouncing", Counter, CounterSchema
    bouncer: ClassVar[PrivateBouncer | None] = None

    def perform_create(self, data: dict[str, Any]) -> Any:
        obj = super().perform_create(data)
        self.get_session().flush()  # the INSERT is sent: PgBouncer dies before the commit
        if request.headers.get("X-Fault") == "bouncer" and self.bouncer is not None:
            self.bouncer.stop()
        return obj


def test_pgbouncer_down_is_503_writes_nothing_and_the_next_request_recovers(
    database: Any, bouncer: PrivateBouncer
) -> None:
    """Requests through a PgBouncer that is killed in the middle of a write: that write
    and every request while it is down are 503 problem+json with ``Retry-After``, nothing
    is written, and once it is started again the next request succeeds."""
    StopsTheBouncer.bouncer = bouncer
    options = pooled_engine_options(bouncer.url)
    options["connect_args"]["connect_timeout"] = 2  # every wait bounded
    app = make_app(
        lambda router: router.register(StopsTheBouncer),
        SQLALCHEMY_DATABASE_URI=bouncer.url,
        SQLALCHEMY_ENGINE_OPTIONS=options,
    )
    client = app.test_client()
    try:
        assert client.post("/api/bouncing", json={"label": "before"}).status_code == 201
        assert [c["label"] for c in client.get("/api/bouncing").json["items"]] == ["before"]

        started = time.monotonic()
        body = {"label": "lost"}
        assert_unavailable(client.post("/api/bouncing", json=body, headers={"X-Fault": "bouncer"}))
        assert bouncer.process is None  # it was killed mid-write
        assert_unavailable(client.get("/api/bouncing"))
        assert_unavailable(client.post("/api/bouncing", json={"label": "refused"}))
        assert time.monotonic() - started < 10
        assert stored_labels() == ["before"]

        bouncer.start()
        listed = client.get("/api/bouncing")
        assert listed.status_code == 200, listed.get_data(as_text=True)
        assert [c["label"] for c in listed.json["items"]] == ["before"]
        assert client.post("/api/bouncing", json={"label": "after"}).status_code == 201
        assert stored_labels() == ["after", "before"]
    finally:
        StopsTheBouncer.bouncer = None
        with app.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


def stored_labels() -> list[str]:
    """The counters' labels, read past every PgBouncer (straight from the test database)."""
    with other_connection() as other:
        return sorted(other.execute(select(Counter.label)).scalars())
