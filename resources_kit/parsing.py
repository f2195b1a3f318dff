"""Reading the request: the JSON body and strict query parameters."""

from __future__ import annotations

import json
import math
import re
import weakref
from collections import OrderedDict
from collections.abc import Collection, Mapping
from typing import Any, NoReturn

import marshmallow as ma
from flask import request
from webargs.flaskparser import FlaskParser

from .errors import HTTPError, bad_request

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _check_unicode(value: Any) -> None:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("a lone UTF-16 surrogate (\\uD800-\\uDFFF) is not text") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_unicode(key)
            _check_unicode(item)
    elif isinstance(value, list):
        for item in value:
            _check_unicode(item)


def load_json(text: str) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, no number too large for a float or with more
    digits than Python converts (4,300), no lone surrogate escapes; ``ValueError`` says
    what is wrong."""
    try:
        data = json.loads(text, parse_constant=_reject_constant, parse_float=_finite)
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # Python's own limit, 4,300 digits
            raise ValueError("a number has too many digits") from None
        raise
    if _SURROGATE_ESCAPE.search(text):  # rare: walk the data only then
        _check_unicode(data)
    return data


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or a 415 / 413 / 400 naming what is wrong."""
    data = json_value()
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {_json_kind(data)}.")
    return data


def json_array() -> list[Any]:
    """The request body as a JSON array (a bulk write's), or a 415 / 413 / 400."""
    data = json_value()
    if not isinstance(data, list):
        raise bad_request(
            f"The request body of a bulk write must be a JSON array, not {json_kind(data)}."
        )
    return data


def body_is_array() -> bool:
    """Whether the JSON body's first character opens an array (a bulk create), read
    without parsing it."""
    return request.is_json and request.get_data(cache=True).lstrip()[:1] == b"["


def json_value() -> Any:
    """The request body as any JSON value, or a 415 / 413 / 400."""
    if not request.is_json:
        raise HTTPError(
            415,
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
        )
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        data = load_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})."
        ) from None
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise bad_request(f"The request body is not valid JSON: {message}.") from None
    return data


def json_kind(value: Any) -> str:
    """``value``'s kind, as a message names it (``"an array"``, ``"null"``)."""
    return _json_kind(value)


def _json_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def check_query_args(
    allowed: Collection[str],
    disabled: Mapping[str, str] | None = None,
    repeatable: Collection[str] = (),
) -> None:
    """Refuse any query parameter not in ``allowed`` (``disabled`` says why for some), and
    any given more than once but those in ``repeatable`` (``?ids=1&ids=2``)."""
    errors: dict[str, list[str]] = {}
    for key in request.args:
        if key not in allowed:
            errors[key] = [(disabled or {}).get(key, "Unknown query parameter.")]
        elif len(request.args.getlist(key)) > 1 and key not in repeatable:
            errors[key] = ["Given more than once."]
    if errors:
        names = ", ".join(sorted(errors))
        hint = f" Allowed: {', '.join(sorted(allowed))}." if allowed else ""
        raise bad_request(f"Bad query parameters: {names}.{hint}", errors=errors)


class QueryParser(FlaskParser):
    """webargs parser whose errors are 400 problems naming each parameter."""

    DEFAULT_VALIDATION_STATUS = 400

    def handle_error(self, error: ma.ValidationError, *args: Any, **kwargs: Any) -> NoReturn:
        messages: Any = error.messages
        if isinstance(messages, dict):
            messages = messages.get("query", messages)
        if not isinstance(messages, dict):
            messages = {"query": messages}
        raise bad_request(f"Bad query parameters: {', '.join(sorted(messages))}.", errors=messages)


#: Parses query strings against a schema; unknown names are refused by check_query_args.
query_parser = QueryParser(location="query", unknown=ma.EXCLUDE)


def takes_many(field: ma.fields.Field[Any]) -> bool:
    """Whether a query parameter may be given more than once, each a value of a list: a
    ``List`` or ``Tuple`` field (webargs's rule, ``is_multiple`` deciding where set; a
    ``DelimitedList`` takes one comma-separated value)."""
    multiple = getattr(field, "is_multiple", None)
    if multiple is not None:
        return bool(multiple)
    return isinstance(field, ma.fields.List | ma.fields.Tuple)


def parse_query(schema: ma.Schema, disabled: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The query string loaded with ``schema``: strict (every name one of its fields, each
    given once unless it is a list) and typed; a 400 names every bad parameter."""
    known = _known(schema)
    parsed = known.parsed
    if parsed is not None:
        found = parsed.get(request.query_string)
        if found is not None:
            return dict(found)
    check_query_args(known.names, disabled, known.repeatable)
    args: dict[str, Any] = query_parser.parse(known.part(request.args), request)
    if parsed is not None and all(map(_immutable, args.values())):
        if len(parsed) >= PARSED_QUERIES_KEPT:
            parsed.clear()
        parsed[request.query_string] = dict(args)
    return args


#: The modules whose fields and validators load a value from it alone (no request, no
#: database, no clock): a query schema of only these parses a query string the same way
#: every time.
PURE_MODULES = ("marshmallow.", "webargs.", "resources_kit.")
#: How many parsed query strings one query schema keeps (then it starts again).
PARSED_QUERIES_KEPT = 512
_IMMUTABLE = (int, float, str, bytes, type(None))


def _immutable(value: Any) -> bool:
    if isinstance(value, tuple | frozenset):
        return all(map(_immutable, value))
    return isinstance(value, _IMMUTABLE)


def _pure(thing: Any) -> bool:
    module = getattr(thing, "__module__", None) or type(thing).__module__
    return module.startswith(PURE_MODULES)


def loads_purely(schema: ma.Schema) -> bool:
    """Whether loading a query string with ``schema`` depends on nothing but the text:
    no load hooks, and every field (and its inner fields, validators, parse function) of
    marshmallow, webargs or this library, with no callable default. Then parsed query
    strings are kept; a schema of the resource's own ``list_args`` fields that are not is
    parsed every time."""
    if any(getattr(schema, "_hooks", {None: True}).values()):
        return False
    return all(_pure_field(field) for field in schema.fields.values())


def _pure_field(field: Any) -> bool:
    if not _pure(type(field)) or callable(field.load_default):
        return False
    if not all(_pure(validator) for validator in field.validators):
        return False
    if isinstance(field, ma.fields.Nested):
        return False
    parse = getattr(field, "parse", None)
    if parse is not None and not _pure(parse):
        return False
    inner = [getattr(field, "inner", None), *getattr(field, "tuple_fields", ())]
    return all(_pure_field(part) for part in inner if part is not None)


class _Known:
    """A query schema's parameter names, and the parts of it that requests use: a list
    with flat filters has dozens of parameters, of which a request sends a few, and
    loading the others costs more than the whole query."""

    def __init__(self, schema: ma.Schema) -> None:
        self.schema = schema
        by_key = {field.data_key or name: (name, field) for name, field in schema.fields.items()}
        self.names = frozenset(by_key)
        self.repeatable = frozenset(key for key, (_, f) in by_key.items() if takes_many(f))
        self.by_key = {key: name for key, (name, _) in by_key.items()}
        #: Fields loaded whether sent or not (a default).
        self.always = tuple(
            name for name, field in schema.fields.items() if field.load_default is not ma.missing
        )
        self.parts: OrderedDict[frozenset[str], ma.Schema] = OrderedDict()
        #: Query string -> the arguments it parsed to, when they are immutable and the
        #: schema :func:`loads_purely`; ``None`` when it does not.
        self.parsed: dict[bytes, dict[str, Any]] | None = {} if loads_purely(schema) else None

    def part(self, args: Collection[str]) -> ma.Schema:
        """The schema with only the fields of ``args`` and those with a default."""
        sent = frozenset(args)
        if len(sent) + len(self.always) >= len(self.names):
            return self.schema
        schema = self.parts.get(sent)
        if schema is None:
            only = dict.fromkeys((*self.always, *(self.by_key[key] for key in sorted(sent))))
            schema = self.parts[sent] = type(self.schema)(only=tuple(only))
            if len(self.parts) > QUERY_SCHEMAS_KEPT:
                self.parts.popitem(last=False)
        else:
            self.parts.move_to_end(sent)
        return schema


#: How many parts of one query schema are kept, least recently used dropped first.
QUERY_SCHEMAS_KEPT = 128
_known_by_schema: weakref.WeakKeyDictionary[ma.Schema, _Known] = weakref.WeakKeyDictionary()


def _known(schema: ma.Schema) -> _Known:
    known = _known_by_schema.get(schema)
    if known is None:
        known = _known_by_schema[schema] = _Known(schema)
    return known
