"""Schemas, callbacks and resources of the school API."""

from __future__ import annotations

import os
from typing import Any

import marshmallow as ma
from flask_jwt_extended import get_jwt_identity, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from sqlalchemy import func

from resources_kit import (
    Callback,
    CallbackMixin,
    CreateMixin,
    DeleteMixin,
    HTTPError,
    IsAuthenticated,
    ListMixin,
    ModelResource,
    PatchMixin,
    Permission,
    ReadOnly,
    Resource,
    RetrieveMixin,
    TenantScopeMixin,
    UpdateMixin,
    action,
    enqueue,
)
from resources_kit.guards import WRITES, Idempotency, RateLimit, ResponseCache
from resources_kit.jobs import JobResource, JobSchema, accepted

from .models import AuditLog, Club, Student, Teacher, User, db, jobs

#: The most years of teaching a teacher's record may show.
MAX_YEARS = 80
#: Writes per user and action (``SAMPLE_APP_WRITE_LIMIT``, Flask-Limiter's notation).
WRITE_LIMIT = os.environ.get("SAMPLE_APP_WRITE_LIMIT", "600/minute")


def current_user() -> User | None:
    """The caller, from a Flask-JWT-Extended access token; ``None`` without a valid one."""
    try:
        verify_jwt_in_request(optional=True)
    except (JWTExtendedException, PyJWTError):
        return None
    identity = get_jwt_identity()
    return db.session.get(User, int(identity)) if identity is not None else None


class Role(Permission):
    """Callers with one of ``roles``."""

    requires_authentication = True
    roles: tuple[str, ...] = ()

    def has_permission(self, view: Any) -> bool:
        user = view.current_user()
        return user is not None and user.role in self.roles


class SchoolAdmin(Role):
    """Everything in their school."""

    roles = ("admin",)


class OwnStudents(Role):
    """A teacher reads every student of the school and changes their own only."""

    roles = ("teacher",)
    message = "A teacher may change only their own students."

    def has_object_permission(self, view: Any, obj: Any) -> bool:
        return bool(obj.teacher_id == view.current_user().teacher_id)


# -- schemas ------------------------------------------------------------------------------


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    email = ma.fields.Email(required=True)
    credential = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Regexp(r"LIC-\d{4}")
    )
    years_teaching = ma.fields.Integer(
        strict=True, load_default=0, validate=ma.validate.Range(min=0, max=MAX_YEARS)
    )
    mentor_id = ma.fields.Integer(strict=True, allow_none=True, load_default=None)


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    grade_level = ma.fields.Integer(
        strict=True, required=True, validate=ma.validate.Range(min=1, max=12)
    )
    #: The clubs the student belongs to (``StudentResource.link_fields``): replaces the
    #: set when sent; another school's club is a 422.
    club_ids = ma.fields.List(ma.fields.Integer(strict=True))


class ClubSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))


class StatsSchema(ma.Schema):
    """What ``GET /api/teachers/stats`` answers."""

    teachers = ma.fields.Integer(required=True)
    average_years_teaching = ma.fields.Float(required=True)


# -- callbacks ----------------------------------------------------------------------------


#: Licences the (pretend) licensing registry has revoked.
REVOKED_LICENCES = frozenset({"LIC-0000", "LIC-9999"})


class VerifyCredentials(Callback):
    """pre_create: the schema checks a licence's format (``LIC-1234``); this asks the
    licensing registry whether it is still valid (a revoked one is refused with 422)."""

    def execute(self) -> None:
        if self.kwargs.get("credential") in REVOKED_LICENCES:
            raise ma.ValidationError({"credential": ["This licence has been revoked."]})


class AuditWrite(Callback):
    """post_*: an audit row, committed atomically with the change it records."""

    def execute(self) -> None:
        db.session.add(
            AuditLog(
                school_id=self.view.current_user().school_id,
                resource=self.view.name or "",
                operation=self.operation,
                row_id=self.resource.id,
            )
        )


class WelcomeEmail(Callback):
    """post_create: a durable job that emails the new teacher, committed with the teacher
    (a rolled-back create sends nothing; a committed one always sends)."""

    def execute(self) -> None:
        user = self.view.current_user()
        enqueue(self.view, "send_welcome", teacher_id=self.resource.id, identity=user.id)


# -- resources ----------------------------------------------------------------------------


class AuditedResource(CallbackMixin, Resource):
    """Signed in with a Flask-JWT-Extended token; every write leaves an audit row, and each
    user's writes are limited (per action, on every host at once with Redis)."""

    rate_limits = [RateLimit(WRITE_LIMIT, per="caller", actions=WRITES)]

    def get_current_user(self) -> User | None:
        return current_user()

    post_create_callbacks = [AuditWrite]
    post_update_callbacks = [AuditWrite]
    post_patch_callbacks = [AuditWrite]
    post_delete_callbacks = [AuditWrite]


class TeacherResource(TenantScopeMixin, AuditedResource, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    default_sort = "name"
    filter_fields = ["name", "email", "years_teaching", "students.name"]
    sort_fields = ["name", "years_teaching"]
    search_fields = ["name", "email"]
    #: ``?include=students`` embeds each teacher's students (those the students resource
    #: lets the caller see), one statement for the whole page.
    include_fields = ["students"]
    pre_create_callbacks = [VerifyCredentials]
    post_create_callbacks = [AuditWrite, WelcomeEmail]
    post_promote_callbacks = [AuditWrite]
    #: A retried create (the same Idempotency-Key) answers the first one's 201, once.
    idempotency = Idempotency()
    #: Lists and items are kept until a write to a teacher or a student (the
    #: ``students.name`` filter) of the school.
    cache = ResponseCache(depends_on=("students",))
    # A mentor must be a teacher this school can see: another school's is a 422.
    references = {"mentor_id": "self"}

    #: Admins change teachers; teachers and auditors read them.
    permissions = [IsAuthenticated, SchoolAdmin | ReadOnly]
    #: What get_base_query_kwargs() returns: checked at registration (no unique value may
    #: span schools) and on every request.
    scope_columns = ["school_id"]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": self.current_user().school_id}

    @action(detail=True, response=TeacherSchema, summary="Record one more year of teaching")
    def promote(self, obj: Teacher) -> Teacher:
        """``POST /api/teachers/<id>/promote``: audited, in one transaction; answers the
        teacher (dumped with ``TeacherSchema``, documented as the ``Teacher`` schema)."""
        if obj.years_teaching >= MAX_YEARS:
            raise HTTPError(409, f"At most {MAX_YEARS} years of teaching.")
        obj.years_teaching += 1
        return obj

    @action(
        detail=True,
        status=202,
        response=JobSchema,
        summary="Build the teacher's report in the background",
    )
    def report(self, obj: Teacher) -> Any:
        """``POST /api/teachers/<id>/report``: 202 with ``Location: /api/jobs/<job id>``;
        a worker builds the report."""
        user = self.current_user()
        return accepted(self, enqueue(self, "build_report", teacher_id=obj.id, identity=user.id))

    @action(
        detail=False,
        methods=["GET"],
        response=StatsSchema,
        summary="Head count and average experience",
    )
    def stats(self) -> Any:
        """``GET /api/teachers/stats``, over the caller's school only."""
        query = self.get_scoped_query().with_only_columns(
            func.count(), func.avg(Teacher.years_teaching)
        )
        count, average = self.get_session().execute(query).one()
        return {"teachers": count, "average_years_teaching": float(average or 0)}


class ClubResource(TenantScopeMixin, AuditedResource, ModelResource):
    """The school's clubs: admins change them, everyone signed in reads them."""

    name = "clubs"
    model = Club
    schema = ClubSchema
    default_sort = "name"
    filter_fields = ["name"]
    sort_fields = ["name"]
    permissions = [IsAuthenticated, SchoolAdmin | ReadOnly]
    scope_columns = ["school_id"]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": self.current_user().school_id}


class StudentResource(
    AuditedResource,
    ListMixin,
    RetrieveMixin,
    CreateMixin,
    UpdateMixin,
    PatchMixin,
    DeleteMixin,
):
    """Not scoped itself: reachable only through a teacher of the caller's school."""

    name = "students"
    model = Student
    schema = StudentSchema
    #: Admins change any student, teachers their own, auditors none; all may read.
    permissions = [IsAuthenticated, SchoolAdmin | OwnStudents | ReadOnly]
    default_sort = "name"
    #: Signed keyset cursors: a page link made on one app host works on every other.
    pagination = "cursor"
    filter_fields = ["name", "grade_level"]
    sort_fields = ["name", "grade_level"]
    search_fields = ["name"]
    #: A class list arrives at once: ``POST`` of an array creates every student, or none.
    bulk = ("create",)
    max_bulk_items = 50

    #: ``club_ids`` in a body replaces the student's clubs (among the school's).
    link_fields = {"club_ids": ("clubs", ClubResource)}
    #: ``PUT``/``DELETE /api/teachers/<id>/students/<id>/clubs/<club id>``: who may change
    #: the student may (admins, the student's own teacher); audited like other writes.
    post_link_callbacks = [AuditWrite]
    post_unlink_callbacks = [AuditWrite]


class JobStatus(JobResource):
    """``GET /api/jobs/<job id>``: the school's jobs, for anyone signed in there."""

    model = jobs.model
    permissions = [IsAuthenticated]
    #: The jobs table keeps its tenant in a JSON column, which no row-level security
    #: policy compares: the library's own scoping is its guard.
    row_level_security = ()

    def get_current_user(self) -> User | None:
        return current_user()

    def get_job_tenant(self) -> dict[str, Any]:
        return {"school_id": self.current_user().school_id}
