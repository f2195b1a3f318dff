from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
)

from resources_kit.columns import column_check


@pytest.mark.parametrize(
    ("type_", "good", "bad"),
    [
        (String(5), ["", "abcde", "ééééé", None, 5], ["abcdef", "a\x00"]),
        (Text(), ["x" * 100_000], ["\x00"]),
        (SmallInteger(), [-(2**15), 2**15 - 1, True], [2**15, -(2**15) - 1]),
        (Integer(), [-(2**31), 2**31 - 1, "9" * 20], [2**31, -(2**31) - 1]),
        (BigInteger(), [2**63 - 1, -(2**63)], [2**63, -(2**63) - 1]),
        (Numeric(5, 2), [Decimal("999.99"), 999, -999.5], [Decimal("1000"), 1000, -1000.0]),
    ],
)
def test_checks_refuse_what_the_column_would(type_: Any, good: list[Any], bad: list[Any]) -> None:
    check = column_check(Column("c", type_))
    assert check is not None
    for value in good:
        assert check(value) is None, value
    for value in bad:
        assert isinstance(check(value), str), value


@pytest.mark.parametrize("type_", [Boolean(), Numeric()])
def test_columns_without_limits_have_no_check(type_: Any) -> None:
    assert column_check(Column("c", type_)) is None
