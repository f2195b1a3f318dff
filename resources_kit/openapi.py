"""The OpenAPI 3 document of a router (apispec and its marshmallow plugin), served at
``{url_prefix}/openapi.json``, and an interactive docs page at ``{url_prefix}/docs`` whose
assets come from the ``swagger-ui-bundle`` package (no CDN: it works offline)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

import marshmallow as ma
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from .callbacks import CallbackMixin
from .options import ACTIONS, options_for
from .pagination import MAX_OFFSET
from .querying import MAX_IN_VALUES, MAX_SEARCH_LENGTH, OPERATORS, TEXT_OPERATORS
from .tenancy import TenantScopeMixin

if TYPE_CHECKING:
    from .routing import Mount

PROBLEM = {
    "type": "object",
    "description": "RFC 9457 problem details.",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Messages per field or parameter.",
            "additionalProperties": True,
        },
    },
    "required": ["type", "title", "status", "detail"],
}

ERRORS = {
    400: "Malformed JSON, a body that is not an object, or a bad query parameter.",
    401: "Missing or invalid credentials.",
    403: "No tenant scope for this request, or refused by a callback.",
    404: "Missing, out of scope, or not under the parent in the URL.",
    409: "A unique, foreign-key or not-null conflict, or a concurrent change.",
    412: "If-Match does not match the current ETag.",
    413: "The body is larger than the server accepts.",
    415: "The body is not JSON.",
    422: "Validation failed; ``errors`` names each field.",
    428: "This resource requires If-Match.",
    500: "An unexpected error; nothing was written.",
}
_CONVERTERS = {
    "int": {"type": "integer"},
    "uuid": {"type": "string", "format": "uuid"},
    "string": {"type": "string"},
}


class _Names:
    """Deterministic component names: ``Teacher`` for ``TeacherSchema``, ``TeacherPartial``
    for a partial one, a number added when two classes share a name."""

    def __init__(self) -> None:
        self.by_class: dict[type[ma.Schema], str] = {}

    def __call__(self, schema: Any) -> str:
        resolved = resolve_schema_cls(schema)
        cls: type[ma.Schema] = resolved[0] if isinstance(resolved, list) else resolved
        base = self.by_class.get(cls)
        if base is None:
            base = cls.__name__.removesuffix("Schema") or cls.__name__
            taken = set(self.by_class.values())
            candidate, n = base, 2
            while candidate in taken:
                candidate, n = f"{base}{n}", n + 1
            base = self.by_class[cls] = candidate
        if isinstance(schema, ma.Schema) and schema.partial:
            return f"{base}Partial"
        return base


def _chain_tenant_scoped(mount: Mount) -> bool:
    return any(issubclass(level.resource, TenantScopeMixin) for level in mount.chain())


def _problem(status: int) -> dict[str, Any]:
    return {
        "description": ERRORS[status],
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _path(prefix: str, rule: str) -> tuple[str, list[dict[str, Any]]]:
    """``/teachers/<int:teacher_id>`` to ``/teachers/{teacher_id}`` and its parameters."""
    parts, parameters = [], []
    for segment in rule.split("/"):
        if segment.startswith("<") and segment.endswith(">"):
            converter, _, name = segment[1:-1].rpartition(":")
            parameters.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": dict(_CONVERTERS.get(converter or "string", _CONVERTERS["string"])),
                }
            )
            parts.append(f"{{{name}}}")
        else:
            parts.append(segment)
    return prefix + "/".join(parts), parameters


def _list_parameters(mount: Mount) -> list[dict[str, Any]]:
    resource = mount.resource
    options = options_for(resource)
    parameters: list[dict[str, Any]] = [
        {
            "name": "limit",
            "in": "query",
            "schema": {
                "type": "integer",
                "minimum": 1,
                "maximum": resource.max_page_size,
                "default": resource.page_size,
            },
        },
    ]
    if options.pagination == "cursor":
        parameters.append(
            {
                "name": "cursor",
                "in": "query",
                "schema": {"type": "string"},
                "description": "The `next` of the previous page.",
            }
        )
    else:
        parameters.append(
            {
                "name": "offset",
                "in": "query",
                "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0},
            }
        )
    if options.filter_paths:
        fields = ", ".join(
            f"`{key}`" + (" (text)" if path.is_text else "")
            for key, path in options.filter_paths.items()
        )
        parameters.append(
            {
                "name": "filters",
                "in": "query",
                "description": (
                    'A JSON object, e.g. `{"name": "Ada", "years__gte": 3}`. Keys: a field, or '
                    f"`field__operator`. Fields: {fields}. Operators: {', '.join(OPERATORS)} "
                    f"({', '.join(TEXT_OPERATORS)} on text fields only; in and not_in take a list "
                    f"of at most {MAX_IN_VALUES})."
                ),
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        )
    sortable = list(resource.sort_fields)
    if sortable:
        terms = [term for key in sortable for term in (key, f"{key}__asc", f"{key}__desc")]
        parameters.append(
            {
                "name": "sort",
                "in": "query",
                "schema": {"type": "string", "pattern": _list_pattern(terms)},
                "description": "Comma-separated; each `field` or `field__desc`. "
                f"Fields: {', '.join(sortable)}.",
            }
        )
    if options.search_paths:
        parameters.append(
            {
                "name": "search",
                "in": "query",
                "schema": {"type": "string", "maxLength": MAX_SEARCH_LENGTH},
                "description": f"Case-insensitive substring of: {', '.join(options.search_paths)}.",
            }
        )
    parameters.append(_fields_parameter(mount, "list"))
    return parameters


def _list_pattern(names: Sequence[str]) -> str:
    """A regular expression for a comma-separated list of ``names``."""
    one = "(" + "|".join(re.escape(name) for name in names) + ")"
    return f"^{one}(,{one})*$"


def _fields_parameter(mount: Mount, operation: str) -> dict[str, Any]:
    schema = options_for(mount.resource).schemas[operation]
    names = sorted(field.data_key or name for name, field in schema.dump_fields.items())
    return {
        "name": "fields",
        "in": "query",
        "schema": {"type": "string", "pattern": _list_pattern(names)},
        "description": f"Comma-separated fields to return, of: {', '.join(names)}.",
    }


def _links(mount: Mount) -> dict[str, Any]:
    """OpenAPI links from a create to the operations on the item it made."""
    options = options_for(mount.resource)
    field = options.schemas["detail"].fields.get(options.lookup_key)
    if field is None or field.load_only:
        return {}
    parameters = {
        options_for(level.resource).url_variable: "$request.path."
        + options_for(level.resource).url_variable
        for level in mount.chain()[:-1]
    }
    parameters[options.url_variable] = f"$response.body#/{field.data_key or options.lookup_key}"
    return {
        f"{action}_{mount.endpoint}": {
            "operationId": f"{mount.endpoint}_{action}",
            "parameters": parameters,
        }
        for (kind, method), action in ACTIONS.items()
        if kind == "item" and method in mount.item_methods
    }


def _operations(mount: Mount, kind: str, security: bool) -> dict[str, dict[str, Any]]:
    resource = mount.resource
    options = options_for(resource)
    model_name = options.model.__name__
    detail = type(options.schemas["detail"])
    listed = type(options.schemas["list"])
    # Responses may be trimmed by ?fields=: their schemas require nothing.
    detail_ref = {"schema": detail(partial=True)}
    etag = {"ETag": {"description": "The version of the item.", "schema": {"type": "string"}}}
    if_match = {
        "name": "If-Match",
        "in": "header",
        "schema": {"type": "string"},
        "required": bool(resource.require_if_match),
        "description": "The ETag of the version you read; 412 when it changed.",
    }
    common = [400, 500]
    if security:
        common.append(401)
    if _chain_tenant_scoped(mount) or issubclass(resource, CallbackMixin):
        common.append(403)
    nested = mount.parent is not None
    writes = [409, 413, 415, 422]
    operations: dict[str, dict[str, Any]] = {}
    for (rule_kind, method), action in ACTIONS.items():
        if rule_kind != kind or method not in (
            mount.collection_methods if kind == "collection" else mount.item_methods
        ):
            continue
        errors = list(common)
        operation: dict[str, Any] = {
            "operationId": f"{mount.endpoint}_{action}",
            "tags": [mount.endpoint.replace("_", " / ")],
            "parameters": [],
        }
        if action == "list":
            operation["summary"] = f"List {resource.name}"
            operation["parameters"] = _list_parameters(mount)
            envelope: dict[str, Any] = {"items": {"type": "array", "items": listed(partial=True)}}
            if options.pagination == "cursor":
                envelope["next"] = {"type": "string", "nullable": True}
            else:
                envelope |= {key: {"type": "integer"} for key in ("total", "limit", "offset")}
            required = list(envelope)
            operation["responses"] = {
                "200": {
                    "description": "A page of items.",
                    "headers": {
                        "Link": {
                            "description": "RFC 8288 next and prev pages.",
                            "schema": {"type": "string"},
                        }
                    },
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": envelope,
                                "required": required,
                            }
                        }
                    },
                }
            }
            if nested:
                errors.append(404)
        elif action == "create":
            operation["summary"] = f"Create a {model_name}"
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": type(options.schemas["create"])}},
            }
            operation["responses"] = {
                "201": {
                    "description": "Created.",
                    "content": {"application/json": detail_ref},
                    "headers": {
                        **etag,
                        "Location": {
                            "description": "The new item's URL.",
                            "schema": {"type": "string"},
                        },
                    },
                    "links": _links(mount),
                }
            }
            errors += writes + ([404] if nested else [])
        elif action == "retrieve":
            operation["summary"] = f"Read a {model_name}"
            operation["parameters"] = [
                _fields_parameter(mount, "detail"),
                {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
            ]
            operation["responses"] = {
                "200": {
                    "description": "The item.",
                    "headers": etag,
                    "content": {"application/json": detail_ref},
                },
                "304": {"description": "Not modified (If-None-Match)."},
            }
            errors.append(404)
        elif action in ("update", "partial_update"):
            body = type(options.schemas["update" if action == "update" else "patch"])
            operation["summary"] = (
                f"Replace a {model_name}"
                if action == "update"
                else f"Change fields of a {model_name}"
            )
            operation["parameters"] = [if_match]
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": body(partial=True) if action == "partial_update" else body
                    }
                },
            }
            operation["responses"] = {
                "200": {
                    "description": "The changed item.",
                    "headers": etag,
                    "content": {"application/json": detail_ref},
                }
            }
            errors += [*writes, 404, 412]
        else:
            operation["summary"] = f"Delete a {model_name}"
            operation["parameters"] = [if_match]
            operation["responses"] = {"204": {"description": "Deleted."}}
            errors += [404, 409, 412]
        if resource.require_if_match and action in ("update", "partial_update", "destroy"):
            errors.append(428)
        for status in sorted(set(errors)):
            operation["responses"][str(status)] = _problem(status)
        operations[method.lower()] = operation
    return operations


def build_document(
    mounts: Sequence[Mount],
    prefix: str,
    *,
    title: str,
    version: str,
    security_schemes: Mapping[str, Mapping[str, Any]] | None = None,
    security: Sequence[Mapping[str, Sequence[str]]] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.0 document of ``mounts`` served under ``prefix``."""
    spec = APISpec(
        title=title,
        version=version,
        openapi_version="3.0.3",
        plugins=[MarshmallowPlugin(schema_name_resolver=_Names())],
    )
    spec.components.schema("Problem", PROBLEM)
    for name, scheme in (security_schemes or {}).items():
        spec.components.security_scheme(name, dict(scheme))
    for mount in mounts:
        for kind, rule in (("collection", mount.rule), ("item", mount.item_rule)):
            operations = _operations(mount, kind, security=bool(security))
            if not operations:
                continue
            path, parameters = _path(prefix, rule)
            spec.path(path=path, operations=operations, parameters=parameters)
    document = spec.to_dict()
    if security:
        document["security"] = [dict(item) for item in security]
    return document


DOCS_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{title}</title>
  <link rel="stylesheet" href="{assets}/swagger-ui.css">
</head>
<body>
  <div id="ui"></div>
  <script src="{assets}/swagger-ui-bundle.js"></script>
  <script>
    window.ui = SwaggerUIBundle({{url: {document}, dom_id: "#ui", deepLinking: true}});
  </script>
</body>
</html>
"""


def docs_page(title: str, document_url: str, assets_url: str) -> str:
    return DOCS_PAGE.format(
        title=escape(title), assets=escape(assets_url), document=json.dumps(document_url)
    )
