"""The OpenAPI 3 document of a router (apispec and its marshmallow plugin), served at
``{url_prefix}/openapi.json``, and an interactive docs page at ``{url_prefix}/docs`` whose
assets come from the ``swagger-ui-bundle`` package (no CDN: it works offline)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

import marshmallow as ma
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from apispec.ext.marshmallow.common import resolve_schema_cls

from .actions import ACTIONS, ExtraAction
from .callbacks import CallbackMixin
from .nesting import Mount
from .options import options_for
from .querying import list_pattern
from .resource import permission_rule
from .tenancy import TenantScopeMixin

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
    403: "Not allowed (the action or this item), no tenant scope, or refused by a callback.",
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


def _list_parameters(mount: Mount, converter: Any) -> list[dict[str, Any]]:
    """The list's arguments schema as OpenAPI query parameters: the same schema parses
    and validates them."""
    schema = mount.resource.get_list_config().schema
    parameters: list[dict[str, Any]] = converter.schema2parameters(schema, location="query")
    for parameter in parameters:
        field = schema.fields.get(parameter["name"])
        if field is not None and field.metadata.get("json_object"):
            parameter.pop("schema", None)
            parameter["content"] = {"application/json": {"schema": {"type": "object"}}}
    return parameters


def _fields_parameter(mount: Mount, operation: str) -> dict[str, Any]:
    schema = options_for(mount.resource).schemas[operation]
    names = sorted(field.data_key or name for name, field in schema.dump_fields.items())
    return {
        "name": "fields",
        "in": "query",
        "schema": {"type": "string", "pattern": list_pattern(names)},
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


@dataclass(frozen=True)
class Doc:
    """How one action appears in the document."""

    summary: str
    #: Success status and what it returns: "page", "item", "items" or "empty".
    status: int
    returns: str
    #: Error statuses besides the common ones; 404 is added for nested mounts anyway.
    errors: tuple[int, ...] = ()
    #: Schema operation of the request body, if any.
    body: str | None = None
    if_match: bool = False


WRITE_ERRORS = (409, 413, 415, 422)
#: The per-action table the CRUD operations are built from.
DOCS: Mapping[str, Doc] = {
    "list": Doc("List {name}", 200, "page"),
    "create": Doc("Create a {model}", 201, "item", WRITE_ERRORS, body="create"),
    "retrieve": Doc("Read a {model}", 200, "item", (404,)),
    "update": Doc(
        "Replace a {model}", 200, "item", (*WRITE_ERRORS, 404, 412), "update", if_match=True
    ),
    "partial_update": Doc(
        "Change fields of a {model}", 200, "item", (*WRITE_ERRORS, 404, 412), "patch", True
    ),
    "destroy": Doc("Delete a {model}", 204, "empty", (404, 409, 412), if_match=True),
}


def _responses(mount: Mount, action: str, doc: Doc) -> dict[str, Any]:
    options = options_for(mount.resource)
    detail = type(options.schemas["detail"])
    # Responses may be trimmed by ?fields=: their schemas require nothing.
    item = {"application/json": {"schema": detail(partial=True)}}
    etag = {"ETag": {"description": "The version of the item.", "schema": {"type": "string"}}}
    if doc.returns == "empty":
        return {str(doc.status): {"description": "Done; no body."}}
    if doc.returns == "json":
        return {
            str(doc.status): {"description": "Done.", "content": {"application/json": {}}},
            "204": {"description": "Done; no body."},
        }
    if doc.returns == "page":
        pagination = mount.resource.get_list_config().pagination
        listed = type(options.schemas["list"])
        envelope = {"items": {"type": "array", "items": listed(partial=True)}}
        envelope |= {key: dict(value) for key, value in pagination.envelope.items()}
        link = {"description": "RFC 8288 next and prev pages.", "schema": {"type": "string"}}
        page = {"type": "object", "properties": envelope, "required": list(envelope)}
        return {
            "200": {
                "description": "A page of items.",
                "headers": {"Link": link},
                "content": {"application/json": {"schema": page}},
            }
        }
    response: dict[str, Any] = {"description": "The item.", "headers": etag, "content": item}
    if action == "create":
        location = {"description": "The new item's URL.", "schema": {"type": "string"}}
        response["headers"] = {**etag, "Location": location}
        response["links"] = _links(mount)
    responses = {str(doc.status): response}
    if action == "retrieve":
        responses["304"] = {"description": "Not modified (If-None-Match)."}
    return responses


def _parameters(mount: Mount, action: str, doc: Doc, converter: Any) -> list[dict[str, Any]]:
    if action == "list":
        return _list_parameters(mount, converter)
    if action == "retrieve":
        return [
            _fields_parameter(mount, "detail"),
            {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
        ]
    if doc.if_match:
        return [
            {
                "name": "If-Match",
                "in": "header",
                "schema": {"type": "string"},
                "required": bool(mount.resource.require_if_match),
                "description": "The ETag of the version you read; 412 when it changed.",
            }
        ]
    return []


def _operation(
    mount: Mount, action: str, doc: Doc, converter: Any, security: Any
) -> dict[str, Any]:
    resource = mount.resource
    options = options_for(resource)
    operation: dict[str, Any] = {
        "operationId": f"{mount.endpoint}_{action}",
        "summary": doc.summary.format(name=resource.name, model=options.model.__name__),
        "tags": [mount.endpoint.replace("_", " / ")],
        "parameters": _parameters(mount, action, doc, converter),
        "responses": _responses(mount, action, doc),
    }
    if doc.body is not None:
        body = type(options.schemas[doc.body])
        schema = body(partial=True) if doc.body == "patch" else body
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    errors = {400, 500, *doc.errors}
    rule = permission_rule(resource)
    if rule is not None:
        errors.add(403)
    authenticated = rule is not None and rule.needs_authentication()
    if security or authenticated:
        errors.add(401)
    if authenticated and isinstance(security, list):
        operation["security"] = [dict(item) for item in security]
    if _chain_tenant_scoped(mount) or issubclass(resource, CallbackMixin):
        errors.add(403)
    if mount.parent is not None:
        errors.add(404)
    if resource.require_if_match and doc.if_match:
        errors.add(428)
    for status in sorted(errors):
        operation["responses"][str(status)] = _problem(status)
    return operation


def _extra_doc(extra: ExtraAction) -> Doc:
    errors: tuple[int, ...] = (404,) if extra.detail else ()
    if extra.writes:
        errors += (409, 412) if extra.detail else (409,)
    if extra.schema is not None:
        errors += (413, 415, 422)
    return Doc(
        extra.summary or f"{extra.name.replace('_', ' ').capitalize()} ({{name}})",
        200,
        "json",
        errors,
        body=extra.name if extra.schema is not None else None,
    )


def _paths(mount: Mount, converter: Any, security: Any) -> list[tuple[str, dict[str, Any]]]:
    """(rule, operations by method) for every route of the mount."""
    paths: list[tuple[str, dict[str, Any]]] = []
    for kind, rule, methods in (
        ("collection", mount.rule, mount.collection_methods),
        ("item", mount.item_rule, mount.item_methods),
    ):
        operations = {
            method.lower(): _operation(
                mount, ACTIONS[(kind, method)], DOCS[ACTIONS[(kind, method)]], converter, security
            )
            for method in methods
        }
        if operations:
            paths.append((rule, operations))
    for extra in mount.extra_actions:
        doc = _extra_doc(extra)
        operations = {}
        for method in extra.methods:
            operation = _operation(mount, extra.name, doc, converter, security)
            if len(extra.methods) > 1:
                operation["operationId"] += f"_{method.lower()}"
            operations[method.lower()] = operation
        paths.append((mount.action_rule(extra), operations))
    return paths


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
    plugin = MarshmallowPlugin(schema_name_resolver=_Names())
    spec = APISpec(title=title, version=version, openapi_version="3.0.3", plugins=[plugin])
    spec.components.schema("Problem", PROBLEM)
    for name, scheme in (security_schemes or {}).items():
        spec.components.security_scheme(name, dict(scheme))
    for mount in mounts:
        for rule, operations in _paths(mount, plugin.converter, list(security or [])):
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
