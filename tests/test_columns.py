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


@pytest.mark.parametrize(
    ("sent", "stored"),
    [("12.345", "12.35"), ("-12.345", "-12.35"), ("12.344", "12.34"), ("0.005", "0.01")],
)
@pytest.mark.parametrize("places", [None, 2])
def test_decimals_round_half_away_from_zero_with_or_without_places(
    database: Any, sent: str, stored: str, places: int | None
) -> None:
    """One rule: a schema's Decimal(places=2) rounds as the column's scale does (marshmallow
    alone rounds half to even, 12.345 to 12.34)."""
    import marshmallow as ma

    from resources_kit import Router

    from .conftest import make_app, running
    from .models import Gadget, GadgetResource, GadgetSchema

    class Priced(GadgetSchema):
        price = ma.fields.Decimal(places=places, allow_none=True, as_string=True)

    class Gadgets(GadgetResource):
        schema = Priced

    def register(router: Router) -> None:
        router.register(Gadgets)

    with running(make_app(register)) as client:
        created = client.post("/api/gadgets", json={"label": "g", "price": sent})
        assert created.status_code == 201, created.json
        assert created.json["price"] == stored
        assert str(database.session.get(Gadget, created.json["id"]).price) == stored
        listed = client.get(f"/api/gadgets?price={stored}&fields=price").json["items"]
        assert [item["price"] for item in listed] == [stored]
        if places is not None:  # a filter value is rounded by the same rule
            listed = client.get(f"/api/gadgets?price={sent}").json["items"]
            assert [item["price"] for item in listed] == [stored]
