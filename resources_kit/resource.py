"""``Resource``: configuration, the one query path, verb binding and the write lifecycle."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

import marshmallow as ma
from flask import Response, current_app, request, url_for
from flask.views import MethodView
from sqlalchemy import Select, select
from sqlalchemy.orm import Session, scoped_session
from werkzeug.exceptions import HTTPException

from . import signals, statements
from .errors import (
    HTTPError,
    ImproperlyConfigured,
    from_database_error,
    not_found,
    problem_response,
    unprocessable,
)
from .options import ACTIONS, ResourceOptions, options_for
from .parsing import check_query_args, json_body
from .querying import sparse_field_names

if TYPE_CHECKING:
    from .routing import Mount

_UNRESOLVED: Any = object()
_WRITE_ACTIONS = ("update", "partial_update", "destroy")

#: Query parameters a single-item read accepts (list queries add their own).
ITEM_QUERY_ARGS: tuple[str, ...] = ("fields",)

#: Trimmed schemas for ``?fields=``, per (resource, operation, field names); bounded.
_sparse_schemas: dict[tuple[type[Any], str, tuple[str, ...]], ma.Schema] = {}
_SPARSE_CACHE_SIZE = 512


class Resource(MethodView):
    """A JSON resource over one SQLAlchemy model.

    Compose it with action mixins and register it on a :class:`~resources_kit.Router`::

        class TeacherResource(ListMixin, RetrieveMixin, CreateMixin, Resource):
            name = "teachers"
            model = Teacher
            schema = TeacherSchema

        api = Router(app, url_prefix="/api")
        api.register(TeacherResource)

    Every read and write goes through :meth:`get_query`; the tenant scope and the parent
    chain of a nested URL are added to whatever it returns, so an override cannot drop them.
    """

    #: URL segment and endpoint prefix (``"teachers"``). Required.
    name: ClassVar[str | None] = None
    #: The SQLAlchemy model class. Required.
    model: ClassVar[type[Any] | None] = None
    #: marshmallow schema class: responses, and input where no other schema is given. Required.
    schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for POST (default: ``schema``).
    create_schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for PUT (default: ``schema``).
    update_schema: ClassVar[type[ma.Schema] | None] = None
    #: Input schema for PATCH, loaded ``partial=True`` (default: ``update_schema``).
    patch_schema: ClassVar[type[ma.Schema] | None] = None
    #: Schema of single-item responses: GET, and the bodies of 201/200 writes (default:
    #: ``schema``). One representation per item keeps ETags comparable across verbs.
    detail_schema: ClassVar[type[ma.Schema] | None] = None
    #: SQLAlchemy session or scoped session (default: the Flask-SQLAlchemy ``db.session``).
    session: ClassVar[Session | scoped_session[Session] | None] = None
    #: Column used in item URLs; its type picks the URL converter (default: primary key).
    lookup_field: ClassVar[str | None] = None
    #: Name of the item URL variable (default: ``<snake_case model name>_id``).
    url_variable: ClassVar[str | None] = None
    #: Allow-list for ``?filters=`` (``"rel.col"`` allowed). Empty: filtering refused.
    filter_fields: ClassVar[Sequence[str]] = ()
    #: Allow-list for ``?sort=``. Empty: sorting refused.
    sort_fields: ClassVar[Sequence[str]] = ()
    #: Columns ``?search=`` looks in. Empty: search refused.
    search_fields: ClassVar[Sequence[str]] = ()
    #: Sort when none is asked for (``"name,years_teaching__desc"``); the primary key is
    #: always the final tie-breaker.
    default_sort: ClassVar[str | Sequence[str] | None] = None
    #: Default ``limit`` of a list page.
    page_size: ClassVar[int] = 20
    #: Largest ``limit`` a client may ask for; more is a 400.
    max_page_size: ClassVar[int] = 100
    #: ``"offset"`` (``?limit=&offset=``, with a total) or ``"cursor"`` (keyset pages,
    #: ``?cursor=&limit=``, no count: as fast deep in a big table as on the first page).
    pagination: ClassVar[str] = "offset"
    #: Refuse PUT, PATCH and DELETE without ``If-Match`` (428), so that no client can
    #: overwrite a change it has not seen.
    require_if_match: ClassVar[bool] = False
    #: Loader options (``selectinload(Teacher.students)``) applied to every entity read, so
    #: nested schema fields load without N+1 queries.
    query_options: ClassVar[Sequence[Any]] = ()
    #: View decorators, applied by Flask's ``MethodView.as_view``.
    decorators: ClassVar[list[Callable[..., Any]]] = []

    def __init__(self, mount: Mount, kind: str) -> None:
        #: Where this resource is mounted (its parent chain).
        self.mount = mount
        #: ``"collection"`` or ``"item"``: which of the mount's two URLs was requested.
        self.kind = kind
        self.options: ResourceOptions = options_for(type(self))
        #: The URL variables of the request (every level of the nesting).
        self.url_kwargs: dict[str, Any] = {}
        #: The column values every query of this request is filtered by.
        self.scope: dict[str, Any] = {}
        #: The action being served: ``"list"``, ``"retrieve"``, ``"create"``, ...
        self.action: str | None = None
        #: Schema field names asked for with ``?fields=`` (``None``: all).
        self.sparse_fields: tuple[str, ...] | None = None
        self._parent_value: Any = _UNRESOLVED
        self._chain: list[Resource] | None = None

    # -- verb binding: the one place HTTP methods meet actions ---------------------------

    def dispatch_request(self, **url_kwargs: Any) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        self.action = ACTIONS.get((self.kind, method))
        handler = getattr(self, self.action, None) if self.action else None
        try:
            if handler is None:
                # The router registers only supported methods; this is a direct as_view() use.
                raise HTTPError(405, f"{request.method} is not supported here.")
            self.url_kwargs = url_kwargs
            self._check_url()
            self.scope = self._resolve_scope()  # before any query: fail closed
            response: Response = handler()
            return response
        except HTTPException as exc:
            return problem_response(exc)

    # -- scope and the query path ---------------------------------------------------------

    def get_base_query_kwargs(self) -> Mapping[str, Any] | None:
        """Column values applied as filters to every query and stamped on created rows."""
        return {}

    def check_scope(self, kwargs: Mapping[str, Any]) -> None:
        """Raise to refuse the request for this scope; ``TenantScopeMixin`` fails closed."""

    def _resolve_scope(self) -> dict[str, Any]:
        kwargs = dict(self.get_base_query_kwargs() or {})
        self.check_scope(kwargs)
        for key in kwargs:
            self.options.column(key)  # a misspelled scope column must not widen the scope
        return kwargs

    def get_session(self) -> Session | scoped_session[Session]:
        if self.session is not None:
            return self.session
        extension = current_app.extensions.get("sqlalchemy")
        if extension is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__} has no `session` and the app has no Flask-SQLAlchemy "
                "extension; set `session` or call `db.init_app(app)`."
            )
        session: scoped_session[Session] = extension.session
        return session

    def get_query(self) -> Select[Any]:
        """The base query of every read and write. Override to narrow it (``return
        super().get_query().where(...)``); scoping is added to whatever it returns."""
        return select(self.options.model)

    def _views(self) -> list[Resource]:
        """This resource and a view of each parent up the chain, scopes resolved."""
        if self._chain is None:
            views: list[Resource] = [self]
            while views[-1].mount.parent is not None:
                views.append(views[-1]._parent_view())
            self._chain = views
        return self._chain

    def _parent_view(self) -> Resource:
        parent = cast("Mount", self.mount.parent)  # called only for mounts with a parent
        view = parent.resource(parent, "item")
        view.url_kwargs = self.url_kwargs
        view.scope = view._resolve_scope()
        return view

    def _statement(
        self,
        what: Hashable,
        build: Callable[[list[Resource], bool], Select[Any]],
        *,
        lookup: bool,
    ) -> tuple[Select[Any], dict[str, Any]]:
        """A guarded statement (built once per shape, see ``statements``) and its values."""
        views = self._views()
        resolved = self._parent_value is not _UNRESOLVED
        statement = statements.cached(views, resolved, what, lambda: build(views, resolved))
        values = statements.params(
            views, lookup=lookup, parent_value=self._parent_value, resolved=resolved
        )
        return statement, values

    def _resolve_parent(self) -> None:
        """Check the whole parent chain in one statement; 404 when any level is missing."""
        if self.mount.parent is None:
            return
        statement, values = self._statement(
            "parent", lambda views, _: statements.parent_reference(views, 1), lookup=False
        )
        row = self.get_session().execute(statement, values).first()
        if row is None:
            raise not_found()
        self._parent_value = row[0]

    def _check_url(self) -> None:
        """A URL value no row could have (an id past the column's range) is simply missing."""
        mount: Mount | None = self.mount
        while mount is not None:
            options = options_for(mount.resource)
            value = self.url_kwargs.get(options.url_variable)
            if value is not None and options.lookup_check and options.lookup_check(value):
                raise not_found()
            mount = mount.parent

    def get_object(self) -> Any:
        """The item the URL names, under the scope and the parent chain; 404 when none.

        A write with ``If-Match`` reads it ``FOR UPDATE``: the row stays locked until the
        transaction ends, so the ETag check and the write are atomic."""
        options = self.query_options
        query, values = self._statement(
            "object",
            lambda views, resolved: statements.item(views, 0, resolved).options(*options),
            lookup=True,
        )
        if self.action in _WRITE_ACTIONS and request.if_match:
            query = query.with_for_update()
        result = self.get_session().execute(query, values)
        obj = (result.unique() if self.query_options else result).scalar_one_or_none()
        if obj is None:
            raise not_found()
        return obj

    def check_preconditions(self, obj: Any) -> None:
        """``If-Match`` on PUT, PATCH and DELETE: 412 unless it names the current ETag
        (or ``*``); 428 when it is missing and ``require_if_match`` is set."""
        if_match = request.if_match
        if not if_match:
            if self.require_if_match:
                raise HTTPError(
                    428,
                    "This resource requires If-Match with the ETag of the version you read.",
                )
            return
        _, current = _json_with_etag(self.get_schema("detail").dump(obj))
        if if_match.star_tag or if_match.contains(current):
            return
        raise HTTPError(
            412, "The resource has changed since it was read: If-Match does not match its ETag."
        )

    # -- schemas and serialization --------------------------------------------------------

    def get_schema(self, operation: str) -> ma.Schema:
        """The schema instance for ``"list"``, ``"detail"``, ``"create"``, ``"update"`` or
        ``"patch"``. Under ``?fields=``, the list and detail schemas are trimmed to them."""
        schema = self.options.schemas[operation]
        if self.sparse_fields is None or operation not in ("list", "detail"):
            return schema
        key = (type(self), operation, self.sparse_fields)
        trimmed = _sparse_schemas.get(key)
        if trimmed is None:
            trimmed = type(schema)(only=self.sparse_fields)
            if len(_sparse_schemas) < _SPARSE_CACHE_SIZE:
                _sparse_schemas[key] = trimmed
        return trimmed

    def _read_sparse_fields(self, operation: str) -> None:
        raw = request.args.get("fields")
        if raw is not None:
            self.sparse_fields = sparse_field_names(raw, self.options.schemas[operation])

    def serialize(self, obj_or_objs: Any) -> Any:
        if isinstance(obj_or_objs, list | tuple):
            return self.get_schema("list").dump(obj_or_objs, many=True)
        return self.get_schema("detail").dump(obj_or_objs)

    # -- writes ---------------------------------------------------------------------------

    def perform_create(self, data: dict[str, Any]) -> Any:
        obj = self.options.model(**data)
        self.get_session().add(obj)
        return obj

    def perform_update(self, obj: Any, data: dict[str, Any]) -> None:
        for key, value in data.items():
            setattr(obj, key, value)

    def perform_delete(self, obj: Any) -> None:
        self.get_session().delete(obj)

    def run_callbacks(self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]) -> None:
        """Run the ``<phase>_<operation>_callbacks``; ``CallbackMixin`` provides them."""

    def _server_values(self, obj: Any = None) -> dict[str, Any]:
        """Columns the server sets: the scope and, when nested, the parent's key."""
        values = dict(self.scope)
        key = self.mount.parent_key
        if key is not None:
            values[key] = getattr(obj, key) if obj is not None else self._parent_value
        return values

    def _load_body(self, operation: str, server_values: Mapping[str, Any]) -> dict[str, Any]:
        """Steps 1 and 2 of a write: validate the body, then apply the server's values."""
        check_query_args(())
        body = json_body()
        try:
            data: dict[str, Any] = dict(
                self.get_schema(operation).load(body, partial=operation == "patch")
            )
        except ma.ValidationError as exc:
            raise unprocessable(_messages(exc)) from None
        errors: dict[str, list[str]] = {}
        for key, value in data.items():
            check = self.options.column_checks.get(key)
            message = check(value) if check else None
            if message:
                errors[key] = [message]
            elif key in server_values and value != server_values[key]:
                errors[key] = ["Set by the server from the URL or scope; cannot be changed."]
        if errors:
            raise unprocessable(errors)
        return {**data, **server_values}

    def _write(
        self,
        operation: str,
        data: dict[str, Any],
        apply: Callable[[], Any],
        server_values: Mapping[str, Any],
    ) -> tuple[Any, Any]:
        """Steps 3 to 7: one transaction, committed once, rolled back on any error."""
        session = self.get_session()
        try:
            obj = apply()
            _stamp(obj, server_values)  # an overridden perform_* cannot move the row
            self.run_callbacks("pre", operation, obj, data)
            _stamp(obj, server_values)
            session.flush()
            self.run_callbacks("post", operation, obj, data)
            body = None if operation == "delete" else self.serialize(obj)
            _commit(session)
        except BaseException as exc:
            session.rollback()
            translated = from_database_error(exc)
            if translated is not None:
                raise translated from exc
            if isinstance(exc, ma.ValidationError):
                raise unprocessable(_messages(exc)) from exc
            raise
        self._after_commit(operation, obj, data)
        return obj, body

    def _change(self, operation: str) -> Response:
        """PUT and PATCH: load the item, check If-Match, validate the body, write it."""
        obj = self.get_object()
        self.check_preconditions(obj)
        server_values = self._server_values(obj)
        data = self._load_body(operation, server_values)

        def apply() -> Any:
            self.perform_update(obj, data)
            return obj

        _, body = self._write(operation, data, apply, server_values)
        return self.item_response(body)

    def _after_commit(self, operation: str, obj: Any, data: dict[str, Any]) -> None:
        """Signals, then after-commit callbacks; nothing here can undo the commit."""
        signal = signals.BY_OPERATION[operation]
        if signal.receivers:
            try:
                signal.send(type(self), resource=obj, kwargs=data, operation=operation)
            except Exception:
                current_app.logger.exception(
                    "A %s receiver failed after commit for %s", signal.name, type(self).__name__
                )
        self.run_callbacks("after_commit", operation, obj, data)

    # -- responses ------------------------------------------------------------------------

    def item_response(self, body: Any, status: int = 200) -> Response:
        response, etag = _json_with_etag(body)
        response.status_code = status
        response.set_etag(etag)
        if (
            status == 200
            and request.method in ("GET", "HEAD")
            and request.if_none_match.contains(etag)
        ):
            return Response(status=304, headers={"ETag": response.headers["ETag"]})
        return response

    def location(self, obj: Any) -> str | None:
        if not self.mount.has_item_route:
            return None
        values = {
            **self.url_kwargs,
            self.options.url_variable: getattr(obj, self.options.lookup_key),
        }
        return url_for("." + self.mount.item_endpoint, **values)


def _messages(exc: ma.ValidationError) -> dict[str, Any]:
    messages = exc.messages
    if isinstance(messages, dict):
        return messages
    return {"_schema": messages if isinstance(messages, list) else [messages]}


def _stamp(obj: Any, values: Mapping[str, Any]) -> None:
    for key, value in values.items():
        if getattr(obj, key) != value:
            setattr(obj, key, value)


def _commit(session: Session | scoped_session[Session]) -> None:
    # The request ends right after; expiring everything would only make after-commit
    # callbacks and signal receivers re-SELECT what was just written.
    real = session() if isinstance(session, scoped_session) else session
    expire = real.expire_on_commit
    real.expire_on_commit = False
    try:
        real.commit()
    finally:
        real.expire_on_commit = expire


def _json_with_etag(body: Any) -> tuple[Response, str]:
    """The JSON response for ``body`` and the ETag of exactly the bytes it sends, so a
    write's If-Match check and a read's ETag agree by construction."""
    response = cast(Response, current_app.json.response(body))
    return response, hashlib.blake2b(response.get_data(), digest_size=16).hexdigest()
