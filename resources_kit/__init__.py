"""Correct, fast, multi-tenant JSON REST APIs over SQLAlchemy models for Flask."""

from . import signals
from .actions import action
from .callbacks import Callback, CallbackMixin
from .errors import HTTPError, ImproperlyConfigured, ResourcesKitError
from .jobs import JobResource, Jobs, WriteJob, enqueue
from .mixins import (
    CreateMixin,
    DeleteMixin,
    ListMixin,
    ModelResource,
    PatchMixin,
    RetrieveMixin,
    UpdateMixin,
)
from .pagination import CursorPagination, OffsetPagination, Page, Pagination
from .permissions import IsAuthenticated, Permission, ReadOnly
from .querying import Filtering, Sorting
from .resource import Resource
from .routing import Router
from .tenancy import TenantScopeMixin

__version__ = "0.1.0.dev0"

__all__ = [
    "Callback",
    "CallbackMixin",
    "CreateMixin",
    "CursorPagination",
    "DeleteMixin",
    "Filtering",
    "HTTPError",
    "ImproperlyConfigured",
    "IsAuthenticated",
    "JobResource",
    "Jobs",
    "ListMixin",
    "ModelResource",
    "OffsetPagination",
    "Page",
    "Pagination",
    "PatchMixin",
    "Permission",
    "ReadOnly",
    "Resource",
    "ResourcesKitError",
    "RetrieveMixin",
    "Router",
    "Sorting",
    "TenantScopeMixin",
    "UpdateMixin",
    "WriteJob",
    "action",
    "enqueue",
    "signals",
]
