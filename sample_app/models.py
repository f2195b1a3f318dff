"""The school's tables."""

from __future__ import annotations

from datetime import UTC, datetime

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    Column,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Table,
    UniqueConstraint,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import Jobs


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection: object, connection_record: object) -> None:
    # SQLite enforces foreign keys only when asked, per connection.
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def _now() -> datetime:
    return datetime.now(UTC)


class School(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "schools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class User(db.Model):  # type: ignore[name-defined,misc]
    """Who may sign in: a school admin, a teacher (``teacher_id``) or an auditor."""

    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    login: Mapped[str] = mapped_column(String(50), unique=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    role: Mapped[str] = mapped_column(String(10))
    teacher_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id"))


class Teacher(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "teachers"
    __table_args__ = (UniqueConstraint("school_id", "email"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    credential: Mapped[str] = mapped_column(String(20))
    years_teaching: Mapped[int] = mapped_column(Integer, default=0)
    #: Another teacher of the same school (``TeacherResource.references`` checks it).
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"))
    #: Compare-and-set on every UPDATE: If-Match is race-free on SQLite too.
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    # The database refuses deleting a teacher who still has students (409).
    students: Mapped[list[Student]] = relationship(back_populates="teacher", passive_deletes="all")
    __mapper_args__ = {"version_id_col": version}


#: Which students belong to which clubs: a many-to-many, exposed at
#: ``/api/teachers/<id>/students/<id>/clubs`` and as ``club_ids`` on students.
club_members = Table(
    "club_members",
    Base.metadata,
    Column("club_id", ForeignKey("clubs.id", ondelete="CASCADE"), primary_key=True),
    Column("student_id", ForeignKey("students.id", ondelete="CASCADE"), primary_key=True),
)


class Club(db.Model):  # type: ignore[name-defined,misc]
    """A school's club (chess, choir...): scoped by school, like teachers."""

    __tablename__ = "clubs"
    __table_args__ = (UniqueConstraint("school_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(100))


class Student(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "students"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id"))
    name: Mapped[str] = mapped_column(String(100))
    grade_level: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    teacher: Mapped[Teacher] = relationship(back_populates="students")
    # The database drops a deleted student's memberships (ON DELETE CASCADE).
    clubs: Mapped[list[Club]] = relationship(secondary=club_members, passive_deletes=True)
    __mapper_args__ = {"version_id_col": version}


class AuditLog(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    resource: Mapped[str] = mapped_column(String(50))
    operation: Mapped[str] = mapped_column(String(10))
    row_id: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Mailbox(db.Model):  # type: ignore[name-defined,misc]
    """The demo's mailbox: each email the welcome job sent (a real app would call its mail
    service with the job id as the idempotency key)."""

    __tablename__ = "mailbox"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    #: The job that sent it: one email per job, however often the job is delivered.
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    to: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(String(200))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Report(db.Model):  # type: ignore[name-defined,misc]
    """A teacher's report, built by a worker (``POST /api/teachers/<id>/report``)."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(String(36), unique=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("schools.id"))
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id", ondelete="CASCADE"))
    students: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


#: Background work: the outbox table joins the school's tables (``db.create_all()``,
#: Alembic's autogenerate); the tasks are in :mod:`sample_app.tasks`.
jobs = Jobs(db, load_user=lambda identity: db.session.get(User, identity))
