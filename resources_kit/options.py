"""A resource class's configuration, checked and compiled once, then frozen."""

from __future__ import annotations

import re
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy.orm import Mapper
from sqlalchemy.orm.attributes import InstrumentedAttribute

from .actions import extra_actions
from .columns import (
    Check,
    column_check,
    column_normalizer,
    round_half_up,
    unwritable,
    url_converter,
)
from .errors import ImproperlyConfigured, unique_columns
from .querying import FieldPath, SortKey, compile_paths, split_sort

#: Operations whose schema ``Resource.get_schema`` returns.
SCHEMA_OPERATIONS = ("list", "detail", "create", "update", "patch")

#: How many ``?fields=`` subsets of one schema are kept, least recently used dropped first.
SPARSE_SCHEMAS_KEPT = 64


def snake_case(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])([A-Z])|(?<=[A-Z])([A-Z])(?=[a-z])", r"_\1\2", name).lower()


@dataclass(frozen=True)
class ResourceOptions:
    """What a resource class's attributes compile to."""

    #: The resource class (a ``Resource`` subclass).
    resource: type[Any]
    model: type[Any]
    mapper: Mapper[Any]
    lookup_key: str
    lookup_attr: InstrumentedAttribute[Any]
    lookup_check: Check | None
    #: URL segment -> lookup value (``ValueError``: no such item), for non-int lookups.
    lookup_convert: Callable[[str], Any] | None
    converter: str
    url_variable: str
    primary_key: tuple[InstrumentedAttribute[Any], ...]
    default_sort: tuple[SortKey, ...]
    #: attribute key -> check of the values its column would refuse
    column_checks: Mapping[str, Check]
    #: attribute key -> what the column would store for a value (decimals rounded)
    column_normalizers: Mapping[str, Callable[[Any], Any]]
    #: attribute key -> column attribute, for every column-backed attribute of the model
    columns: Mapping[str, InstrumentedAttribute[Any]]
    schemas: Mapping[str, ma.Schema] = field(repr=False)
    filter_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    #: sort_fields, plus the columns of default_sort
    sort_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    search_paths: Mapping[str, FieldPath] = field(default_factory=dict)
    primary_key_paths: tuple[FieldPath, ...] = ()
    #: Column attributes whose stored form may differ from what Python holds (rounded
    #: decimals, single-precision floats, date-times a backend truncates or strips of
    #: their zone): read back after a write that sets them.
    stored_form_keys: frozenset[str] = frozenset()
    #: relationship -> the column attributes holding its key, to reload a relationship a
    #: write re-pointed.
    relationship_keys: Mapping[str, frozenset[str]] = field(default_factory=dict)
    #: (operation, field names) -> the schema trimmed to them, for ``?fields=``
    sparse_schemas: OrderedDict[tuple[str, tuple[str, ...]], ma.Schema] = field(
        default_factory=OrderedDict, repr=False
    )

    def sparse_schema(self, operation: str, names: tuple[str, ...]) -> ma.Schema:
        """The ``operation`` schema trimmed to ``names``, built once and kept while used."""
        key = (operation, names)
        schema = self.sparse_schemas.get(key)
        if schema is None:
            schema = type(self.schemas[operation])(only=names)
            round_half_up(schema)
            self.sparse_schemas[key] = schema
            if len(self.sparse_schemas) > SPARSE_SCHEMAS_KEPT:
                self.sparse_schemas.popitem(last=False)
        else:
            self.sparse_schemas.move_to_end(key)
        return schema

    def conflict_fields(self, exc: BaseException) -> list[str]:
        """The client's names (``data_key``) of the input fields holding the columns of
        the unique constraint ``exc`` broke (a column the server sets, such as the
        parent's key, is not one); none when no input field holds them."""
        table = self.mapper.local_table
        columns = unique_columns(exc, table)
        keys = [
            self.mapper.get_property_by_column(table.columns[name]).key
            for name in columns
            if name in table.columns
        ]
        names: dict[str, None] = {}
        for key in keys:
            for operation in ("create", "update", "patch"):
                for name, loaded in self.schemas[operation].load_fields.items():
                    if (loaded.attribute or name) == key:
                        names[loaded.data_key or name] = None
        return list(names)

    def column(self, key: str) -> InstrumentedAttribute[Any]:
        try:
            return self.columns[key]
        except KeyError:
            raise ImproperlyConfigured(
                f"{self.resource.__name__}: {self.model.__name__} has no column attribute {key!r}."
            ) from None


def _require(cls: type[Any], attribute: str, fix: str) -> Any:
    value = getattr(cls, attribute, None)
    if value is None or value == "":
        raise ImproperlyConfigured(f"{cls.__name__} has no `{attribute}`; {fix}.")
    return value


def _schema_class(cls: type[Any], attribute: str, value: Any) -> type[ma.Schema]:
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


_compiled: dict[type[Any], ResourceOptions] = {}


def options_for(cls: type[Any]) -> ResourceOptions:
    """Check ``cls``'s configuration and compile it, once per class."""
    try:
        return _compiled[cls]
    except KeyError:
        options = _compiled[cls] = _compile(cls)
        return options


def _compile(cls: type[Any]) -> ResourceOptions:
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
    schema_classes = _schema_classes(cls)
    columns, checks, normalizers = _columns(mapper, model)
    primary_key = tuple(
        getattr(model, mapper.get_property_by_column(c).key) for c in mapper.primary_key
    )
    lookup_key = _lookup_key(cls, model, primary_key, columns)
    lookup_column = mapper.column_attrs[lookup_key].columns[0]
    _check_page_sizes(cls)
    default_sort = _default_sort(cls, model, columns)
    list_schema = schema_classes["list"]()
    round_half_up(list_schema)
    sort_paths = compile_paths(cls, mapper, list_schema, "sort_fields")
    defaults = [key.key for key in default_sort if key.key not in sort_paths]
    sort_paths |= compile_paths(cls, mapper, list_schema, "default_sort", defaults)
    pk_keys = [pk.key for pk in primary_key]
    schemas = {op: schema_class() for op, schema_class in schema_classes.items()}
    for schema in schemas.values():
        round_half_up(schema)
    _check_writable(cls, mapper, schemas)
    return ResourceOptions(
        resource=cls,
        model=model,
        mapper=mapper,
        lookup_key=lookup_key,
        lookup_attr=columns[lookup_key],
        lookup_check=checks.get(lookup_key),
        lookup_convert=url_converter(cast(sa.Column[Any], lookup_column)),
        converter=_converter(lookup_column),
        url_variable=cls.url_variable or f"{snake_case(model.__name__)}_id",
        primary_key=primary_key,
        default_sort=default_sort,
        column_checks=checks,
        column_normalizers=normalizers,
        columns=columns,
        schemas=schemas,
        filter_paths=compile_paths(cls, mapper, list_schema, "filter_fields"),
        sort_paths=sort_paths,
        search_paths=compile_paths(cls, mapper, list_schema, "search_fields"),
        primary_key_paths=tuple(compile_paths(cls, mapper, list_schema, "pk", pk_keys).values()),
        **_read_back_keys(mapper),
    )


#: Write operation -> the action method that serves it and the hook that writes.
_WRITES = {
    "create": ("create", "perform_create"),
    "update": ("update", "perform_update"),
    "patch": ("partial_update", "perform_update"),
}


def _check_writable(cls: type[Any], mapper: Mapper[Any], schemas: Mapping[str, Any]) -> None:
    """Refuse, at registration, an input field the default ``perform_*`` cannot store (it
    would be a 500 at the first write), unless the resource overrides that hook."""
    for operation, (action, hook) in _WRITES.items():
        method = getattr(cls, hook, None)
        own_hook = getattr(method, "__qualname__", "") != f"Resource.{hook}"
        if not callable(getattr(cls, action, None)) or own_hook:
            continue
        for name, loaded in schemas[operation].load_fields.items():
            problem = unwritable(mapper, loaded, loaded.attribute or name)
            if problem:
                raise ImproperlyConfigured(
                    f"{cls.__name__}: the {operation} schema's field {name!r} cannot be "
                    f"written: {problem}. Make it dump_only, or override {hook}() to write "
                    "it (for a many-to-many, load the rows the ids name and assign them)."
                )


def _read_back_keys(mapper: Mapper[Any]) -> dict[str, Any]:
    return {
        "stored_form_keys": frozenset(
            prop.key
            for prop in mapper.column_attrs
            if isinstance(prop.columns[0].type, _STORED_DIFFERENTLY)
            and not isinstance(prop.columns[0].type, sa.Integer)
        ),
        "relationship_keys": {
            rel.key: frozenset(mapper.get_property_by_column(c).key for c in rel.local_columns)
            for rel in mapper.relationships
            if all(c in mapper.columns.values() for c in rel.local_columns)
        },
    }


#: Column types whose values a backend may store in another form than Python sent.
_STORED_DIFFERENTLY = (sa.Numeric, sa.DateTime, sa.Time, sa.Interval)


def _columns(
    mapper: Mapper[Any], model: type[Any]
) -> tuple[
    dict[str, InstrumentedAttribute[Any]], dict[str, Check], dict[str, Callable[[Any], Any]]
]:
    """Every column attribute, with the check and the normalizer of its column."""
    columns: dict[str, InstrumentedAttribute[Any]] = {}
    checks: dict[str, Check] = {}
    normalizers: dict[str, Callable[[Any], Any]] = {}
    for prop in mapper.column_attrs:
        columns[prop.key] = getattr(model, prop.key)
        if len(prop.columns) == 1 and isinstance(prop.columns[0], sa.Column):
            check = column_check(prop.columns[0])
            if check is not None:
                checks[prop.key] = check
            normalizer = column_normalizer(prop.columns[0])
            if normalizer is not None:
                normalizers[prop.key] = normalizer
    return columns, checks, normalizers


def _schema_classes(cls: type[Any]) -> dict[str, type[ma.Schema]]:
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
    for extra in extra_actions(cls):
        if extra.schema is not None:
            schema_classes[extra.name] = _schema_class(cls, f"{extra.name} schema", extra.schema)
    return schema_classes


def _lookup_key(
    cls: type[Any],
    model: type[Any],
    primary_key: tuple[InstrumentedAttribute[Any], ...],
    columns: Mapping[str, Any],
) -> str:
    lookup_key: str = cls.lookup_field or primary_key[0].key
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
    return lookup_key


def _check_page_sizes(cls: type[Any]) -> None:
    page_size, max_page_size = cls.page_size, cls.max_page_size
    if not (isinstance(page_size, int) and isinstance(max_page_size, int)) or not (
        1 <= page_size <= max_page_size
    ):
        raise ImproperlyConfigured(
            f"{cls.__name__}: need 1 <= page_size <= max_page_size, got {page_size!r} and "
            f"{max_page_size!r}."
        )


def _default_sort(
    cls: type[Any], model: type[Any], columns: Mapping[str, Any]
) -> tuple[SortKey, ...]:
    try:
        default_sort = tuple(split_sort(cls.default_sort)) if cls.default_sort else ()
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
    return default_sort
