"""A resource class's configuration, checked and compiled once, then frozen."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import InstrumentedAttribute

from .columns import Check, column_check
from .errors import ImproperlyConfigured
from .querying import FieldPath, compile_paths

if TYPE_CHECKING:
    from .resource import Resource

#: Operations whose schema ``Resource.get_schema`` returns.
SCHEMA_OPERATIONS = ("list", "detail", "create", "update", "patch")

#: (kind of URL, HTTP method) -> the action method a mixin provides.
ACTIONS: Mapping[tuple[str, str], str] = {
    ("collection", "GET"): "list",
    ("collection", "POST"): "create",
    ("item", "GET"): "retrieve",
    ("item", "PUT"): "update",
    ("item", "PATCH"): "partial_update",
    ("item", "DELETE"): "destroy",
}


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])", r"_\1\2", name).lower()


@dataclass(frozen=True)
class SortKey:
    key: str
    descending: bool


def parse_sort(value: str | Sequence[str]) -> list[SortKey]:
    """Parse ``"years_teaching__desc,name"`` (or a list of such terms)."""
    terms = value.split(",") if isinstance(value, str) else list(value)
    keys = []
    for term in terms:
        term = term.strip()
        name, _, direction = term.partition("__")
        if not name or direction not in ("", "asc", "desc"):
            raise ValueError(term)
        keys.append(SortKey(name, direction == "desc"))
    return keys


@dataclass(frozen=True)
class ResourceOptions:
    """What a resource class's attributes compile to."""

    resource: type[Resource]
    model: type[Any]
    mapper: Mapper[Any]
    lookup_key: str
    lookup_attr: InstrumentedAttribute[Any]
    lookup_check: Check | None
    converter: str
    url_variable: str
    primary_key: tuple[InstrumentedAttribute[Any], ...]
    default_sort: tuple[SortKey, ...]
    #: attribute key -> check of the values its column would refuse
    column_checks: Mapping[str, Check]
    #: attribute key -> column attribute, for every column-backed attribute of the model
    columns: Mapping[str, InstrumentedAttribute[Any]]
    schemas: Mapping[str, ma.Schema] = field(repr=False)
    filter_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    #: sort_fields, plus the columns of default_sort
    sort_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    search_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    primary_key_paths: tuple[FieldPath, ...] = ()
    #: ``"offset"`` or ``"cursor"``
    pagination: str = "offset"

    def column(self, key: str) -> InstrumentedAttribute[Any]:
        try:
            return self.columns[key]
        except KeyError:
            raise ImproperlyConfigured(
                f"{self.resource.__name__}: {self.model.__name__} has no column attribute {key!r}."
            ) from None


def _require(cls: type[Resource], attribute: str, fix: str) -> Any:
    value = getattr(cls, attribute, None)
    if value is None or value == "":
        raise ImproperlyConfigured(f"{cls.__name__} has no `{attribute}`; {fix}.")
    return value


def _schema_class(cls: type[Resource], attribute: str, value: Any) -> type[ma.Schema]:
    if not (isinstance(value, type) and issubclass(value, ma.Schema)):
        raise ImproperlyConfigured(
            f"{cls.__name__}.{attribute} must be a marshmallow Schema class, not {value!r}."
        )
    return value


def _converter(column: sa.ColumnElement[Any]) -> str:
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return "string"
    if python_type is int:
        return "int"
    if python_type is uuid.UUID:
        return "uuid"
    return "string"


_compiled: dict[type[Resource], ResourceOptions] = {}


def options_for(cls: type[Resource]) -> ResourceOptions:
    """Check ``cls``'s configuration and compile it, once per class."""
    try:
        return _compiled[cls]
    except KeyError:
        options = _compiled[cls] = _compile(cls)
        return options


def _compile(cls: type[Resource]) -> ResourceOptions:
    name = _require(cls, "name", 'set it to the URL segment, e.g. name = "teachers"')
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_\-]+", name):
        raise ImproperlyConfigured(
            f"{cls.__name__}.name must be one URL segment of letters, digits, '-' or '_'; "
            f"got {name!r}."
        )
    model = _require(cls, "model", "set it to the SQLAlchemy model class the resource serves")
    try:
        mapper: Mapper[Any] = sa.inspect(model)
    except sa.exc.NoInspectionAvailable:
        raise ImproperlyConfigured(
            f"{cls.__name__}.model must be a mapped SQLAlchemy class, not {model!r}."
        ) from None
    schema = _schema_class(
        cls, "schema", _require(cls, "schema", "set it to a marshmallow Schema class")
    )
    schema_classes = {
        "list": schema,
        "detail": getattr(cls, "detail_schema", None) or schema,
        "create": getattr(cls, "create_schema", None) or schema,
        "update": getattr(cls, "update_schema", None) or schema,
    }
    schema_classes["patch"] = getattr(cls, "patch_schema", None) or schema_classes["update"]
    for operation, value in schema_classes.items():
        _schema_class(cls, f"{operation}_schema" if value is not schema else "schema", value)

    columns: dict[str, InstrumentedAttribute[Any]] = {}
    checks: dict[str, Check] = {}
    for prop in mapper.column_attrs:
        columns[prop.key] = getattr(model, prop.key)
        if len(prop.columns) == 1 and isinstance(prop.columns[0], sa.Column):
            check = column_check(prop.columns[0])
            if check is not None:
                checks[prop.key] = check

    primary_key = tuple(
        getattr(model, mapper.get_property_by_column(c).key) for c in mapper.primary_key
    )
    lookup_key = cls.lookup_field or primary_key[0].key
    if len(primary_key) != 1 and cls.lookup_field is None:
        raise ImproperlyConfigured(
            f"{cls.__name__}: {model.__name__} has a composite primary key; "
            "set `lookup_field` to a unique column."
        )
    if lookup_key not in columns:
        raise ImproperlyConfigured(
            f"{cls.__name__}.lookup_field {lookup_key!r} is not a column attribute of "
            f"{model.__name__}."
        )
    lookup_column = mapper.column_attrs[lookup_key].columns[0]

    page_size, max_page_size = cls.page_size, cls.max_page_size
    if not (isinstance(page_size, int) and isinstance(max_page_size, int)) or not (
        1 <= page_size <= max_page_size
    ):
        raise ImproperlyConfigured(
            f"{cls.__name__}: need 1 <= page_size <= max_page_size, got {page_size!r} and "
            f"{max_page_size!r}."
        )
    try:
        default_sort = tuple(parse_sort(cls.default_sort)) if cls.default_sort else ()
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"{cls.__name__}.default_sort has a malformed term {exc.args[0]!r}; "
            'write "column" or "column__desc".'
        ) from None
    for key in default_sort:
        if key.key not in columns:
            raise ImproperlyConfigured(
                f"{cls.__name__}.default_sort names {key.key!r}, which is not a column of "
                f"{model.__name__}."
            )

    pagination = cls.pagination
    if pagination not in ("offset", "cursor"):
        raise ImproperlyConfigured(
            f'{cls.__name__}.pagination must be "offset" or "cursor", not {pagination!r}.'
        )
    list_schema = schema_classes["list"]()
    sort_paths = compile_paths(cls, mapper, list_schema, "sort_fields")
    defaults = [key.key for key in default_sort if key.key not in sort_paths]
    sort_paths |= compile_paths(cls, mapper, list_schema, "default_sort", defaults)
    if pagination == "cursor":
        related = [key for key, path in sort_paths.items() if path.relationship is not None]
        if related:
            raise ImproperlyConfigured(
                f"{cls.__name__}: cursor pagination sorts by the resource's own columns; "
                f"remove {', '.join(related)} from sort_fields."
            )
    pk_keys = [pk.key for pk in primary_key]

    return ResourceOptions(
        resource=cls,
        model=model,
        mapper=mapper,
        lookup_key=lookup_key,
        lookup_attr=columns[lookup_key],
        lookup_check=checks.get(lookup_key),
        converter=_converter(lookup_column),
        url_variable=cls.url_variable or f"{snake_case(model.__name__)}_id",
        primary_key=primary_key,
        default_sort=default_sort,
        column_checks=checks,
        columns=columns,
        schemas={op: schema_class() for op, schema_class in schema_classes.items()},
        filter_paths=compile_paths(cls, mapper, list_schema, "filter_fields"),
        sort_paths=sort_paths,
        search_paths=compile_paths(cls, mapper, list_schema, "search_fields"),
        primary_key_paths=tuple(compile_paths(cls, mapper, list_schema, "pk", pk_keys).values()),
        pagination=pagination,
    )
