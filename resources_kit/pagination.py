"""Pagination classes: offset pages with a total, or keyset (cursor) pages without one.

A resource picks one with ``pagination = OffsetPagination`` (or the shorthand ``"offset"``
/ ``"cursor"``), or a subclass of :class:`Pagination` of its own.

An offset page is one statement: the total comes from an uncorrelated ``(SELECT count(*)
...)`` column of the same SELECT (only a page past the end, with no row to carry it, costs
a second).
A cursor page is one statement too: ``WHERE <after the last row> ORDER BY ... LIMIT n+1``,
with no OFFSET and no COUNT, so a page deep in a big table costs what the first does.
Cursors are encrypted and authenticated with a key derived from the app's ``SECRET_KEY``
(Fernet): any worker on any host accepts them, a client cannot read the sort values they
carry, and a forged or altered one is a 400.
"""

from __future__ import annotations

import base64
import datetime
import enum
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode

import marshmallow as ma
from cryptography.fernet import Fernet, InvalidToken
from flask import current_app, request
from sqlalchemy import Integer, Select, bindparam, func, select

from .errors import ImproperlyConfigured, bad_parameter
from .querying import ExactFloat, FieldPath, SortPlan, after_position, sort_spec

if TYPE_CHECKING:
    from .resource import Resource

MAX_OFFSET = 2**31 - 1


@dataclass
class Page:
    """One page of a list: its items, the envelope fields besides ``items``, and the
    RFC 8288 links (``rel`` -> URL) of the ``Link`` header."""

    items: list[Any]
    meta: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)


class Pagination:
    """How a list is cut into pages. Subclass it and set ``pagination = MyPagination``:

    - ``get_args()``: the query parameters it reads, as marshmallow fields (parsed,
      validated and documented with the list's other parameters);
    - ``paginate(view, query, args)``: run the query for one page and return a
      :class:`Page`. ``query`` is already under the row policy, filtered and sorted
      (``args["sort"]`` is its order); run it with ``view.execute_read()``, and
      count a total with :meth:`count`, which keeps it under the policy too;
    - ``envelope``: OpenAPI properties of the body besides ``items``.

    Every list piece (``Filtering.filter``, ``Sorting.sort``, ``Pagination.paginate``)
    takes ``(view, query, args)``.

    An instance is made once per resource class, at registration.
    """

    #: OpenAPI schemas of the envelope fields besides ``items``.
    envelope: Mapping[str, Mapping[str, Any]] = {}

    def __init__(self, resource: type[Resource]) -> None:
        self.resource = resource

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        """The query parameters the paginator reads, as marshmallow fields (by default
        ``limit``, from 1 to ``max_page_size``, default ``page_size``)."""
        return {
            "limit": ma.fields.Integer(
                load_default=self.resource.page_size,
                validate=ma.validate.Range(min=1, max=self.resource.max_page_size),
            )
        }

    def paginate(self, view: Resource, query: Select[Any], args: Mapping[str, Any]) -> Page:
        """Run ``query`` for one page and return it as a :class:`Page`. ``query`` is under
        the row policy, filtered and sorted by ``args["sort"]`` already; run it with
        ``view.execute_read()`` (the engine the request reads from) and call ``.unique()``
        on the result. The default raises ``NotImplementedError``."""
        raise NotImplementedError(f"{type(self).__name__} must override paginate().")

    def count(self, view: Resource, query: Select[Any]) -> int:
        """The number of rows of ``query``, the row policy applied again: a total counted
        here never includes a row the caller may not reach, whatever built ``query``."""
        counted = view.mount.statements.derive(
            query, "count", lambda: count_statement(view.guard_query(query))
        )
        return int(view.read_rows(counted)[0][0])


def page_url(**changes: Any) -> str:
    """This request's URL with some query parameters changed (repeated ones kept)."""
    args = request.args.to_dict(flat=False) | {key: [value] for key, value in changes.items()}
    return f"{request.base_url}?{urlencode(args, doseq=True)}"


def fetch(
    view: Resource, statement: Select[Any], values: Mapping[str, Any], width: int
) -> list[Any]:
    """The rows of a page: of columns (``width`` of them) through ``read_rows``, or of
    objects (in column 0) through the session."""
    if width:
        return list(view.read_rows(statement, values))
    result = view.execute_read(statement, values)
    return list((result.unique() if view.query_options else result).all())


def as_rows(view: Resource, query: Select[Any]) -> tuple[Select[Any], int]:
    """``query`` selecting the model's columns rather than its objects, when the list
    allows it (``ListConfig.row_columns``: a body made of plain column fields, the
    library's own query and response steps), and how many columns an item is (0: the
    item is the object in column 0). A page of rows skips the ORM's per-object work
    (identity map, instance state); the compiled dumper reads a row's attributes as an
    object's."""
    columns = view.options.list_config.row_columns
    if columns is None:
        return query, 0
    rows = view.mount.statements.derive(query, "rows", lambda: query.with_only_columns(*columns))
    return rows, len(columns)


# -- the SQL shapes of a page --------------------------------------------------------------


def count_statement(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.order_by(None).subquery())


def offset_page(query: Select[Any]) -> Select[Any]:
    """An offset page and its total in one statement: ``SELECT ..., (SELECT count(*) ...)
    ... LIMIT :rk_limit OFFSET :rk_offset``.

    The total is an uncorrelated scalar subquery, which every backend evaluates once. A
    window ``count(*) OVER ()`` would be one statement too, but it makes the database
    materialize and sort every matching row instead of the top of them: measured on
    SQLite over 1,350 rows, 1,208 µs against 321 µs for this form (page + COUNT: 324 µs).
    """
    total = count_statement(query).scalar_subquery().label("resources_kit_total")
    return (
        query.add_columns(total)
        .limit(bindparam("rk_limit", type_=Integer))
        .offset(bindparam("rk_offset", type_=Integer))
    )


def limited(query: Select[Any]) -> Select[Any]:
    return query.limit(bindparam("rk_limit", type_=Integer))


class OffsetPagination(Pagination):
    """``?limit=&offset=``; the body has ``total``, ``limit`` and ``offset``, and
    ``links``: the URLs of the ``next`` and ``prev`` pages (``null`` at either end), as
    in the ``Link`` header. (Not top-level ``next``: on a cursor page that is a cursor.)"""

    envelope = {
        **{key: {"type": "integer"} for key in ("total", "limit", "offset")},
        "links": {
            "type": "object",
            "description": "The URLs of the pages around this one, as in the Link header.",
            "properties": {
                rel: {
                    "type": "string",
                    "nullable": True,
                    "description": f"The {rel} page; null when there is none.",
                }
                for rel in ("next", "prev")
            },
            "required": ["next", "prev"],
            "additionalProperties": False,
        },
    }

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        """``limit`` and ``offset``."""
        return {
            **super().get_args(),
            "offset": ma.fields.Integer(
                load_default=0, validate=ma.validate.Range(min=0, max=MAX_OFFSET)
            ),
        }

    def paginate(self, view: Resource, query: Select[Any], args: Mapping[str, Any]) -> Page:
        """One page at ``offset`` and the total, in one statement (two past the end)."""
        limit: int = args["limit"]
        offset: int = args["offset"]
        selected, width = as_rows(view, query)
        statement = view.mount.statements.derive(selected, "offset", lambda: offset_page(selected))
        rows = fetch(view, statement, {"rk_limit": limit, "rk_offset": offset}, width)
        if rows:
            items, total = [row if width else row[0] for row in rows], rows[0][-1]
        elif offset == 0:
            items, total = [], 0
        else:  # past the end: no row carries the total
            items, total = [], self.count(view, query)
        links = {}
        if offset + limit < total:
            links["next"] = page_url(limit=limit, offset=offset + limit)
        if offset > 0:
            links["prev"] = page_url(limit=limit, offset=max(offset - limit, 0))
        meta = {"total": total, "limit": limit, "offset": offset}
        body_links = {"next": links.get("next"), "prev": links.get("prev")}
        return Page(items, meta | {"links": body_links}, links)


class CursorPagination(Pagination):
    """``?cursor=&limit=``; the body has ``next``, an opaque cursor or ``null``, and no
    count. The sort may use the resource's own columns only."""

    envelope = {
        "next": {
            "type": "string",
            "nullable": True,
            "description": "The cursor of the next page; null on the last one.",
        }
    }

    def __init__(self, resource: type[Resource]) -> None:
        super().__init__(resource)
        related = [key for key in resource.sort_fields if "." in key]
        if related:
            raise ImproperlyConfigured(
                f"{resource.__name__}: cursor pagination sorts by the resource's own columns; "
                f"remove {', '.join(related)} from sort_fields."
            )

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        """``limit`` and ``cursor`` (the ``next`` of the previous page)."""
        cursor = ma.fields.String(metadata={"description": "The `next` of the previous page."})
        return {**super().get_args(), "cursor": cursor}

    def paginate(self, view: Resource, query: Select[Any], args: Mapping[str, Any]) -> Page:
        """One page after ``args["cursor"]`` (the first without one), in ``args["sort"]`` order."""
        limit: int = args["limit"]
        plan: SortPlan = args["sort"]
        selected, width = as_rows(view, query)
        statement = view.mount.statements.derive(selected, "cursor", lambda: limited(selected))
        if args.get("cursor"):
            position = self.decode(view, plan, args["cursor"])
            statement = statement.where(after_position(plan, position))  # before ORDER BY
        floats = [path for path, _ in plan if path.is_float]
        if floats:  # read as stored: the driver may round what it sends
            statement = statement.add_columns(*(ExactFloat(path.attr) for path in floats))
        rows = fetch(view, statement, {"rk_limit": limit + 1}, width)
        items = [row if width else row[0] for row in rows[:limit]]
        if len(rows) <= limit:
            return Page(items, {"next": None})
        stored = rows[limit - 1][max(width, 1) :]
        exact = dict(zip((path.key for path in floats), stored, strict=True))
        cursor = self.encode(view, plan, items[-1], exact)
        return Page(items, {"next": cursor}, {"next": page_url(cursor=cursor)})

    def encode(
        self, view: Resource, plan: SortPlan, obj: Any, exact: Mapping[str, Any] | None = None
    ) -> str:
        """The cursor of the position after ``obj``: its sort values (those in ``exact``,
        by path key, as the database read them) sealed with the request's binding."""
        exact = exact or {}
        values = [
            cursor_value(
                path, exact[path.key] if path.key in exact else getattr(obj, path.attr.key)
            )
            for path, _ in plan
        ]
        payload = {"s": sort_spec(plan), "b": binding(view), "v": values}
        return seal(secret_key(view), view.mount.endpoint, payload)

    def decode(self, view: Resource, plan: SortPlan, raw: str) -> list[Any]:
        """The sort values of a cursor ``encode`` made for this URL, scope and sort; a 400
        names the mismatch otherwise."""

        def refuse(message: str) -> NoReturn:
            raise bad_parameter("cursor", message)

        data = unseal(secret_key(view), view.mount.endpoint, raw)
        if data is None:
            refuse("Not a cursor this resource gave out.")
        if not isinstance(data, dict) or data.get("s") != sort_spec(plan):
            refuse("The cursor belongs to another sort order; start again without a cursor.")
        if data.get("b") != binding(view):
            refuse(
                "The cursor belongs to another list (other ids in the URL, or another "
                "tenant); start again without a cursor."
            )
        values = data.get("v")
        if not isinstance(values, list) or len(values) != len(plan):
            refuse("Not a cursor this resource gave out.")
        try:
            return [
                from_cursor_value(path, value)
                for (path, _), value in zip(plan, values, strict=True)
            ]
        except (TypeError, ValueError):
            refuse("Not a cursor this resource gave out.")


def binding(view: Resource) -> str:
    """What a cursor is valid for besides its mount: the ids in the URL and the scope of
    every level."""
    return cursor_binding(view.url_kwargs, [level.scope for level in view.place.levels])


def cursor_binding(url_kwargs: Mapping[str, Any], scopes: Sequence[Mapping[str, Any]]) -> str:
    """A digest of the URL's ids and each level's scope (so that the cursor reveals
    neither): ``binding(view)`` for a view's own."""
    levels = [sorted((key, str(value)) for key, value in scope.items()) for scope in scopes]
    url = sorted((key, str(value)) for key, value in url_kwargs.items())
    text = json.dumps([url, levels], separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _enum_names(path: FieldPath) -> Mapping[Any, str]:
    type_ = path.attr.type
    enum_class = getattr(type_, "enum_class", None)
    if enum_class is None:
        return {}
    names: dict[Any, str] = {}
    for member, stored in zip(enum_class.__members__.values(), type_.enums, strict=False):
        names.setdefault(member, stored)
    return names


def cursor_value(path: FieldPath, value: Any) -> Any:
    """A sort value as JSON, in the form the database compares: an Enum member as the
    text it is stored as, a decimal exactly, a date or time in ISO 8601 (an aware one
    keeps its offset, a date-time the backend returned without a zone stays without)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, enum.Enum):
        return _enum_names(path)[value]
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    raise TypeError(f"{path.key}: cannot keep a {type(value).__name__} in a cursor")


def from_cursor_value(path: FieldPath, value: Any) -> Any:
    """The value :func:`cursor_value` made, checked against the column's type
    (``ValueError`` or ``TypeError`` when it does not fit)."""
    if value is None:
        return None
    type_ = path.attr.type
    if path.is_enum:
        if not isinstance(value, str) or value not in type_.enums:
            raise ValueError(value)
        return value
    try:
        python_type = type_.python_type
    except NotImplementedError:
        return value
    for kind, convert in _FROM_JSON:
        if issubclass(python_type, kind):
            return convert(value)
    return value


def _expect(kind: type | tuple[type, ...], convert: Any) -> Any:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise TypeError(value)
        return convert(value)

    return check


#: Column python type -> what turns its JSON cursor value back into one, in this order
#: (bool before int, datetime before date).
_FROM_JSON: tuple[tuple[type, Any], ...] = (
    (bool, _expect(bool, bool)),
    (int, _expect(int, int)),
    (float, _expect((int, float), float)),
    (Decimal, _expect(str, Decimal)),
    (datetime.datetime, _expect(str, datetime.datetime.fromisoformat)),
    (datetime.date, _expect(str, datetime.date.fromisoformat)),
    (datetime.time, _expect(str, datetime.time.fromisoformat)),
    (datetime.timedelta, _expect((int, float), lambda s: datetime.timedelta(seconds=s))),
    (uuid.UUID, _expect(str, uuid.UUID)),
    (str, _expect(str, str)),
)


def secret_key(view: Resource) -> str | bytes:
    secret: str | bytes | None = current_app.secret_key
    if not secret:
        raise ImproperlyConfigured(
            f"{type(view).__name__} uses cursor pagination, which encrypts cursors with the "
            "app's SECRET_KEY; set app.config['SECRET_KEY']."
        )
    return secret


def _fernet(secret: str | bytes, endpoint: str) -> Fernet:
    raw = secret.encode() if isinstance(secret, str) else secret
    digest = hashlib.sha256(b"resources_kit.cursor." + endpoint.encode() + b"\0" + raw).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(secret: str | bytes, endpoint: str, payload: Any) -> str:
    """An opaque cursor: ``payload`` as JSON, encrypted and authenticated (Fernet) with a
    key derived from the app's secret and the mount, so a client can neither read the
    sort values it holds nor forge one, and every host with the secret accepts it."""
    text = json.dumps(payload, separators=(",", ":")).encode()
    return _fernet(secret, endpoint).encrypt(text).decode("ascii")


def unseal(secret: str | bytes, endpoint: str, raw: str) -> Any:
    """The payload of a cursor ``seal`` made, or ``None`` for anything else."""
    try:
        return json.loads(_fernet(secret, endpoint).decrypt(raw.encode("utf-8")))
    except (InvalidToken, ValueError):
        return None


#: The ``pagination = "..."`` shorthands.
PAGINATIONS: Mapping[str, type[Pagination]] = {
    "offset": OffsetPagination,
    "cursor": CursorPagination,
}
