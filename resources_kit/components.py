"""The OpenAPI component schemas of a document: one per marshmallow schema and side.

One marshmallow schema serves a request and a response, but a generated client needs each
side typed exactly, so each side gets a component of its own:

=============  =================  ==========================================================
side           name               what it holds
=============  =================  ==========================================================
``response``   ``Teacher``        dump fields, every one required, ``nullable`` where the
                                  column (or the field) is
``fields``     ``TeacherFields``  the same, nothing required (``?fields=`` trims responses)
``create``     ``TeacherCreate``  load fields, ``required`` and ``default`` as marshmallow
                                  loads them
``replace``    ``TeacherReplace`` the same, for PUT
``patch``      ``TeacherPatch``   load fields, nothing required, no ``default`` (a partial
                                  update applies none)
``input``      ``RenameInput``    an ``@action``'s body, loaded like a create
=============  =================  ==========================================================

Read-only (``dump_only``) fields are absent from request sides and write-only
(``load_only``) fields from response sides. A field with fixed values (``OneOf``, an
``Enum`` field or column) refers to one enum component, ``GadgetKind``, from every side,
so a generated client has one enum type for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import marshmallow as ma
import sqlalchemy as sa
from apispec import APISpec
from apispec.ext.marshmallow.common import resolve_schema_cls

#: Side -> component name suffix.
SUFFIXES: Mapping[str, str] = {
    "response": "",
    "fields": "Fields",
    "create": "Create",
    "replace": "Replace",
    "patch": "Patch",
    "input": "Input",
}
RESPONSE_SIDES = ("response", "fields")
#: The side of a schema nested in a field of each side (``?fields=`` trims the top only).
NESTED_SIDES: Mapping[str, str] = {"fields": "response", "input": "create"}


class Names:
    """Deterministic names: ``Teacher`` for ``TeacherSchema``, a number added when two
    classes share a name. Also apispec's resolver, for schemas nested in fields."""

    def __init__(self) -> None:
        self.by_class: dict[type[ma.Schema], str] = {}

    def base(self, cls: type[ma.Schema]) -> str:
        base = self.by_class.get(cls)
        if base is None:
            base = cls.__name__.removesuffix("Schema") or cls.__name__
            taken = set(self.by_class.values())
            candidate, n = base, 2
            while candidate in taken:
                candidate, n = f"{base}{n}", n + 1
            base = self.by_class[cls] = candidate
        return base

    def __call__(self, schema: Any) -> str:
        resolved = resolve_schema_cls(schema)
        cls: type[ma.Schema] = resolved[0] if isinstance(resolved, list) else resolved
        base = self.base(cls)
        return f"{base}Partial" if isinstance(schema, ma.Schema) and schema.partial else base


class Components:
    """Registers each (schema class, side) once on ``spec`` and hands out ``$ref``\\ s."""

    def __init__(self, spec: APISpec, converter: Any, names: Names) -> None:
        self.spec = spec
        self.converter = converter
        self.names = names
        self.made: dict[tuple[Any, ...], str] = {}
        self.enums: dict[str, list[Any]] = {}

    def ref(
        self, schema: ma.Schema, side: str, columns: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """A ``$ref`` to ``schema``'s component for ``side`` (``many`` schemas: an array of
        them); ``columns`` (attribute -> column attribute) tell a response which fields
        may be null."""
        # An instance with only= or exclude= is another shape than its class.
        key = (type(schema), side, tuple(sorted(schema.only or ())), tuple(sorted(schema.exclude)))
        name = self.made.get(key)
        if name is None:
            base = self.names.base(type(schema)) + SUFFIXES[side]
            taken, name, n = set(self.made.values()), base, 2
            while name in taken:
                name, n = f"{base}{n}", n + 1
            self.made[key] = name
            self.spec.components.schema(name, component=self.component(schema, side, columns))
        ref = {"$ref": f"#/components/schemas/{name}"}
        return {"type": "array", "items": ref} if schema.many else ref

    def component(
        self, schema: ma.Schema, side: str, columns: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        response = side in RESPONSE_SIDES
        fields = schema.dump_fields if response else schema.load_fields
        properties: dict[str, Any] = {}
        required: list[str] = []
        for name, field in fields.items():
            key = field.data_key or name
            column = column_of(columns or {}, field.attribute or name)
            properties[key] = self.property(field, side, column)
            properties[key] = self.named_enum(properties[key], self.names.base(type(schema)), key)
            if side == "response" or (side in ("create", "replace", "input") and field.required):
                required.append(key)
        component: dict[str, Any] = {"type": "object", "properties": properties}
        if required:
            component["required"] = required
        if response or schema.unknown == ma.RAISE:
            component["additionalProperties"] = False
        return component

    def property(self, field: ma.fields.Field[Any], side: str, column: Any) -> dict[str, Any]:
        if isinstance(field, ma.fields.Nested) and not isinstance(field, ma.fields.Pluck):
            # The nested schema's own component for this side.
            nested = self.ref(field.schema, NESTED_SIDES.get(side, side))
            nullable = field.allow_none or (side in RESPONSE_SIDES and not field.many)
            return {"allOf": [nested], "nullable": True} if nullable else nested
        prop: dict[str, Any] = dict(self.converter.field2property(field))
        regexps = [v for v in field.validators if isinstance(v, ma.validate.Regexp)]
        pattern = regexps[0].regex.pattern if regexps else None
        if isinstance(pattern, str) and prop.get("pattern") == pattern:
            # marshmallow's Regexp matches at the start (re.match); JSON Schema searches.
            prop["pattern"] = f"^(?:{pattern})"
        if isinstance(field, ma.fields.Decimal) and field.as_string:
            prop.update(type="string", format="decimal")  # apispec says number; it is sent as text
        prop.pop("readOnly", None)
        prop.pop("writeOnly", None)
        if side in RESPONSE_SIDES or side == "patch":
            prop.pop("default", None)  # a response has no default; a patch applies none
        if column is not None and isinstance(column.type, sa.Enum) and "enum" not in prop:
            prop["enum"] = list(column.type.enums)  # the only values the column stores
        if side in RESPONSE_SIDES:
            nullable = field.allow_none or (column is not None and column.nullable)
            if nullable:
                prop["nullable"] = True
            else:
                prop.pop("nullable", None)
        return prop

    def named_enum(self, prop: dict[str, Any], base: str, key: str) -> dict[str, Any]:
        """``prop`` with its enum as a component ``<base><Key>``: a ``$ref``, in ``allOf``
        beside ``nullable`` (generators then type it ``Kind | None``) and any default."""
        if "enum" not in prop:
            return prop
        values = [value for value in prop["enum"] if value is not None]
        enum = {k: v for k, v in prop.items() if k in ("type", "format")} | {"enum": values}
        name = base + "".join(part.capitalize() for part in key.replace(".", "_").split("_"))
        candidate, n = name, 2
        while self.enums.get(candidate, values) != values:
            candidate, n = f"{name}{n}", n + 1
        if candidate not in self.enums:
            self.enums[candidate] = values
            self.spec.components.schema(candidate, component=enum)
        ref = {"$ref": f"#/components/schemas/{candidate}"}
        rest = {k: v for k, v in prop.items() if k not in ("type", "format", "enum", "nullable")}
        if not prop.get("nullable") and not rest:
            return ref
        outer: dict[str, Any] = {"allOf": [ref], **rest}
        if prop.get("nullable"):
            outer["nullable"] = True
        return outer


def column_of(columns: Mapping[str, Any], key: str) -> Any:
    """The table column behind model attribute ``key``, or ``None``."""
    attribute = columns.get(key)
    if attribute is None:
        return None
    found = getattr(attribute.property, "columns", None)
    return found[0] if found else None
