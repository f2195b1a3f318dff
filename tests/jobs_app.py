"""The app the background-work tests run, in the test process and in worker processes:
``[*CHILD, "worker"]`` starts a real Celery worker for it, and ``[*CHILD, "post-and-die"]``
a web process killed after its commit.

The database comes from ``RESOURCES_KIT_TEST_DB`` (a full URL for a child process), the
broker from ``RESOURCES_KIT_TEST_BROKER``."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

import marshmallow as ma
from flask import Flask, g
from sqlalchemy import ForeignKey, Integer, String, select, text
from sqlalchemy.orm import Mapped, mapped_column

from resources_kit import Callback, HTTPError, Router, action
from resources_kit.jobs import (
    JobResource,
    Jobs,
    JobSchema,
    WriteJob,
    accepted,
    current_job,
    enqueue,
    job_view,
)

from . import models
from .conftest import make_app
from .models import Student, Teacher, db

#: A broker nothing listens on.
CLOSED_BROKER = "redis://127.0.0.1:1/0"


class JobEffect(db.Model):  # type: ignore[name-defined,misc]
    """What a task did: one row per effect, so that a test can count them."""

    __tablename__ = "job_effects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36))
    teacher_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="CASCADE"))
    note: Mapped[str] = mapped_column(String(200))


jobs = Jobs(db)


@jobs.task
def record_effect(teacher_id: int, note: str) -> dict[str, Any]:
    """One effect row, and what the task saw of the teacher through the library."""
    view = job_view(ScopedJobTeachers)
    names = list(db.session.scalars(view.get_scoped_query().with_only_columns(Teacher.name)))
    db.session.add(JobEffect(job_id=current_job().id, teacher_id=teacher_id, note=note))
    return {"names": sorted(names)}


@jobs.task
def raw_schools() -> list[int]:
    """Raw SQL: under row-level security, the tenant's rows only."""
    rows = db.session.execute(text("SELECT school_id FROM teachers")).all()
    seen = sorted({row.school_id for row in rows})
    db.session.add(JobEffect(job_id=current_job().id, note=f"saw {seen}"))
    return seen


@jobs.task
def slow_first_time(note: str) -> str:
    """The first attempt announces itself and hangs (a worker killed mid-task); later ones
    finish at once."""
    if current_job().attempt == 1:
        db.session.add(JobEffect(job_id=current_job().id, note="started"))
        db.session.commit()
        time.sleep(60)
    db.session.add(JobEffect(job_id=current_job().id, note=note))
    return note


@jobs.task(max_attempts=2)
def always_fails() -> None:
    raise RuntimeError("the mail server said no")


@jobs.task
def fails_once(note: str) -> str:
    db.session.add(JobEffect(job_id=current_job().id, note=note))
    if current_job().attempt == 1:
        raise RuntimeError("temporary failure")
    return note


@jobs.task
def record_note(note: str) -> None:
    """One effect row naming no teacher (a deleted one's, say)."""
    db.session.add(JobEffect(job_id=current_job().id, note=note))


@jobs.task
def classmates() -> list[str]:
    """The students of the teacher in the enqueuing URL, through the nested resource."""
    view = job_view(JobStudents)
    return sorted(db.session.scalars(view.get_scoped_query().with_only_columns(Student.name)))


class EnqueueClassmates(Callback):
    def execute(self) -> None:
        enqueue(self.view, classmates)


class EnqueueEffect(Callback):
    """post_create: a job in the write's own transaction."""

    def execute(self) -> None:
        enqueue(self.view, record_effect, teacher_id=self.resource.id, note=self.resource.name)
        if self.resource.name == "Rollback":
            raise HTTPError(409, "The write fails after the job was added.")


class TaskRequest(ma.Schema):
    task = ma.fields.String(required=True)
    arguments = ma.fields.Dict(load_default=dict)


class ScopedJobTeachers(models.ScopedTeacherResource):
    name = "job-teachers"
    post_create_callbacks = [EnqueueEffect]

    @action(detail=False, schema=TaskRequest, status=202, response=JobSchema, url_path="run-task")
    def run_task(self, data: dict[str, Any]) -> Any:
        """Any registered task, for the tests' faults."""
        return accepted(self, enqueue(self, data["task"], **data["arguments"]))

    @action(detail=True, status=202, response=JobSchema, summary="Build a report later")
    def report(self, obj: Teacher) -> Any:
        return accepted(self, enqueue(self, raw_schools, identity={"teacher": obj.id}))


class PlainJobTeachers(models.ScopedTeacherResource):
    """The same create without a job: the benchmark's baseline."""

    name = "plain-teachers"


class DeclaredJobTeachers(models.ScopedTeacherResource):
    """Jobs declared per operation, which a create or a change by one statement keeps."""

    name = "declared-job-teachers"
    bulk = ("create",)
    create_jobs = [WriteJob(record_effect, teacher_id="id", note="name")]
    patch_jobs = [WriteJob(record_effect, teacher_id="id", note="name")]
    delete_jobs = [WriteJob(record_note, note="name", identity=lambda view: "deleter")]


class ComputedJobTeachers(models.ScopedTeacherResource):
    """Jobs that read more than the row's columns (its school, a relationship): written
    through the object."""

    name = "computed-job-teachers"
    create_jobs = [
        WriteJob(record_effect, teacher_id="id", arguments=lambda obj: {"note": obj.school.name})
    ]
    patch_jobs = [
        WriteJob(
            record_effect,
            teacher_id="id",
            arguments=lambda obj: {"note": f"{obj.name} of {obj.school.name}"},
        )
    ]


class JobStudents(models.ScopedStudentResource):
    """Nested under a teacher: a job enqueued here keeps the teacher of its URL."""

    post_create_callbacks = [EnqueueClassmates]


class RlsJobTeachers(ScopedJobTeachers):
    """PostgreSQL enforces the school too: the job carries the setting to its worker."""

    name = "rls-job-teachers"
    row_level_security = ("school_id",)


class JobStatus(JobResource):
    model = jobs.model

    def get_job_tenant(self) -> dict[str, Any] | None:
        school = g.get("school_id")
        return {"school_id": school} if school is not None else None


def register(router: Router) -> None:
    router.register(ScopedJobTeachers)
    router.register(JobStudents, parent=ScopedJobTeachers)
    router.register(PlainJobTeachers)
    router.register(DeclaredJobTeachers)
    router.register(ComputedJobTeachers)
    router.register(JobStatus)


def register_rls(router: Router) -> None:
    register(router)
    router.register(RlsJobTeachers)


def create_app(*, rls: bool = False, **config: Any) -> Flask:
    """The app; with ``rls``, also a resource whose scope PostgreSQL enforces."""
    app = make_app(register_rls if rls else register, **config)
    jobs.init_app(app)
    return app


def broker_config() -> dict[str, Any]:
    broker = os.environ.get("RESOURCES_KIT_TEST_BROKER")
    return {"RESOURCES_KIT_JOBS_BROKER_URL": broker} if broker else {}


def timing_config() -> dict[str, Any]:
    """Short timeouts, so that the fault tests take seconds."""
    return {
        "RESOURCES_KIT_JOBS_ACK_TIMEOUT": float(os.environ.get("JOBS_TEST_ACK_TIMEOUT", "0")),
        "RESOURCES_KIT_JOBS_LEASE": float(os.environ.get("JOBS_TEST_LEASE", "3")),
        "RESOURCES_KIT_JOBS_RETRY_BACKOFF": 0.2,
    }


def main(argv: list[str]) -> int:
    rls = os.environ.get("JOBS_TEST_RLS") == "1"
    app = create_app(rls=rls, **broker_config(), **timing_config())
    if argv[:1] == ["worker"]:
        with app.app_context():
            jobs.worker(
                [
                    "--pool=solo",
                    "--without-mingle",
                    "--without-gossip",
                    "--without-heartbeat",
                    "--loglevel=WARNING",
                ]
            )
        return 0
    if argv[:1] == ["post-and-die"]:
        # A web process that dies after its commit and before the publish.
        from resources_kit import jobs as jobs_module

        def die(self: Any, ids: Any, *, background: bool = False) -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        jobs_module.Jobs.dispatch = die  # type: ignore[method-assign]
        client = app.test_client()
        with app.app_context():
            client.post("/api/job-teachers", json={"name": argv[1]}, headers={"X-School": argv[2]})
        return 3  # not reached
    if argv[:1] == ["count"]:
        with app.app_context():
            print(len(db.session.scalars(select(JobEffect)).all()))
        return 0
    return 2


#: How a test starts a child process of this app (imported under its own name, so that
#: its tasks and tables are the ones the tests know): ``[*CHILD, "worker"]``.
CHILD = [
    sys.executable,
    "-c",
    "import sys; from tests.jobs_app import main; sys.exit(main(sys.argv[1:]))",
]
