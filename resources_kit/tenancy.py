"""``TenantScopeMixin``: row-level scoping that fails closed."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import inspect

from .errors import HTTPError, ImproperlyConfigured, ResourcesKitWarning, unique_column_groups

if TYPE_CHECKING:
    from .resource import Resource

    _Base = Resource
else:
    _Base = object


class TenantScopeMixin(_Base):
    """Scope every query of the resource by the columns ``get_base_query_kwargs()`` returns::

        class TeacherResource(TenantScopeMixin, ModelResource):
            ...
            def get_base_query_kwargs(self):
                return {"school_id": g.school_id}

    - The values filter every read and write, and are stamped on created rows.
    - Empty or ``None`` kwargs, or a value that is ``None``, ``""`` or only whitespace,
      refuse the request with 403 before any query runs.
    - A body that tries to set a scoped column to another value is a 422.
    - Another tenant's row is a 404, as is anything nested under it.

    On PostgreSQL the database can enforce the scope as well: name the columns in
    ``row_level_security`` (or give ``Router(row_level_security=...)``), and each
    transaction of a request sets them for the tables' policies (see Deployment).
    """

    #: Scope columns PostgreSQL enforces with row-level security as well (``None``: the
    #: router's ``row_level_security``; ``()``: off).
    row_level_security: ClassVar[Sequence[str] | None] = None
    #: The columns ``get_base_query_kwargs()`` returns. Declared, they are checked at
    #: registration (a unique value across tenants is reported) and every request's
    #: kwargs must name exactly them; left ``None``, the first request's keys are checked.
    scope_columns: ClassVar[Sequence[str] | None] = None

    @classmethod
    def check_configuration(cls) -> None:
        """Refuse, at registration, a resource that uses the mixin without saying what
        the scope is (every request would fail); report a unique value that spans
        tenants when ``scope_columns`` names the scope."""
        if cls.get_base_query_kwargs is TenantScopeMixin.get_base_query_kwargs:
            model = getattr(getattr(cls, "model", None), "__name__", "the model")
            raise ImproperlyConfigured(
                f"{cls.__name__} uses TenantScopeMixin without overriding "
                "get_base_query_kwargs(); return the tenant column values of "
                f'{model} there (e.g. {{"school_id": g.school_id}}). A model without a '
                "tenant column of its own is scoped without the mixin, by a get_query() "
                "that joins to the scoped parent and refuses a request without a tenant "
                "(see Tenancy in the docs)."
            )
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()
        if cls.scope_columns is not None:
            warn_cross_tenant_uniques(cls, cls.scope_columns)

    def get_base_query_kwargs(self) -> Mapping[str, Any] | None:
        """The tenant column values of this request (``{"school_id": g.school_id}``):
        every query is filtered by them and created rows stamped. Required."""
        raise NotImplementedError(
            f"{type(self).__name__} uses TenantScopeMixin and must override "
            "get_base_query_kwargs()."
        )

    def check_scope(self, kwargs: Mapping[str, Any]) -> None:
        # {"school_id": None} would match every unscoped row, and "" is what an anonymous
        # caller's missing header often becomes: refuse both like no scope at all.
        """Refuse (403) a request whose scope is empty or names no tenant."""
        if not kwargs or any(missing_scope_value(value) for value in kwargs.values()):
            raise HTTPError(403, "No tenant scope for this request.")
        declared = type(self).scope_columns
        if declared is None:
            if type(self) not in _warned:
                warn_cross_tenant_uniques(type(self), tuple(kwargs))
        elif set(kwargs) != set(declared):
            raise ImproperlyConfigured(
                f"{type(self).__name__}.get_base_query_kwargs() returned {sorted(kwargs)}, "
                f"but scope_columns declares {sorted(declared)}."
            )


def missing_scope_value(value: Any) -> bool:
    """``None``, and strings that are empty or only whitespace, name no tenant."""
    return value is None or (isinstance(value, str) and not value.strip())


def cross_tenant_uniques(model: Any, columns: Sequence[str]) -> list[tuple[str, ...]]:
    """The unique constraints and indexes of ``model``'s table (the primary key aside) that
    do not include every scope column: one tenant's 409 there tells it another tenant holds
    the value. Each as the names of its columns."""
    mapper = inspect(model)
    table = mapper.local_table
    scope = {
        mapper.column_attrs[key].columns[0].name for key in columns if key in mapper.column_attrs
    }
    found: list[tuple[str, ...]] = []
    for group in unique_column_groups(table):
        names = tuple(column.name for column in group)
        if names and not scope <= set(names) and names not in found:
            found.append(names)
    return found


_warned: set[type[Any]] = set()


def warn_cross_tenant_uniques(resource: type[Any], columns: Sequence[str]) -> None:
    """Warn, once per resource class, of each unique value that spans tenants."""
    if resource in _warned:
        return
    _warned.add(resource)
    for names in cross_tenant_uniques(resource.model, columns):
        warnings.warn(
            f"{resource.__name__}: {resource.model.__name__} is unique on "
            f"({', '.join(names)}) across tenants, so a 409 tells one tenant that another "
            f"holds the value; make it unique together with ({', '.join(columns)}).",
            ResourcesKitWarning,
            stacklevel=2,
        )
