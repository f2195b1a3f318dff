"""``Resource``: configuration, the guarded query path, verb binding and the write steps.

Every action is a short chain of public methods. Two kinds:

- *hooks* a subclass overrides: ``get_query``, ``get_object``, ``get_schema``,
  ``get_request_data``, ``perform_create`` / ``perform_update`` / ``perform_delete``,
  ``serialize``, ``get_write_response``, ``check_preconditions``;
- *guards* it may call but never override (``ImproperlyConfigured`` at class creation):
  ``dispatch_request``, ``get_scoped_query``, ``guard_query``, ``check_parent``,
  ``check_object``,
  ``get_server_values`` and ``save``. They hold the tenant scope, the parent chain and the
  transaction, so that no override can widen what a request reaches or half-write it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import marshmallow as ma
from flask import Response, after_this_request, current_app, request, url_for
from flask.views import MethodView
from sqlalchemy import Result, Select, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session
from werkzeug.exceptions import HTTPException

from . import signals
from .actions import ACTIONS, VERB_METHODS, ExtraAction
from .database import (
    bind_settings,
    database_failure,
    replica_engine,
    request_settings,
    unbind_settings,
)
from .errors import (
    HTTPError,
    ImproperlyConfigured,
    from_database_error,
    not_found,
    problem_response,
    unprocessable,
)
from .nesting import (
    Mount,
    bind_values,
    cached,
    guard_values,
    guarded,
    lookup_clause,
    parent_clauses,
    parent_reference,
    scope_clauses,
    unbind_values,
)
from .options import ResourceOptions, options_for
from .parsing import check_query_args, json_body
from .permissions import READ_ACTIONS, Permission, combine
from .querying import sparse_field_names

#: Methods that hold a guard; a subclass defining one is refused at class creation.
GUARDS = (
    "dispatch_request",
    "current_user",
    "visibility_clauses",
    "check_object_permissions",
    "get_scoped_query",
    "guard_query",
    "check_parent",
    "check_object",
    "get_server_values",
    "save",
)

_UNSET: Any = object()
#: The ``Prefer`` token (RFC 7240) a client sends to read from the primary.
READ_YOUR_WRITES = "read-your-writes"


def preferences() -> set[str]:
    """The preference names of the request's ``Prefer`` headers, lowercased."""
    return {
        part.split(";")[0].split("=")[0].strip().lower()
        for header in request.headers.getlist("Prefer")
        for part in header.split(",")
    }


def _preference_applied(response: Response) -> Response:
    if response.status_code < 400:  # an error applied no preference
        response.headers.add("Preference-Applied", READ_YOUR_WRITES)
    return response


#: Query parameters a single-item read accepts (list queries declare their own).
ITEM_QUERY_ARGS: tuple[str, ...] = ("fields",)


class Resource(MethodView):
    """A JSON resource over one SQLAlchemy model.

    Compose it with action mixins and register it on a :class:`~resources_kit.Router`::

        class TeacherResource(ListMixin, RetrieveMixin, CreateMixin, Resource):
            name = "teachers"
            model = Teacher
            schema = TeacherSchema

        api = Router(app, url_prefix="/api")
        api.register(TeacherResource)

    Every read and write goes through :meth:`get_scoped_query`: :meth:`get_query` (narrow
    it there) plus the tenant scope plus the whole parent chain of the URL.
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
    #: Refuse PUT, PATCH and DELETE without ``If-Match`` (428), so that no client can
    #: overwrite a change it has not seen.
    require_if_match: ClassVar[bool] = False
    #: Loader options (``selectinload(Teacher.students)``) applied to every entity read, so
    #: nested schema fields load without N+1 queries.
    query_options: ClassVar[Sequence[Any]] = ()
    #: View decorators, applied by Flask's ``MethodView.as_view``.
    decorators: ClassVar[list[Callable[..., Any]]] = []
    #: Who may do what: ``Permission`` classes or instances, all of which must allow (see
    #: Permissions in the docs). Empty: anyone the app lets through.
    permissions: ClassVar[Sequence[Any]] = ()
    #: The ``WWW-Authenticate`` challenge of a 401.
    www_authenticate: ClassVar[str] = "Bearer"
    #: Foreign-key column -> the resource whose rows it may name (``"self"``: this one).
    #: A write naming a row that resource would not show the caller (another tenant's,
    #: or missing) is a 422, so a body cannot point at rows it cannot see.
    references: ClassVar[Mapping[str, type[Resource] | str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for verb, instead in VERB_METHODS.items():
            if any(verb in vars(klass) for klass in cls.__mro__):
                raise ImproperlyConfigured(
                    f"{cls.__name__} defines {verb}(); resources bind HTTP verbs in one place. "
                    f"Override the action {instead} instead."
                )
        for guard in GUARDS:
            if getattr(cls, guard) is not getattr(Resource, guard):
                raise ImproperlyConfigured(
                    f"{cls.__name__} overrides {guard}(), which guards the scope, the parent "
                    "chain or the transaction; override a hook instead (see Extending in the "
                    "docs): get_query() to narrow, get_object(), perform_*()."
                )

    @classmethod
    def check_configuration(cls) -> None:
        """Check and compile the class's configuration; the router calls it at
        registration, and a mistake raises ``ImproperlyConfigured`` naming the fix.

        Cooperative: a mixin placed after ``Resource`` in the MRO (``class
        Students(MyBase, ListMixin)`` with ``MyBase`` a ``Resource``) is checked too."""
        options_for(cls)
        reference_targets(cls)
        permission_rule(cls)
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()

    def __init__(self, mount: Mount, kind: str, extra: ExtraAction | None = None) -> None:
        #: Where this resource is mounted (its parent chain).
        self.mount = mount
        #: ``"collection"`` or ``"item"``: which of the mount's URLs was requested.
        self.kind = kind
        #: The extra action this view serves (``@action``), if any.
        self.extra = extra
        self.options: ResourceOptions = options_for(type(self))
        #: The URL variables of the request (every level of the nesting).
        self.url_kwargs: dict[str, Any] = {}
        #: The column values every query of this request is filtered by.
        self.scope: dict[str, Any] = {}
        #: This resource and a view of each parent up the chain (level 0 is this one).
        self.levels: list[Resource] = [self]
        #: The values the guarded statements of this request are bound to.
        self.guard_values: dict[str, Any] = {}
        #: The action being served: ``"list"``, ``"retrieve"``, ``"create"``, ...
        self.action: str | None = None
        #: Schema field names asked for with ``?fields=`` (``None``: all).
        self.sparse_fields: tuple[str, ...] | None = None
        self._user: Any = _UNSET
        self._user_source: Resource = self  # a parent view asks the request's own view
        self._read_bind: Any = _UNSET
        self._visibility: list[Any] | None = None

    # -- verb binding: the one place HTTP methods meet actions ---------------------------

    def dispatch_request(self, **url_kwargs: Any) -> Response:
        """Resolve the scope of every level (403 before any query when it is missing),
        then run the action with the request's guard values bound."""
        try:
            handler = self._handler()
            self.url_kwargs = url_kwargs
            self._check_url()
            self._check_action_permission()  # before the scope: no caller is a 401
            self.scope = self._resolve_scope()
            while self.levels[-1].mount.parent is not None:
                self.levels.append(self.levels[-1]._parent_view())
            self.guard_values = guard_values(self.levels, url_kwargs)
            token = bind_values(self.guard_values)
            database = None
            try:
                settings = request_settings(self.levels)
                if settings:
                    database = bind_settings(settings, self.get_session())
                return handler()
            finally:
                unbind_values(token)
                if database is not None:
                    unbind_settings(database)
        except HTTPException as exc:
            return problem_response(exc)
        except DBAPIError as exc:  # a read's: a write translates its own in _transaction
            failure = database_failure(exc, self.get_session())
            if failure is None:
                raise
            return problem_response(failure)

    def _handler(self) -> Callable[[], Response]:
        if self.extra is not None:
            self.action = self.extra.name
            extra = self.extra
            return lambda: self._run_extra(extra)
        method = "GET" if request.method == "HEAD" else request.method
        self.action = ACTIONS.get((self.kind, method))
        handler = getattr(self, self.action, None) if self.action else None
        if handler is None:
            # The router registers only supported methods; this is a direct as_view() use.
            raise HTTPError(405, f"{request.method} is not supported here.")
        return cast(Callable[[], Response], handler)

    def _parent_view(self) -> Resource:
        parent = self.mount.parent
        if parent is None:  # pragma: no cover - called only for nested mounts
            raise ImproperlyConfigured("Not nested.")
        view = cast(Resource, parent.resource(parent, "item"))
        view.url_kwargs = self.url_kwargs
        view.action = "retrieve"  # a child is reachable only through a parent one may read
        view._user_source = self._user_source
        view._check_action_permission()
        view.scope = view._resolve_scope()
        return view

    def _check_url(self) -> None:
        """One URL per item: an integer written another way (``0001``, non-ASCII digits),
        a value no row could have (past the column's range, not one of an Enum's values,
        not a canonical date) is simply missing."""
        rule = request.url_rule
        positions = int_positions(rule.rule) if rule is not None else ()
        if positions:
            given = request.path.rstrip("/").split("/")
            for position, name in positions:
                if position < len(given) and given[position] != str(self.url_kwargs.get(name)):
                    raise not_found()
        mount: Mount | None = self.mount
        while mount is not None:
            options = options_for(mount.resource)
            value = self.url_kwargs.get(options.url_variable)
            if value is not None and options.lookup_convert is not None:
                try:
                    value = self.url_kwargs[options.url_variable] = options.lookup_convert(value)
                except ValueError:
                    raise not_found() from None
            if value is not None and options.lookup_check and options.lookup_check(value):
                raise not_found()
            mount = mount.parent

    # -- the caller and permissions ---------------------------------------------------------

    def get_current_user(self) -> Any:
        """The caller, from the app (Flask-Login's ``current_user``, Flask-JWT-Extended's
        identity...), or ``None`` when the request carries no valid credentials. Called
        at most once per request, only when a permission asks."""
        return None

    def current_user(self) -> Any:
        """The caller: :meth:`get_current_user` of the request's own resource, called once
        per request and shared by the views of every parent level."""
        source = self._user_source
        if source._user is _UNSET:
            source._user = source.get_current_user()
        return source._user

    def _refusal(self, rule: Permission, obj: Any = None) -> HTTPError:
        if self.current_user() is None:
            return HTTPError(
                401,
                "This needs credentials.",
                headers={"WWW-Authenticate": self.www_authenticate},
            )
        return HTTPError(403, rule.refusal(self, obj))

    def _check_action_permission(self) -> None:
        rule = permission_rule(type(self))
        if rule is not None and not rule.has_permission(self):
            raise self._refusal(rule)

    def visibility_clauses(self) -> list[Any]:
        """The conditions of this resource's permissions on the rows the caller may see."""
        if self._visibility is None:
            rule = permission_rule(type(self))
            clause = rule.visible(self) if rule is not None else None
            self._visibility = [] if clause is None else [clause]
        return self._visibility

    def check_object_permissions(self, obj: Any) -> None:
        """403 (401 without a caller) unless the permissions allow this change of ``obj``."""
        rule = permission_rule(type(self))
        if rule is not None and not rule.has_object_permission(self, obj):
            raise self._refusal(rule, obj)

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
        """The session every query and write of the request uses: ``session`` when set, else
        the Flask-SQLAlchemy extension's ``db.session``."""
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

    def get_read_bind(self) -> Engine | None:
        """The engine this request reads from, or ``None`` for the session's own.

        By default: the bind named by ``RESOURCES_KIT_READ_REPLICA`` (a key of
        ``SQLALCHEMY_BINDS``) for a list or retrieve, unless the client asks for
        ``Prefer: read-your-writes``; every write, and every read inside one, uses the
        primary. Called once per request."""
        key = current_app.config.get("RESOURCES_KIT_READ_REPLICA")
        if key is None or self.action not in READ_ACTIONS or self.extra is not None:
            return None
        if READ_YOUR_WRITES in preferences():
            after_this_request(_preference_applied)
            return None
        return replica_engine(key)

    def execute(self, statement: Any, parameters: Mapping[str, Any] | None = None) -> Result[Any]:
        """Run a read of this request on the engine :meth:`get_read_bind` picks. The
        library's reads all go through here; use it for reads of your own in hooks."""
        if self._read_bind is _UNSET:
            self._read_bind = self.get_read_bind()
        session = self.get_session()
        if self._read_bind is None:
            return session.execute(statement, parameters)
        return session.execute(statement, parameters, bind_arguments={"bind": self._read_bind})

    def get_query(self) -> Select[Any]:
        """The unscoped base of every read and write: narrow it here (``return
        super().get_query().where(...)``). Build on :meth:`get_scoped_query`, never on
        this, when you execute a query yourself."""
        return select(self.options.model)

    def get_scoped_query(self) -> Select[Any]:
        """:meth:`get_query` plus the tenant scope plus the whole parent chain of the URL.

        The guard values are bound parameters read when the statement runs, so it can be
        executed as it is anywhere in the request (``session.execute(query.where(...))``),
        and it is built once per shape when no level overrides ``get_query()``."""
        resolved = "rk_0_parent" in self.guard_values
        return cached(self.levels, resolved, "scoped", lambda: guarded(self.levels, 0, resolved))

    def guard_query(self, query: Select[Any]) -> Select[Any]:
        """``query`` with this resource's scope and parent chain applied (again): for a
        query an overridden step returned, which may not have been built on
        :meth:`get_scoped_query`."""
        resolved = "rk_0_parent" in self.guard_values
        return query.where(
            *scope_clauses(self, 0),
            *self.visibility_clauses(),
            *parent_clauses(self.levels, 0, resolved),
        )

    def check_parent(self) -> None:
        """404 unless every level of the parent chain in the URL exists under its own
        scope (one statement). Later queries then compare with the parent's key directly."""
        if self.mount.parent is None or "rk_0_parent" in self.guard_values:
            return
        statement = cached(self.levels, False, "parent", lambda: parent_reference(self.levels, 1))
        row = self.execute(statement).first()
        if row is None:
            raise not_found()
        self.guard_values["rk_0_parent"] = row[0]

    def get_object(self) -> Any:
        """The item the URL names, from :meth:`get_scoped_query`; 404 when none.

        A write with ``If-Match``, and every delete, reads it ``FOR UPDATE``: the row stays
        locked until the transaction ends, so the ETag check and the write are atomic, and
        of concurrent deletes of one row only the first succeeds (the others find no row)."""
        resolved = "rk_0_parent" in self.guard_values
        options = self.query_options

        def build() -> Select[Any]:
            return self.get_scoped_query().where(lookup_clause(self, 0)).options(*options)

        query = cached(self.levels, resolved, "object", build)
        locking = request.method != "GET" and (request.if_match or request.method == "DELETE")
        if locking and self.action != "retrieve":
            # Lock the resource's own rows only: PostgreSQL refuses FOR UPDATE on the
            # nullable side of an outer join that joined eager loading adds.
            query = query.with_for_update(of=self.options.model)
        result = self.execute(query)
        obj = (result.unique() if options else result).scalar_one_or_none()
        if obj is None:
            raise not_found()
        return obj

    def check_object(self, obj: Any) -> None:
        """404 unless ``obj`` is a row of this resource's model inside the request's scope
        and, after an overridden :meth:`get_object`, under the parent in the URL and visible
        to the caller; for an action that changes it, 403 unless the permissions allow.
        The default :meth:`get_object` found it under all of these in SQL already."""
        if type(self).get_object is not Resource.get_object:
            self._check_found_object(obj)
        if self.action not in READ_ACTIONS and (self.extra is None or self.extra.writes):
            self.check_object_permissions(obj)

    def _check_found_object(self, obj: Any) -> None:
        if not isinstance(obj, self.options.model):
            raise not_found()
        for key, value in self.scope.items():
            if getattr(obj, key) != value:
                raise not_found()
        parent_key = self.mount.parent_key
        if parent_key is not None:
            self.check_parent()
            if getattr(obj, parent_key) != self.guard_values["rk_0_parent"]:
                raise not_found()
        if self.visibility_clauses() and not self._is_visible(obj):
            raise not_found()

    def _is_visible(self, obj: Any) -> bool:
        key = self.options.primary_key
        query = select(*key).where(*(column == getattr(obj, column.key) for column in key))
        query = query.where(*self.visibility_clauses())
        return self.execute(query).first() is not None

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
        _, current = json_with_etag(self.get_schema("detail").dump(obj))
        if if_match.star_tag or if_match.contains(current):
            return
        raise HTTPError(
            412, "The resource has changed since it was read: If-Match does not match its ETag."
        )

    # -- schemas and serialization --------------------------------------------------------

    def get_schema(self, operation: str) -> ma.Schema:
        """The schema instance for ``"list"``, ``"detail"``, ``"create"``, ``"update"``,
        ``"patch"`` or an extra action's name. Under ``?fields=``, the list and detail
        schemas are trimmed to them."""
        if self.sparse_fields is None or operation not in ("list", "detail"):
            return self.options.schemas[operation]
        return self.options.sparse_schema(operation, self.sparse_fields)

    def read_sparse_fields(self, operation: str) -> None:
        """Read ``?fields=`` for the ``operation`` schema; 400 naming unknown fields."""
        raw = request.args.get("fields")
        if raw is None:
            return
        try:
            self.sparse_fields = sparse_field_names(raw, self.options.schemas[operation])
        except ma.ValidationError as exc:
            raise HTTPError(
                400, "Bad query parameters: fields.", errors={"fields": exc.messages}
            ) from None

    def serialize(self, obj_or_objs: Any) -> Any:
        """The response body of one object or a list of them: dumped with the operation's
        schema (``get_schema``), trimmed to ``?fields=`` when asked. Override to shape
        responses; a list page's items and every single-item response pass through here."""
        if isinstance(obj_or_objs, list | tuple):
            return self.get_schema("list").dump(obj_or_objs, many=True)
        return self.get_schema("detail").dump(obj_or_objs)

    # -- writes ---------------------------------------------------------------------------

    def get_server_values(self, obj: Any = None) -> dict[str, Any]:
        """Columns the server sets: the scope and, when nested, the parent's key (checked
        first, so a create under a missing parent is a 404 before the body is read)."""
        values = dict(self.scope)
        key = self.mount.parent_key
        if key is not None:
            if obj is None:
                self.check_parent()
                values[key] = self.guard_values["rk_0_parent"]
            else:
                values[key] = getattr(obj, key)
        return values

    def get_request_data(self, operation: str, server_values: Mapping[str, Any]) -> dict[str, Any]:
        """Steps 1 and 2 of a write: the JSON body loaded with the operation's schema
        (``partial`` for a patch), checked against the columns, then the server's values
        (a body may repeat one, never change it: 422)."""
        check_query_args(())
        body = json_body()
        try:
            data: dict[str, Any] = dict(
                self.get_schema(operation).load(body, partial=operation == "patch")
            )
        except ma.ValidationError as exc:
            raise unprocessable(validation_messages(exc)) from None
        errors: dict[str, list[str]] = {}
        for key, normalize in self.options.column_normalizers.items():
            if key in data:
                data[key] = normalize(data[key])
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

    def perform_create(self, data: dict[str, Any]) -> Any:
        """Build the new object and add it to the session. Returning ``None`` is fine when
        exactly one new object of the model was added."""
        obj = self.options.model(**data)
        self.get_session().add(obj)
        return obj

    def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
        """Change ``obj`` in place. Return nothing (or ``obj``): any other value is refused
        as a configuration error and the transaction rolled back."""
        for key, value in data.items():
            setattr(obj, key, value)

    def perform_delete(self, obj: Any) -> None:
        """Delete ``obj`` (already found under every guard) in the session; the commit is the
        library's. Override for a soft delete: change the object instead."""
        self.get_session().delete(obj)

    def run_callbacks(self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]) -> None:
        """Run the ``<phase>_<operation>_callbacks``; ``CallbackMixin`` provides them."""

    def get_write_response(self, operation: str, obj: Any) -> Response:
        """The success response of a write, built before the commit: 201 with the item and
        ``Location`` for a create, 204 for a delete, 200 with the item otherwise."""
        if operation == "delete":
            return Response(status=204)
        response = self.item_response(self.serialize(obj), 201 if operation == "create" else 200)
        if operation == "create":
            location = self.location(obj)
            if location is not None:
                response.headers["Location"] = location
        return response

    def save(
        self,
        operation: str,
        data: dict[str, Any],
        server_values: Mapping[str, Any],
        obj: Any = None,
    ) -> Response:
        """Steps 3 to 7 of a create, update, patch or delete: ``perform_*``, callbacks,
        flush, the response, one commit, then signals and after-commit callbacks."""

        def perform() -> Any:
            if operation == "create":
                return self._created(self.perform_create(data))
            if operation == "delete":
                self.perform_delete(obj)
                return obj  # callbacks and signals see the deleted row
            return self._updated(obj, self.perform_update(obj, data))

        perform.item = obj  # type: ignore[attr-defined]
        return self._transaction(
            operation, perform, data, server_values, lambda o: self.get_write_response(operation, o)
        )

    def _created(self, result: Any) -> Any:
        """The object ``perform_create`` made: what it returned, or the one new object of
        the model it added (pending, or flushed by the override); never a row that was in
        the session before it ran, which stamping would move."""
        session = self.get_session()
        model = self.options.model
        if result is None:
            added = [new for new in session.new if isinstance(new, model)]
            added += [
                obj
                for obj in list(session.identity_map.values())
                if isinstance(obj, model) and _added_here(obj)
            ]
            if len(added) != 1:
                raise ImproperlyConfigured(
                    f"{type(self).__name__}.perform_create() returned None and added "
                    f"{len(added)} new {model.__name__} objects; return the one it created."
                )
            return added[0]
        state = inspect(result, raiseerr=False)
        existing = state is not None and state.persistent and not _added_here(result)
        if not isinstance(result, model) or state is None or existing:
            raise ImproperlyConfigured(
                f"{type(self).__name__}.perform_create() must return a new "
                f"{model.__name__}, not {result!r}."
            )
        if state.transient:
            session.add(result)
        return result

    def _updated(self, obj: Any, result: Any) -> Any:
        if result is not None and result is not obj:
            raise ImproperlyConfigured(
                f"{type(self).__name__}.perform_update() must change the object it is given "
                "and return None (or that object)."
            )
        return obj

    def _transaction(
        self,
        operation: str,
        perform: Callable[[], Any],
        data: dict[str, Any],
        server_values: Mapping[str, Any],
        respond: Callable[[Any], Response],
    ) -> Response:
        """One transaction, committed once, rolled back on any error; the response is built
        before the commit, so nothing the client sees can fail after it."""
        session = self.get_session()
        try:
            before = self._references_before(perform)
            self._check_references(data, before, server_values)  # the body's, before any SQL
            before |= {key: data[key] for key in reference_targets(type(self)) if key in data}
            obj = perform()
            _stamp(obj, server_values)  # an overridden perform_* cannot move the row
            if operation == "create":
                self.check_object_permissions(obj)
            with session.no_autoflush:  # pre callbacks see nothing flushed, as documented
                self.run_callbacks("pre", operation, obj, data)
            _stamp(obj, server_values)
            session.flush()
            self.run_callbacks("post", operation, obj, data)
            session.flush()
            if operation != "delete":
                self._check_written(obj, server_values, before)
            self._read_back(obj, data)
            response = respond(obj)
            _commit(session)
        except BaseException as exc:
            session.rollback()
            translated = from_database_error(exc, self.options.conflict_fields)
            if translated is not None:
                raise translated from exc
            if isinstance(exc, ma.ValidationError):
                raise unprocessable(validation_messages(exc)) from exc
            raise
        self._after_commit(operation, obj, data)
        return response

    def _references_before(self, perform: Callable[[], Any]) -> dict[str, Any]:
        """The references of the item a write changes, as they were (none for a create)."""
        obj = getattr(perform, "item", None)
        targets = reference_targets(type(self))
        return {key: getattr(obj, key) for key in targets} if obj is not None else {}

    def _check_written(
        self, obj: Any, server_values: Mapping[str, Any], before: Mapping[str, Any]
    ) -> None:
        """After the flush, when foreign keys synced from relationships are known: the
        server's values still hold (a relationship set in the body or by an override
        cannot move the row), and each declared reference names a row the caller may see."""
        if obj is None:
            return
        moved = {
            key: ["Set by the server from the URL or scope; cannot be changed."]
            for key, value in server_values.items()
            if getattr(obj, key) != value
        }
        if moved:
            raise unprocessable(moved)
        targets = reference_targets(type(self))
        if targets:
            now = {key: getattr(obj, key) for key in targets}
            self._check_references(now, before, server_values)  # set other than by the body

    def _check_references(
        self, values: Mapping[str, Any], before: Mapping[str, Any], server_values: Mapping[str, Any]
    ) -> None:
        """422 for each reference in ``values`` (changed since ``before``) that names no row
        the referenced resource would show the caller."""
        errors = {}
        for key, (target, ref_key) in reference_targets(type(self)).items():
            value = values.get(key)
            if value is None or key in server_values or before.get(key, _UNSET) == value:
                continue
            if not self._visible(target, ref_key, value):
                errors[key] = ["No such item."]
        if errors:
            raise unprocessable(errors)

    def _visible(self, target: type[Resource], ref_key: str, value: Any) -> bool:
        view = target(Mount.standalone(target), "item")
        view.scope = view._resolve_scope()
        options = view.options
        column = options.column(ref_key)
        query = (
            view.get_query()
            .where(*[options.column(key) == scoped for key, scoped in view.scope.items()])
            .where(column == value)
            .with_only_columns(column)
            .limit(1)
        )
        return self.get_session().execute(query).first() is not None

    def _read_back(self, obj: Any, data: Mapping[str, Any]) -> None:
        """Expire what the database may have stored differently from what was sent, so the
        response (and its ETag) is what a GET returns afterwards: one SELECT, and only for
        a write that set such a column or re-pointed a loaded relationship."""
        if obj is None or not isinstance(obj, self.options.model):
            return
        state = inspect(obj)
        if state.deleted or state.was_deleted:
            return
        options = self.options
        stale = [key for key in data if key in options.stored_form_keys]
        stale += [
            name
            for name, keys in options.relationship_keys.items()
            if name in state.dict and not keys.isdisjoint(data)
        ]
        if stale:
            self.get_session().expire(obj, stale)

    def _after_commit(self, operation: str, obj: Any, data: dict[str, Any]) -> None:
        """Signals, then after-commit callbacks; each receiver runs on its own, and a
        failure is logged and cannot undo the commit or stop the others."""
        signal = signals.BY_OPERATION.get(operation, signals.action_performed)
        sender = type(self)
        for receiver in signal.receivers_for(sender):
            try:
                receiver(sender, resource=obj, kwargs=data, operation=operation)
            except Exception:
                self.get_session().rollback()
                current_app.logger.exception(
                    "A %s receiver failed after commit for %s", signal.name, sender.__name__
                )
        self.run_callbacks("after_commit", operation, obj, data)

    # -- extra actions ----------------------------------------------------------------------

    def _run_extra(self, extra: ExtraAction) -> Response:
        """An ``@action``: the item under every guard (or the parent chain checked), the body
        loaded with its schema, and for a writing action one transaction."""
        check_query_args(())
        obj = None
        if extra.detail:
            obj = self.get_object()
            self.check_object(obj)
            if extra.writes:
                self.check_preconditions(obj)
        else:
            self.check_parent()
        server_values = self.get_server_values(obj)
        data = self.get_request_data(extra.name, server_values) if extra.schema else {}
        method = getattr(self, extra.name)
        args = ([obj] if extra.detail else []) + ([data] if extra.schema else [])
        if not extra.writes:
            return action_response(method(*args))
        result: list[Any] = []

        def perform() -> Any:
            result.append(method(*args))
            return obj

        perform.item = obj  # type: ignore[attr-defined]
        return self._transaction(
            extra.name, perform, data, server_values, lambda _: action_response(result[0])
        )

    # -- responses ------------------------------------------------------------------------

    def item_response(self, body: Any, status: int = 200) -> Response:
        """A single-item response of ``body`` with ``status``, carrying the ``ETag`` of the
        exact bytes sent (and a 304 for a matching ``If-None-Match`` on a read)."""
        response, etag = json_with_etag(body)
        response.status_code = status
        response.set_etag(etag)
        if (
            status == 200
            and request.method in ("GET", "HEAD")
            and request.if_none_match.contains_weak(etag)  # weak comparison (RFC 9110)
        ):
            return Response(status=304, headers={"ETag": response.headers["ETag"]})
        return response

    def location(self, obj: Any) -> str | None:
        """The URL of a created item; 422 when the item has no value for the lookup field
        (nothing can name it)."""
        if not self.mount.has_item_route:
            return None
        value = getattr(obj, self.options.lookup_key)
        if value is None:
            raise unprocessable(
                {self.options.lookup_key: ["Required: it names the item in its URL."]}
            )
        values = {**self.url_kwargs, self.options.url_variable: value}
        return url_for("." + self.mount.item_endpoint, **values)


_int_positions: dict[str, tuple[tuple[int, str], ...]] = {}


def int_positions(rule: str) -> tuple[tuple[int, str], ...]:
    """(segment index, variable) of each ``<int:...>`` of a URL rule, worked out once."""
    positions = _int_positions.get(rule)
    if positions is None:
        segments = rule.rstrip("/").split("/")
        positions = _int_positions[rule] = tuple(
            (index, segment[5:-1])
            for index, segment in enumerate(segments)
            if segment.startswith("<int:")
        )
    return positions


_permission_rules: dict[type[Any], Permission | None] = {}


def permission_rule(cls: type[Resource]) -> Permission | None:
    """A class's ``permissions`` as one rule, made once per class."""
    if cls not in _permission_rules:
        try:
            _permission_rules[cls] = combine(cls.permissions)
        except TypeError as exc:
            raise ImproperlyConfigured(
                f"{cls.__name__}.permissions must list Permission classes or instances: {exc}"
            ) from None
    return _permission_rules[cls]


def restricts_rows(cls: type[Resource]) -> bool:
    """Whether the class's permissions may narrow the rows a caller sees."""
    rule = permission_rule(cls)
    return rule is not None and rule.restricts_rows()


_reference_targets: dict[type[Any], dict[str, tuple[type[Resource], str]]] = {}


def reference_targets(cls: type[Resource]) -> dict[str, tuple[type[Resource], str]]:
    """``references`` compiled once per class: column -> (resource, the column of its
    model the foreign key refers to)."""
    targets = _reference_targets.get(cls)
    if targets is None:
        targets = _reference_targets[cls] = _compile_references(cls)
    return targets


def _compile_references(cls: type[Resource]) -> dict[str, tuple[type[Resource], str]]:
    mapper = options_for(cls).mapper
    targets: dict[str, tuple[type[Resource], str]] = {}
    for key, target in dict(cls.references).items():
        resolved = cls if target == "self" else target
        if not (isinstance(resolved, type) and issubclass(resolved, Resource)):
            raise ImproperlyConfigured(
                f'{cls.__name__}.references[{key!r}] must be a Resource class or "self".'
            )
        target_tables = options_for(resolved).mapper.tables
        prop = mapper.column_attrs.get(key)
        fks = [
            fk
            for column in (prop.columns if prop is not None else [])
            for fk in getattr(column, "foreign_keys", ())
            if fk.column.table in target_tables
        ]
        if len(fks) != 1:
            raise ImproperlyConfigured(
                f"{cls.__name__}.references names {key!r}, which is not a foreign key to "
                f"{resolved.__name__}'s table."
            )
        target_mapper = options_for(resolved).mapper
        targets[key] = (resolved, target_mapper.get_property_by_column(fks[0].column).key)
    return targets


def validation_messages(exc: ma.ValidationError) -> dict[str, Any]:
    messages = exc.messages
    if isinstance(messages, dict):
        return messages
    return {"_schema": messages if isinstance(messages, list) else [messages]}


def action_response(result: Any) -> Response:
    """An extra action's return value as a response: itself, 204 for ``None``, else JSON."""
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status=204)
    return cast(Response, current_app.json.response(result))


def _added_here(obj: Any) -> bool:
    """Whether the session received ``obj`` as a new object (then flushed it, perhaps),
    rather than loading an existing row: only new objects get an insert order."""
    return inspect(obj).insert_order is not None


def _stamp(obj: Any, values: Mapping[str, Any]) -> None:
    if obj is None:
        return
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


def json_with_etag(body: Any) -> tuple[Response, str]:
    """The JSON response for ``body`` and the ETag of exactly the bytes it sends, so a
    write's If-Match check and a read's ETag agree by construction."""
    response = cast(Response, current_app.json.response(body))
    return response, hashlib.blake2b(response.get_data(), digest_size=16).hexdigest()
