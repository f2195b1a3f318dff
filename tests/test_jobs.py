"""Background work without a broker (the embedded default), and what never needs one: the
outbox row written with the change, the job resource, the 202, the relay, retries, the CLI.
The same app on Celery, with real workers and faults, is tests/test_workers.py."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select, update

from resources_kit import ResourcesKitError
from resources_kit.jobs import current_job, enqueue, job_view
from resources_kit.outbox import now

from .conftest import seed_two_schools
from .jobs_app import (
    CLOSED_BROKER,
    JobEffect,
    ScopedJobTeachers,
    always_fails,
    create_app,
    jobs,
)
from .models import Teacher, db

Job = jobs.model


@pytest.fixture(scope="module")
def embedded() -> Flask:
    return create_app(RESOURCES_KIT_JOBS_RETRY_BACKOFF=0.0, RESOURCES_KIT_JOBS_ACK_TIMEOUT=0.0)


def clear_jobs() -> None:
    db.session.rollback()
    db.session.execute(JobEffect.__table__.delete())
    db.session.execute(Job.__table__.delete())
    db.session.commit()


@pytest.fixture
def client(embedded: Flask, database: Any) -> Iterator[Any]:
    clear_jobs()
    yield embedded.test_client()
    clear_jobs()


def cli(app: Flask, *args: str) -> Any:
    """``flask resources ARGS`` of ``app`` (the CLI runs in the app context it finds)."""
    with app.app_context():
        return app.test_cli_runner().invoke(args=["resources", *args])


def school(name: str, ids: dict[str, int]) -> dict[str, str]:
    return {"X-School": str(ids[name])}


def effects() -> list[tuple[str, str]]:
    db.session.rollback()
    rows = db.session.execute(select(JobEffect.job_id, JobEffect.note).order_by(JobEffect.id))
    return [(row.job_id, row.note) for row in rows]


def all_jobs() -> list[Any]:
    db.session.rollback()
    return list(db.session.scalars(select(Job).order_by(Job.created_at)))


def test_a_create_commits_its_job_and_runs_it_in_process(client: Any) -> None:
    ids = seed_two_schools()
    answer = client.post("/api/job-teachers", json={"name": "Eve"}, headers=school("one", ids))
    assert answer.status_code == 201
    (job,) = all_jobs()
    assert job.status == "succeeded"
    assert job.attempts == 1
    assert job.task == "tests.jobs_app.record_effect"
    assert job.arguments == {"teacher_id": answer.json["id"], "note": "Eve"}
    # The task's view was scoped as the request: school one's teachers only.
    assert job.result == {"names": ["Ada", "Eve"]}
    assert job.scope["tenant"] == {"school_id": ids["one"]}
    assert effects() == [(job.id, "Eve")]


def test_a_rolled_back_write_leaves_no_job(client: Any) -> None:
    ids = seed_two_schools()
    answer = client.post("/api/job-teachers", json={"name": "Rollback"}, headers=school("one", ids))
    assert answer.status_code == 409
    assert all_jobs() == []
    assert effects() == []


def test_the_job_is_one_insert_in_the_writes_transaction(database: Any) -> None:
    # A broker that is down: nothing after the commit runs SQL, so every statement seen
    # is the request's own.
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        event.listen(db.engine, "before_cursor_execute", record)
        clear_jobs()
        ids = seed_two_schools()
        client = app.test_client()
        statements.clear()
        plain = client.post("/api/plain-teachers", json={"name": "P"}, headers=school("one", ids))
        without = list(statements)
        statements.clear()
        answer = client.post("/api/job-teachers", json={"name": "J"}, headers=school("one", ids))
        assert (plain.status_code, answer.status_code) == (201, 201)
        # The job's request is the plain one's statements (its create through the
        # session, the plain one's by one INSERT ... RETURNING) and the job's INSERT.
        extra = [s for s in statements if s.startswith("INSERT INTO resources_kit_jobs")]
        assert len(statements) == len(without) + 1
        assert len(extra) == 1
        assert [s.split()[:3] for s in without] == [["INSERT", "INTO", "teachers"]]
        (job,) = all_jobs()
        assert job.status == "queued"  # the broker is down: the relay will deliver it
        clear_jobs()
        event.remove(db.engine, "before_cursor_execute", record)


def test_a_job_from_a_view_without_its_scope_is_refused(embedded: Flask, database: Any) -> None:
    mount = next(m for _, each in embedded.extensions["resources_kit"]["routers"] for m in each)
    with embedded.test_request_context():
        view = ScopedJobTeachers(mount, "collection")  # never dispatched: no scope
        with pytest.raises(ResourcesKitError, match="needs its tenant scope"):
            enqueue(view, always_fails)
    assert all_jobs() == []


def test_job_view_outside_a_job_is_refused(embedded: Flask) -> None:
    with embedded.app_context(), pytest.raises(ResourcesKitError, match="inside a running job"):
        job_view(ScopedJobTeachers)
    with pytest.raises(ResourcesKitError):
        current_job()


def test_the_202_answer_and_the_job_resource(client: Any) -> None:
    ids = seed_two_schools()
    answer = client.post(f"/api/job-teachers/{ids['ada']}/report", headers=school("one", ids))
    assert answer.status_code == 202
    location = answer.headers["Location"]
    assert location == f"/api/jobs/{answer.json['id']}"
    assert answer.json["status"] == "queued"  # the answer was built before the commit
    status = client.get(location, headers=school("one", ids))
    assert status.status_code == 200
    assert status.json["status"] == "succeeded"
    # Raw SQL without row-level security sees every school (tests/test_workers.py has it on).
    assert ids["one"] in status.json["result"]
    assert status.json["problem"] is None
    # Another tenant's job is missing; no tenant at all is refused.
    assert client.get(location, headers=school("two", ids)).status_code == 404
    assert client.get(location).status_code == 403
    # Another school's teacher has no report to start.
    other = client.post(f"/api/job-teachers/{ids['bob']}/report", headers=school("one", ids))
    assert other.status_code == 404


def test_the_job_resource_and_the_202_are_documented(embedded: Flask) -> None:
    document = embedded.test_client().get("/api/openapi.json").json
    assert "/api/jobs/{job_id}" in document["paths"]
    report = document["paths"]["/api/job-teachers/{teacher_id}/report"]["post"]
    accepted = report["responses"]["202"]
    assert "Location" in accepted["headers"]
    schemas = document["components"]["schemas"]
    status = schemas["Job"]["properties"]["status"]["$ref"].rpartition("/")[2]
    assert schemas[status]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "retrying",
    ]


def make_failing_job(client: Any, ids: dict[str, int]) -> str:
    answer = client.post(
        "/api/job-teachers/run-task",
        json={"task": "tests.jobs_app.always_fails", "arguments": {}},
        headers=school("one", ids),
    )
    assert answer.status_code == 202, answer.json
    return str(answer.json["id"])


def test_a_failing_job_retries_then_is_kept_failed_and_can_be_retried(
    client: Any, embedded: Flask
) -> None:
    ids = seed_two_schools()
    job_id = make_failing_job(client, ids)
    (job,) = all_jobs()
    assert (job.status, job.attempts) == ("retrying", 1)
    assert job.problem["detail"] == "The task raised RuntimeError."
    assert "1 job(s) redelivered" in cli(embedded, "relay").output
    (job,) = all_jobs()
    assert (job.status, job.attempts) == ("failed", 2)  # max_attempts=2
    listed = cli(embedded, "jobs", "--status", "failed").output
    assert job_id in listed
    assert "The task raised RuntimeError." in listed
    # Nothing is due any more: the relay leaves a failed job alone.
    assert "0 job(s) redelivered" in cli(embedded, "relay").output
    retried = cli(embedded, "retry", job_id)
    assert "1 job(s) queued again" in retried.output
    (job,) = all_jobs()
    assert (job.status, job.attempts) == ("retrying", 1)  # ran once more, failed again
    assert cli(embedded, "retry").exit_code != 0


def test_the_relay_runs_what_a_crash_left_behind(client: Any, embedded: Flask) -> None:
    ids = seed_two_schools()
    answer = client.post("/api/job-teachers", json={"name": "Eve"}, headers=school("two", ids))
    assert answer.status_code == 201
    # As if the process had died after the commit: the job is committed, never run.
    db.session.execute(update(Job).values(status="queued", attempts=0, result=None, due_at=now()))
    db.session.execute(JobEffect.__table__.delete())
    db.session.commit()
    assert effects() == []
    assert "1 job(s) redelivered" in cli(embedded, "relay").output
    (job,) = all_jobs()
    assert job.status == "succeeded"
    assert job.result == {"names": ["Bob", "Eve"]}
    assert effects() == [(job.id, "Eve")]


def test_a_job_delivered_twice_has_its_effect_once(client: Any, embedded: Flask) -> None:
    ids = seed_two_schools()
    client.post("/api/job-teachers", json={"name": "Eve"}, headers=school("one", ids))
    (job,) = all_jobs()
    with embedded.app_context():
        assert jobs.run(job.id) == "skipped"  # done already
    assert effects() == [(job.id, "Eve")]


def test_a_superseded_attempt_commits_nothing(client: Any, embedded: Flask) -> None:
    ids = seed_two_schools()
    answer = client.post(
        "/api/job-teachers/run-task",
        json={"task": "tests.jobs_app.fails_once", "arguments": {"note": "n"}},
        headers=school("one", ids),
    )
    job_id = answer.json["id"]
    (job,) = all_jobs()
    assert (job.status, job.attempts) == ("retrying", 1)
    # Attempt 2 is claimed by a worker that is then lost: its lease runs out.
    from resources_kit import outbox

    claimed = outbox.claim(db.session, Job, job_id, lease=60)
    assert claimed.attempts == 2
    db.session.execute(update(Job).values(due_at=now() - timedelta(seconds=1)))
    db.session.commit()
    with embedded.app_context():
        jobs.relay()  # attempt 3 runs and succeeds
    # The lost attempt 2 finally reports: fenced out, it changes nothing.
    assert not outbox.finish(db.session, Job, job_id, 2, {"status": "failed"})
    db.session.commit()
    (job,) = all_jobs()
    assert (job.status, job.attempts, job.result) == ("succeeded", 3, "n")
    # Attempt 1's effect rolled back with its failure; attempt 3's committed once.
    assert effects() == [(job_id, "n")]


def test_the_cli_lists_jobs(client: Any, embedded: Flask) -> None:
    ids = seed_two_schools()
    client.post("/api/job-teachers", json={"name": "Eve"}, headers=school("one", ids))
    output = cli(embedded, "jobs").output
    assert "succeeded" in output
    assert "tests.jobs_app.record_effect" in output
    db.session.rollback()  # a fresh snapshot (MariaDB reads repeatably)
    assert db.session.scalar(select(func.count()).select_from(Job)) == 1


def test_the_worker_command_without_a_broker_runs_the_relay(client: Any, embedded: Flask) -> None:
    ids = seed_two_schools()
    client.post("/api/job-teachers", json={"name": "Eve"}, headers=school("one", ids))
    db.session.execute(update(Job).values(status="queued", attempts=0, result=None, due_at=now()))
    db.session.execute(JobEffect.__table__.delete())
    db.session.commit()
    assert cli(embedded, "worker", "--once").exit_code == 0
    (job,) = all_jobs()
    assert job.status == "succeeded"
    assert effects() == [(job.id, "Eve")]


def test_a_job_from_a_nested_url_keeps_its_parent(client: Any) -> None:
    ids = seed_two_schools()
    answer = client.post(
        f"/api/job-teachers/{ids['ada']}/students", json={"name": "Zoe"}, headers=school("one", ids)
    )
    assert answer.status_code == 201
    (job,) = all_jobs()
    assert job.scope["url_kwargs"] == {"teacher_id": ids["ada"]}
    # Ada's students only: not Di, Bob's student in the other school.
    assert (job.status, job.result) == ("succeeded", ["Cy", "Zoe"])


# -- jobs a resource declares (WriteJob) -------------------------------------------------------


def test_declared_jobs_keep_the_one_statement_writes(database: Any) -> None:
    # A broker that is down: nothing after the commit runs SQL, so every statement seen
    # is the request's own, and the jobs stay queued for the relay.
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(" ".join(statement.split()[:3]))

    with app.app_context():
        clear_jobs()
        ids = seed_two_schools()
        client = app.test_client()
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            created = client.post(
                "/api/declared-job-teachers", json={"name": "Eve"}, headers=school("one", ids)
            )
            assert created.status_code == 201, created.json
            # The create by one statement, then its job's INSERT: nothing read first.
            assert statements == ["INSERT INTO teachers", "INSERT INTO resources_kit_jobs"]
            statements.clear()
            path = f"/api/declared-job-teachers/{created.json['id']}"
            patched = client.patch(path, json={"name": "Eva"}, headers=school("one", ids))
            assert patched.status_code == 200, patched.json
            if db.engine.dialect.update_returning:  # MariaDB's UPDATE returns no row
                assert statements == ["UPDATE teachers SET", "INSERT INTO resources_kit_jobs"]
            assert statements[-1] == "INSERT INTO resources_kit_jobs"
            statements.clear()
            assert client.delete(path, headers=school("one", ids)).status_code == 204
            assert statements[-1] == "INSERT INTO resources_kit_jobs"
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        jobs_left = all_jobs()
        assert [(job.task, job.arguments, job.status) for job in jobs_left] == [
            (
                "tests.jobs_app.record_effect",
                {"teacher_id": created.json["id"], "note": "Eve"},
                "queued",
            ),
            (
                "tests.jobs_app.record_effect",
                {"teacher_id": created.json["id"], "note": "Eva"},
                "queued",
            ),
            ("tests.jobs_app.record_note", {"note": "Eva"}, "queued"),
        ]
        assert {job.scope["tenant"]["school_id"] for job in jobs_left} == {ids["one"]}
        assert [job.identity for job in jobs_left] == [None, None, "deleter"]
        clear_jobs()


def test_a_job_that_reads_more_than_the_answer_shows_gets_the_object(database: Any) -> None:
    # arguments() may read any attribute (here a relationship, which no statement's row
    # has): the writes take the object path, and each job has what it asked for.
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER)
    with app.app_context():
        clear_jobs()
        ids = seed_two_schools()
        client = app.test_client()
        body = {"name": "Ann", "region": "north"}
        created = client.post("/api/computed-job-teachers", json=body, headers=school("one", ids))
        assert created.status_code == 201, created.json
        db.session.expunge_all()  # as a new request's session: nothing held
        path = f"/api/computed-job-teachers/{created.json['id']}"
        patched = client.patch(path, json={"name": "Anna"}, headers=school("one", ids))
        assert patched.status_code == 200, patched.json
        made = created.json["id"]
        assert [job.arguments for job in all_jobs()] == [
            {"teacher_id": made, "note": "One"},
            {"teacher_id": made, "note": "Anna of One"},
        ]
        clear_jobs()


def test_a_declared_job_runs_after_the_commit_scoped_as_the_request(client: Any) -> None:
    ids = seed_two_schools()
    answer = client.post(
        "/api/declared-job-teachers", json={"name": "Eve"}, headers=school("two", ids)
    )
    assert answer.status_code == 201
    (job,) = all_jobs()
    assert (job.status, job.attempts) == ("succeeded", 1)
    # The task's view was scoped as the request: school two's teachers only.
    assert job.result == {"names": ["Bob", "Eve"]}
    assert effects() == [(job.id, "Eve")]


def test_a_declared_jobs_write_that_fails_at_its_commit_leaves_nothing(
    client: Any, embedded: Flask
) -> None:
    from sqlalchemy.orm import Session

    ids = seed_two_schools()
    with embedded.app_context():
        engine = db.engine
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    def refuse(session: Any) -> None:
        if any(s.startswith("INSERT INTO resources_kit_jobs") for s in sent):
            raise RuntimeError("the commit fails after the job's INSERT")

    event.listen(engine, "before_cursor_execute", record)
    event.listen(Session, "before_commit", refuse)
    try:
        with pytest.raises(RuntimeError):
            client.post(
                "/api/declared-job-teachers", json={"name": "Gone"}, headers=school("one", ids)
            )
    finally:
        event.remove(Session, "before_commit", refuse)
        event.remove(engine, "before_cursor_execute", record)
    assert any(s.startswith("INSERT INTO resources_kit_jobs") for s in sent)
    assert all_jobs() == []
    assert db.session.scalar(select(func.count()).where(Teacher.name == "Gone")) == 0
    # A duplicate refused by the database: a 409, and no job either.
    body = {"name": "Twice", "email": "twice@x.org"}
    first = client.post("/api/declared-job-teachers", json=body, headers=school("one", ids))
    again = client.post("/api/declared-job-teachers", json=body, headers=school("one", ids))
    assert (first.status_code, again.status_code) == (201, 409)
    assert [job.arguments["note"] for job in all_jobs()] == ["Twice"]


def test_a_bulk_create_inserts_every_items_job_in_one_statement(database: Any) -> None:
    app = create_app(RESOURCES_KIT_JOBS_BROKER_URL=CLOSED_BROKER)
    inserts: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO resources_kit_jobs"):
            inserts.append(statement)

    with app.app_context():
        clear_jobs()
        ids = seed_two_schools()
        event.listen(db.engine, "before_cursor_execute", record)
        try:
            answer = app.test_client().post(
                "/api/declared-job-teachers",
                json=[{"name": f"B{n}"} for n in range(3)],
                headers=school("one", ids),
            )
        finally:
            event.remove(db.engine, "before_cursor_execute", record)
        assert answer.status_code == 201, answer.json
        assert len(inserts) == 1
        made = {item["id"]: item["name"] for item in answer.json}
        assert {job.arguments["teacher_id"]: job.arguments["note"] for job in all_jobs()} == made
        clear_jobs()


def test_declared_jobs_are_checked_when_the_class_is_registered() -> None:
    from resources_kit import ImproperlyConfigured, Router, WriteJob

    from .jobs_app import record_effect

    with pytest.raises(ImproperlyConfigured, match="name an attribute"):
        WriteJob(record_effect, teacher_id=1)  # type: ignore[arg-type]
    with pytest.raises(ImproperlyConfigured, match="a task"):
        WriteJob(42)

    class NotAJob(ScopedJobTeachers):
        name = "not-a-job"
        create_jobs = [record_effect]

    class NoSuchOperation(ScopedJobTeachers):
        name = "no-such-operation"
        publish_jobs = [WriteJob(record_effect, teacher_id="id", note="name")]

    with pytest.raises(ImproperlyConfigured, match="must be a list of WriteJob"):
        Router().register(NotAJob)
    with pytest.raises(ImproperlyConfigured, match="names no operation"):
        Router().register(NoSuchOperation)
