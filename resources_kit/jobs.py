"""Background work: tasks, the ``Jobs`` extension, and a job's run with its tenant restored.

Lifecycle (see *Background work* in the docs):

1. ``enqueue(view, task, **arguments)`` in a hook, callback or action adds the job's row
   to the write's session: inserted by its flush, committed or rolled back with it;
2. right after the commit the job is published to Celery (``RESOURCES_KIT_JOBS_BROKER_URL``)
   or, with no broker, run in-process; a failure there is only logged;
3. the relay (``flask resources relay``, or the beat task) republishes every job not
   claimed within ``RESOURCES_KIT_JOBS_ACK_TIMEOUT``, or whose worker was lost;
4. a worker claims the job, restores the enqueuing request's scope (and its row-level
   security settings) and runs the task; the task's writes and the "succeeded" mark
   commit together, fenced by the attempt number, so a duplicate delivery changes nothing;
5. a task that raises is retried with exponential backoff, then kept as ``failed``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, cast

from flask import Flask, current_app
from sqlalchemy.orm import Session

from . import outbox
from .cli import install_jobs_cli
from .database import bind_settings, unbind_settings
from .errors import HTTPError, ImproperlyConfigured, ResourcesKitError, problem_body
from .extension import app_state
from .jobstatus import JobResource, JobSchema, accepted
from .nesting import Mount, Place, bind_values, guard_values, unbind_values
from .outbox import WriteJob
from .resource import Resource
from .tenancy import TenantScopeMixin

#: ``app.config`` keys and their defaults.
DEFAULTS: Mapping[str, Any] = {
    #: The Celery broker (``redis://...``, ``amqp://...``); ``None``: run in-process.
    "RESOURCES_KIT_JOBS_BROKER_URL": None,
    #: Seconds a queued job may wait for a worker before the relay republishes it.
    "RESOURCES_KIT_JOBS_ACK_TIMEOUT": 60.0,
    #: Seconds a worker may hold a job before it is taken for lost and run again.
    "RESOURCES_KIT_JOBS_LEASE": 300.0,
    #: Seconds before the first retry; each later one waits twice as long.
    "RESOURCES_KIT_JOBS_RETRY_BACKOFF": 2.0,
    #: Attempts before a job is kept as failed (a task may set its own).
    "RESOURCES_KIT_JOBS_MAX_ATTEMPTS": 5,
    #: Seconds between two runs of the relay's Celery beat task.
    "RESOURCES_KIT_JOBS_RELAY_INTERVAL": 30.0,
    #: Publish a committed write's jobs from a thread of the process, not in the request.
    "RESOURCES_KIT_JOBS_PUBLISH_IN_THREAD": True,
    #: Publish straight to a Redis broker's queue where that sends what Celery would.
    "RESOURCES_KIT_JOBS_DIRECT_REDIS": True,
    #: More Celery settings (``{"broker_transport_options": {...}}``).
    "RESOURCES_KIT_JOBS_CELERY": {},
}


@dataclass(frozen=True)
class Task:
    """A function registered with :meth:`Jobs.task`; calling it runs it directly."""

    name: str
    func: Callable[..., Any]
    max_attempts: int | None = None

    def __call__(self, **arguments: Any) -> Any:
        return self.func(**arguments)

    def enqueue(self, view: Any, *, identity: Any = None, **arguments: Any) -> Any:
        """``enqueue(view, self, ...)``."""
        return enqueue(view, self, identity=identity, **arguments)


@dataclass
class JobContext:
    """The job a task runs for: its row, and the views made for it."""

    job: Any
    jobs: Jobs
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.job.id)

    @property
    def attempt(self) -> int:
        return int(self.job.attempts)

    @property
    def identity(self) -> Any:
        return self.job.identity

    @property
    def tenant(self) -> dict[str, Any]:
        """The union of the enqueuing request's scopes (``{"school_id": 1}``)."""
        return dict(self.job.scope.get("tenant", {}))


_current: ContextVar[JobContext | None] = ContextVar("resources_kit_job", default=None)


def current_job() -> JobContext:
    """The job the running task serves: ``.id`` (stable over every delivery), ``.attempt``,
    ``.identity``, ``.tenant``."""
    context = _current.get()
    if context is None:
        raise ResourcesKitError("current_job() is only available inside a running job.")
    return context


class Jobs:
    """Durable background work for a Flask-SQLAlchemy app::

        jobs = Jobs(db)

        @jobs.task
        def send_welcome(teacher_id):
            ...

        class WelcomeEmail(Callback):          # a post_create callback
            def execute(self):
                enqueue(self.view, send_welcome, teacher_id=self.resource.id)

        jobs.init_app(app)

    ``load_user(identity)`` turns a job's identity back into the user that permissions see
    in a task's views (default: the identity itself).
    """

    def __init__(
        self,
        db: Any,
        app: Flask | None = None,
        *,
        load_user: Callable[[Any], Any] | None = None,
    ) -> None:
        self.db = db
        #: The mapped class of the outbox table.
        self.model = outbox.job_model(db)
        self.tasks: dict[str, Task] = {}
        self.load_user = load_user or (lambda identity: identity)
        if app is not None:
            self.init_app(app)

    def task(
        self,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        max_attempts: int | None = None,
    ) -> Any:
        """Register ``func`` as a task (``@jobs.task`` or ``@jobs.task(max_attempts=3)``)."""

        def register(func: Callable[..., Any]) -> Task:
            task = Task(name or f"{func.__module__}.{func.__qualname__}", func, max_attempts)
            if task.name in self.tasks:
                raise ImproperlyConfigured(f"A task named {task.name!r} is already registered.")
            self.tasks[task.name] = task
            return task

        return register(func) if func is not None else register

    def init_app(self, app: Flask) -> None:
        """Install the extension on ``app``: the ``RESOURCES_KIT_JOBS_*`` defaults, and the
        delivery of the jobs each write commits."""
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        app.extensions["resources_kit_jobs"] = self
        broker = app.config["RESOURCES_KIT_JOBS_BROKER_URL"]
        celery = publisher = sender = None
        if broker:
            # Only with a broker: Celery is optional.
            from .workers import Publisher, make_celery, redis_sender

            celery = make_celery(self, app, broker)
            if app.config["RESOURCES_KIT_JOBS_DIRECT_REDIS"]:
                sender = redis_sender(celery)
            if app.config["RESOURCES_KIT_JOBS_PUBLISH_IN_THREAD"]:
                publisher = Publisher(app, self)
        app.extensions["resources_kit_celery"] = celery
        app.extensions["resources_kit_publisher"] = publisher
        app.extensions["resources_kit_redis_sender"] = sender
        install_jobs_cli(app, self)

    @property
    def celery(self) -> Any:
        """The current app's Celery app (``None`` without a broker: jobs run in-process)."""
        return current_app.extensions.get("resources_kit_celery")

    # -- configuration ----------------------------------------------------------------------

    def setting(self, key: str) -> Any:
        """The app's ``RESOURCES_KIT_JOBS_<key>`` setting, or its default."""
        name = f"RESOURCES_KIT_JOBS_{key}"
        return current_app.config.get(name, DEFAULTS[name])

    @property
    def session(self) -> Session:
        """The session of the jobs' own statements (the app's)."""
        return cast(Session, self.db.session())

    # -- delivery ---------------------------------------------------------------------------

    def dispatch(self, ids: Sequence[str], *, background: bool = False) -> None:
        """Committed jobs: published to the broker (by the publisher thread, with
        ``background``), or run here with no broker. Never raises: what fails is left to
        the relay."""
        publisher = current_app.extensions.get("resources_kit_publisher")
        if background and publisher is not None:
            publisher.put(ids)
            return
        if self.celery is None:
            for job_id in ids:
                self.deliver(job_id)
            return
        if not ids:
            return
        sender = current_app.extensions.get("resources_kit_redis_sender")
        try:
            if sender is not None:  # the same messages, one round trip (workers.py)
                sender.send(ids)
                return
            with self.celery.producer_or_acquire() as producer:  # one connection for all
                # kombu >= 5.7 sends many messages in one round trip (a Redis pipeline).
                batch = getattr(producer, "batch", None) if len(ids) > 1 else None
                with batch() if batch is not None else nullcontext():
                    for job_id in ids:
                        self.deliver(job_id, producer)
        except Exception:
            current_app.logger.exception("Jobs %s not delivered; the relay will.", list(ids))

    def deliver(self, job_id: str, producer: Any = None) -> None:
        """Publish one committed job; a failure is logged, and the relay retries it."""
        try:
            self.publish(job_id, producer=producer)
        except Exception:
            current_app.logger.exception("Job %s not delivered; the relay will.", job_id)

    def publish(self, job_id: str, countdown: float | None = None, producer: Any = None) -> None:
        """Send one job to the broker; with no broker, run it here (a retry waits for
        the relay)."""
        if self.celery is None:
            if countdown is None:
                self.run(job_id)
            return
        from .workers import publish

        publish(self.celery, job_id, countdown, producer)

    def relay(self, *, limit: int = 500) -> int:
        """Redeliver every job due (not claimed in time, lost, or waiting to retry); how
        many. Without a broker, runs them here."""
        session = self.session
        total = 0
        while True:
            ids = outbox.due(session, self.model, limit)
            outbox.redeliver(session, self.model, ids, self.setting("ACK_TIMEOUT"))
            session.commit()
            self.dispatch(ids)
            total += len(ids)
            if len(ids) < limit:
                return total

    def retry(self, ids: Sequence[str] | None = None) -> list[str]:
        """Failed jobs (``ids``, or all) run again, with fresh attempts."""
        found = outbox.reopen(self.session, self.model, ids)
        self.session.commit()
        self.dispatch(found)
        return found

    def listing(self, statuses: Sequence[str] = (), limit: int = 50) -> list[Any]:
        """Jobs, newest first (only those of ``statuses``, if given)."""
        return list(outbox.listing(self.session, self.model, statuses, limit))

    def worker(self, argv: Sequence[str] = ()) -> None:
        """Run the jobs: a Celery worker with a broker; without one, the relay every
        second in this process (``--once``: one round)."""
        if self.celery is not None:
            from .workers import worker

            worker(self.celery, argv)
            return
        while True:
            self.relay()
            if "--once" in argv:
                return
            time.sleep(1.0)

    # -- a run -------------------------------------------------------------------------------

    def run(self, job_id: str) -> str:
        """Run one delivery of a job: ``"succeeded"``, ``"retrying"``, ``"failed"``,
        ``"skipped"`` (not waiting: done, or another worker's) or ``"superseded"``."""
        session = self.session
        job = outbox.claim(session, self.model, job_id, self.setting("LEASE"))
        if job is None:
            return "skipped"
        task = self.tasks.get(job.task)
        try:
            if task is None:
                raise ImproperlyConfigured(f"No task named {job.task!r} is registered.")
            with self.restored(job):
                result = task.func(**job.arguments)
                outbox.check_json("result", result)
                done = {"status": "succeeded", "result": result, "finished_at": outbox.now()}
                if not outbox.finish(session, self.model, job.id, job.attempts, done):
                    session.rollback()
                    return "superseded"
                session.commit()
        except Exception as exc:
            session.rollback()
            return self.failed(job, task, exc)
        outbox.deliver_committed(session)  # jobs the task enqueued
        return "succeeded"

    def failed(self, job: Any, task: Task | None, exc: Exception) -> str:
        """Record an attempt that raised: retried with backoff, or kept as failed once
        its attempts are spent; the status it is left in."""
        session = self.session
        limit = (task.max_attempts if task else None) or self.setting("MAX_ATTEMPTS")
        final = job.attempts >= limit  # an unknown task too: a newer worker may know it
        delay = float(self.setting("RETRY_BACKOFF")) * 2 ** (job.attempts - 1)
        values = {
            "status": "failed" if final else "retrying",
            "problem": job_problem(exc),
            "due_at": outbox.now() + timedelta(seconds=delay + self.setting("ACK_TIMEOUT")),
            "finished_at": outbox.now() if final else None,
        }
        current_app.logger.warning(
            "Job %s (%s) attempt %s failed: %r", job.id, job.task, job.attempts, exc
        )
        if not outbox.finish(session, self.model, job.id, job.attempts, values):
            session.rollback()
            return "superseded"
        session.commit()
        if not final and self.celery is not None:
            self.dispatch_later(job.id, delay)
        return "failed" if final else "retrying"

    def dispatch_later(self, job_id: str, delay: float) -> None:
        """Publish a job again after ``delay`` seconds (a retry's backoff)."""
        try:
            self.publish(job_id, countdown=delay)
        except Exception:
            current_app.logger.exception("Retry of job %s not published; the relay will.", job_id)

    @contextmanager
    def restored(self, job: Any) -> Iterator[JobContext]:
        """The job's row-level security settings on every transaction of the block, and
        its scope for :func:`job_view`."""
        context = JobContext(job, self)
        token = _current.set(context)
        values = bind_values(context.values)
        settings = job.scope.get("settings") or {}
        bound = bind_settings(settings, self.db.session) if settings else None
        try:
            yield context
        finally:
            if bound is not None:
                unbind_settings(bound)
            unbind_values(values)
            _current.reset(token)


def enqueue(view: Any, task: Task | str, /, *, identity: Any = None, **arguments: Any) -> Any:
    """Add a job for ``task`` to ``view``'s write: its row is inserted by the write's
    flush and commits or rolls back with it. Records the scope of every level of the
    view's URL (refused without one) and ``identity`` (JSON); returns the job's row."""
    jobs = app_jobs()
    name = task.name if isinstance(task, Task) else task
    attempts = outbox.max_attempts(jobs, name)
    return outbox.add_job(
        view.get_session(),
        jobs.model,
        task=name,
        arguments=arguments,
        scope=outbox.record_scope(view),
        identity=identity,
        max_attempts=attempts,
        ack_timeout=jobs.setting("ACK_TIMEOUT"),
    )


def app_jobs() -> Jobs:
    jobs = current_app.extensions.get("resources_kit_jobs")
    if jobs is None:
        raise ImproperlyConfigured("The app has no Jobs extension; call Jobs(db).init_app(app).")
    return cast(Jobs, jobs)


def job_problem(exc: Exception) -> dict[str, Any]:
    """A problem document for a failed attempt: the HTTP error's own, or a 500 naming
    only the exception's type."""
    if isinstance(exc, HTTPError):
        return problem_body(exc)
    return {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": f"The task raised {type(exc).__name__}.",
    }


# -- the library's resources inside a task -------------------------------------------------


def job_view(resource: type[Resource]) -> Resource:
    """A view of ``resource`` inside the running job, scoped as the enqueuing request
    was: its ``get_scoped_query()`` and ``execute_read()`` see the tenant's rows only. A
    tenant-scoped resource the job's scope does not cover is refused (fail closed)."""
    context = current_job()
    mount = find_mount(context, resource)
    levels: list[Resource] = []
    for above in reversed(mount.chain()):
        view = cast(Resource, above.resource(above, "item" if levels else "collection"))
        view.action = "retrieve"
        view.scope = level_scope(context, above)
        if isinstance(view, TenantScopeMixin):
            try:
                view.check_scope(view.scope)
            except HTTPError:
                raise ResourcesKitError(
                    f"The job has no scope for {above.resource.__name__}."
                ) from None
        levels.append(view)
    place = Place(levels, url_values(levels, context.job.scope.get("url_kwargs", {})))
    for view in levels:
        view.place, view.caller = place, levels[0].caller
    identity = context.identity
    caller = levels[0].caller
    caller.source = levels[0]
    caller.user = None if identity is None else context.jobs.load_user(identity)
    place.values = guard_values(levels, place.url_kwargs)
    context.values.update(place.values)
    return levels[0]


def url_values(levels: Sequence[Resource], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """The URL's variables as the request had them: a lookup recorded as text (a UUID, a
    date) converted back for its column."""
    values = dict(recorded)
    for view in levels:
        options = view.options
        value = values.get(options.url_variable)
        if isinstance(value, str) and options.converter == "uuid":
            values[options.url_variable] = uuid.UUID(value)
        elif isinstance(value, str) and options.lookup_convert is not None:
            values[options.url_variable] = options.lookup_convert(value)
    return values


def find_mount(context: JobContext, resource: type[Resource]) -> Mount:
    recorded = [level["endpoint"] for level in context.job.scope.get("levels", [])]
    mounts = [
        mount
        for _, each in app_state(current_app).get("routers", [])
        for mount in each
        if mount.resource is resource
    ]
    mounts.sort(key=lambda m: (m.endpoint not in recorded, m.parent is not None))
    if not mounts:
        raise ImproperlyConfigured(f"{resource.__name__} is not registered on a router.")
    return cast(Mount, mounts[0])


def level_scope(context: JobContext, mount: Mount) -> dict[str, Any]:
    for level in context.job.scope.get("levels", []):
        if level["endpoint"] == mount.endpoint:
            return dict(level["scope"])
    tenant = context.tenant
    columns = getattr(mount.resource, "scope_columns", None) or [
        key for key in tenant if key in mount.resource.model.__table__.columns
    ]
    return {key: tenant[key] for key in columns if key in tenant}


__all__ = [
    "JobContext",
    "JobResource",
    "JobSchema",
    "Jobs",
    "Task",
    "WriteJob",
    "accepted",
    "current_job",
    "enqueue",
    "job_view",
]
