"""Background work on Celery, with real worker processes and a real Redis broker, and the
faults the outbox exists for: a web process killed between its commit and the publish, a
broker that is down during the request, a worker killed mid-task, a job delivered twice,
a rolled-back write; and on PostgreSQL, each task's raw SQL under row-level security.

Redis: ``RESOURCES_KIT_TEST_REDIS`` (default ``redis://127.0.0.1:6379/7``; only that
database is flushed). Without a server the tests skip, unless
``RESOURCES_KIT_REQUIRE_REDIS=1`` (CI), where that is an error."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import make_url, select, text

from resources_kit.workers import make_celery, publish, redis_sender

from .conftest import DB_URL, seed_two_schools
from .jobs_app import CHILD, CLOSED_BROKER, JobEffect, create_app, jobs
from .models import db

ROOT = Path(__file__).resolve().parent.parent
REDIS = os.environ.get("RESOURCES_KIT_TEST_REDIS", "redis://127.0.0.1:6379/7")
#: Seconds a worker holds a job before the relay takes it for lost (short: a fault test
#: waits for it).
LEASE = 3.0
Job = jobs.model
POSTGRES = make_url(DB_URL).get_backend_name() == "postgresql"


def redis_problem() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
    except Exception as exc:  # any failure to connect means: no server here
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="module")
def broker() -> Iterator[Any]:
    """The test Redis database, empty before and after."""
    problem = redis_problem()
    if problem is not None:
        message = f"no Redis at {REDIS} ({problem})"
        if os.environ.get("RESOURCES_KIT_REQUIRE_REDIS"):
            pytest.fail(f"{message}, and CI needs it")
        pytest.skip(message)
    import redis

    client = redis.Redis.from_url(REDIS)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def timing() -> dict[str, Any]:
    return {
        "RESOURCES_KIT_JOBS_ACK_TIMEOUT": 0.0,
        "RESOURCES_KIT_JOBS_LEASE": LEASE,
        "RESOURCES_KIT_JOBS_RETRY_BACKOFF": 0.2,
    }


@pytest.fixture(scope="module")
def web(broker: Any) -> Flask:
    """The web app, publishing to the test broker."""
    return create_app(rls=POSTGRES, RESOURCES_KIT_JOBS_BROKER_URL=REDIS, **timing())


def clear_jobs() -> None:
    db.session.rollback()
    db.session.execute(JobEffect.__table__.delete())
    db.session.execute(Job.__table__.delete())
    db.session.commit()


@pytest.fixture
def client(web: Flask, broker: Any, database: Any) -> Iterator[Any]:
    clear_jobs()
    broker.flushdb()
    yield web.test_client()
    clear_jobs()


def child_env(url: str = DB_URL, broker_url: str = REDIS, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "RESOURCES_KIT_TEST_DB": url,
        "RESOURCES_KIT_TEST_BROKER": broker_url,
        "JOBS_TEST_LEASE": str(LEASE),
        "JOBS_TEST_ACK_TIMEOUT": "0",
        **extra,
    }


@contextmanager
def worker(
    url: str = DB_URL, broker_url: str = REDIS, **extra: str
) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process (``[*CHILD, "worker"]``), stopped after."""
    process = subprocess.Popen(
        [*CHILD, "worker"],
        cwd=ROOT,
        env=child_env(url, broker_url, **extra),
        start_new_session=True,
    )
    try:
        yield process
    finally:
        kill(process)


def kill(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=10)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def job_row(job_id: str | None = None) -> Any:
    db.session.rollback()
    query = select(Job) if job_id is None else select(Job).where(Job.id == job_id)
    return db.session.scalars(query).first()


def status_is(status: str, job_id: str | None = None) -> Callable[[], Any]:
    def check() -> Any:
        row = job_row(job_id)
        return row if row is not None and row.status == status else None

    return check


def notes() -> list[str]:
    db.session.rollback()
    return list(db.session.scalars(select(JobEffect.note).order_by(JobEffect.id)))


def relay(app: Flask) -> str:
    with app.app_context():
        return str(app.test_cli_runner().invoke(args=["resources", "relay"]).output)


def school(ids: dict[str, int], name: str) -> dict[str, str]:
    return {"X-School": str(ids[name])}


def run_task(client: Any, ids: dict[str, int], task: str, **arguments: Any) -> str:
    answer = client.post(
        "/api/job-teachers/run-task",
        json={"task": f"tests.jobs_app.{task}", "arguments": arguments},
        headers=school(ids, "one"),
    )
    assert answer.status_code == 202, answer.json
    return str(answer.json["id"])


def queued(broker: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]


def test_a_direct_publish_sends_what_celery_sends(web: Flask, broker: Any) -> None:
    """The web process publishes straight to Redis (a tenth of ``send_task``'s cost): the
    message must be Celery's own, but for what is unique per message."""
    broker.flushdb()
    with web.app_context():
        celery = web.extensions["resources_kit_celery"]
        sender = web.extensions["resources_kit_redis_sender"]
        assert sender is not None
        publish(celery, "00000000-0000-0000-0000-000000000001")
        sender.send(["00000000-0000-0000-0000-000000000001"])
        sender.send([])  # nothing to send (a relay run that found nothing due)
    direct, by_celery = queued(broker)  # LPUSH: the newest first
    for message in (direct, by_celery):
        message["properties"].pop("delivery_tag")
        message["headers"].pop("origin")
    assert direct == by_celery
    broker.flushdb()


@pytest.mark.parametrize(
    "setting",
    [
        {"task_routes": {"resources_kit.run_job": {"queue": "jobs"}}},
        {"task_default_queue": "jobs"},
        {"task_serializer": "pickle"},
        {"task_compression": "gzip"},
        {"task_default_priority": 3},
        {"broker_url": "amqp://guest@127.0.0.1//"},
    ],
)
def test_celery_publishes_when_the_message_would_differ(setting: dict[str, Any]) -> None:
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=REDIS, RESOURCES_KIT_JOBS_CELERY=setting)
    celery = make_celery(jobs, app, REDIS)
    expected = setting == {"task_default_queue": "jobs"}
    sender = redis_sender(celery)
    assert (sender is not None) is expected
    if sender is not None:  # the default queue named otherwise: pushed to that one
        assert sender.key == "jobs"


def test_a_job_runs_on_a_worker_right_after_the_commit(client: Any) -> None:
    ids = seed_two_schools()
    with worker():
        answer = client.post("/api/job-teachers", json={"name": "Eve"}, headers=school(ids, "one"))
        assert answer.status_code == 201
        job = wait_for("the job to run", status_is("succeeded"))
    assert job.result == {"names": ["Ada", "Eve"]}
    assert notes() == ["Eve"]


def test_a_web_process_killed_after_its_commit_loses_no_job(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    with worker():
        died = subprocess.run(
            [*CHILD, "post-and-die", "Zed", str(ids["two"])],
            cwd=ROOT,
            env=child_env(),
            timeout=60,
            check=False,
        )
        assert died.returncode == -signal.SIGKILL
        time.sleep(0.5)
        job = job_row()
        assert job.status == "queued"  # committed, never published
        assert notes() == []
        assert "1 job(s) redelivered" in relay(web)
        job = wait_for("the relayed job to run", status_is("succeeded"))
    assert job.result == {"names": ["Bob", "Zed"]}
    assert notes() == ["Zed"]


def test_a_broker_down_during_the_request_delays_the_job_only(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    down = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER, **timing())
    names = ["Eve", "Fay", "Gil"]
    with worker():
        for name in names:
            started = time.monotonic()
            answer = down.test_client().post(
                "/api/job-teachers", json={"name": name}, headers=school(ids, "one")
            )
            assert answer.status_code == 201
            assert time.monotonic() - started < 2
        time.sleep(0.5)
        assert job_row().status == "queued"
        # A broker the relay reaches: the three jobs go in one batch, and run.
        assert "3 job(s) redelivered" in relay(web)

        def all_done() -> bool:
            db.session.rollback()
            statuses = set(db.session.scalars(select(Job.status)))
            return statuses == {"succeeded"}

        wait_for("the jobs to run", all_done)
    assert sorted(notes()) == names


@contextmanager
def private_redis(port: int) -> Iterator[None]:
    """A redis-server of this test's own on ``port`` (never the shared one), stopped after."""
    import redis

    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*command, "--appendonly", "no"], stdout=subprocess.DEVNULL, start_new_session=True
    )
    client = redis.Redis(port=port, socket_connect_timeout=0.2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_for("the private redis-server", answers, timeout=10)
        yield
    finally:
        client.close()
        kill(process)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server to start")
def test_a_job_made_while_the_broker_was_down_runs_once_it_is_back(client: Any) -> None:
    ids = seed_two_schools()
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=url, **timing())
    headers = school(ids, "one")
    with worker(broker_url=url):
        with private_redis(port):
            assert (
                app.test_client()
                .post("/api/job-teachers", json={"name": "Ada2"}, headers=headers)
                .status_code
                == 201
            )
            wait_for("a job while the broker is up", status_is("succeeded"))
        # The broker is down: the request is answered at once, its job waits.
        started = time.monotonic()
        answer = app.test_client().post("/api/job-teachers", json={"name": "Eve"}, headers=headers)
        assert answer.status_code == 201
        assert time.monotonic() - started < 2
        job_id = answer_job(answer.json["id"])
        time.sleep(0.5)
        assert job_row(job_id).status == "queued"
        with private_redis(port):  # back, on the same port: the worker reconnects
            assert "1 job(s) redelivered" in relay(app)
            wait_for("the job to run", status_is("succeeded", job_id), timeout=40)
    assert notes() == ["Ada2", "Eve"]


def answer_job(teacher_id: int) -> str:
    """The id of the job a create enqueued for the teacher ``teacher_id``."""
    db.session.rollback()
    for job in db.session.scalars(select(Job)):
        if job.arguments.get("teacher_id") == teacher_id:
            return str(job.id)
    raise AssertionError(f"no job for teacher {teacher_id}")


def test_a_worker_killed_mid_task_has_its_job_run_again(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    with worker() as first:
        job_id = run_task(client, ids, "slow_first_time", note="done")
        wait_for("the first attempt to start", lambda: "started" in notes())
        kill(first)
    assert job_row(job_id).status == "running"
    with worker():
        # Once the lost worker's lease is over, the relay hands the job out again.
        def relayed() -> Any:
            relay(web)
            return status_is("succeeded", job_id)()

        job = wait_for("the job to run again", relayed, timeout=LEASE + 30)
    assert job.attempts >= 2
    assert notes() == ["started", "done"]


def test_a_job_delivered_three_times_has_its_effect_once(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    with worker():
        answer = client.post("/api/job-teachers", json={"name": "Eve"}, headers=school(ids, "one"))
        job_id = job_row().id
        with web.app_context():
            publish(jobs.celery, job_id)
            publish(jobs.celery, job_id)
        assert answer.status_code == 201
        wait_for("the job to run", status_is("succeeded"))
        queue = redis_queue_length
        wait_for("every delivery to be consumed", lambda: queue(web) == 0)
        time.sleep(0.3)
    assert notes() == ["Eve"]
    assert job_row().attempts == 1


def redis_queue_length(web: Flask) -> int:
    import redis

    client = redis.Redis.from_url(REDIS)
    try:
        return int(client.llen("celery"))
    finally:
        client.close()


def test_a_rolled_back_request_publishes_nothing(client: Any, web: Flask, broker: Any) -> None:
    ids = seed_two_schools()
    answer = client.post("/api/job-teachers", json={"name": "Rollback"}, headers=school(ids, "one"))
    assert answer.status_code == 409
    assert job_row() is None
    assert redis_queue_length(web) == 0


def test_a_failing_task_is_retried_with_backoff_then_kept(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    with worker():
        job_id = run_task(client, ids, "always_fails")
        job = wait_for("the job to fail for good", status_is("failed", job_id))
    assert job.attempts == 2
    assert job.problem["status"] == 500


# -- row-level security ----------------------------------------------------------------------


@pytest.fixture
def app_role_url(client: Any) -> Iterator[str]:
    """The URL of the role the worker connects as (no superuser, no BYPASSRLS), with the
    policies on teachers and students on for the test."""
    if not POSTGRES:
        pytest.skip("row-level security is PostgreSQL's")
    from .test_row_security import APP_ROLE, policies, superuser_engine

    engine = superuser_engine()
    with engine.connect() as connection:
        exists = connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": APP_ROLE}
        ).first()
        if exists is None:
            connection.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
        connection.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {APP_ROLE}"))
        connection.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"))
    policies(engine, on=True)
    try:
        yield make_url(DB_URL).set(username=APP_ROLE).render_as_string(hide_password=False)
    finally:
        policies(engine, on=False)
        engine.dispose()


def test_a_tasks_raw_sql_sees_only_its_tenants_rows(client: Any, app_role_url: str) -> None:
    ids = seed_two_schools()
    with worker(app_role_url, JOBS_TEST_RLS="1"):
        made = {}
        for name, teacher in (("one", "ada"), ("two", "bob")):
            answer = client.post(
                f"/api/rls-job-teachers/{ids[teacher]}/report", headers=school(ids, name)
            )
            assert answer.status_code == 202
            made[name] = answer.json["id"]
        for name, job_id in made.items():
            job = wait_for(f"school {name}'s job", status_is("succeeded", job_id))
            # SELECT school_id FROM teachers, as the app's role: the tenant's rows only.
            assert job.result == [ids[name]]
            assert job.scope["settings"] == {"school_id": str(ids[name])}


def test_the_beat_task_is_the_relay(client: Any, web: Flask) -> None:
    ids = seed_two_schools()
    down = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER, **timing())
    answer = down.test_client().post(
        "/api/job-teachers", json={"name": "Eve"}, headers=school(ids, "one")
    )
    assert answer.status_code == 201
    with web.app_context():
        celery = jobs.celery
    schedule = celery.conf.beat_schedule["resources-kit-relay"]
    assert schedule["task"] == "resources_kit.relay"
    with worker():
        # What beat would send; applied here, as a worker would run it.
        assert celery.tasks["resources_kit.relay"].apply().get() == 1
        wait_for("the job to run", status_is("succeeded"))
    assert notes() == ["Eve"]


def test_the_sample_apps_worker_runs_its_jobs(broker: Any) -> None:
    """``python -m sample_app worker``: the welcome email and a report, on Celery."""
    from sample_app import create_app as create_sample_app
    from sample_app import seed
    from sample_app.models import Mailbox, Report
    from sample_app.models import db as sample_db

    from .conftest import sample_app_config, separate_database_url

    broker.flushdb()
    url = separate_database_url("resources_kit_sample_jobs")
    app = create_sample_app({**sample_app_config(url), "RESOURCES_KIT_JOBS_BROKER_URL": REDIS})
    with app.app_context():
        sample_db.drop_all()
        sample_db.create_all()
        tokens = seed()
    admin = {"Authorization": f"Bearer {tokens['north-admin']}"}
    env = {**os.environ, "SAMPLE_APP_DATABASE_URL": url, "SAMPLE_APP_BROKER_URL": REDIS}
    arguments = ["--pool=solo", "--without-mingle", "--without-gossip", "--loglevel=WARNING"]
    process = subprocess.Popen(
        [sys.executable, "-m", "sample_app", "worker", *arguments],
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    try:
        with app.app_context():
            client = app.test_client()
            body = {"name": "Kay", "email": "kay@northside.example.org", "credential": "LIC-4242"}
            created = client.post("/api/teachers", json=body, headers=admin)
            assert created.status_code == 201

            def mailed() -> Any:
                sample_db.session.rollback()
                return sample_db.session.scalars(sample_db.select(Mailbox)).first()

            assert wait_for("the welcome email", mailed).to == body["email"]
            answer = client.post(f"/api/teachers/{created.json['id']}/report", headers=admin)
            assert answer.status_code == 202

            def done() -> Any:
                sample_db.session.rollback()  # the test's context outlives each request
                status = client.get(answer.headers["Location"], headers=admin).json
                return status if status["status"] == "succeeded" else None

            assert wait_for("the report", done)["result"] == {"teacher": "Kay", "students": 0}
            sample_db.session.rollback()
            assert sample_db.session.scalars(sample_db.select(Report)).one().students == 0
    finally:
        kill(process)
        with app.app_context():
            sample_db.session.remove()
            sample_db.drop_all()
            for engine in sample_db.engines.values():
                engine.dispose()
