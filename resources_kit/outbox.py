"""The outbox: a job is a row written in the same flush and transaction as the change that
asked for it, and every later step of its life is one conditional ``UPDATE`` of that row.

=========  ====================================================================
status     meaning
=========  ====================================================================
queued     committed with its write; waiting for a worker (``due_at``: when the
           relay republishes it if no worker has claimed it)
running    claimed by a worker (attempt ``attempts``); ``due_at``: its lease
retrying   failed or lost, to be run again at ``due_at``
succeeded  done; ``result`` holds what the task returned
failed     failed ``max_attempts`` times; kept, with its ``problem``, until retried
=========  ====================================================================

Each attempt fences the next: a worker marks its job done only while the row still
carries its attempt number, in the transaction of the task's own writes, so a job that
was delivered twice commits its effect once.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from flask import current_app
from sqlalchemy import JSON, DateTime, Integer, String, event, inspect, or_, select, update
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import Mapped, Session, mapped_column, scoped_session

from .database import request_settings
from .errors import HTTPError, ImproperlyConfigured, ResourcesKitError

#: The table of the outbox (and of every job's status).
TABLE = "resources_kit_jobs"
STATUSES = ("queued", "running", "succeeded", "failed", "retrying")
#: Statuses the relay looks at: not done, and not given up on.
OPEN = ("queued", "running", "retrying")
#: ``session.info`` keys: jobs added in the current transaction, and committed ones not
#: yet handed to the broker (or run, in-process).
PENDING, COMMITTED = "resources_kit_pending_jobs", "resources_kit_committed_jobs"

#: Microseconds on MariaDB/MySQL too, whose DATETIME keeps whole seconds by default.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

_models: dict[int, type[Any]] = {}


def now() -> datetime:
    """UTC, naive: what every column of the table stores."""
    return datetime.now(UTC).replace(tzinfo=None)


def job_model(db: Any) -> type[Any]:
    """The mapped class of the outbox table on Flask-SQLAlchemy ``db``'s metadata (made
    once per ``db``), so that ``db.create_all()`` and Alembic's autogenerate see it."""
    model = _models.get(id(db))
    if model is not None:
        return model

    class ResourcesKitJob(db.Model):  # type: ignore[misc]
        __tablename__ = TABLE
        #: The job's id: the Celery task id too, stable across every delivery.
        id: Mapped[str] = mapped_column(String(36), primary_key=True)
        task: Mapped[str] = mapped_column(String(200))
        arguments: Mapped[Any] = mapped_column(JSON)
        #: Every URL level's scope, the URL's variables, the row-level security settings.
        scope: Mapped[Any] = mapped_column(JSON)
        identity: Mapped[Any] = mapped_column(JSON, nullable=True)
        #: The union of the levels' scopes as canonical JSON: what the job resource's
        #: tenant scope compares with.
        tenant: Mapped[str] = mapped_column(String(255), index=True)
        status: Mapped[str] = mapped_column(String(10), index=True)
        attempts: Mapped[int] = mapped_column(Integer, default=0)
        max_attempts: Mapped[int] = mapped_column(Integer)
        due_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
        created_at: Mapped[datetime] = mapped_column(Timestamp)
        finished_at: Mapped[datetime | None] = mapped_column(Timestamp, nullable=True)
        result: Mapped[Any] = mapped_column(JSON, nullable=True)
        problem: Mapped[Any] = mapped_column(JSON, nullable=True)

    _models[id(db)] = ResourcesKitJob
    return ResourcesKitJob


def tenant_key(scope: Mapping[str, Any]) -> str:
    """The canonical form of a scope (``{"school_id": 1}`` -> ``'{"school_id":1}'``)."""
    return json.dumps(dict(scope), sort_keys=True, separators=(",", ":"))


# -- what a job records of the request --------------------------------------------------


def check_json(what: str, value: Any) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ImproperlyConfigured(f"A job's {what} must be JSON: {exc}.") from None


def json_value(value: Any) -> Any:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def record_scope(view: Any) -> dict[str, Any]:
    """The scope of every level of ``view``'s URL, its variables and the row-level
    security settings; a tenant-scoped level without a scope refuses the job."""
    levels = view.place.levels
    merged: dict[str, Any] = {}
    recorded = []
    for level in levels:
        try:
            level.check_scope(level.scope)  # the resource's own rule: fail closed
        except HTTPError:
            raise ResourcesKitError(
                f"A job enqueued from {type(level).__name__} needs its tenant scope; this view "
                "has none (enqueue inside the request, from the view serving it)."
            ) from None
        recorded.append({"endpoint": level.mount.endpoint, "scope": dict(level.scope)})
        for key, value in level.scope.items():
            if merged.setdefault(key, value) != value:
                raise ImproperlyConfigured(
                    f"The levels of {type(view).__name__}'s URL scope {key!r} to different "
                    "values; a job has one tenant."
                )
    scope = {
        "levels": recorded,
        # A UUID or a date in the URL as its text; job_view() converts it back.
        "url_kwargs": {key: json_value(value) for key, value in view.url_kwargs.items()},
        "settings": {key: str(value) for key, value in request_settings(levels).items()},
        "tenant": merged,
    }
    check_json("scope", scope)
    return scope


def job_values(
    *,
    task: str,
    arguments: Mapping[str, Any],
    scope: Mapping[str, Any],
    identity: Any,
    max_attempts: int,
    ack_timeout: float,
) -> dict[str, Any]:
    """The column values of a new job's row (its arguments and identity checked JSON)."""
    check_json("arguments", dict(arguments))
    check_json("identity", identity)
    moment = now()
    return {
        "id": str(uuid.uuid4()),
        "task": task,
        "arguments": dict(arguments),
        "scope": dict(scope),
        "identity": identity,
        "tenant": tenant_key(scope.get("tenant", {})),
        "status": "queued",
        "attempts": 0,
        "max_attempts": max_attempts,
        "due_at": moment + timedelta(seconds=ack_timeout),
        "created_at": moment,
    }


def add_job(session: Session | scoped_session[Session], model: type[Any], **values: Any) -> Any:
    """Add the job's row to the session (inserted by the write's next flush)."""
    row = model(**job_values(**values))
    session.add(row)
    pending(session).append((row, row.id))
    return row


def insert_jobs(
    session: Session | scoped_session[Session], model: type[Any], rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert jobs' rows now, by one statement on the session's connection: in its
    transaction, committed or rolled back with it (the write unit's, for the jobs a
    resource declares)."""
    connection = session.connection(bind_arguments={"mapper": inspect(model)})
    connection.execute(model.__table__.insert(), list(rows))
    pending(session).extend((None, row["id"]) for row in rows)


def pending(session: Session | scoped_session[Session]) -> list[tuple[Any, str]]:
    """The jobs added in the session's current transaction: ``(row, id)``, the row
    ``None`` for one inserted by a statement (no object to ask whether a savepoint's
    rollback dropped it: the write unit inserts in its outermost transaction)."""
    real = session() if isinstance(session, scoped_session) else session
    listen(real)
    return cast(list[tuple[Any, str]], real.info.setdefault(PENDING, []))


# -- jobs a resource declares -----------------------------------------------------------


class WriteJob:
    """A job each write of an operation enqueues, declared on the resource::

        class TeacherResource(...):
            create_jobs = [WriteJob(send_welcome, teacher_id="id")]
            archive_jobs = [WriteJob(reindex, arguments=lambda item: {"ids": [item.id]})]

    ``<operation>_jobs`` (``create``, ``update``, ``patch``, ``delete`` or a writing
    ``@action``'s name) lists them. For each row the write leaves (the new or changed
    item, the deleted one, a collection action's new rows) the job's row is inserted in
    the write's transaction, after its flush: each keyword names an attribute of the row
    (a value that is not JSON, a UUID or a date, goes as its text), ``arguments(row)``
    adds more, ``identity(view)`` is the job's identity. A job naming only columns sees
    nothing of the written object, so a create or a change by one statement (see
    *Performance*) keeps that path, with one more ``INSERT``; one with ``arguments``, or
    naming what is no column, gets the object.
    """

    def __init__(
        self,
        task: Any,
        *,
        arguments: Callable[[Any], Mapping[str, Any]] | None = None,
        identity: Callable[[Any], Any] | None = None,
        **attributes: str,
    ) -> None:
        name = getattr(task, "name", task)
        if not isinstance(name, str):
            raise ImproperlyConfigured(f"WriteJob({task!r}): a task, or a task's name.")
        for argument, attribute in attributes.items():
            if not isinstance(attribute, str):
                raise ImproperlyConfigured(
                    f"WriteJob({name!r}, {argument}={attribute!r}): name an attribute of the "
                    "written row, or compute it with arguments=."
                )
        self.task = name
        self.attributes = dict(attributes)
        self.arguments = arguments
        self.identity = identity

    def __repr__(self) -> str:
        return f"WriteJob({self.task!r})"

    def arguments_of(self, row: Any) -> dict[str, Any]:
        """The job's arguments for the written ``row``."""
        values = {
            argument: json_value(getattr(row, attribute))
            for argument, attribute in self.attributes.items()
        }
        if self.arguments is not None:
            values.update(self.arguments(row))
        return values


def check_declared(cls: type[Any], operations: Sequence[str]) -> None:
    """Refuse, at registration, ``<operation>_jobs`` that is not a list of
    :class:`WriteJob`, or whose operation the class has not: it would never run."""
    for attribute in dir(cls):
        if not attribute.endswith("_jobs") or attribute.startswith("_"):
            continue
        value = getattr(cls, attribute)
        holds_jobs = isinstance(value, list | tuple) and any(
            isinstance(item, WriteJob) for item in value
        )
        operation = attribute[: -len("_jobs")]
        if operation not in operations:
            if holds_jobs:
                raise ImproperlyConfigured(
                    f"{cls.__name__}.{attribute} names no operation or @action of "
                    f"{cls.__name__} (known: {', '.join(sorted(operations))}); it would "
                    "never run."
                )
            continue
        if not isinstance(value, list | tuple) or not all(
            isinstance(item, WriteJob) for item in value
        ):
            raise ImproperlyConfigured(
                f"{cls.__name__}.{attribute} must be a list of WriteJob(...), not {value!r}."
            )


def max_attempts(jobs: Any, task: str) -> int:
    """The attempts a job of the registered ``task`` gets (refused if none is)."""
    registered = jobs.tasks.get(task)
    if registered is None:
        raise ImproperlyConfigured(f"No task named {task!r} is registered with Jobs.task.")
    return int(registered.max_attempts or jobs.setting("MAX_ATTEMPTS"))


def enqueue_declared(
    view: Any, session: Any, specs: Sequence[WriteJob], rows: Sequence[Any]
) -> None:
    """The declared jobs of a write, for each of ``rows``: one ``INSERT`` in the write's
    transaction (delivered after its commit, as :func:`add_job`'s)."""
    jobs = current_app.extensions.get("resources_kit_jobs")
    if jobs is None:
        raise ImproperlyConfigured(
            f"{type(view).__name__} declares jobs; the app has no Jobs extension "
            "(Jobs(db).init_app(app))."
        )
    scope = record_scope(view)
    ack_timeout = jobs.setting("ACK_TIMEOUT")
    values = []
    for spec in specs:
        identity = spec.identity(view) if spec.identity is not None else None
        attempts = max_attempts(jobs, spec.task)
        for row in rows:
            values.append(
                job_values(
                    task=spec.task,
                    arguments=spec.arguments_of(row),
                    scope=scope,
                    identity=identity,
                    max_attempts=attempts,
                    ack_timeout=ack_timeout,
                )
            )
    if values:
        insert_jobs(session, jobs.model, values)


# -- after the commit ----------------------------------------------------------------------


def listen(session: Session) -> None:
    if not event.contains(Session, "after_commit", committed):
        event.listen(Session, "after_commit", committed)
        event.listen(Session, "after_soft_rollback", rolled_back)


def committed(session: Session) -> None:
    """The jobs of the transaction just committed become due for delivery; a row that a
    savepoint's rollback dropped is no longer persistent, and is not one of them."""
    pending = session.info.pop(PENDING, None)
    if pending:
        ids = [job_id for row, job_id in pending if row is None or inspect(row).persistent]
        session.info.setdefault(COMMITTED, []).extend(ids)


def rolled_back(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost: nothing of it was written
        session.info.pop(PENDING, None)


def deliver_committed(session: Session | scoped_session[Session]) -> None:
    """Hand the jobs committed on ``session`` to the app's jobs extension (published to
    the broker, or run in-process); the write unit calls it right after its commit. A
    failure is logged: the relay delivers whatever is left."""
    real = session() if isinstance(session, scoped_session) else session
    ids = real.info.pop(COMMITTED, None)
    if not ids:
        return
    jobs = current_app.extensions.get("resources_kit_jobs")
    if jobs is None:  # pragma: no cover - enqueue needs the extension
        return
    jobs.dispatch(ids, background=True)


# -- the steps of a job's life, each one conditional UPDATE ------------------------------


def claim(session: Session, model: type[Any], job_id: str, lease: float) -> Any:
    """Mark the job running for one more attempt; the row, or ``None`` when it is not
    waiting (done, failed, or running under another worker's lease)."""
    moment = now()
    claimed = session.execute(
        update(model)
        .where(model.id == job_id, model.status.in_(("queued", "retrying")))
        .values(
            status="running",
            attempts=model.attempts + 1,
            due_at=moment + timedelta(seconds=lease),
        )
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        return None
    row = session.get(model, job_id, populate_existing=True)
    session.commit()
    return row


def finish(
    session: Session, model: type[Any], job_id: str, attempt: int, values: Mapping[str, Any]
) -> bool:
    """Record the end of ``attempt`` in the current transaction, if the job is still
    running that attempt (else a later attempt superseded it: ``False``)."""
    done = session.execute(
        update(model)
        .where(model.id == job_id, model.attempts == attempt, model.status == "running")
        .values(**values)
    )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


def due(session: Session, model: type[Any], limit: int) -> list[str]:
    """Jobs whose ``due_at`` passed: not claimed in time, lost with their worker, or
    waiting for a retry."""
    query = (
        select(model.id)
        .where(model.status.in_(OPEN), model.due_at <= now())
        .order_by(model.due_at)
        .limit(limit)
    )
    return list(session.scalars(query))


def redeliver(session: Session, model: type[Any], ids: Sequence[str], ack_timeout: float) -> None:
    """Give the relay's jobs another ``ack_timeout`` (a lost worker's is retrying now)."""
    if not ids:
        return
    later = now() + timedelta(seconds=ack_timeout)
    rows = model.id.in_(list(ids))
    session.execute(update(model).where(rows, model.status == "running").values(status="retrying"))
    session.execute(update(model).where(rows, model.status.in_(OPEN)).values(due_at=later))


def reopen(session: Session, model: type[Any], ids: Sequence[str] | None) -> list[str]:
    """Failed jobs (those of ``ids``, or all) made retrying now, with fresh attempts."""
    query = select(model.id).where(model.status == "failed")
    if ids is not None:
        query = query.where(model.id.in_(list(ids)))
    found = list(session.scalars(query))
    if found:
        session.execute(
            update(model)
            .where(model.id.in_(found))
            .values(status="retrying", attempts=0, due_at=now(), problem=None)
        )
    return found


def listing(
    session: Session, model: type[Any], statuses: Sequence[str], limit: int
) -> Iterator[Any]:
    query = select(model).order_by(model.created_at.desc()).limit(limit)
    if statuses:
        query = query.where(or_(*(model.status == status for status in statuses)))
    yield from session.scalars(query)
