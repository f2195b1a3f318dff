"""``Idempotency-Key``: a write's answer stored in the same transaction as the write, and
replayed to every retry of it.

The request's transaction opens by inserting the key's row (``claim``). A concurrent retry
inserts the same primary key and so waits on the first's uncommitted row, up to
``RESOURCES_KIT_IDEMPOTENCY_WAIT`` seconds: when the first commits, the retry finds the row
and replays its answer; when it rolls back (an error, a crash: the database drops the
transaction), the retry's insert goes through and it runs the write itself; when the wait
runs out, a 409 with ``Retry-After``. Just before the commit the write unit stores the
answer in the row (``store_answer``), so a process killed between commit and answer leaves
the answer behind, and a retry gets it.

With ``RESOURCES_KIT_IDEMPOTENCY_STORAGE = "redis"`` the keys live in Redis instead (no
table): a running marker set with ``SET NX``, replaced by the answer after the commit. The
answer is then not in the write's transaction: a process killed between its commit and
storing the answer leaves a marker that expires, and a retry after that writes again.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from flask import Response, current_app
from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from .errors import HTTPError

#: The library's table (joined to the app's metadata by ``Guards.init_app``).
TABLE = "resources_kit_idempotency_keys"

#: The headers of an answer that a replay repeats.
REPLAYED_HEADERS = ("Content-Type", "Location", "ETag", "Link")


def idempotency_table(metadata: MetaData) -> Table:
    """The table of stored answers, in ``metadata`` (made there once)."""
    found = metadata.tables.get(TABLE)
    if found is not None:
        return found
    return Table(
        TABLE,
        metadata,
        #: sha256 of the key, the caller and the scope of every level.
        Column("id", String(64), primary_key=True),
        #: sha256 of the method, the path and the body: another body is a 422.
        Column("fingerprint", String(64), nullable=False),
        #: The answer: ``None`` while the first request runs (never committed so).
        Column("status", Integer, nullable=True),
        Column("headers", Text, nullable=True),
        Column("body", LargeBinary, nullable=True),
        Column("created_at", BigInteger, nullable=False),
        Column("expires_at", BigInteger, nullable=False, index=True),
    )


@dataclass(eq=False)
class Claim:
    """A key this request holds, inside its transaction."""

    identity: str
    #: Whether the answer joined the write's transaction.
    stored: bool = False


def claim(table: Any, session: Any, identity: str, fingerprint: str, ttl: int) -> Claim | Response:
    """Insert the key's row in the request's transaction, or answer from the row a first
    request committed (a replay; 422 for another body; 409 while it still runs)."""
    if table is None:
        raise HTTPError(500, "Idempotency-Key needs Flask-SQLAlchemy: init Guards(app) after it.")
    wait = float(current_app.config.get("RESOURCES_KIT_IDEMPOTENCY_WAIT", 10))
    for _ in range(3):
        now = int(time.time())
        values = {
            "id": identity,
            "fingerprint": fingerprint,
            "created_at": now,
            "expires_at": now + ttl,
        }
        try:
            with bounded_wait(session, wait):
                session.execute(claim_statement(table, session, wait), values)
            return Claim(identity)
        except IntegrityError:
            session.rollback()
        except OperationalError as exc:
            session.rollback()
            if not waited_out(exc):  # a missing table, a server gone: not the key's doing
                raise
            raise busy(wait) from None
        row = session.execute(select(table).where(table.c.id == identity)).first()
        session.rollback()
        if row is None:  # the first rolled back meanwhile: claim it again
            continue
        if row.expires_at <= now:
            session.execute(delete(table).where(table.c.id == identity))
            session.commit()
            continue
        if row.fingerprint != fingerprint:
            raise HTTPError(
                422,
                "This Idempotency-Key was used for another request (method, path or body); "
                "use a new key for a new request.",
            )
        if row.status is None:
            raise busy(wait)
        return replay(row)
    raise busy(wait)


#: What a wait that ran out (or a deadlock among retries) looks like: PostgreSQL's
#: SQLSTATEs, MariaDB's error numbers, SQLite's message.
LOCK_STATES = frozenset({"55P03", "40P01"})
LOCK_ERRORS = frozenset({1205, 1213})


def waited_out(exc: OperationalError) -> bool:
    original = exc.orig
    if getattr(original, "sqlstate", None) in LOCK_STATES:
        return True
    args = getattr(original, "args", ())
    if args and args[0] in LOCK_ERRORS:
        return True
    return "database is locked" in str(original)


def busy(wait: float) -> HTTPError:
    return HTTPError(
        409,
        "A request with this Idempotency-Key is still being processed; retry later.",
        headers={"Retry-After": str(max(1, int(wait)))},
    )


@contextmanager
def bounded_wait(session: Any, wait: float) -> Iterator[None]:
    """On SQLite, whose wait for a writer is the connection's busy timeout, that timeout
    is ``wait`` for the claim only (the other databases bound it in the statement)."""
    if session.get_bind().dialect.name != "sqlite":
        yield
        return
    # On the driver's connection: a pragma is no statement of the transaction, and this
    # costs a tenth of three through the session.
    raw = session.connection().connection.driver_connection
    before = int(raw.execute("PRAGMA busy_timeout").fetchone()[0])
    raw.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")
    try:
        yield
    finally:
        raw.execute(f"PRAGMA busy_timeout = {before}")


def claim_statement(table: Any, session: Any, wait: float) -> Any:
    """The insert, bounded to wait ``wait`` seconds for a concurrent holder of the key:
    ``lock_timeout`` for this transaction on PostgreSQL (no extra statement), ``SET
    STATEMENT`` on MariaDB; SQLite's busy timeout (:func:`bounded_wait`) otherwise."""
    dialect = session.get_bind().dialect
    columns = "id, fingerprint, created_at, expires_at"
    marks = ":id, :fingerprint, :created_at, :expires_at"
    if dialect.name == "postgresql":
        return text(
            f"WITH wait AS (SELECT set_config('lock_timeout', '{int(wait * 1000)}ms', true)) "
            f"INSERT INTO {TABLE} ({columns}) SELECT {marks} FROM wait"
        )
    if dialect.name in ("mysql", "mariadb") and getattr(dialect, "is_mariadb", False):
        return text(
            f"SET STATEMENT innodb_lock_wait_timeout = {max(1, int(wait))} FOR "
            f"INSERT INTO {TABLE} ({columns}) VALUES ({marks})"
        )
    return insert(table)


def store_answer(table: Any, session: Any, pending: Claim, response: Response) -> None:
    """The answer written into the claimed row, in the write's transaction."""
    headers = [
        (name, response.headers[name]) for name in REPLAYED_HEADERS if name in response.headers
    ]
    session.execute(
        update(table)
        .where(table.c.id == pending.identity)
        .values(status=response.status_code, headers=json.dumps(headers), body=response.get_data())
    )
    pending.stored = True


def replay(row: Any) -> Response:
    """The stored answer, as the first request sent it."""
    return replayed(row.status, json.loads(row.headers), row.body)


def replayed(status: int, headers: list[tuple[str, str]], body: bytes) -> Response:
    response = current_app.response_class(body, status=status)
    response.headers.clear()
    for name, value in headers:
        response.headers[name] = value
    response.headers["Idempotent-Replayed"] = "true"
    return response


def purge_expired(session: Any, table: Any) -> int:
    """Delete the keys past their expiry (a periodic job may call it); how many went."""
    result = session.execute(delete(table).where(table.c.expires_at <= int(time.time())))
    session.commit()
    return int(result.rowcount)


# -- optional: the keys in Redis ------------------------------------------------------------


@dataclass(eq=False)
class RedisClaim:
    """A key this request holds in Redis: a running marker that expires by itself."""

    channel: Any
    key: str
    token: str
    fingerprint: str
    #: The running marker as it was set: what an error answer deletes, if still there.
    marker: bytes
    stored: bool = False


def claim_in_redis(
    channel: Any, identity: str, fingerprint: str, wait: float
) -> RedisClaim | Response:
    """Set the running marker (``SET NX``), or answer from the key: the stored answer, a
    422 for another body, or a 409 once ``wait`` seconds passed with the first running.
    ``channel`` is the guards' :class:`~resources_kit.caching.Channel` to Redis."""
    key, token = f"rk:idempotency:{identity}", uuid.uuid4().hex
    running = json.dumps({"f": fingerprint, "t": token}).encode()
    deadline = time.monotonic() + wait
    # The marker outlives the wait, and expires if the process dies before answering.
    marker_ms = int(max(wait, 30) * 1000)
    while True:
        if channel.call("SET", key, running, "NX", "PX", marker_ms) is not None:
            return RedisClaim(channel, key, token, fingerprint, running)
        found = channel.call("GET", key)
        if found is not None:
            held = json.loads(found)
            if held.get("t") == token:  # ours: the SET went through, its reply was lost
                return RedisClaim(channel, key, token, fingerprint, running)
            if held["f"] != fingerprint:
                raise HTTPError(
                    422,
                    "This Idempotency-Key was used for another request (method, path or "
                    "body); use a new key for a new request.",
                )
            if "s" in held:
                return replayed(held["s"], held["h"], bytes.fromhex(held["b"]))
        if time.monotonic() >= deadline:
            raise busy(wait)
        time.sleep(0.05)


def finish_in_redis(pending: RedisClaim, response: Response, ttl: int) -> None:
    """After the commit: the answer replaces the marker (an error answer frees the key).
    The answer's ``SET`` waits for its reply: a connection lost is opened again and the
    ``SET`` sent again, and a refusal (an out-of-memory or read-only Redis) is raised."""
    channel, key = pending.channel, pending.key
    if response.status_code >= 400:
        if channel.call("GET", key) == pending.marker:
            channel.call("DEL", key)
        return
    headers = [
        (name, response.headers[name]) for name in REPLAYED_HEADERS if name in response.headers
    ]
    answer = {"f": pending.fingerprint, "s": response.status_code, "h": headers}
    answer["b"] = response.get_data().hex()
    channel.call("SET", key, json.dumps(answer), "EX", max(ttl, 1))
    pending.stored = True
