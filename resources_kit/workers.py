"""Celery delivery of the outbox's jobs: the Celery app a ``Jobs`` extension makes when a
broker is configured, its two tasks, and the worker.

The broker carries only job ids; everything else is in the job's row. Messages are
acknowledged late (after the task ran) and rejected when the worker dies, so a broker
that supports it redelivers them; the relay covers the rest.

- ``resources_kit.run_job(job_id)``: one delivery of one job, in the Flask app context;
- ``resources_kit.relay()``: the relay, every ``RESOURCES_KIT_JOBS_RELAY_INTERVAL``
  seconds for those who run Celery beat.
"""

from __future__ import annotations

import atexit
import base64
import json
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from queue import SimpleQueue
from typing import Any

from celery import Celery
from flask import Flask

RUN_JOB = "resources_kit.run_job"
#: The job id of the message template a RedisSender fills in.
PLACEHOLDER = "00000000-0000-0000-0000-000000000000"
RELAY = "resources_kit.relay"


def make_celery(jobs: Any, app: Flask, broker: str) -> Celery:
    """A Celery app for ``jobs`` on ``broker`` (Redis, RabbitMQ: any Celery broker URL)."""
    config = app.config
    celery = Celery(app.import_name, broker=broker, set_as_current=False)
    celery.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        broker_transport_options={
            # Redis redelivers an unacknowledged message after this: the lease.
            "visibility_timeout": int(config["RESOURCES_KIT_JOBS_LEASE"]),
            # A publish to a broker that is down fails in milliseconds, not seconds: the
            # request is answered, and the relay delivers the job later.
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": 0.1,
            "interval_max": 0.1,
        },
        beat_schedule={
            "resources-kit-relay": {
                "task": RELAY,
                "schedule": float(config["RESOURCES_KIT_JOBS_RELAY_INTERVAL"]),
            }
        },
    )
    celery.conf.update(config["RESOURCES_KIT_JOBS_CELERY"])

    @celery.task(name=RUN_JOB, shared=False)  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> str:
        with app.app_context():
            outcome: str = jobs.run(job_id)
            jobs.db.session.remove()
        return outcome

    @celery.task(name=RELAY, shared=False)  # type: ignore[untyped-decorator]
    def relay() -> int:
        with app.app_context():
            count: int = jobs.relay()
            jobs.db.session.remove()
        return count

    return celery


class Publisher:
    """Publishes the jobs of committed writes from a thread of its own, so that a request
    waits for neither the broker's round trip nor Celery's message building (most of a
    create's cost otherwise). A job still in its queue when the process dies is one the
    relay republishes, as for a crash between the commit and the publish.

    Made per process: after a fork (gunicorn's workers) the first job starts a new thread.
    """

    def __init__(self, app: Flask, jobs: Any) -> None:
        self.app, self.jobs = app, jobs
        self.queue: SimpleQueue[str] = SimpleQueue()
        self.pid: int | None = None
        self.pending = 0
        self.changed = threading.Condition()

    def put(self, ids: Sequence[str]) -> None:
        with self.changed:
            if self.pid != os.getpid():
                # The transport's modules now, not in the thread during an interpreter
                # shutdown, which refuses the imports they do.
                self.app.extensions["resources_kit_celery"].producer_pool  # noqa: B018
                self.queue, self.pending, self.pid = SimpleQueue(), 0, os.getpid()
                thread = threading.Thread(target=self.run, name="resources_kit-jobs", daemon=True)
                thread.start()
                atexit.register(self.flush, 5.0)
            self.pending += len(ids)
        for job_id in ids:
            self.queue.put(job_id)

    def run(self) -> None:
        while True:
            burst = [self.queue.get()]
            while not self.queue.empty():
                burst.append(self.queue.get())
            try:
                with self.app.app_context():
                    self.jobs.dispatch(burst)  # logs a failure; the relay retries
            except Exception:  # pragma: no cover - dispatch logs its own failures
                self.app.logger.exception("Jobs %s not delivered; the relay will.", burst)
            with self.changed:
                self.pending -= len(burst)
                self.changed.notify_all()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every job handed over so far is published (or failed to be)."""
        with self.changed:
            return self.changed.wait_for(lambda: self.pending == 0, timeout)


def publish(
    celery: Celery, job_id: str, countdown: float | None = None, producer: Any = None
) -> None:
    """Send one job to the broker now (no retrying here: the relay is the retry)."""
    celery.send_task(
        RUN_JOB, args=[job_id], task_id=job_id, countdown=countdown, retry=False, producer=producer
    )


class RedisSender:
    """Publishes ``run_job`` messages straight to a Redis broker's queue: the message
    Celery's own ``send_task`` would put there (task protocol 2, JSON, the kombu Redis
    envelope), one pipelined ``LPUSH`` per burst. ``send_task`` costs about 0.75 ms of
    CPU per job in the web process (a new Redis client and a generic message build each
    time), which the request thread pays for through the GIL; this costs a tenth of it.

    Used only where it is exactly what ``send_task`` would send (see :func:`redis_sender`);
    a delayed retry still goes through ``send_task``."""

    def __init__(self, celery: Celery, queue: str) -> None:
        import redis

        options = celery.conf.broker_transport_options or {}
        self.client = redis.Redis.from_url(
            celery.conf.broker_url, socket_connect_timeout=1, socket_timeout=5
        )
        self.key = str(options.get("global_keyprefix", "")) + queue
        self.queue = queue
        # Celery's own message for a placeholder id: what this Celery version sends.
        template = celery.amqp.as_task_v2(
            PLACEHOLDER, RUN_JOB, args=[PLACEHOLDER], kwargs={}, ignore_result=None
        )
        self.headers: dict[str, Any] = dict(template.headers)
        self.embed = template.body[2]
        self.reply_to = celery.thread_oid  # as send_task sets it
        self.pid = -1

    def message(self, job_id: str) -> str:
        headers = {**self.headers, "id": job_id, "root_id": job_id, "argsrepr": repr([job_id])}
        body = json.dumps([[job_id], {}, self.embed])
        return json.dumps(
            {
                "body": base64.b64encode(body.encode()).decode(),
                "content-encoding": "utf-8",
                "content-type": "application/json",
                "headers": headers,
                "properties": {
                    "correlation_id": job_id,
                    "reply_to": self.reply_to,
                    "delivery_mode": 2,
                    "delivery_info": {"exchange": "", "routing_key": self.queue},
                    "priority": 0,
                    "body_encoding": "base64",
                    "delivery_tag": str(uuid.uuid4()),
                },
            }
        )

    def send(self, ids: Sequence[str]) -> None:
        """Publish ``ids`` in one round trip (raises when the broker cannot be reached)."""
        if not ids:  # Redis refuses an LPUSH of nothing
            return
        if self.pid != os.getpid():  # a forked worker: its own name as the origin
            self.pid = os.getpid()
            self.headers["origin"] = f"gen{self.pid}@{socket.gethostname()}"
        self.client.lpush(self.key, *(self.message(job_id) for job_id in ids))


def redis_sender(celery: Celery) -> RedisSender | None:
    """A :class:`RedisSender` when the broker is Redis and ``run_job`` goes to the default
    queue as Celery's defaults send it (JSON, no compression, no routes, no custom queues
    or priorities); otherwise ``None``, and ``send_task`` publishes."""
    conf = celery.conf
    scheme = str(conf.broker_url or "").split("://", 1)[0]
    plain = (
        scheme in ("redis", "rediss")
        and not conf.task_routes
        and conf.task_queues is None
        and conf.task_serializer == "json"
        and conf.task_compression is None
        and conf.task_protocol == 2
        and conf.task_default_priority is None
        and not conf.task_inherit_parent_priority
        and not (conf.broker_transport_options or {}).get("queue_order_strategy")
        and conf.task_default_exchange in (None, conf.task_default_queue)
        and conf.task_default_routing_key in (None, conf.task_default_queue)
    )
    return RedisSender(celery, conf.task_default_queue) if plain else None


def worker(celery: Celery, argv: Sequence[str] = ()) -> None:
    """Run a Celery worker for the jobs (``celery worker`` with ``argv``) in this process."""
    celery.worker_main(["worker", *argv])
