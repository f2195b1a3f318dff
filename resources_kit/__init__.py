"""Correct, fast, multi-tenant JSON REST APIs over SQLAlchemy models for Flask."""

from . import signals
from .callbacks import Callback, CallbackMixin
from .errors import ImproperlyConfigured, ResourcesKitError
from .mixins import (
    CreateMixin,
    DeleteMixin,
    ListMixin,
    ModelResource,
    PatchMixin,
    RetrieveMixin,
    UpdateMixin,
)
from .resource import Resource
from .routing import Router
from .tenancy import TenantScopeMixin

__version__ = "0.1.0.dev0"

__all__ = [
    "Callback",
    "CallbackMixin",
    "CreateMixin",
    "DeleteMixin",
    "ImproperlyConfigured",
    "ListMixin",
    "ModelResource",
    "PatchMixin",
    "Resource",
    "ResourcesKitError",
    "RetrieveMixin",
    "Router",
    "TenantScopeMixin",
    "UpdateMixin",
    "signals",
]
