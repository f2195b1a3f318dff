"""Background work: a job enqueued by a post_create callback commits with the teacher, runs
with the school's scope restored, and a long action answers 202 with a job to poll.
No broker here: the jobs run in-process after the commit, from the same outbox; set
RESOURCES_KIT_JOBS_BROKER_URL and the same code runs on Celery workers."""

from typing import Any

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, UniqueConstraint, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import (
    Callback,
    HTTPError,
    JobResource,
    Jobs,
    ModelResource,
    Router,
    TenantScopeMixin,
    action,
    enqueue,
)
from resources_kit.jobs import JobSchema, accepted, current_job, job_view


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    __table_args__ = (UniqueConstraint("school_id", "email"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]
    email: Mapped[str]


class Email(db.Model):
    """The demo's mailbox: one row per email sent."""

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[str] = mapped_column(unique=True)  # one email per job, however delivered
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teacher.id"))
    subject: Mapped[str]


jobs = Jobs(db)  # the outbox table joins db.metadata: db.create_all(), Alembic


@jobs.task
def send_welcome(teacher_id: int) -> str:
    # The enqueuing request's scope, restored: another school's teacher is not found.
    view = job_view(TeacherResource)
    teacher = db.session.execute(
        view.get_scoped_query().where(Teacher.id == teacher_id)
    ).scalar_one()
    # Committed together with the job's "succeeded" mark: once, however often delivered.
    db.session.add(Email(job_id=current_job().id, teacher_id=teacher.id, subject="Welcome!"))
    return teacher.email


@jobs.task
def count_teachers() -> int:
    view = job_view(TeacherResource)
    return db.session.scalar(view.get_scoped_query().with_only_columns(func.count())) or 0


class WelcomeEmail(Callback):
    """post_create: the job's row is inserted by the write's own flush."""

    def execute(self) -> None:
        enqueue(self.view, send_welcome, teacher_id=self.resource.id)
        if self.resource.name == "Mallory":
            raise HTTPError(409, "No Mallory here.")  # rolls back the teacher and the job


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    email = ma.fields.Email(required=True)


class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    post_create_callbacks = [WelcomeEmail]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.school_id}

    @action(detail=False, status=202, response=JobSchema)
    def census(self) -> Any:
        """``POST /api/teachers/census``: 202, ``Location: /api/jobs/<id>``."""
        return accepted(self, enqueue(self, count_teachers))


class JobStatus(JobResource):
    """``GET /api/jobs/<id>``: the school's own jobs only."""

    model = jobs.model

    def get_job_tenant(self) -> dict[str, Any]:
        return {"school_id": g.school_id}


def tour() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    api = Router(app, url_prefix="/api")
    api.register(TeacherResource)
    api.register(JobStatus)
    jobs.init_app(app)  # no RESOURCES_KIT_JOBS_BROKER_URL: jobs run in-process

    @app.before_request
    def school() -> None:
        g.school_id = int(request.headers.get("X-School", "0"))

    north, south = {"X-School": "1"}, {"X-School": "2"}
    with app.app_context():
        db.create_all()
        client = app.test_client()
        ada = client.post("/api/teachers", json={"name": "Ada", "email": "a@n.org"}, headers=north)
        assert ada.status_code == 201
        (email,) = db.session.scalars(select(Email))
        job = db.session.get(jobs.model, email.job_id)
        assert (job.status, job.result) == ("succeeded", "a@n.org")

        refused = client.post(
            "/api/teachers", json={"name": "Mallory", "email": "m@n.org"}, headers=north
        )
        assert refused.status_code == 409
        count = db.session.scalar(select(func.count()).select_from(jobs.model))
        assert count == 1  # no job for a rolled-back write

        client.post("/api/teachers", json={"name": "Bob", "email": "b@s.org"}, headers=south)
        census = client.post("/api/teachers/census", headers=north)
        assert census.status_code == 202
        status = client.get(census.headers["Location"], headers=north)
        assert (status.json["status"], status.json["result"]) == ("succeeded", 1)  # north only
        assert client.get(census.headers["Location"], headers=south).status_code == 404


if __name__ == "__main__":
    tour()
    print("jobs: all good")
