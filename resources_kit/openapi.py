"""The OpenAPI 3 document of a router (apispec and its marshmallow plugin), served at
``{url_prefix}/openapi.json``, and an interactive docs page at ``{url_prefix}/docs`` whose
assets come from the ``swagger-ui-bundle`` package (no CDN: it works offline)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from .actions import ACTIONS, ExtraAction
from .callbacks import CallbackMixin
from .components import RESPONSE_SIDES, Components, Names
from .guards import document_guards
from .including import steps_of
from .nesting import Mount
from .options import options_for, permission_rule
from .querying import MAX_FILTERS, MAX_IN_VALUES, OPERATORS, TEXT_OPERATORS
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
            "description": "Messages per field or parameter: a list of messages, or an "
            "object of them for a nested field or an item of a list (keyed by its index).",
            "additionalProperties": {
                "anyOf": [
                    {"type": "array", "items": {"type": "string"}},
                    {"type": "object", "additionalProperties": True},
                ]
            },
        },
    },
    "required": ["type", "title", "status", "detail"],
}

#: A method a path does not offer: every path answers it, so no operation lists it.
METHOD_NOT_ALLOWED = {
    "description": "The path does not offer this method; ``Allow`` lists those it does.",
    "headers": {"Allow": {"description": "The methods offered.", "schema": {"type": "string"}}},
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
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


def _camel(endpoint: str) -> str:
    return "".join(part.capitalize() for part in endpoint.replace("-", "_").split("_"))


def _filter_values(mount: Mount, components: Components) -> dict[str, Any]:
    """The ``filters`` parameter: a JSON string, with an example and a component typing
    its object (one property per allowed ``field`` or ``field__operator``, typed as the
    server converts it) when the resource's filtering has the built-in allow-list."""
    paths: Mapping[str, Any] = getattr(
        mount.resource.get_list_config().filtering, "filter_paths", {}
    )
    if not paths:
        return {"schema": {"type": "string"}}
    properties: dict[str, Any] = {}
    converter = components.converter
    base = components.names.base(type(options_for(mount.resource).schemas["list"]))
    for key, path in paths.items():
        prop = converter.field2property(path.field)
        plain = {k: v for k, v in prop.items() if k not in ("default", "nullable")}
        value = components.named_enum(plain, base, key)
        for operator in ("", *OPERATORS):
            if operator in TEXT_OPERATORS and not path.is_text:
                continue
            if operator in ("", "ne"):
                # null: IS (NOT) NULL
                schema: dict[str, Any] = components.named_enum(
                    {**plain, "nullable": True}, base, key
                )
            elif operator in ("in", "not_in"):
                schema = {"type": "array", "items": value, "maxItems": MAX_IN_VALUES}
            elif operator == "isnull":
                schema = {"type": "boolean"}
            else:
                schema = {"type": "string"} if operator in TEXT_OPERATORS else value
            properties[f"{key}__{operator}" if operator else key] = schema
    name = f"{_camel(mount.endpoint)}Filters"
    components.spec.components.schema(
        name,
        component={
            "type": "object",
            "description": f"What ``filters`` of ``{mount.endpoint}_list`` accepts, as JSON.",
            "properties": properties,
            "additionalProperties": False,
            "maxProperties": MAX_FILTERS,
        },
    )
    first, path = next(iter(paths.items()))
    example = {f"{first}__icontains": "a"} if path.is_text else {f"{first}__isnull": False}
    return {
        "schema": {"type": "string"},
        "example": json.dumps(example),
        "x-json-schema": {"$ref": f"#/components/schemas/{name}"},
    }


def _list_parameters(mount: Mount, components: Components) -> list[dict[str, Any]]:
    """The list's arguments schema as OpenAPI query parameters: the same schema parses
    and validates them. Every one has a ``schema`` and none a ``default``: a generated
    client would send it on every call."""
    schema = mount.resource.get_list_config().schema
    parameters: list[dict[str, Any]] = components.converter.schema2parameters(
        schema, location="query"
    )
    for parameter in parameters:
        default = parameter.get("schema", {}).pop("default", None)
        if default is not None:
            described = parameter.get("description", "")
            parameter["description"] = f"{described} Default: {default}.".strip()
        field = schema.fields.get(parameter["name"])
        if field is not None and getattr(field, "is_multiple", False):
            terms = field.metadata.get("terms")
            if parameter["name"] == "fields" and terms:
                terms = [*terms, *_included_fields(mount)]
            parameter.update(_array(terms))
        if field is not None and field.metadata.get("json_object"):
            parameter.pop("content", None)
            parameter.update(_filter_values(mount, components))
            if "x-json-schema" in parameter:
                parameter["description"] = (
                    parameter.get("description", "")
                    + f" Its keys and values: the ``{_camel(mount.endpoint)}Filters`` schema."
                )
    return parameters


def _array(terms: Sequence[str] | None) -> dict[str, Any]:
    """A list parameter: repeated (``sort=a&sort=b``, how generated clients send a list;
    the server also takes ``sort=a,b``), each item one of ``terms``."""
    items: dict[str, Any] = {"type": "string"}
    if terms:
        items["enum"] = list(terms)
    return {"schema": {"type": "array", "items": items}, "style": "form", "explode": True}


def _fields_parameter(mount: Mount, operation: str) -> dict[str, Any]:
    schema = options_for(mount.resource).schemas[operation]
    names = sorted(field.data_key or name for name, field in schema.dump_fields.items())
    return {
        "name": "fields",
        "in": "query",
        **_array([*names, *_included_fields(mount)]),
        "description": "The fields to return (comma-separated, or the parameter repeated), "
        f"of: {', '.join(names)}"
        + ("; and ``path.field`` of included rows." if steps_of(mount) else "."),
    }


def _include_parameter(mount: Mount) -> dict[str, Any]:
    paths = list(options_for(mount.resource).include_paths)
    return {
        "name": "include",
        "in": "query",
        **_array(paths),
        "description": "Related rows to embed (comma-separated, or the parameter repeated), "
        f"of: {', '.join(paths)}.",
    }


def _included_fields(mount: Mount) -> list[str]:
    """``path.field`` of every included path: what ``?fields=`` may pick of its rows."""
    names = []
    for path, step in steps_of(mount).items():
        schema = options_for(step.resource).schemas["list"]
        names += sorted(f"{path}.{f.data_key or n}" for n, f in schema.dump_fields.items())
    return names


def _with_included(
    mount: Mount, above: str, schema: Any, columns: Any, side: str, components: Components
) -> dict[str, Any]:
    """A ``$ref`` to ``schema``'s component for ``side``, with the relationships included
    one level below ``above`` as optional properties (another component, when any)."""
    ref = components.ref(schema, side, columns)
    steps = [step for step in steps_of(mount).values() if step.parent == above]
    if not steps:
        return ref
    added: dict[str, Any] = {}
    for step in steps:
        related = options_for(step.resource)
        inner = _with_included(
            mount, step.path, related.schemas["list"], related.columns, side, components
        )
        added[step.name] = (
            {"type": "array", "items": inner} if step.many else {"allOf": [inner], "nullable": True}
        )
    name = ref["$ref"].rsplit("/", 1)[1]
    key = ("included", name, json.dumps(added, sort_keys=True))
    made = components.made.get(key)
    if made is None:
        base, made, n = f"{name}Included", f"{name}Included", 2
        taken = set(components.made.values())
        while made in taken:
            made, n = f"{base}{n}", n + 1
        components.made[key] = made
        component = json.loads(json.dumps(components.spec.components.schemas[name]))
        component["properties"] |= added
        components.spec.components.schema(made, component=component)
    return {"$ref": f"#/components/schemas/{made}"}


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
    #: Success status and what it returns: "page", "item", "empty" or "action".
    status: int
    returns: str
    #: Error statuses besides the common ones; 404 is added for nested mounts anyway.
    errors: tuple[int, ...] = ()
    #: Side of the request body's component ("create", "replace", "patch", "input").
    body: str | None = None
    #: Schema operation of the request body.
    schema: str | None = None
    if_match: bool = False


WRITE_ERRORS = (409, 413, 415, 422)
#: The per-action table the CRUD operations are built from.
DOCS: Mapping[str, Doc] = {
    "list": Doc("List {name}", 200, "page"),
    "create": Doc("Create a {model}", 201, "item", WRITE_ERRORS, "create", "create"),
    "retrieve": Doc("Read a {model}", 200, "item", (404,)),
    "update": Doc(
        "Replace a {model}", 200, "item", (*WRITE_ERRORS, 404, 412), "replace", "update", True
    ),
    "partial_update": Doc(
        "Change fields of a {model}", 200, "item", (*WRITE_ERRORS, 404, 412), "patch", "patch", True
    ),
    "destroy": Doc("Delete a {model}", 204, "empty", (404, 409, 412), if_match=True),
    "bulk_partial_update": Doc(
        "Change fields of many {name}", 200, "items", WRITE_ERRORS, "bulk_patch", "patch"
    ),
    # A many-to-many's routes (Router.register_links): the parent's permissions decide.
    "link": Doc("Link a {model} (idempotent)", 204, "empty", (403, 404, 409)),
    "unlink": Doc("Unlink a {model} (idempotent)", 204, "empty", (403, 404, 409)),
}

#: The actions of a link mount's routes.
LINK_ACTIONS: Mapping[tuple[str, str], str] = {
    ("collection", "GET"): "list",
    ("item", "PUT"): "link",
    ("item", "DELETE"): "unlink",
}


def _bulk_array(items: dict[str, Any], mount: Mount) -> dict[str, Any]:
    """An array of 1 to ``max_bulk_items`` of ``items``: a bulk write's body or answer."""
    most = options_for(mount.resource).max_bulk_items
    return {"type": "array", "items": items, "minItems": 1, "maxItems": most}


def _bulk_patch_item(mount: Mount, components: Components) -> dict[str, Any]:
    """A bulk PATCH item: the patch body's fields plus the id of the row it changes."""
    options = options_for(mount.resource)
    schema = options.schemas["patch"]
    key = (type(schema), "bulk_patch", (), ())
    name = components.made.get(key)
    if name is None:
        name = components.names.base(type(schema)) + "BulkPatch"
        taken, base, n = set(components.made.values()), name, 2
        while name in taken:
            name, n = f"{base}{n}", n + 1
        components.made[key] = name
        component = components.component(schema, "patch", options.columns)
        detail = options.schemas["detail"]
        field = next(
            (f for n_, f in detail.fields.items() if (f.attribute or n_) == options.lookup_key),
            None,
        )
        id_property = (
            components.property(field, "create", None)
            if field is not None
            else {"type": "integer" if options.converter == "int" else "string"}
        )
        component["properties"] = {options.bulk_key: id_property, **component["properties"]}
        component["required"] = [options.bulk_key]
        components.spec.components.schema(name, component=component)
    return {"$ref": f"#/components/schemas/{name}"}


def _trimmable(mount: Mount, operation: str, components: Components) -> dict[str, Any]:
    """A GET's item: all fields, or those ``?fields=`` names (the first that matches);
    for a resource with ``include_fields``, either with the included rows too."""
    options = options_for(mount.resource)
    schema = options.schemas[operation]
    shapes = [components.ref(schema, side, options.columns) for side in RESPONSE_SIDES]
    # With ``?include=``: the same two, with the included rows as optional properties.
    for side in RESPONSE_SIDES if steps_of(mount) else ():
        shapes.append(_with_included(mount, "", schema, options.columns, side, components))
    return {"anyOf": shapes}


def _page_response(mount: Mount, components: Components) -> dict[str, Any]:
    pagination = mount.resource.get_list_config().pagination
    envelope: dict[str, Any] = {
        "items": {"type": "array", "items": _trimmable(mount, "list", components)}
    }
    envelope |= {key: dict(value) for key, value in pagination.envelope.items()}
    link = {"description": "RFC 8288 next and prev pages.", "schema": {"type": "string"}}
    # No additionalProperties: False: a Pagination of the user's may add to its envelope.
    page = {"type": "object", "properties": envelope, "required": list(envelope)}
    return {
        "200": {
            "description": "A page of items.",
            "headers": {"Link": link},
            "content": {"application/json": {"schema": page}},
        }
    }


def _action_responses(extra: ExtraAction, mount: Mount, components: Components) -> dict[str, Any]:
    """Exactly the statuses the action answers, typed by its ``response`` schema."""
    responses: dict[str, Any] = {}
    for status in extra.statuses():
        if status == 204:
            responses["204"] = {"description": "Done; no body."}
            continue
        schema: dict[str, Any] = {}
        if extra.response is not None:
            schema = components.ref(extra.response, "response", options_for(mount.resource).columns)
        responses[str(status)] = {
            "description": "Done.",
            "content": {"application/json": {"schema": schema}},
        }
        if status == 202:  # accepted: the job to poll
            responses["202"]["description"] = "Accepted; the work goes on in a job."
            responses["202"]["headers"] = {
                "Location": {"description": "The job's URL.", "schema": {"type": "string"}}
            }
    return responses


def _responses(mount: Mount, action: str, doc: Doc, components: Components) -> dict[str, Any]:
    etag = {"ETag": {"description": "The version of the item.", "schema": {"type": "string"}}}
    if doc.returns == "empty":
        return {str(doc.status): {"description": "Done; no body."}}
    if doc.returns == "action":
        extra = next(extra for extra in mount.extra_actions if extra.name == action)
        return _action_responses(extra, mount, components)
    if doc.returns == "page":
        return _page_response(mount, components)
    options = options_for(mount.resource)
    if doc.returns == "items":  # a bulk PATCH: the rows changed, in order
        item = components.ref(options.schemas["detail"], "response", options.columns)
        return {
            str(doc.status): {
                "description": "The items, in the order of the request.",
                "content": {"application/json": {"schema": _bulk_array(item, mount)}},
            }
        }
    if action == "retrieve":
        schema = _trimmable(mount, "detail", components)
    else:  # a write's response: no ?fields=, every field
        schema = components.ref(options.schemas["detail"], "response", options.columns)
    response: dict[str, Any] = {
        "description": "The item.",
        "headers": etag,
        "content": {"application/json": {"schema": schema}},
    }
    if action == "create":
        location = {"description": "The new item's URL.", "schema": {"type": "string"}}
        response["headers"] = {**etag, "Location": location}
        response["links"] = _links(mount)
        if "create" in options.bulk:  # an array posted: the items created, in order
            response["description"] = "The item; for an array posted, the items, in order."
            response["content"]["application/json"]["schema"] = {
                "oneOf": [schema, _bulk_array(schema, mount)]
            }
            del response["links"]  # the link's id is the single item's
    responses = {str(doc.status): response}
    if action == "retrieve":
        responses["304"] = {"description": "Not modified (If-None-Match)."}
    return responses


def _parameters(
    mount: Mount, action: str, doc: Doc, components: Components
) -> list[dict[str, Any]]:
    if action == "list":
        return _list_parameters(mount, components)
    if action == "retrieve":
        included = [_include_parameter(mount)] if steps_of(mount) else []
        return [
            _fields_parameter(mount, "detail"),
            *included,
            {
                "name": "If-None-Match",
                "in": "header",
                "schema": {"type": "string"},
                "description": "The ETag of the version you hold; 304 when it is current.",
            },
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
    mount: Mount, action: str, doc: Doc, components: Components, security: Any
) -> dict[str, Any]:
    resource = mount.resource
    options = options_for(resource)
    operation: dict[str, Any] = {
        "operationId": f"{mount.endpoint}_{action}",
        "summary": doc.summary.format(name=resource.name, model=options.model.__name__),
        "tags": [mount.endpoint.replace("_", " / ")],
        "parameters": _parameters(mount, action, doc, components),
        "responses": _responses(mount, action, doc, components),
    }
    if doc.body == "bulk_patch":
        body = _bulk_array(_bulk_patch_item(mount, components), mount)
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    elif doc.body is not None and doc.schema is not None:
        body = components.ref(options.schemas[doc.schema], doc.body, options.columns)
        if action == "create" and "create" in options.bulk:  # one item, or an array
            body = {"oneOf": [body, _bulk_array(body, mount)]}
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
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
    extra = next((extra for extra in mount.extra_actions if extra.name == action), None)
    document_guards(resource, action, extra, operation)  # production guards: guards.py
    return operation


def _extra_doc(extra: ExtraAction) -> Doc:
    errors: tuple[int, ...] = (404,) if extra.detail else ()
    # An item action that writes honours If-Match like PUT (412, 428).
    if_match = extra.detail and extra.writes
    if extra.writes:
        errors += (409, 412) if if_match else (409,)
    if extra.schema is not None:
        errors += (413, 415, 422)
    return Doc(
        extra.summary or f"{extra.name.replace('_', ' ').capitalize()} ({{name}})",
        extra.statuses()[0],
        "action",
        errors,
        body="input" if extra.schema is not None else None,
        schema=extra.name if extra.schema is not None else None,
        if_match=if_match,
    )


def _paths(mount: Mount, components: Components, security: Any) -> list[tuple[str, dict[str, Any]]]:
    """(rule, operations by method) for every route of the mount."""
    paths: list[tuple[str, dict[str, Any]]] = []
    actions = LINK_ACTIONS if mount.link is not None else ACTIONS
    for kind, rule, methods in (
        ("collection", mount.rule, mount.collection_methods),
        ("item", mount.item_rule, mount.item_methods),
    ):
        operations = {
            method.lower(): _operation(
                mount, actions[(kind, method)], DOCS[actions[(kind, method)]], components, security
            )
            for method in methods
        }
        if operations:
            paths.append((rule, operations))
    for extra in mount.extra_actions:
        doc = _extra_doc(extra)
        operations = {}
        for method in extra.methods:
            operation = _operation(mount, extra.name, doc, components, security)
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
    names = Names()
    plugin = MarshmallowPlugin(schema_name_resolver=names)
    spec = APISpec(title=title, version=version, openapi_version="3.0.3", plugins=[plugin])
    spec.components.schema("Problem", PROBLEM)
    spec.components.response("MethodNotAllowed", METHOD_NOT_ALLOWED)
    for name, scheme in (security_schemes or {}).items():
        spec.components.security_scheme(name, dict(scheme))
    components = Components(spec, plugin.converter, names)
    for mount in mounts:
        for rule, operations in _paths(mount, components, list(security or [])):
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
