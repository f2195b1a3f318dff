"""List queries: allow-listed filters, sort, search and sparse fields.

The allow-lists are compiled once per resource class (bad names raise
``ImproperlyConfigured`` at registration); each request is parsed against them, and
anything unknown or malformed is a 400 naming the parameter.

NULL sorts as if larger than any value, on every database: last ascending, first
descending.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy import Select, and_, false, or_, true
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.orm.attributes import InstrumentedAttribute

from .errors import ImproperlyConfigured, bad_parameter, bad_request

if TYPE_CHECKING:
    from .options import SortKey

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

    def where(self, clause: Any) -> Any:
        """Wrap a condition on the column so it applies through the relationship."""
        if self.relationship is None:
            return clause
        relation = getattr(self.relationship.parent.class_, self.relationship.key)
        return relation.any(clause) if self.relationship.uselist else relation.has(clause)


def _type_field(column: sa.ColumnElement[Any]) -> ma.fields.Field[Any]:
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
            is_text=isinstance(column.type, sa.String),
            nullable=bool(getattr(column, "nullable", True)) and not column.primary_key,
        )
    return paths


# -- per request ------------------------------------------------------------------------------


def _convert(path: FieldPath, value: Any) -> Any:
    if isinstance(value, dict | list):
        raise ma.ValidationError("Must be a single value, not an object or a list.")
    return path.field.deserialize(value)


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
        if operator == "contains":
            return attr.contains(value, autoescape=True)
        if operator == "icontains":
            return attr.icontains(value, autoescape=True)
        return attr.startswith(value, autoescape=True)
    if value is None:
        if operator in ("", "ne"):
            return attr.is_(None) if operator == "" else attr.is_not(None)
        raise ma.ValidationError(f"'{operator}' cannot compare with null.")
    converted = _convert(path, value)
    if operator == "":
        return attr == converted
    return {
        "ne": attr.__ne__,
        "lt": attr.__lt__,
        "lte": attr.__le__,
        "gt": attr.__gt__,
        "gte": attr.__ge__,
    }[operator](converted)


def parse_filters(raw: str, paths: Mapping[str, FieldPath]) -> list[Any]:
    """``?filters={"name": "Eve", "years__gte": 3}`` to WHERE clauses."""
    if not paths:
        raise bad_request(
            "This resource does not accept filters.",
            errors={"filters": ["Filtering is not enabled here."]},
        )
    try:
        spec = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        message = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or "too deep"
        raise bad_parameter("filters", f"Not valid JSON: {message}.") from None
    if not isinstance(spec, dict):
        raise bad_parameter("filters", "Must be a JSON object.")
    if len(spec) > MAX_FILTERS:
        raise bad_parameter("filters", f"At most {MAX_FILTERS} filters.")
    clauses, errors = [], {}
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
            clauses.append(paths[name].where(_condition(paths[name], operator, value)))
        except ma.ValidationError as exc:
            messages = exc.messages
            errors[key] = messages if isinstance(messages, list) else [str(messages)]
    if errors:
        raise bad_request("Bad query parameters: filters.", errors={"filters": errors})
    return clauses


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def parse_sort(raw: str, paths: Mapping[str, FieldPath]) -> list[SortKey]:
    from .options import parse_sort as split

    if not paths:
        raise bad_request(
            "This resource does not accept sort.", errors={"sort": ["Sorting is not enabled here."]}
        )
    try:
        keys = split(raw)
    except ValueError as exc:
        raise bad_parameter(
            "sort", f"Malformed term {exc.args[0]!r}: write 'field' or 'field__desc'."
        ) from None
    unknown = [key.key for key in keys if key.key not in paths]
    if unknown:
        allowed = ", ".join(sorted(paths))
        raise bad_parameter("sort", f"Not sortable: {', '.join(unknown)}. Allowed: {allowed}.")
    if len({key.key for key in keys}) != len(keys):
        raise bad_parameter("sort", "A field is named twice.")
    return keys


def search_clause(term: str, paths: Mapping[str, FieldPath]) -> Any:
    """Case-insensitive substring over every search field; LIKE wildcards match literally."""
    if not paths:
        raise bad_request(
            "This resource does not accept search.",
            errors={"search": ["Search is not enabled here."]},
        )
    if len(term) > MAX_SEARCH_LENGTH:
        raise bad_parameter("search", f"At most {MAX_SEARCH_LENGTH} characters.")
    if "\x00" in term:
        raise bad_parameter("search", "Must not contain NUL characters.")
    return or_(*(path.where(path.attr.icontains(term, autoescape=True)) for path in paths.values()))


def order_terms(path: FieldPath, descending: bool) -> list[Any]:
    """ORDER BY terms with NULL after every value ascending, before every value descending."""
    attr = path.attr
    terms: list[Any] = []
    if path.nullable:
        is_null = attr.is_(None)
        terms.append(is_null.desc() if descending else is_null.asc())
    terms.append(attr.desc() if descending else attr.asc())
    return terms


def sort_plan(
    keys: Sequence[SortKey], paths: Mapping[str, FieldPath], primary_key: Sequence[FieldPath]
) -> list[tuple[FieldPath, bool]]:
    """The full ordering: the keys asked for, then the primary key as the tie-breaker."""
    plan = [(paths[key.key], key.descending) for key in keys]
    named = {path.key for path, _ in plan}
    plan.extend((pk, False) for pk in primary_key if pk.key not in named)
    return plan


def apply_sort(query: Select[Any], plan: Sequence[tuple[FieldPath, bool]]) -> Select[Any]:
    joined = set()
    terms: list[Any] = []
    for path, descending in plan:
        if path.relationship is not None and path.relationship.key not in joined:
            relation = getattr(path.relationship.parent.class_, path.relationship.key)
            query = query.outerjoin(relation)
            joined.add(path.relationship.key)
        terms.extend(order_terms(path, descending))
    return query.order_by(*terms)


def after_position(plan: Sequence[tuple[FieldPath, bool]], values: Sequence[Any]) -> Any:
    """The keyset condition "comes after the row with these values", for the ordering
    ``apply_sort`` gives ``plan``."""
    alternatives = []
    equal_so_far: list[Any] = []
    for (path, descending), value in zip(plan, values, strict=True):
        attr, nullable = path.attr, path.nullable
        after: Any
        if value is None:
            after = attr.is_not(None) if descending else false()
            same = attr.is_(None)
        else:
            after = attr < value if descending else attr > value
            if nullable and not descending:
                after = or_(after, attr.is_(None))
            same = attr == value
        alternatives.append(and_(*equal_so_far, after) if equal_so_far else after)
        equal_so_far.append(same)
    return or_(*alternatives) if alternatives else true()


def sparse_field_names(raw: str, schema: ma.Schema) -> tuple[str, ...]:
    """``?fields=id,name`` to schema field names (``data_key`` aware); 400 on unknown."""
    by_key = {field.data_key or name: name for name, field in schema.dump_fields.items()}
    requested = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in requested if name not in by_key]
    if not requested or unknown:
        message = f"Unknown: {', '.join(unknown)}." if unknown else "Name at least one field."
        raise bad_parameter("fields", f"{message} Allowed: {', '.join(sorted(by_key))}.")
    return tuple(dict.fromkeys(by_key[name] for name in requested))
