"""Values a column would refuse, checked before the database sees them.

Backends disagree about what they refuse (SQLite stores a 300-character string in a
``String(50)``; MariaDB truncates or refuses; PostgreSQL refuses NUL bytes), so the checks
here are the strictest common rule, applied the same everywhere. A refused value becomes a
422 naming the field instead of a driver error.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Integer, Numeric, SmallInteger, String
from sqlalchemy.sql.schema import Column

#: A check returns an error message, or ``None`` when the value is fine.
Check = Callable[[Any], str | None]

_INT_BOUNDS = {
    SmallInteger: (-(2**15), 2**15 - 1),
    BigInteger: (-(2**63), 2**63 - 1),
    Integer: (-(2**31), 2**31 - 1),
}


def _int_bounds(column: Column[Any]) -> tuple[int, int] | None:
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
    bounds = _int_bounds(column)
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
