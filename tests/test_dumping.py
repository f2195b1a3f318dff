"""The compiled dumper answers exactly what marshmallow's ``schema.dump`` does: a property
over generated schemas (every field type the library supports, with ``data_key``,
``attribute``, ``dump_default``, ``as_string``, ``load_only``, ``only=``) and generated
rows (values of the field's own type, of other types, ``None``, missing attributes),
compared as the JSON the library sends."""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections import namedtuple
from types import SimpleNamespace
from typing import Any

import marshmallow as ma
import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources_kit.representation import compile_dumper, dump_many, dump_one, dumper_for


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(ma.Schema):
    id = ma.fields.Integer()
    label = ma.fields.String()


_APP = Flask(__name__)


def as_json(value: Any) -> str:
    with _APP.app_context():
        return str(_APP.json.dumps(value))


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False, places=3),
)

#: field kind -> (its values, a maker of the field from keyword options)
KINDS: dict[str, tuple[st.SearchStrategy[Any], Any]] = {
    "integer": (scalars, lambda **kw: ma.fields.Integer(**kw)),
    "integer_str": (st.integers(-1000, 1000), lambda **kw: ma.fields.Integer(as_string=True, **kw)),
    "float": (
        st.one_of(st.none(), st.integers(-1000, 1000), st.floats(allow_nan=False)),
        lambda **kw: ma.fields.Float(**kw),
    ),
    "string": (scalars, lambda **kw: ma.fields.String(**kw)),
    "email": (st.one_of(st.none(), st.emails()), lambda **kw: ma.fields.Email(**kw)),
    "url": (st.one_of(st.none(), st.text(max_size=8)), lambda **kw: ma.fields.URL(**kw)),
    "boolean": (
        st.one_of(st.none(), st.booleans(), st.sampled_from([0, 1, "true", "no", 2, "x"])),
        lambda **kw: ma.fields.Boolean(**kw),
    ),
    "raw": (scalars, lambda **kw: ma.fields.Raw(**kw)),
    "date": (st.one_of(st.none(), st.dates()), lambda **kw: ma.fields.Date(**kw)),
    "datetime": (
        st.one_of(st.none(), st.datetimes(), st.datetimes(timezones=st.just(dt.UTC))),
        lambda **kw: ma.fields.DateTime(**kw),
    ),
    "time": (st.one_of(st.none(), st.times()), lambda **kw: ma.fields.Time(**kw)),
    "decimal": (
        st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False, places=4)),
        lambda **kw: ma.fields.Decimal(places=2, **kw),
    ),
    "decimal_str": (
        st.one_of(st.none(), st.decimals(allow_nan=False, allow_infinity=False, places=2)),
        lambda **kw: ma.fields.Decimal(as_string=True, **kw),
    ),
    "uuid": (st.one_of(st.none(), st.uuids()), lambda **kw: ma.fields.UUID(**kw)),
    "enum": (
        st.one_of(st.none(), st.sampled_from(Color)),
        lambda **kw: ma.fields.Enum(Color, **kw),
    ),
    "enum_value": (
        st.one_of(st.none(), st.sampled_from(Color)),
        lambda **kw: ma.fields.Enum(Color, by_value=True, **kw),
    ),
    "list": (
        st.one_of(st.none(), st.lists(st.integers(0, 9), max_size=3)),
        lambda **kw: ma.fields.List(ma.fields.Integer(), **kw),
    ),
    "nested": (
        st.one_of(
            st.none(),
            st.builds(SimpleNamespace, id=st.integers(0, 9), label=st.text(max_size=3)),
        ),
        lambda **kw: ma.fields.Nested(Inner, **kw),
    ),
    "pluck": (
        st.one_of(st.none(), st.builds(SimpleNamespace, id=st.integers(0, 9), label=st.just("a"))),
        lambda **kw: ma.fields.Pluck(Inner, "id", **kw),
    ),
    "function": (scalars, lambda **kw: ma.fields.Function(lambda obj: repr(type(obj)), **kw)),
}


@st.composite
def schemas_and_rows(draw: Any) -> tuple[ma.Schema, list[Any]]:
    kinds = draw(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=6))
    declared: dict[str, ma.fields.Field[Any]] = {}
    attributes: dict[str, tuple[str, st.SearchStrategy[Any]]] = {}
    for index, kind in enumerate(kinds):
        values, make = KINDS[kind]
        options: dict[str, Any] = {}
        name = f"f{index}"
        attribute = name
        if draw(st.booleans()):
            options["data_key"] = draw(st.sampled_from(["key-", "class-", "x "])) + name
        if kind not in ("function",) and draw(st.integers(0, 4)) == 0:
            attribute = f"attr{index}"
            options["attribute"] = attribute
        if kind not in ("function",) and draw(st.integers(0, 5)) == 0:
            options["dump_default"] = 7
        if draw(st.integers(0, 6)) == 0:
            options["load_only"] = True
        declared[name] = make(**options)
        attributes[name] = (attribute, values)
    schema_class = ma.Schema.from_dict(declared, name="Generated")
    only = None
    if draw(st.booleans()):
        only = draw(st.lists(st.sampled_from(sorted(declared)), min_size=1, unique=True))
    schema = schema_class(only=only)
    rows = []
    for _ in range(draw(st.integers(1, 3))):
        row = SimpleNamespace()
        for attribute, values in attributes.values():
            if draw(st.integers(0, 9)) == 0:
                continue  # a missing attribute
            setattr(row, attribute, draw(values))
        rows.append(row)
    return schema, rows


@given(schemas_and_rows())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_compiled_dumper_answers_what_marshmallow_does(drawn: Any) -> None:
    schema, rows = drawn
    try:
        expected_many = as_json(schema.dump(rows, many=True))
    except Exception as exc:
        # marshmallow refuses the value (a text for an Integer)
        with pytest.raises(type(exc)):
            dump_many(schema, rows)
        return
    assert as_json(dump_many(schema, rows)) == expected_many
    assert as_json(dump_one(schema, rows[0])) == as_json(schema.dump(rows[0]))
    # The same rows as a statement's rows (read by position) where they have every column.
    columns = sorted(set().union(*(vars(row) for row in rows)))
    complete = [row for row in rows if sorted(vars(row)) == columns]
    as_rows = [namedtuple("Row", columns)(**vars(row)) for row in complete]
    by_position = compile_dumper(schema, {name: i for i, name in enumerate(columns)})
    if by_position is not None and as_rows:
        expected = as_json(schema.dump(as_rows, many=True))
        assert as_json([by_position(row) for row in as_rows]) == expected


def test_plain_schemas_are_compiled_and_hooked_ones_are_dumped_whole() -> None:
    class Plain(ma.Schema):
        id = ma.fields.Integer()
        name = ma.fields.String(data_key="full name")

    class Hooked(Plain):
        @ma.post_dump
        def shout(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            return {key: str(value).upper() for key, value in data.items()}

    class Reads(Plain):
        def get_attribute(self, obj: Any, attr: str, default: Any) -> Any:
            return "7"

    plain = Plain()
    dumper = dumper_for(plain)
    assert dumper is not None
    assert "getattr" in dumper.source  # type: ignore[attr-defined]
    row = SimpleNamespace(id=1, name="ada")
    assert dumper(row) == {"id": 1, "full name": "ada"}
    assert compile_dumper(Hooked()) is None
    assert dump_one(Hooked(), row) == {"id": "1", "full name": "ADA"}
    assert compile_dumper(Reads()) is None
    assert dump_one(Reads(), row) == {"id": 7, "full name": "7"}
    assert compile_dumper(Plain(many=True)) is None
    assert dumper_for(plain) is dumper  # made once per instance


def test_values_of_another_type_go_through_the_field() -> None:
    class Mixed(ma.Schema):
        count = ma.fields.Integer()
        ratio = ma.fields.Float()
        flag = ma.fields.Boolean()
        when = ma.fields.Date()
        key = ma.fields.UUID()

    row = SimpleNamespace(
        count=True, ratio=2, flag=1, when=dt.date(2026, 12, 1), key=uuid.UUID(int=5)
    )
    assert json.dumps(dump_one(Mixed(), row), sort_keys=True) == json.dumps(
        Mixed().dump(row), sort_keys=True
    )
    count = dump_one(Mixed(), row)["count"]
    assert count == 1
    assert type(count) is int
