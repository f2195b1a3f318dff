"""Schemas, callbacks and resources of the school API."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
from flask import abort, g, request
from werkzeug.datastructures import WWWAuthenticate

from resources_kit import (
    Callback,
    CallbackMixin,
    CreateMixin,
    DeleteMixin,
    ListMixin,
    ModelResource,
    PatchMixin,
    Resource,
    RetrieveMixin,
    TenantScopeMixin,
    UpdateMixin,
)

from .models import ApiToken, AuditLog, Outbox, Student, Teacher, db


def load_tenant() -> None:
    """Read the school from ``Authorization: Bearer <token>`` (no token: no school)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token:
        row = db.session.get(ApiToken, token.strip())
        g.school_id = row.school_id if row is not None else None


def require_token(view: Any) -> Any:
    """401 for a request without a valid token, before the resource runs."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("school_id") is None:
            abort(401, www_authenticate=WWWAuthenticate("bearer"))
        return view(*args, **kwargs)

    return wrapped


# -- schemas ------------------------------------------------------------------------------


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    email = ma.fields.Email(required=True)
    credential = ma.fields.String(
        required=True, load_only=True, validate=ma.validate.Regexp(r"LIC-\d{4}")
    )
    years_teaching = ma.fields.Integer(load_default=0, validate=ma.validate.Range(min=0, max=80))


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(min=1, max=100))
    grade_level = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=12))


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
                school_id=g.get("school_id"),
                resource=self.view.name or "",
                operation=self.operation,
                row_id=self.resource.id,
            )
        )


class WelcomeEmail(Callback):
    """after_commit_create: queue a welcome email once the teacher surely exists."""

    def execute(self) -> None:
        db.session.add(Outbox(to=self.resource.email, subject=f"Welcome, {self.resource.name}!"))
        db.session.commit()


# -- resources ----------------------------------------------------------------------------


class AuditedResource(CallbackMixin, Resource):
    """Every write of every resource built on this leaves an audit row."""

    decorators = [require_token]
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
    pre_create_callbacks = [VerifyCredentials]
    after_commit_create_callbacks = [WelcomeEmail]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


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
    default_sort = "name"
    filter_fields = ["name", "grade_level"]
    sort_fields = ["name", "grade_level"]
    search_fields = ["name"]
