"""List pages: offset pages with a total, or keyset (cursor) pages without one.

An offset page is one statement: the total comes from an uncorrelated ``(SELECT count(*)
...)`` column of the same SELECT (only a page past the end, with no row to carry it, costs
a second).
A cursor page is one statement too: ``WHERE <after the last row> ORDER BY ... LIMIT n+1``,
with no OFFSET and no COUNT, so a page deep in a big table costs what the first does.
Cursors are signed with the app's ``SECRET_KEY``: any worker accepts them, and a forged or
altered one is a 400.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import urlencode

import marshmallow as ma
from flask import Response, current_app, request
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import Select
from webargs import fields, validate
from webargs.flaskparser import FlaskParser

from . import statements
from .errors import ImproperlyConfigured, bad_parameter, bad_request
from .parsing import check_query_args
from .querying import (
    FieldPath,
    after_position,
    apply_sort,
    parse_filters,
    parse_sort,
    search_clause,
    sort_plan,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, scoped_session

    from .resource import Resource

COMMON_ARGS = ("limit", "filters", "sort", "search", "fields")
OFFSET_ARGS = (*COMMON_ARGS, "offset")
CURSOR_ARGS = (*COMMON_ARGS, "cursor")
MAX_OFFSET = 2**31 - 1


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


parser = QueryParser(location="query", unknown=ma.EXCLUDE)

_args_schemas: dict[type[Resource], ma.Schema] = {}


def list_args_schema(resource: type[Resource]) -> ma.Schema:
    if resource in _args_schemas:
        return _args_schemas[resource]
    declared: dict[str, Any] = {
        "limit": fields.Integer(
            load_default=resource.page_size,
            validate=validate.Range(min=1, max=resource.max_page_size),
        ),
        "filters": fields.String(),
        "sort": fields.String(),
        "search": fields.String(),
        "fields": fields.String(),
    }
    if resource.pagination == "cursor":
        declared["cursor"] = fields.String()
    else:
        declared["offset"] = fields.Integer(
            load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET)
        )
    schema: ma.Schema = ma.Schema.from_dict(declared, name=f"{resource.__name__}ListArgs")()
    _args_schemas[resource] = schema
    return schema


# -- offset pages ---------------------------------------------------------------------------


def offset_page(
    session: Session | scoped_session[Session],
    page: Select[Any],
    values: dict[str, Any],
    count: Callable[[], Select[Any]],
    *,
    unique: bool = False,
) -> tuple[list[Any], int]:
    """A page and its total in one statement (see ``statements.page``). ``unique`` is
    needed only with joined eager loading. Only a page past the end, which has no row to
    carry the total, runs ``count()`` as a second statement."""
    result = session.execute(page, values)
    rows = (result.unique() if unique else result).all()
    if rows:
        return [row[0] for row in rows], rows[0][-1]
    if values["rk_offset"] == 0:
        return [], 0
    return [], session.execute(count(), values).scalar_one()


def _page_url(base: str, **changes: Any) -> str:
    return f"{base}?{urlencode({**request.args.to_dict(), **changes})}"


def link_header(limit: int, offset: int, total: int) -> str | None:
    """RFC 8288 ``Link`` with ``next`` and ``prev`` where they exist."""
    links = []
    base = request.base_url
    if offset + limit < total:
        links.append(f'<{_page_url(base, limit=limit, offset=offset + limit)}>; rel="next"')
    if offset > 0:
        previous = max(offset - limit, 0)
        links.append(f'<{_page_url(base, limit=limit, offset=previous)}>; rel="prev"')
    return ", ".join(links) or None


# -- cursor pages ---------------------------------------------------------------------------


def _serializer(view: Resource) -> URLSafeSerializer:
    secret = current_app.secret_key
    if not secret:
        raise ImproperlyConfigured(
            f"{type(view).__name__} uses cursor pagination, which signs cursors with the "
            "app's SECRET_KEY; set app.config['SECRET_KEY']."
        )
    return URLSafeSerializer(secret, salt=f"resources_kit.cursor.{view.mount.endpoint}")


def _sort_spec(plan: list[tuple[FieldPath, bool]]) -> str:
    return ",".join(f"{path.key}__{'desc' if desc else 'asc'}" for path, desc in plan)


def encode_cursor(view: Resource, plan: list[tuple[FieldPath, bool]], obj: Any) -> str:
    values = [
        path.field.serialize("value", {"value": getattr(obj, path.attr.key)}) for path, _ in plan
    ]
    return str(_serializer(view).dumps({"s": _sort_spec(plan), "v": values}))


def decode_cursor(view: Resource, plan: list[tuple[FieldPath, bool]], raw: str) -> list[Any]:
    def refuse(message: str) -> NoReturn:
        raise bad_parameter("cursor", message)

    try:
        data = _serializer(view).loads(raw)
    except BadData:
        refuse("Not a cursor this resource gave out.")
    if not isinstance(data, dict) or data.get("s") != _sort_spec(plan):
        refuse("The cursor belongs to another sort order; start again without a cursor.")
    values = data.get("v")
    if not isinstance(values, list) or len(values) != len(plan):
        refuse("Not a cursor this resource gave out.")
    try:
        return [
            None if value is None else path.field.deserialize(value)
            for (path, _), value in zip(plan, values, strict=True)
        ]
    except ma.ValidationError:
        refuse("Not a cursor this resource gave out.")


# -- the list action --------------------------------------------------------------------------


def list_response(view: Resource) -> Response:
    options = view.options
    cursor_mode = options.pagination == "cursor"
    check_query_args(CURSOR_ARGS if cursor_mode else OFFSET_ARGS)
    args = parser.parse(list_args_schema(type(view)), request)
    limit: int = args["limit"]
    view._read_sparse_fields("list")
    clauses = parse_filters(args["filters"], options.filter_paths) if "filters" in args else []
    if "search" in args:
        clauses.append(search_clause(args["search"], options.search_paths))
    sort_paths = {key: options.sort_paths[key] for key in type(view).sort_fields}
    keys = parse_sort(args["sort"], sort_paths) if "sort" in args else options.default_sort
    plan = sort_plan(keys, options.sort_paths, options.primary_key_paths)
    position = decode_cursor(view, plan, args["cursor"]) if args.get("cursor") else None

    view._resolve_parent()
    loader_options = view.query_options
    spec = _sort_spec(plan)

    def base(views: list[Resource], resolved: bool) -> Select[Any]:
        guarded = statements.guarded(views, 0, resolved).options(*loader_options)
        return apply_sort(guarded, plan)

    session = view.get_session()
    if cursor_mode:
        query, values = view._statement(
            ("cursor", spec), lambda v, r: statements.cursor_page(base(v, r)), lookup=False
        )
        if clauses:
            query = query.where(*clauses)  # WHERE is placed before ORDER BY and LIMIT
        if position is not None:
            query = query.where(after_position(plan, position))
        values["rk_limit"] = limit + 1
        result = session.execute(query, values)
        rows = list((result.unique() if loader_options else result).scalars())
        items = rows[:limit]
        next_cursor = encode_cursor(view, plan, items[-1]) if len(rows) > limit else None
        response = _json({"items": view.serialize(items), "next": next_cursor})
        if next_cursor is not None:
            url = _page_url(request.base_url, cursor=next_cursor)
            response.headers["Link"] = f'<{url}>; rel="next"'
        return response

    offset: int = args["offset"]

    def counted(views: list[Resource], resolved: bool) -> Select[Any]:
        return statements.guarded(views, 0, resolved).where(*clauses)

    def page(views: list[Resource], resolved: bool) -> Select[Any]:
        filtered = counted(views, resolved)  # immutable: one build serves rows and count
        return statements.page(apply_sort(filtered.options(*loader_options), plan), filtered)

    query, values = view._statement(None if clauses else ("page", spec), page, lookup=False)
    values.update(rk_limit=limit, rk_offset=offset)

    def count() -> Select[Any]:
        return statements.count(counted(view._views(), view.mount.parent is not None))

    items, total = offset_page(session, query, values, count, unique=bool(loader_options))
    response = _json(
        {"items": view.serialize(items), "total": total, "limit": limit, "offset": offset}
    )
    link = link_header(limit, offset, total)
    if link is not None:
        response.headers["Link"] = link
    return response


def _json(body: Any) -> Response:
    return cast(Response, current_app.json.response(body))
