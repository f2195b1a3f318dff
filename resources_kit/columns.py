"""Values a column would refuse, checked before the database sees them.

Backends disagree about what they refuse (SQLite stores a 300-character string in a
``String(50)``; MariaDB truncates or refuses; PostgreSQL refuses NUL bytes), so the checks
here are the strictest common rule, applied the same everywhere. A refused value becomes a
422 naming the field instead of a driver error.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import marshmallow as ma
from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    Float,
    Integer,
    Numeric,
    SmallInteger,
    String,
    bindparam,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.schema import Column
from sqlalchemy.sql.visitors import InternalTraversal

#: A check returns an error message, or ``None`` when the value is fine.
Check = Callable[[Any], str | None]

_INT_BOUNDS = {
    SmallInteger: (-(2**15), 2**15 - 1),
    BigInteger: (-(2**63), 2**63 - 1),
    Integer: (-(2**31), 2**31 - 1),
}


def int_bounds(column: Column[Any]) -> tuple[int, int] | None:
    """The range of an integer column's values, or ``None`` for another column."""
    for type_, bounds in _INT_BOUNDS.items():
        if isinstance(column.type, type_):
            return bounds
    return None


def column_check(column: Column[Any]) -> Check | None:
    """Build the check for one column, or ``None`` when the column refuses nothing we know."""
    type_ = column.type
    if isinstance(type_, String):
        length = type_.length

        def check_string(value: Any) -> str | None:
            if not isinstance(value, str):
                return None
            if "\x00" in value:
                return "Must not contain NUL characters."
            if length is not None and len(value) > length:
                return f"Longer than maximum length {length}."
            return None

        return check_string
    bounds = int_bounds(column)
    if bounds is not None:
        low, high = bounds

        def check_int(value: Any) -> str | None:
            if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
                return f"Must be between {low} and {high}."
            return None

        return check_int
    if isinstance(type_, Numeric) and type_.precision is not None:
        integer_digits = type_.precision - (type_.scale or 0)

        def check_numeric(value: Any) -> str | None:
            number = isinstance(value, int | float | Decimal) and value == value  # NaN fails ==
            if number and abs(Decimal(str(value))) >= Decimal(10) ** integer_digits:
                return f"Must have at most {integer_digits} digits before the point."
            return None

        return check_numeric
    return None


def url_converter(column: Column[Any]) -> Callable[[str], Any] | None:
    """Turn a URL segment into a value of a lookup column, or raise ``ValueError`` (the item
    is then missing): a Date column takes ISO dates, in their one canonical spelling; an
    Enum column only its values."""
    type_ = column.type
    if isinstance(type_, Date) and not isinstance(type_, DateTime):

        def to_date(text: str) -> date:
            value = date.fromisoformat(text)
            if value.isoformat() != text:
                raise ValueError(text)
            return value

        return to_date
    if isinstance(type_, Enum):
        allowed = frozenset(type_.enums)

        def to_enum(text: str) -> str:
            if text not in allowed:
                raise ValueError(text)
            return text

        return to_enum
    return None


def column_normalizer(column: Column[Any]) -> Callable[[Any], Any] | None:
    """What the database would make of a value, applied before writing it: a number for a
    ``Numeric`` column with a scale is rounded to that scale, half away from zero, as
    PostgreSQL and MariaDB round it (SQLite would store it unrounded and read it back
    rounded)."""
    type_ = column.type
    if not isinstance(type_, Numeric) or type_.scale is None or isinstance(type_, Float):
        return None
    quantum = Decimal(1).scaleb(-type_.scale)

    def normalize(value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
            return value
        try:
            rounded = Decimal(str(value)).quantize(quantum, rounding=ROUND_HALF_UP)
        except InvalidOperation:
            return value  # NaN, or too many digits: the check refuses it
        return rounded if isinstance(value, Decimal) or type_.asdecimal else float(rounded)

    return normalize


# -- exact comparison --------------------------------------------------------------------


class ExactEquals(ColumnElement[bool]):
    """``column = value``, compared byte for byte on every database.

    MariaDB and MySQL compare strings in the column's collation, which by default ignores
    case and trailing spaces: a scope of ``"ACME.COM"`` would reach tenant ``acme.com``'s
    rows. There the comparison is made twice, in the collation (so an index on the column
    still serves it) and as binary strings (so only the same bytes match)."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("value", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, value: Any) -> None:
        self.column = column
        self.value = value


@compiles(ExactEquals)
def _exact_default(element: ExactEquals, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column == element.value, **kw))


@compiles(ExactEquals, "mysql")
@compiles(ExactEquals, "mariadb")
def _exact_mysql(element: ExactEquals, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    value = compiler.process(element.value, **kw)
    return f"({column} = {value} AND CAST({column} AS BINARY) = CAST({value} AS BINARY))"


def exact_equals(column: Any, value: Any) -> Any:
    """``column == value``; for a text column, byte-exact on every backend."""
    if isinstance(getattr(column, "type", None), String) and not isinstance(column.type, Enum):
        if not isinstance(value, ColumnElement):
            value = bindparam(None, value, type_=column.type)
        return ExactEquals(column, value)
    return column == value


#: Fields that may load objects for a relationship (Pluck is a Nested).
_MAY_LOAD_OBJECTS = (ma.fields.Nested, ma.fields.Raw, ma.fields.Function, ma.fields.Method)


def unwritable(mapper: Any, field: Any, key: str) -> str | None:
    """Why the default write path (``model(**data)``, ``setattr``) cannot store what
    ``field`` loads into attribute ``key``, or ``None`` when it can: an attribute the
    model does not have or cannot set, or a relationship given plain values (a list of
    ids for a many-to-many) rather than objects."""
    model = mapper.class_
    if key in mapper.column_attrs:
        return None
    relationship = mapper.relationships.get(key)
    if relationship is not None:
        inner = field.inner if isinstance(field, ma.fields.List) else field
        if isinstance(inner, _MAY_LOAD_OBJECTS):
            return None  # may load objects (post_load, a deserialize function)
        kind = "a list of values" if relationship.uselist else "a value"
        return f"it loads {kind} into the relationship {model.__name__}.{key}, which holds objects"
    attribute = getattr(model, key, None)
    if attribute is None:
        return f"{model.__name__} has no attribute {key!r}"
    if isinstance(attribute, property) and attribute.fset is None:
        return f"{model.__name__}.{key} is a read-only property"
    return None


def round_half_up(schema: ma.Schema) -> None:
    """Make the ``Decimal(places=n)`` fields of a schema instance the library uses round
    as the rest of the library and the databases do, half away from zero (marshmallow
    rounds half to even unless told: 12.345 would load as 12.34, stored as 12.35 without
    ``places``). A field with a ``rounding`` of its own keeps it."""
    for field in schema.fields.values():
        if not isinstance(field, ma.fields.Decimal):
            continue
        if field.places is not None and field.rounding is None:
            field.rounding = ROUND_HALF_UP
