"""The school's background work. Each task runs in a worker (``python -m sample_app
worker``), or in-process right after the commit when no broker is configured, with the
school of the request that enqueued it: its views and raw SQL see that school only."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from resources_kit.jobs import current_job, job_view

from .models import Mailbox, Report, Student, Teacher, db, jobs
from .resources import TeacherResource


def school_teacher(teacher_id: int) -> Teacher:
    """The teacher, found under the enqueuing request's scope (another school's: none)."""
    view = job_view(TeacherResource)
    query = view.get_scoped_query().where(Teacher.id == teacher_id)
    teacher: Teacher = db.session.execute(query).scalar_one()
    return teacher


@jobs.task(name="send_welcome")
def send_welcome(teacher_id: int) -> dict[str, Any]:
    """Email a new teacher. The mailbox row and the job's "succeeded" mark commit
    together, so a job delivered twice sends one email."""
    teacher = school_teacher(teacher_id)
    db.session.add(
        Mailbox(
            job_id=current_job().id,
            school_id=teacher.school_id,
            to=teacher.email,
            subject=f"Welcome, {teacher.name}!",
        )
    )
    return {"to": teacher.email}


@jobs.task(name="build_report")
def build_report(teacher_id: int) -> dict[str, Any]:
    """A teacher's report: what ``GET /api/jobs/<id>`` shows once it is done."""
    teacher = school_teacher(teacher_id)
    students = db.session.scalar(
        select(func.count()).select_from(Student).where(Student.teacher_id == teacher.id)
    )
    db.session.add(
        Report(
            job_id=current_job().id,
            school_id=teacher.school_id,
            teacher_id=teacher.id,
            students=students or 0,
        )
    )
    return {"teacher": teacher.name, "students": students or 0}
