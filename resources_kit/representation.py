"""How a resource's rows become JSON: the schema of each operation, ``?fields=``, the
serialized body, and single-item responses with their ``ETag``.

The body is what ``schema.dump`` gives, made by a dumper compiled once per schema
instance (:func:`dumper_for`). For every field of a schema that maps plainly to an
attribute (an ``Integer``, ``Float``, ``String``, ``Email``, ``URL``, ``Boolean`` or
``Raw`` of a plain attribute name), the dumper reads the attribute and keeps a value that
is already of the JSON type the field would give (an ``int`` for an ``Integer``...); any
other value goes through the field's own ``_serialize``, as do ``Date``, ``DateTime``,
``Time``, ``Decimal``, ``UUID`` and ``Enum`` fields. Every other field (``Nested``,
``Method``, ``Function``, ``List``, ``Pluck``, a custom field, a dotted ``attribute``, a
``dump_default``) is serialized by marshmallow itself, field by field, in order. A schema
with ``pre_dump`` or ``post_dump`` hooks, or that overrides how it reads attributes or
dumps, is dumped by marshmallow whole. So the output is what marshmallow would produce;
``tests/test_dumping.py`` checks that over generated rows for every field type.

The dumper is Python source generated once per schema instance (as marshmallow's own
"toasted" JIT did): one function, one expression per field, no call for a value already
of the right type.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import marshmallow as ma
from flask import Response, request
from sqlalchemy.engine import Row

from .conditional import item_response
from .errors import HTTPError
from .including import embed, read_include_query, use_includes
from .linking import dump_links
from .querying import sparse_field_names


class Representation:
    """The representation half of ``Resource`` (which inherits it)."""

    if TYPE_CHECKING:  # provided by Resource
        options: Any
        sparse_fields: tuple[str, ...] | None
        include: tuple[str, ...] | None

    def get_schema(self, operation: str) -> ma.Schema:
        """The schema instance for ``"list"``, ``"detail"``, ``"create"``, ``"update"``,
        ``"patch"`` or an extra action's name; trimmed to ``?fields=`` for list and detail."""
        if self.sparse_fields is None or operation not in ("list", "detail"):
            schema: ma.Schema = self.options.schemas[operation]
            return schema
        sparse: ma.Schema = self.options.sparse_schema(operation, self.sparse_fields)
        return sparse

    def read_sparse_fields(self, operation: str) -> None:
        """Read ``?fields=`` (comma-separated, or repeated); 400 naming unknown fields.
        With ``include_fields``, also ``?include=`` (and ``path.field`` names)."""
        values = request.args.getlist("fields")
        related = self.options.include_paths
        if values:
            try:
                names = sparse_field_names(
                    ",".join(values), self.options.schemas[operation], related
                )
            except ma.ValidationError as exc:
                raise HTTPError(
                    400, "Bad query parameters: fields.", errors={"fields": exc.messages}
                ) from None
            self.sparse_fields = names
        if related and (values or "include" in request.args):
            use_includes(self, read_include_query(self))

    def serialize(self, obj_or_objs: Any) -> Any:
        """The JSON-able body of one object (detail schema) or a list (list schema):
        what ``schema.dump`` gives, through the schema's compiled dumper (see the module's
        docstring), with the ids of linked rows and the related rows ``?include=`` asked
        for embedded."""
        if isinstance(obj_or_objs, list | tuple):
            return self.serialize_many(obj_or_objs, "list")
        return self.serialize_many([obj_or_objs], "detail")[0]

    def serialize_many(self, objs: Any, operation: str = "detail") -> list[Any]:
        """The bodies of ``objs`` with the ``operation``'s schema (a bulk write's answer
        is the detail bodies of its items): the links' ids and the included rows of all
        of them loaded together, one statement per field or level."""
        bodies = dump_many(self.get_schema(operation), objs)
        if self.options.link_fields:  # the ids of each item's linked rows
            dump_links(self, objs, bodies)
        if self.include:
            embed(self, objs, bodies)
        return bodies

    def item_response(self, body: Any, status: int = 200) -> Response:
        """``body`` with its ``ETag``; 304 for a GET whose ``If-None-Match`` names it."""
        return item_response(body, status)


# -- the compiled dumper ----------------------------------------------------------------

#: Field classes (exactly these, not subclasses) whose JSON value is the attribute's own
#: value when it already has this type (as Python source).
_KEEPS: dict[type[Any], str] = {
    ma.fields.Integer: "int",
    ma.fields.Float: "float",
    ma.fields.String: "str",
    ma.fields.Email: "str",
    ma.fields.URL: "str",
    ma.fields.Boolean: "bool",
}
#: Field classes dumped by their own ``_serialize`` of the attribute's value (no lookup
#: through the schema, no default to apply).
_CONVERTS = tuple(
    getattr(ma.fields, name)
    for name in (
        "Date",
        "DateTime",
        "NaiveDateTime",
        "AwareDateTime",
        "Time",
        "Decimal",
        "UUID",
        "Enum",
    )
    if hasattr(ma.fields, name)
)

Dumper = Callable[[Any], dict[str, Any]]

#: marshmallow's method that turns one value into its JSON form (on a field) and one
#: object into a dict (on a schema): what every custom field defines.
_SERIALIZE = "_serialize"

_compiled: WeakKeyDictionary[ma.Schema, Dumper | None] = WeakKeyDictionary()


def dumper_for(schema: ma.Schema) -> Dumper | None:
    """The compiled dumper of ``schema`` (made once per instance), or ``None`` when
    marshmallow must dump it whole."""
    try:
        return _compiled[schema]
    except KeyError:
        dumper = _compiled[schema] = compile_dumper(schema)
        return dumper


_row_dumpers: WeakKeyDictionary[ma.Schema, dict[tuple[str, ...], Dumper | None]] = (
    WeakKeyDictionary()
)


def row_dumper_for(schema: ma.Schema, fields: tuple[str, ...]) -> Dumper | None:
    """The compiled dumper of ``schema`` for rows whose columns are named ``fields``
    (``Row._fields``): a plain field of one of them is read by position, a C-level
    index, rather than through ``Row.__getattr__``."""
    known = _row_dumpers.get(schema)
    if known is None:
        known = _row_dumpers[schema] = {}
    try:
        return known[fields]
    except KeyError:
        positions = {name: index for index, name in enumerate(fields)}
        dumper = known[fields] = compile_dumper(schema, positions)
        return dumper


def dump_many(schema: ma.Schema, objs: Any) -> list[dict[str, Any]]:
    """``schema.dump(objs, many=True)``, through the compiled dumper when there is one
    (for a list of rows of one statement, the one that reads them by position)."""
    if objs and all(type(obj) is Row for obj in objs):
        dumper = row_dumper_for(schema, objs[0]._fields)
    else:
        dumper = dumper_for(schema)
    if dumper is None:
        return list(schema.dump(objs, many=True))
    return [dumper(obj) for obj in objs]


def dump_one(schema: ma.Schema, obj: Any) -> dict[str, Any]:
    """``schema.dump(obj)``, through the compiled dumper when there is one."""
    dumper = dumper_for(schema)
    if dumper is None:
        return dict(schema.dump(obj))
    return dumper(obj)


def _dumped_whole(schema: ma.Schema) -> bool:
    """Whether marshmallow must dump ``schema`` itself: dump hooks, or its own way of
    reading attributes or of dumping."""
    kind = type(schema)
    for key, hooks in getattr(schema, "_hooks", {}).items():
        tag = key if isinstance(key, str) else key[0]
        if tag in ("pre_dump", "post_dump") and hooks:
            return True
    return (
        kind.get_attribute is not ma.Schema.get_attribute
        or kind.dump is not ma.Schema.dump
        or getattr(kind, _SERIALIZE) is not getattr(ma.Schema, _SERIALIZE)
        or bool(getattr(schema, "many", False))
    )


def _expression(field: Any, index: int) -> str | None:
    """The Python expression of a plain field's JSON value from ``v<index>`` (the value
    of its attribute), or ``None`` for a field marshmallow must serialize."""
    attribute = field.attribute
    kind = type(field)
    if (attribute is not None and (not isinstance(attribute, str) or "." in attribute)) or (
        field.dump_default is not ma.missing
    ):
        return None
    value = f"v{index}"
    converted = f"(None if {value} is None else s{index}({value}, n{index}, obj))"
    if kind is ma.fields.Raw:
        return value
    if kind in _KEEPS:
        if getattr(field, "as_string", False):
            return converted
        return f"({value} if type({value}) is {_KEEPS[kind]} else {converted})"
    if kind in _CONVERTS:
        return converted
    return None


def reads_plain_attributes(schema: ma.Schema, attributes: Any) -> bool:
    """Whether the compiled dumper of ``schema`` reads every field plainly from one of
    ``attributes`` (no field left to marshmallow, which may read anything)."""
    if _dumped_whole(schema):
        return False
    return all(
        _expression(field, 0) is not None and (field.attribute or name) in attributes
        for name, field in schema.dump_fields.items()
    )


def compile_dumper(schema: ma.Schema, positions: Mapping[str, int] | None = None) -> Dumper | None:
    """The dumper's function for ``schema``, or ``None`` (see :func:`dumper_for`).

    Each field in order: a plain one read with ``getattr`` (or, when its attribute is
    in ``positions``, as ``obj[position]``: a row's column) and turned into its value by
    :func:`_expression`; any other (or a plain one whose attribute is missing) by
    marshmallow's ``field.serialize``, which drops the key when it gives ``missing``."""
    positions = positions or {}
    if _dumped_whole(schema):
        return None
    namespace: dict[str, Any] = {"M": ma.missing, "ga": schema.get_attribute}
    lines = ["def dump(obj):\n", "    r = {}\n"]
    for index, (name, field) in enumerate(schema.dump_fields.items()):
        key = field.data_key if field.data_key is not None else name
        namespace.update({f"k{index}": key, f"n{index}": name, f"f{index}": field.serialize})
        by_marshmallow = (
            f"x = f{index}(n{index}, obj, accessor=ga)\n"
            f"{{indent}}if x is not M:\n"
            f"{{indent}}    r[k{index}] = x\n"
        )
        expression = _expression(field, index)
        if expression is None:
            lines.append("    " + by_marshmallow.format(indent="    "))
            continue
        attribute = namespace[f"a{index}"] = field.attribute or name
        namespace[f"s{index}"] = getattr(field, _SERIALIZE)
        if attribute in positions:  # a column of the row: always there
            lines.append(f"    v{index} = obj[{int(positions[attribute])}]\n")
            lines.append(f"    r[k{index}] = {expression}\n")
            continue
        lines.append(
            f"    v{index} = getattr(obj, a{index}, M)\n"
            f"    if v{index} is M:\n"
            f"        {by_marshmallow.format(indent='        ')}"
            f"    else:\n"
            f"        r[k{index}] = {expression}\n"
        )
    lines.append("    return r\n")
    source = "".join(lines)
    # Every name in the source is generated (k0, v0, ...); each string the schema gives
    # (keys, attribute names) is a value in the namespace, never part of the source.
    assert not any(keyword.iskeyword(name) for name in namespace)
    exec(compile(source, "<resources_kit dumper>", "exec"), namespace)
    dumper: Dumper = namespace["dump"]
    dumper.source = source  # type: ignore[attr-defined]  # for reading, and for tests
    return dumper
