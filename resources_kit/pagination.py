"""Offset pagination: ``?limit=&offset=``, the page envelope and the ``Link`` header.

A page is one statement: the total comes from a window ``count(*) OVER ()`` on the same
SELECT. Only a page past the end, which has no row to carry the count, costs a second
statement.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn, cast
from urllib.parse import urlencode

import marshmallow as ma
from flask import Response, current_app, request
from sqlalchemy import Select, func, select
from webargs import fields, validate
from webargs.flaskparser import FlaskParser

from .errors import bad_request
from .parsing import check_query_args

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, scoped_session

    from .resource import Resource

LIST_QUERY_ARGS = ("limit", "offset")


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
    schema: ma.Schema = ma.Schema.from_dict(
        {
            "limit": fields.Integer(
                load_default=resource.page_size,
                validate=validate.Range(min=1, max=resource.max_page_size),
            ),
            "offset": fields.Integer(load_default=0, validate=validate.Range(min=0, max=2**31 - 1)),
        },
        name=f"{resource.__name__}ListArgs",
    )()
    _args_schemas[resource] = schema
    return schema


def offset_page(
    session: Session | scoped_session[Session], query: Select[Any], limit: int, offset: int
) -> tuple[list[Any], int]:
    total_column = func.count().over().label("resources_kit_total")
    rows = session.execute(query.add_columns(total_column).limit(limit).offset(offset)).all()
    if rows:
        return [row[0] for row in rows], rows[0][-1]
    if offset == 0:
        return [], 0
    count = select(func.count()).select_from(query.order_by(None).subquery())
    return [], session.execute(count).scalar_one()


def link_header(limit: int, offset: int, total: int) -> str | None:
    """RFC 8288 ``Link`` with ``next`` and ``prev`` where they exist."""
    links = []
    args = request.args.to_dict()
    if offset + limit < total:
        query = urlencode({**args, "limit": limit, "offset": offset + limit})
        links.append(f'<{request.base_url}?{query}>; rel="next"')
    if offset > 0:
        query = urlencode({**args, "limit": limit, "offset": max(offset - limit, 0)})
        links.append(f'<{request.base_url}?{query}>; rel="prev"')
    return ", ".join(links) or None


def list_response(view: Resource) -> Response:
    check_query_args(LIST_QUERY_ARGS)
    args = parser.parse(list_args_schema(type(view)), request)
    limit, offset = args["limit"], args["offset"]
    view._resolve_parent()
    options = view.options
    query = (
        view._guarded_query()
        .options(*view.query_options)
        .order_by(*options.order_by(options.default_sort))
    )
    items, total = offset_page(view.get_session(), query, limit, offset)
    body = {"items": view.serialize(items), "total": total, "limit": limit, "offset": offset}
    response = cast(Response, current_app.json.response(body))
    link = link_header(limit, offset, total)
    if link is not None:
        response.headers["Link"] = link
    return response
