"""The job resource and ``202 Accepted``: long work over HTTP.

An ``@action`` answers ``accepted(view, job)``: 202, the job's representation, and
``Location`` naming it on the router's :class:`JobResource`, which shows the caller's own
tenant's jobs only (another's is a 404) behind the permissions the app gives it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any, ClassVar, cast

import marshmallow as ma
from flask import Response, current_app, url_for

from . import outbox
from .errors import ImproperlyConfigured
from .mixins import RetrieveMixin
from .resource import Resource
from .tenancy import TenantScopeMixin


class UtcDateTime(ma.fields.DateTime):
    """The table's naive UTC timestamps, sent with their offset (RFC 3339)."""

    def _serialize(self, value: Any, attr: Any, obj: Any, **kwargs: Any) -> Any:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return super()._serialize(value, attr, obj, **kwargs)


class JobSchema(ma.Schema):
    """A job as the job resource shows it."""

    id = ma.fields.String(dump_only=True)
    task = ma.fields.String(dump_only=True)
    status = ma.fields.String(dump_only=True, validate=ma.validate.OneOf(outbox.STATUSES))
    attempts = ma.fields.Integer(dump_only=True)
    created_at = UtcDateTime(dump_only=True)
    finished_at = UtcDateTime(dump_only=True, allow_none=True)
    result = ma.fields.Raw(dump_only=True, allow_none=True)
    problem = ma.fields.Dict(dump_only=True, allow_none=True)


class JobResource(TenantScopeMixin, RetrieveMixin, Resource):
    """``GET /jobs/<id>``: a job's status, result or problem, for its own tenant only.
    Subclass it, set ``model = jobs.model`` and ``permissions``, and override
    :meth:`get_job_tenant` to return the scope the app's resources use::

        class JobStatus(JobResource):
            model = jobs.model
            permissions = [IsAuthenticated]

            def get_job_tenant(self):
                return {"school_id": self.current_user().school_id}
    """

    name: ClassVar[str | None] = "jobs"
    schema = JobSchema
    url_variable: ClassVar[str | None] = "job_id"
    scope_columns: ClassVar[Sequence[str] | None] = ("tenant",)

    def get_job_tenant(self) -> Mapping[str, Any] | None:
        """The scope whose jobs the caller may see (the union of the scopes of the URLs
        that enqueue them). Required."""
        raise NotImplementedError(f"{type(self).__name__} must override get_job_tenant().")

    def get_base_query_kwargs(self) -> Mapping[str, Any] | None:
        tenant = self.get_job_tenant()
        return {"tenant": outbox.tenant_key(tenant)} if tenant else None


def accepted(view: Any, job: Any) -> Response:
    """``202 Accepted`` for an ``@action(status=202, response=JobSchema)``: the job, with
    ``Location`` naming it on the router's job resource."""
    mounts = [m for m in view.mount.registry.mounts if issubclass(m.resource, JobResource)]
    if not mounts:
        raise ImproperlyConfigured("Register a JobResource subclass to answer 202 for jobs.")
    mount = mounts[0]
    response = cast(Response, current_app.json.response(JobSchema().dump(job)))
    response.status_code = 202
    response.headers["Location"] = url_for("." + mount.item_endpoint, job_id=job.id)
    return response
