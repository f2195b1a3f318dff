"""Hypothesis strategies of JSON bodies from marshmallow schemas.

``payloads(schema)`` generates bodies the schema loads; ``invalid_payloads(schema)``
generates ``(field, body)`` pairs the schema must refuse. Fields and validators this
module does not know raise ``UnsupportedField``, whose message says how to teach it:
``register_field_strategy(FieldClass, factory)``, or ``overrides={"name": strategy}``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import marshmallow as ma
from hypothesis import strategies as st
from marshmallow import fields, validate

from resources_kit.errors import ResourcesKitError

#: A factory builds the strategy of one field's *valid JSON values*, validators included.
#: (A string: marshmallow 3's Field is not subscriptable at run time.)
FieldFactory = Callable[["fields.Field[Any]"], "st.SearchStrategy[Any]"]

_registry: dict[type[fields.Field[Any]], FieldFactory] = {}

#: Text without NUL or lone surrogates: neither survives JSON and every database.
_TEXT_CHARACTERS = st.characters(codec="utf-8", exclude_characters="\x00")


class UnsupportedField(ResourcesKitError, TypeError):
    """A field or validator without a known strategy."""


def register_field_strategy(field_class: type[fields.Field[Any]], factory: FieldFactory) -> None:
    """Teach ``payloads`` a field class: ``factory(field)`` returns a strategy of valid
    JSON values for that field (its validators included). Subclasses use it too, unless
    they have a registration of their own::

        register_field_strategy(Money, lambda field: st.integers(0, 10**6).map(str))
    """
    _registry[field_class] = factory


# -- validators -----------------------------------------------------------------------------


def _validators(field: fields.Field[Any]) -> list[Any]:
    found: list[Any] = []
    for validator in field.validators:
        if isinstance(validator, validate.And):
            found.extend(validator.validators)
        else:
            found.append(validator)
    return found


def _unsupported(what: str, field: fields.Field[Any]) -> UnsupportedField:
    name = field.name or type(field).__name__
    return UnsupportedField(
        f"No strategy for {what} of field {name!r}. Register one with "
        f"resources_kit.testing.register_field_strategy({type(field).__name__}, factory), "
        f"or pass overrides={{{name!r}: strategy}}."
    )


def _choices(field: fields.Field[Any]) -> st.SearchStrategy[Any] | None:
    """Validators that fix the value outright: OneOf, Equal."""
    for validator in _validators(field):
        if isinstance(validator, validate.OneOf):
            return st.sampled_from(list(validator.choices))
        if isinstance(validator, validate.Equal):
            return st.just(validator.comparable)
    return None


def _length(field: fields.Field[Any]) -> tuple[int, int | None]:
    low, high = 0, None
    for validator in _validators(field):
        if isinstance(validator, validate.Length):
            if validator.equal is not None:
                return validator.equal, validator.equal
            low = max(low, validator.min or 0)
            if validator.max is not None:
                high = validator.max if high is None else min(high, validator.max)
    return low, high


def _range(field: fields.Field[Any]) -> tuple[Any, bool, Any, bool]:
    low: Any = None
    high: Any = None
    low_inclusive = high_inclusive = True
    for validator in _validators(field):
        if isinstance(validator, validate.Range):
            if validator.min is not None:
                low, low_inclusive = validator.min, validator.min_inclusive
            if validator.max is not None:
                high, high_inclusive = validator.max, validator.max_inclusive
    return low, low_inclusive, high, high_inclusive


_KNOWN_VALIDATORS = (
    validate.Length,
    validate.Range,
    validate.OneOf,
    validate.Equal,
    validate.Regexp,
    validate.Email,
    validate.URL,
)


def _check_validators(field: fields.Field[Any]) -> None:
    for validator in _validators(field):
        if not isinstance(validator, _KNOWN_VALIDATORS):
            raise _unsupported(f"the validator {validator!r}", field)


# -- fields ---------------------------------------------------------------------------------


def _text(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    low, high = _length(field)
    regexes = [v.regex for v in _validators(field) if isinstance(v, validate.Regexp)]
    if regexes:
        regex = st.from_regex(regexes[0], fullmatch=True)
        return regex.filter(lambda s: low <= len(s) and (high is None or len(s) <= high))
    return _bounded_text(low, high)


def _bounded_text(low: int, high: int | None) -> st.SearchStrategy[str]:
    """Text of ``low`` to ``high`` characters; half of the time exactly ``high``, the
    boundary where a column that keeps fewer characters shows."""
    anything = st.text(_TEXT_CHARACTERS, min_size=low, max_size=high if high is not None else 40)
    if high is None or high == low:
        return anything
    return anything | st.text(_TEXT_CHARACTERS, min_size=high, max_size=high)


def _integers(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    low, low_inclusive, high, high_inclusive = _range(field)
    if low is not None and not low_inclusive:
        low += 1
    if high is not None and not high_inclusive:
        high -= 1
    return st.integers(min_value=low, max_value=high)


def _numbers(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    low, low_inclusive, high, high_inclusive = _range(field)
    return st.floats(
        min_value=low,
        max_value=high,
        exclude_min=not low_inclusive,
        exclude_max=not high_inclusive,
        allow_nan=False,
        allow_infinity=False,
        width=32,
    )


def _decimals(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    low, _, high, _ = _range(field)
    places = getattr(field, "places", None)  # marshmallow keeps it as Decimal("0.01")
    if places is not None and not isinstance(places, int):
        exponent = places.as_tuple().exponent
        places = -exponent if isinstance(exponent, int) else 2
    return st.decimals(
        min_value=low,
        max_value=high,
        places=places if places is not None else 2,
        allow_nan=False,
        allow_infinity=False,
    ).map(str)


def _datetimes(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    aware = st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(2200, 1, 1),
        timezones=st.just(dt.UTC),
    )
    naive = st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1))
    if isinstance(field, getattr(fields, "NaiveDateTime", ())):
        return naive.map(lambda value: value.isoformat())
    return aware.map(lambda value: value.isoformat())


def _enums(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    members = list(field.enum)  # type: ignore[attr-defined]
    if getattr(field, "by_value", False):
        return st.sampled_from([member.value for member in members])
    return st.sampled_from([member.name for member in members])


def _lists(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    low, high = _length(field)
    inner = field_strategy(field.inner)  # type: ignore[attr-defined]
    return st.lists(inner, min_size=low, max_size=high if high is not None else 5)


def _dicts(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    keys = field.key_field  # type: ignore[attr-defined]
    values = field.value_field  # type: ignore[attr-defined]
    key_strategy = field_strategy(keys) if keys is not None else st.text(_TEXT_CHARACTERS)
    value_strategy = field_strategy(values) if values is not None else _json_values()
    return st.dictionaries(key_strategy, value_strategy, max_size=4)


def _nested(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    schema = field.schema  # type: ignore[attr-defined]
    body = payloads(schema)
    return st.lists(body, max_size=3) if getattr(field, "many", False) else body


def _json_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(-(2**31), 2**31 - 1)
        | st.text(_TEXT_CHARACTERS, max_size=10)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
        ),
        max_leaves=5,
    )


_FACTORIES: list[tuple[type[fields.Field[Any]], FieldFactory]] = [
    # most specific first: Email and URL are Strings, AwareDateTime a DateTime...
    (fields.Email, lambda f: st.emails().filter(lambda e: len(e) <= (_length(f)[1] or 254))),
    (
        fields.URL,
        lambda f: st.sampled_from(
            ["https://example.org/", "http://example.com/a?b=1", "https://sub.example.net/x/y"]
        ),
    ),
    (fields.UUID, lambda f: st.uuids().map(str)),
    (fields.String, _text),
    (fields.Boolean, lambda f: st.booleans()),
    (fields.Integer, _integers),
    (fields.Decimal, _decimals),
    (fields.Float, _numbers),
    (fields.DateTime, _datetimes),
    (
        fields.Date,
        lambda f: st.dates(dt.date(1900, 1, 1), dt.date(2200, 1, 1)).map(lambda d: d.isoformat()),
    ),
    (fields.Time, lambda f: st.times().map(lambda t: t.isoformat())),
    (fields.List, _lists),
    (fields.Tuple, lambda f: st.tuples(*(field_strategy(i) for i in f.tuple_fields)).map(list)),  # type: ignore[attr-defined]
    (fields.Dict, _dicts),
    (fields.Nested, _nested),
    (fields.Raw, lambda f: _json_values()),
]
if hasattr(fields, "Enum"):
    _FACTORIES.insert(0, (fields.Enum, _enums))


def field_strategy(field: fields.Field[Any]) -> st.SearchStrategy[Any]:
    """Valid JSON values for one field (``None`` too when it allows it)."""
    for cls in type(field).__mro__:
        if cls in _registry:
            strategy = _registry[cls](field)
            break
    else:
        _check_validators(field)
        strategy = _choices(field)  # type: ignore[assignment]
        if strategy is None:
            for field_class, factory in _FACTORIES:
                if isinstance(field, field_class) and (
                    field_class is not fields.Raw or type(field) is fields.Raw
                ):
                    strategy = factory(field)
                    break
            else:
                raise _unsupported(f"the field class {type(field).__name__}", field)
    if field.allow_none:
        strategy = st.none() | strategy
    return strategy


def _plain_text(field: fields.Field[Any]) -> bool:
    """A ``String`` field of any text (no format, no pattern, no choices): its length is
    the only limit."""
    plain = type(field) is fields.String
    return plain and all(isinstance(v, validate.Length) for v in _validators(field))


def load_fields(schema: ma.Schema) -> list[tuple[str, fields.Field[Any]]]:
    """The schema's load fields (attribute name, field) in the order they are declared.
    Older marshmallow versions keep an unordered schema's fields in a set's order, which
    moves with the hash seed; strategies drawn in that order would draw other examples
    in every process, so a derandomized run would not be the same run twice."""
    declared = {name: i for i, name in enumerate(schema.declared_fields)}
    return sorted(
        schema.load_fields.items(), key=lambda item: (declared.get(item[0], len(declared)), item[0])
    )


def _loadable(schema: ma.Schema) -> list[tuple[str, fields.Field[Any]]]:
    return [(field.data_key or name, field) for name, field in load_fields(schema)]


def schema_instance(schema: ma.Schema | type[ma.Schema]) -> ma.Schema:
    """A schema instance, from an instance or a class."""
    return schema() if isinstance(schema, type) else schema


def payloads(
    schema: ma.Schema | type[ma.Schema],
    *,
    partial: bool = False,
    overrides: Mapping[str, st.SearchStrategy[Any]] | None = None,
    max_lengths: Mapping[str, int] | None = None,
) -> st.SearchStrategy[dict[str, Any]]:
    """JSON bodies that ``schema`` loads (``partial=True``: any subset of the fields).

    ``dump_only`` fields are never generated; ``load_only`` ones are. Required fields are
    always present unless ``partial``; optional ones come and go. ``overrides`` replaces
    the strategy of a field by its name in the body. ``max_lengths`` (body key -> the
    length of the column behind it) bounds plain text fields by their column, drawing
    exactly that length half of the time (as a ``Length(max=n)`` validator does). Bodies a
    schema-level validator refuses are filtered out.
    """
    instance = schema_instance(schema)
    overrides = dict(overrides or {})
    lengths = max_lengths or {}
    required: dict[str, st.SearchStrategy[Any]] = {}
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for key, field in _loadable(instance):
        if key in overrides:
            strategy = overrides.pop(key)
        elif key in lengths and _plain_text(field):
            low, high = _length(field)
            bound = lengths[key] if high is None else min(high, lengths[key])
            strategy = _bounded_text(min(low, bound), bound)
            strategy = strategy | st.none() if field.allow_none else strategy
        else:
            strategy = field_strategy(field)
        (required if field.required and not partial else optional)[key] = strategy
    if overrides:
        raise UnsupportedField(f"overrides name fields the schema cannot load: {sorted(overrides)}")
    bodies = st.fixed_dictionaries(required, optional=optional)
    return bodies.filter(lambda body: not instance.validate(body, partial=partial))


# -- invalid bodies -------------------------------------------------------------------------

_UNKNOWN_KEY = "resources_kit_unknown_field"


def _wrong_values(field: fields.Field[Any]) -> list[Any]:
    """JSON values of the wrong type for the field."""
    if isinstance(field, fields.Nested):
        return ["not an object", 12]
    if isinstance(field, fields.List | fields.Tuple):
        return ["not a list", {"a": 1}]
    if isinstance(field, fields.Dict):
        return [[1, 2], "not an object"]
    if isinstance(field, fields.Boolean):
        return [[True], {"b": 1}, "certainly"]
    if isinstance(field, fields.Number):
        return ["not a number", [1], {"n": 1}]
    if isinstance(field, fields.String | fields.UUID | fields.DateTime | fields.Date):
        return [12345, [1], {"s": 1}, True]
    if isinstance(field, fields.Raw):
        return []  # takes anything
    return [[1, {"x": None}]]


def _out_of_range(field: fields.Field[Any]) -> list[Any]:
    values: list[Any] = []
    low, high = _length(field)
    if isinstance(field, fields.String) and _choices(field) is None:
        if high is not None:
            values.append("x" * (high + 1))
        if low > 0:
            values.append("x" * (low - 1))
    low_value, low_inclusive, high_value, high_inclusive = _range(field)
    if isinstance(field, fields.Integer):
        if high_value is not None:
            values.append(int(high_value) + (1 if high_inclusive else 0))
        if low_value is not None:
            values.append(int(low_value) - (1 if low_inclusive else 0))
    if isinstance(field, fields.Number) and not isinstance(field, fields.Integer):
        if high_value is not None:
            values.append(float(high_value) + 1)
        if low_value is not None:
            values.append(float(low_value) - 1)
    choices = _choices(field)
    if choices is not None:
        values.append(f"not one of the choices {uuid.uuid4().hex[:6]}")
    return values


def invalid_payloads(
    schema: ma.Schema | type[ma.Schema], *, partial: bool = False
) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    """``(field, body)`` pairs the schema must refuse, ``field`` being the key it breaks:
    a value of the wrong type, ``null`` where it is not allowed, a value outside a
    ``Length``/``Range``/``OneOf``, a missing required field, or an unknown field."""
    instance = schema_instance(schema)
    valid = payloads(instance, partial=partial)
    breakers: list[st.SearchStrategy[tuple[str, Any]]] = []
    for key, field in _loadable(instance):
        bad = _wrong_values(field) + _out_of_range(field)
        if not field.allow_none:
            bad.append(None)
        if bad:
            breakers.append(st.tuples(st.just(key), st.sampled_from(bad)))
    missing = [key for key, field in _loadable(instance) if field.required and not partial]

    @st.composite
    def broken(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
        body = dict(draw(valid))
        options = ["unknown"] + (["value"] if breakers else []) + (["missing"] if missing else [])
        how = draw(st.sampled_from(options))
        if how == "value":
            key, value = draw(st.one_of(breakers))
            body[key] = value
        elif how == "missing":
            key = draw(st.sampled_from(missing))
            body.pop(key, None)
        else:
            key = _UNKNOWN_KEY
            body[key] = draw(_json_values())
        return key, body

    return broken().filter(lambda pair: bool(instance.validate(pair[1], partial=partial)))


__all__ = [
    "FieldFactory",
    "UnsupportedField",
    "field_strategy",
    "invalid_payloads",
    "payloads",
    "register_field_strategy",
]
