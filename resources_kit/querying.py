"""The list query language: allow-listed filters, sort, search and sparse fields.

The allow-lists are compiled once per resource class (bad names raise
``ImproperlyConfigured`` at registration). ``Filtering`` and ``Sorting`` are the pluggable
pieces of the list action: each declares its query parameters as marshmallow fields (so one
schema parses, validates and documents them) and applies the parsed values to the query.
Anything unknown or malformed is a 400 naming the parameter.

NULL sorts as if larger than any value, on every database: last ascending, first
descending.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy import Select, and_, false, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.orm.attributes import InstrumentedAttribute
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from .columns import Check, column_check
from .errors import ImproperlyConfigured
from .parsing import load_json

#: Operators of ``?filters=``: the part after ``__`` in a key.
OPERATORS = (
    "ne",
    "lt",
    "lte",
    "gt",
    "gte",
    "in",
    "not_in",
    "contains",
    "icontains",
    "startswith",
    "isnull",
)
TEXT_OPERATORS = ("contains", "icontains", "startswith")
MAX_FILTERS = 20
MAX_IN_VALUES = 500
MAX_SEARCH_LENGTH = 200


class ListOptions(Protocol):
    """The compiled allow-lists the list pieces read (``ResourceOptions`` has them)."""

    #: The resource class.
    resource: type[Any]
    filter_paths: Mapping[str, FieldPath]
    search_paths: Mapping[str, FieldPath]
    sort_paths: Mapping[str, FieldPath]
    primary_key_paths: tuple[FieldPath, ...]
    default_sort: tuple[SortKey, ...]


@dataclass(frozen=True)
class SortKey:
    key: str
    descending: bool


def split_sort(value: str | Sequence[str]) -> list[SortKey]:
    """Parse ``"years_teaching__desc,name"`` (or a list of such terms); ``ValueError``
    names a malformed term."""
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
class FieldPath:
    """A column a list query may use: ``"name"``, or ``"teacher.name"`` one relationship away."""

    key: str
    attr: InstrumentedAttribute[Any]
    #: The relationship crossed, for ``"rel.col"``.
    relationship: RelationshipProperty[Any] | None
    #: Converts and type-checks a JSON value for this column.
    field: ma.fields.Field[Any]
    is_text: bool
    nullable: bool
    #: A float column: keyset values are compared in the column's stored precision, or a
    #: single-precision row would sort after itself.
    is_float: bool = False
    #: An Enum column: sorted and compared as text on every backend (MariaDB would sort
    #: by declaration order but compare as text, PostgreSQL does both by declaration).
    is_enum: bool = False

    @property
    def sort_key(self) -> Any:
        """What ORDER BY and keyset conditions use for this column."""
        return sa.cast(self.attr, sa.String) if self.is_enum else self.attr

    #: Refuses values the column could never hold (integers out of its range).
    check: Check | None = None

    def where(self, clause: Any, reachable: Any = None) -> Any:
        """Wrap a condition on the column so it applies through the relationship, to
        related rows that also meet ``reachable`` (the related resource's row policy)."""
        if self.relationship is None:
            return clause
        if reachable is not None:
            clause = and_(clause, reachable)
        relation = getattr(self.relationship.parent.class_, self.relationship.key)
        return relation.any(clause) if self.relationship.uselist else relation.has(clause)


def _type_field(column: sa.ColumnElement[Any]) -> ma.fields.Field[Any]:
    if isinstance(column.type, sa.Enum):  # only its values: anything else the database refuses
        return ma.fields.String(validate=ma.validate.OneOf(column.type.enums))
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return ma.fields.Raw()
    mapping: Mapping[type, type[ma.fields.Field[Any]]] = ma.Schema.TYPE_MAPPING
    for type_, field_class in mapping.items():
        if python_type is type_:
            return field_class()
    return ma.fields.Raw()


def _typed_field(
    schema: ma.Schema, key: str, column: sa.ColumnElement[Any]
) -> ma.fields.Field[Any]:
    """The schema's own field for ``key`` with its validators dropped (a filter value is
    compared, not stored), or a field built from the column's type."""
    if isinstance(column.type, sa.Enum):
        return _type_field(column)
    for name, field in schema.fields.items():
        if (field.attribute or name) == key and not isinstance(field, ma.fields.Nested):
            typed = copy.copy(field)
            typed.validators = []
            typed.allow_none = True
            return typed
    return _type_field(column)


def compile_paths(
    resource: type[Any],
    mapper: Mapper[Any],
    schema: ma.Schema,
    attribute: str,
    names: Sequence[str] | None = None,
) -> dict[str, FieldPath]:
    """Check the names of an allow-list and compile them (at registration)."""
    if names is None:
        names = getattr(resource, attribute)
    if isinstance(names, str):
        raise ImproperlyConfigured(
            f"{resource.__name__}.{attribute} must be a list of names, not the string {names!r}."
        )
    paths = {}
    for key in names:
        relationship: RelationshipProperty[Any] | None = None
        target, column_key = mapper, key
        if "." in key:
            rel_key, _, column_key = key.partition(".")
            relationship = mapper.relationships.get(rel_key)
            if relationship is None or "." in column_key:
                raise ImproperlyConfigured(
                    f"{resource.__name__}.{attribute} names {key!r}: {mapper.class_.__name__} "
                    f"has no relationship {rel_key!r} (one level, 'relationship.column')."
                )
            target = relationship.mapper
        prop = target.column_attrs.get(column_key)
        if prop is None:
            raise ImproperlyConfigured(
                f"{resource.__name__}.{attribute} names {key!r}, which is not a column of "
                f"{target.class_.__name__}."
            )
        column = prop.columns[0]
        _check_applicable(resource, attribute, key, column)
        if relationship is not None and attribute == "sort_fields" and relationship.uselist:
            raise ImproperlyConfigured(
                f"{resource.__name__}.sort_fields names {key!r}: a to-many relationship has "
                "no single value to sort by."
            )
        field = (
            _typed_field(schema, column_key, column)
            if relationship is None
            else _type_field(column)
        )
        paths[key] = FieldPath(
            key=key,
            attr=getattr(target.class_, column_key),
            relationship=relationship,
            field=field,
            is_text=isinstance(column.type, sa.String) and not isinstance(column.type, sa.Enum),
            # Through a relationship the column comes from an outer join: NULL when no
            # related row is reachable, whatever the column allows.
            nullable=relationship is not None
            or (bool(getattr(column, "nullable", True)) and not column.primary_key),
            check=_integer_check(column),
            is_float=isinstance(column.type, sa.Float),
            is_enum=isinstance(column.type, sa.Enum),
        )
    return paths


def _check_applicable(resource: type[Any], attribute: str, key: str, column: Any) -> None:
    """Refuse, at registration, a column the operation cannot apply to on every backend."""
    text = isinstance(column.type, sa.String) and not isinstance(column.type, sa.Enum)
    if attribute == "search_fields" and not text:
        problem = "search looks for text, and this column holds none"
    elif attribute != "search_fields" and isinstance(column.type, sa.JSON | sa.LargeBinary):
        problem = "a JSON or binary column cannot be compared or sorted on every database"
    else:
        return
    raise ImproperlyConfigured(f"{resource.__name__}.{attribute} names {key!r}: {problem}.")


def _integer_check(column: Any) -> Check | None:
    if isinstance(column, sa.Column) and isinstance(column.type, sa.Integer):
        return column_check(column)
    return None


# -- per request ------------------------------------------------------------------------------


def _convert(path: FieldPath, value: Any) -> Any:
    if isinstance(value, dict | list):
        raise ma.ValidationError("Must be a single value, not an object or a list.")
    _no_nul(value)
    converted = path.field.deserialize(value)
    message = path.check(converted) if path.check is not None else None
    if message:
        raise ma.ValidationError(message)
    return converted


def _condition(path: FieldPath, operator: str, value: Any) -> Any:
    attr = path.attr
    if operator == "isnull":
        if not isinstance(value, bool):
            raise ma.ValidationError("'isnull' takes true or false.")
        return attr.is_(None) if value else attr.is_not(None)
    if operator in ("in", "not_in"):
        if not isinstance(value, list):
            raise ma.ValidationError(f"'{operator}' takes a list of values.")
        if len(value) > MAX_IN_VALUES:
            raise ma.ValidationError(f"At most {MAX_IN_VALUES} values.")
        values = [_convert(path, item) for item in value]
        return attr.in_(values) if operator == "in" else attr.not_in(values)
    if operator in TEXT_OPERATORS:
        if not path.is_text:
            raise ma.ValidationError(f"'{operator}' applies to text fields only.")
        if not isinstance(value, str):
            raise ma.ValidationError(f"'{operator}' takes a string.")
        _no_nul(value)
        if operator == "contains":
            return attr.contains(value, autoescape=True)
        if operator == "icontains":
            return attr.icontains(value, autoescape=True)
        return attr.startswith(value, autoescape=True)
    if value is None:
        if operator in ("", "ne"):
            return attr.is_(None) if operator == "" else attr.is_not(None)
        raise ma.ValidationError(f"'{operator}' cannot compare with null.")
    converted = sa.literal(_convert(path, value), attr.type)  # typed: `flag < true` too
    if operator == "":
        return attr == converted
    return {
        "ne": attr.__ne__,
        "lt": attr.__lt__,
        "lte": attr.__le__,
        "gt": attr.__gt__,
        "gte": attr.__ge__,
    }[operator](converted)


#: A parsed filter: the column's path and the condition on the column.
Condition = tuple[FieldPath, Any]


def parse_filters(raw: str, paths: Mapping[str, FieldPath]) -> list[Condition]:
    """``{"name": "Eve", "years__gte": 3}`` (JSON text) to conditions on columns (wrapped
    for a relationship by ``Filtering.filter``); a ``ValidationError`` names each bad key."""
    try:
        spec = load_json(raw)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deep"
        raise ma.ValidationError(f"Not valid JSON: {message}.") from None
    if not isinstance(spec, dict):
        raise ma.ValidationError("Must be a JSON object.")
    if len(spec) > MAX_FILTERS:
        raise ma.ValidationError(f"At most {MAX_FILTERS} filters.")
    clauses: list[Condition] = []
    errors = {}
    allowed = ", ".join(sorted(paths))
    for key, value in spec.items():
        name, operator = key, ""
        if key not in paths and "__" in key:
            name, _, operator = key.rpartition("__")
        if name not in paths:
            errors[key] = [f"Not a filterable field. Allowed: {allowed}."]
            continue
        if operator and operator not in OPERATORS:
            errors[key] = [f"Unknown operator {operator!r}. Allowed: {', '.join(OPERATORS)}."]
            continue
        try:
            clauses.append((paths[name], _condition(paths[name], operator, value)))
        except ma.ValidationError as exc:
            messages = exc.messages
            errors[key] = messages if isinstance(messages, list) else [str(messages)]
    if errors:
        raise ma.ValidationError(errors)
    return clauses


def parse_sort(raw: str, paths: Mapping[str, FieldPath]) -> list[SortKey]:
    """``"years__desc,name"`` to sort keys, each in ``paths``; ``ValidationError`` otherwise."""
    try:
        keys = split_sort(raw)
    except ValueError as exc:
        raise ma.ValidationError(
            f"Malformed term {exc.args[0]!r}: write 'field' or 'field__desc'."
        ) from None
    unknown = [key.key for key in keys if key.key not in paths]
    if unknown:
        allowed = ", ".join(sorted(paths))
        raise ma.ValidationError(f"Not sortable: {', '.join(unknown)}. Allowed: {allowed}.")
    if len({key.key for key in keys}) != len(keys):
        raise ma.ValidationError("A field is named twice.")
    return keys


#: ``reachable(path)``: the related rows a path through a relationship may match (the
#: related resource's row policy), ``None`` for every row.
Reachable = Callable[[FieldPath], Any]


def search_clause(term: str, paths: Mapping[str, FieldPath], reachable: Reachable) -> Any:
    """Case-insensitive substring over every search field; LIKE wildcards match literally."""
    return or_(
        *(
            path.where(
                path.attr.icontains(term, autoescape=True),
                reachable(path) if path.relationship else None,
            )
            for path in paths.values()
        )
    )


class StoredAs(FunctionElement[Any]):
    """A value converted to the precision the database stores a float column in: ``REAL``
    is single precision on PostgreSQL but double on MariaDB, where ``FLOAT`` is single."""

    inherit_cache = True
    name = "stored_as"
    _traverse_internals = [
        *FunctionElement._traverse_internals,
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, value: Any, type_: Any) -> None:
        super().__init__(sa.literal(value, type_))
        self.type = type_


@compiles(StoredAs)
def _stored_as(element: StoredAs, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))  # SQLite: every float is double


@compiles(StoredAs, "postgresql")
def _stored_as_postgresql(element: StoredAs, compiler: Any, **kw: Any) -> str:
    ddl = compiler.dialect.type_compiler_instance.process(element.type)
    return f"CAST({compiler.process(element.clauses, **kw)} AS {ddl})"


@compiles(StoredAs, "mysql")
@compiles(StoredAs, "mariadb")
def _stored_as_mysql(element: StoredAs, compiler: Any, **kw: Any) -> str:
    ddl = compiler.dialect.type_compiler_instance.process(element.type)
    digits = re.findall(r"\d+", ddl)
    single = ddl.startswith("FLOAT") and (not digits or int(digits[0]) <= 24)
    return f"CAST({compiler.process(element.clauses, **kw)} AS {'FLOAT' if single else 'DOUBLE'})"


class ExactFloat(FunctionElement[Any]):
    """A float column read in full: MariaDB sends a single-precision ``FLOAT`` as text
    with 6 digits (1/3 arrives as 0.333333, another number than the one stored), so a
    keyset position read from it would not find its own row; as a ``DOUBLE`` it arrives
    exactly. Elsewhere the column as it is."""

    inherit_cache = True
    name = "exact_float"

    def __init__(self, column: Any) -> None:
        super().__init__(column)
        self.type = column.type


@compiles(ExactFloat)
def _exact_float(element: ExactFloat, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(ExactFloat, "mysql")
@compiles(ExactFloat, "mariadb")
def _exact_float_mysql(element: ExactFloat, compiler: Any, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS DOUBLE)"


def order_terms(path: FieldPath, descending: bool) -> list[Any]:
    """ORDER BY terms with NULL after every value ascending, before every value descending."""
    attr, key = path.attr, path.sort_key
    terms: list[Any] = []
    if path.nullable:
        is_null = attr.is_(None)
        terms.append(is_null.desc() if descending else is_null.asc())
    terms.append(key.desc() if descending else key.asc())
    return terms


def sort_plan(
    keys: Sequence[SortKey], paths: Mapping[str, FieldPath], primary_key: Sequence[FieldPath]
) -> list[tuple[FieldPath, bool]]:
    """The full ordering: the keys asked for, then the primary key as the tie-breaker."""
    plan = [(paths[key.key], key.descending) for key in keys]
    named = {path.key for path, _ in plan}
    plan.extend((pk, False) for pk in primary_key if pk.key not in named)
    return plan


def apply_sort(
    query: Select[Any], plan: Sequence[tuple[FieldPath, bool]], reachable: Reachable
) -> Select[Any]:
    """ORDER BY the plan; a column through a relationship is joined only on related rows
    ``reachable`` admits (another row sorts as if it had no value)."""
    joined = set()
    terms: list[Any] = []
    for path, descending in plan:
        if path.relationship is not None and path.relationship.key not in joined:
            relation = getattr(path.relationship.parent.class_, path.relationship.key)
            condition = reachable(path)
            query = query.outerjoin(relation if condition is None else relation.and_(condition))
            joined.add(path.relationship.key)
        terms.extend(order_terms(path, descending))
    return query.order_by(*terms)


def after_position(plan: Sequence[tuple[FieldPath, bool]], values: Sequence[Any]) -> Any:
    """The keyset condition "comes after the row with these values", for the ordering
    ``apply_sort`` gives ``plan``."""
    alternatives = []
    equal_so_far: list[Any] = []
    for (path, descending), value in zip(plan, values, strict=True):
        attr, key, nullable = path.attr, path.sort_key, path.nullable
        if value is not None:  # bound with the key's type: `flag > true` needs one
            value = StoredAs(value, attr.type) if path.is_float else sa.literal(value, key.type)
        after: Any
        if value is None:
            after = attr.is_not(None) if descending else false()
            same = attr.is_(None)
        else:
            after = key < value if descending else key > value
            if nullable and not descending:
                after = or_(after, attr.is_(None))
            same = key == value
        alternatives.append(and_(*equal_so_far, after) if equal_so_far else after)
        equal_so_far.append(same)
    return or_(*alternatives) if alternatives else true()


def sparse_field_names(raw: str, schema: ma.Schema, related: Sequence[str] = ()) -> tuple[str, ...]:
    """``?fields=id,name`` to schema field names (``data_key`` aware); a
    ``ValidationError`` names the unknown ones. A dotted name whose path is one of
    ``related`` (``students.name``, a field of included rows) is kept as it is."""
    by_key = {field.data_key or name: name for name, field in schema.dump_fields.items()}
    if related:
        by_key |= {
            name: name
            for name in (name.strip() for name in raw.split(","))
            if name.rpartition(".")[0] in related
        }
    requested = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in requested if name not in by_key]
    if not requested or unknown:
        message = f"Unknown: {', '.join(unknown)}." if unknown else "Name at least one field."
        allowed = sorted(by_key) + [f"{path}.<field>" for path in related]
        raise ma.ValidationError(f"{message} Allowed: {', '.join(allowed)}.")
    return tuple(dict.fromkeys(by_key[name] for name in requested))


# -- the pluggable list pieces ----------------------------------------------------------------


class ParsedParameter(ma.fields.String):
    """A query parameter given as text and parsed by ``parse(text)``; ``metadata`` feeds
    the OpenAPI parameter. A ``multiple`` one is a comma-separated list that may also be
    given as repeated parameters (``sort=a&sort=b``, how generated clients send arrays);
    its ``metadata["terms"]`` are the allowed items (an enum in the document)."""

    def __init__(self, parse: Any, *, multiple: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.parse = parse
        #: webargs reads every value of a parameter for a field with ``is_multiple``.
        self.is_multiple = multiple

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        values = value if self.is_multiple and isinstance(value, list) else [value]
        text = ",".join(
            super(ParsedParameter, self)._deserialize(v, attr, data, **kwargs) for v in values
        )
        return self.parse(text)


def sparse_fields_field(schema: ma.Schema, related: Sequence[str] = ()) -> ma.fields.Field[Any]:
    """``?fields=``: a comma-separated list of the schema's fields (and ``path.field`` of
    the ``related`` paths ``?include=`` may name)."""
    names = sorted(field.data_key or name for name, field in schema.dump_fields.items())
    return ParsedParameter(
        lambda raw: sparse_field_names(raw, schema, related),
        multiple=True,
        metadata={
            "description": "The fields to return (comma-separated, or the parameter "
            f"repeated), of: {', '.join(names)}.",
            "terms": names,
        },
    )


class Filtering:
    """``?filters=`` and ``?search=`` over ``filter_fields`` and ``search_fields``.

    Replace it per resource (``filtering = MyFiltering``): ``get_args()`` declares the
    query parameters it reads, ``filter(query, args)`` narrows the list query with their
    parsed values. A parameter of a feature the resource has not enabled is refused with a
    400 saying so.
    """

    #: Parameter -> message when the resource has no allow-list for it.
    disabled: ClassVar[Mapping[str, str]] = {
        "filters": "Filtering is not enabled here.",
        "search": "Search is not enabled here.",
    }

    def __init__(self, options: ListOptions) -> None:
        self.filter_paths = options.filter_paths
        self.search_paths = options.search_paths
        taken = set(RESERVED_PARAMETERS) | set(getattr(options.resource, "list_args", ()))
        #: Flat parameter (``price__gte``) -> its field, which parses to a WHERE clause.
        self.flat_filters = {
            name: field
            for name, field in flat_filter_fields(self.filter_paths).items()
            if name not in taken
        }

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        """``filters`` (JSON), one flat parameter per filter field and operator, and
        ``search``, for the allow-lists the resource has."""
        args: dict[str, ma.fields.Field[Any]] = {}
        if self.filter_paths:
            args["filters"] = ParsedParameter(
                lambda raw: parse_filters(raw, self.filter_paths),
                metadata={"description": self.describe_filters(), "json_object": True},
            )
            args.update(self.flat_filters)
        if self.search_paths:
            args["search"] = ma.fields.String(
                validate=[
                    ma.validate.Length(max=MAX_SEARCH_LENGTH),
                    _no_nul,
                ],
                metadata={
                    "description": f"Case-insensitive substring of: {', '.join(self.search_paths)}."
                },
            )
        return args

    def describe_filters(self) -> str:
        """The OpenAPI description of ``filters``: its fields and operators."""
        fields = ", ".join(
            f"`{key}`" + (" (text)" if path.is_text else "")
            for key, path in self.filter_paths.items()
        )
        return (
            'A JSON object, e.g. `{"name": "Ada", "years__gte": 3}`. Keys: a field, or '
            f"`field__operator`. Fields: {fields}. Operators: {', '.join(OPERATORS)} "
            f"({', '.join(TEXT_OPERATORS)} on text fields only; in and not_in take a list "
            f"of at most {MAX_IN_VALUES})."
        )

    def filter(self, view: Any, query: Select[Any], args: Mapping[str, Any]) -> Select[Any]:
        """``query`` narrowed by the parsed filters (``args["filters"]`` and each flat
        filter parameter hold ``(path, condition)`` pairs) and the search term; all must
        hold. A condition through a relationship holds only for related rows the related
        resource's row policy lets the caller reach (``view.related_rows(path)``)."""
        conditions = list(args.get("filters", ()))
        conditions.extend(args[name] for name in self.flat_filters if name in args)
        clauses = [
            path.where(condition, view.related_rows(path) if path.relationship else None)
            for path, condition in conditions
        ]
        if "search" in args:
            clauses.append(search_clause(args["search"], self.search_paths, view.related_rows))
        return query.where(*clauses) if clauses else query


#: Query parameters of the built-in list pieces: a flat filter never takes their names.
RESERVED_PARAMETERS = ("limit", "offset", "cursor", "sort", "search", "fields", "filters")


def _flat_clause(path: FieldPath, operator: str, value: Any) -> Condition:
    """The condition of one flat filter parameter (text, or a list of texts), with its
    path (``Filtering.filter`` wraps it for a relationship)."""
    if operator in ("in", "not_in"):
        return path, _condition(path, operator, list(value))
    if not isinstance(value, str):
        raise ma.ValidationError("Must be a single value.")
    if operator == "isnull":
        try:
            flag = ma.fields.Boolean().deserialize(value)
        except ma.ValidationError:
            raise ma.ValidationError("'isnull' takes true or false.") from None
        return path, _condition(path, "isnull", flag)
    return path, _condition(path, operator, value)


class _FlatFilter(ma.fields.Field):  # type: ignore[type-arg]
    """``?price__gte=10``: one condition of ``?filters=`` as its own parameter; the text
    is converted as a filter value is, and parses to ``(path, condition)``."""

    def __init__(self, path: FieldPath, operator: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path, self.operator = path, operator

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        return _flat_clause(self.path, self.operator, value)


class _FlatListFilter(ma.fields.List):  # type: ignore[type-arg]
    """``?name__in=Ada&name__in=Bob``: repeated, each a value of the list."""

    def __init__(self, path: FieldPath, operator: str, **kwargs: Any) -> None:
        super().__init__(ma.fields.String(), **kwargs)
        self.path, self.operator = path, operator

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        texts = super()._deserialize(value, attr, data, **kwargs)
        return _flat_clause(self.path, self.operator, texts)


def flat_filter_fields(paths: Mapping[str, FieldPath]) -> dict[str, ma.fields.Field[Any]]:
    """The flat filter parameters of ``paths``: ``field`` (equals) and ``field__op`` for
    each operator that applies to it, documented for OpenAPI."""
    fields: dict[str, ma.fields.Field[Any]] = {}
    for key, path in paths.items():
        for operator in ("", *OPERATORS):
            if operator in TEXT_OPERATORS and not path.is_text:
                continue
            name = f"{key}__{operator}" if operator else key
            field_class: Any = _FlatListFilter if operator in ("in", "not_in") else _FlatFilter
            meaning = FLAT_MEANINGS[operator]
            metadata: dict[str, Any] = {"description": f"{key}: {meaning}."}
            if operator == "isnull":
                metadata["type"] = "boolean"
            elif operator in ("in", "not_in"):
                metadata["items"] = _json_type(path)
            else:
                metadata |= _json_type(path)
            # A dotted name would load as a nested dict: the field's own name has none.
            fields[name.replace(".", ":")] = field_class(
                path, operator, data_key=name, metadata=metadata
            )
    return fields


def _json_type(path: FieldPath) -> dict[str, str]:
    """The OpenAPI type of a filter value of ``path``."""
    field = path.field
    for field_class, schema in (
        (ma.fields.Boolean, {"type": "boolean"}),
        (ma.fields.Integer, {"type": "integer"}),
        (ma.fields.Number, {"type": "number"}),
        (ma.fields.DateTime, {"type": "string", "format": "date-time"}),
        (ma.fields.Date, {"type": "string", "format": "date"}),
        (ma.fields.UUID, {"type": "string", "format": "uuid"}),
    ):
        if isinstance(field, field_class):
            return schema
    return {"type": "string"}


FLAT_MEANINGS = {
    "": "equals",
    "ne": "not equal",
    "lt": "less than",
    "lte": "at most",
    "gt": "greater than",
    "gte": "at least",
    "in": "one of (repeat the parameter)",
    "not_in": "none of (repeat the parameter)",
    "contains": "contains the text",
    "icontains": "contains the text, case-insensitively",
    "startswith": "starts with the text",
    "isnull": "is null (true) or not (false)",
}


def _no_nul(value: Any) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ma.ValidationError("Must not contain NUL characters.")


#: A full ordering: (column, descending) pairs ending with the primary key.
SortPlan = list[tuple[FieldPath, bool]]


class Sorting:
    """``?sort=`` over ``sort_fields``, then ``default_sort``, then the primary key.

    Replace it per resource (``sorting = MySorting``). ``args["sort"]`` holds the parsed
    plan, a list of ``(FieldPath, descending)`` ending with the primary key; cursor
    pagination reads it to build and check cursors.
    """

    disabled: ClassVar[Mapping[str, str]] = {"sort": "Sorting is not enabled here."}

    def __init__(self, options: ListOptions, sort_fields: Sequence[str]) -> None:
        self.paths = {key: options.sort_paths[key] for key in sort_fields}
        self.all_paths = options.sort_paths
        self.primary_key = options.primary_key_paths
        self.default = self.plan(options.default_sort)

    def plan(self, keys: Sequence[SortKey]) -> SortPlan:
        """The full ordering of ``keys``: each key's column, then the primary key."""
        return sort_plan(keys, self.all_paths, self.primary_key)

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        """``sort``, over ``sort_fields`` (none when the resource sorts by nothing)."""
        if not self.paths:
            return {}
        terms = [term for key in self.paths for term in (key, f"{key}__asc", f"{key}__desc")]
        return {
            "sort": ParsedParameter(
                lambda raw: self.plan(parse_sort(raw, self.paths)),
                multiple=True,
                load_default=lambda: self.default,
                metadata={
                    "description": "Sort keys in order (comma-separated, or the parameter "
                    "repeated); each `field` or `field__desc`. "
                    f"Fields: {', '.join(self.paths)}.",
                    "terms": terms,
                },
            )
        }

    def get_plan(self, args: Mapping[str, Any]) -> SortPlan:
        """The parsed sort plan of ``args``, or the default one."""
        plan: SortPlan = args.get("sort", self.default)
        return plan

    def sort(self, view: Any, query: Select[Any], args: Mapping[str, Any]) -> Select[Any]:
        """``query`` ordered by the plan of ``args`` (see :meth:`get_plan`), NULLs last
        ascending and first descending; a ``"rel.col"`` key joins the related rows the
        related resource's row policy lets the caller reach."""
        return apply_sort(query, self.get_plan(args), view.related_rows)


def sort_spec(plan: SortPlan) -> str:
    """``"name__asc,id__asc"``: names a plan (cursors and kept statements use it)."""
    return ",".join(f"{path.key}__{'desc' if desc else 'asc'}" for path, desc in plan)
