"""``Resource``: configuration, verb binding, the caller, and the row policy's hooks.

Every action is a short chain of public methods. Two kinds:

- *hooks* a subclass overrides: ``get_query``, ``get_object``, ``get_schema``,
  ``get_request_data``, ``perform_create`` / ``perform_update`` / ``perform_delete``,
  ``serialize``, ``get_write_response``, ``check_preconditions``;
- *guards* it may call but never override (``ImproperlyConfigured`` at class creation):
  ``dispatch_request``, ``get_scoped_query``, ``guard_query``, ``check_parent``,
  ``check_object``, ``get_server_values`` and ``save``. They hold the row policy and the
  transaction, so that no override can widen what a request reaches or half-write it.

The write path is :mod:`resources_kit.writing`; the row policy :mod:`resources_kit.policy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, cast

import marshmallow as ma
from flask import Response, current_app, request, url_for
from flask.views import MethodView
from sqlalchemy import Result, Select, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, scoped_session
from werkzeug.exceptions import HTTPException

from .actions import ACTIONS, VERB_METHODS, ExtraAction
from .conditional import check_if_match, item_response
from .database import read_engine, row_level_security_settings
from .errors import HTTPError, ImproperlyConfigured, not_found, problem_response
from .nesting import Mount, Place, bind, cached, check_url, guard_values, lookup_clause
from .options import ResourceOptions, options_for
from .parsing import check_query_args
from .permissions import READ_ACTIONS, Caller, Permission, refusal
from .policy import RowPolicy, check_paths, related_rows
from .querying import FieldPath, SortPlan, sparse_field_names
from .writing import Write, load_body, run_write

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
    "view_at",
    "related_rows",
)


class Resource(MethodView):
    """A JSON resource over one SQLAlchemy model.

    Compose it with action mixins and register it on a :class:`~resources_kit.Router`::

        class TeacherResource(ListMixin, RetrieveMixin, CreateMixin, Resource):
            name = "teachers"
            model = Teacher
            schema = TeacherSchema

        api = Router(app, url_prefix="/api")
        api.register(TeacherResource)

    Every read and write stays inside :attr:`row_policy`: :meth:`get_query` (narrow it
    there) plus the tenant scope plus the whole parent chain plus ``visible``.
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
    #: Relationships of the allow-lists whose rows every caller may match (no resource's
    #: row policy applies to them); any other needs a registered resource of its model.
    public_relationships: ClassVar[Sequence[str]] = ()
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
    #: A write naming a row outside that resource's row policy for the caller (another
    #: tenant's, hidden by ``visible``, or missing) is a 422.
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
                    f"{cls.__name__} overrides {guard}(), which guards the row policy or the "
                    "transaction; override a hook instead (see Extending in the docs): "
                    "get_query() to narrow, get_object(), perform_*()."
                )

    @classmethod
    def check_configuration(cls) -> None:
        """Check and compile the class's configuration; the router calls it at
        registration, and a mistake raises ``ImproperlyConfigured`` naming the fix.

        Cooperative: a mixin placed after ``Resource`` in the MRO is checked too."""
        options_for(cls)
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()

    @classmethod
    def check_mount(cls, mount: Mount) -> None:
        """Refuse, once every resource is registered, a path the row policy could not
        apply to (see :mod:`resources_kit.policy`)."""
        targets = [target for target, _ in options_for(cls).references.values()]
        check_paths(mount, cls.public_relationships, targets)

    def __init__(self, mount: Mount, kind: str, extra: ExtraAction | None = None) -> None:
        #: Where this resource is mounted (its parent chain).
        self.mount = mount
        #: ``"collection"`` or ``"item"``: which of the mount's URLs was requested.
        self.kind = kind
        #: The extra action this view serves (``@action``), if any.
        self.extra = extra
        self.options: ResourceOptions = options_for(type(self))
        #: The request's place in the URL chain (every level's view, the URL's values).
        self.place = Place([self], {})
        #: The column values every query of this request is filtered by.
        self.scope: dict[str, Any] = {}
        #: The action being served: ``"list"``, ``"retrieve"``, ``"create"``, ...
        self.action: str | None = None
        #: Schema field names asked for with ``?fields=`` (``None``: all).
        self.sparse_fields: tuple[str, ...] | None = None
        #: The caller, shared by every view of the request.
        self.caller = Caller()
        #: The rows of the model this caller may reach here.
        self.row_policy = RowPolicy(self)
        self._visibility: list[Any] | None = None

    @property
    def url_kwargs(self) -> Mapping[str, Any]:
        """The URL variables of the request (every level of the nesting)."""
        return self.place.url_kwargs

    # -- verb binding: the one place HTTP methods meet actions ---------------------------

    def dispatch_request(self, **url_kwargs: Any) -> Response:
        """Resolve the scope of every level (403 before any query when it is missing),
        then run the action with the request's guard values bound."""
        try:
            handler = self._handler()
            check_url(self.mount, url_kwargs)
            self.place = Place([self], url_kwargs)
            self._check_action_permission()  # before the scope: no caller is a 401
            self.scope = self._resolve_scope()
            while self.place.levels[-1].mount.parent is not None:
                self.place.levels.append(self._parent_view(self.place.levels[-1].mount.parent))
            self.place.values = guard_values(self.place.levels, url_kwargs)
            with bind(self.place.values), row_level_security_settings(self):
                return handler()
        except HTTPException as exc:
            return problem_response(exc)

    def _handler(self) -> Callable[[], Response]:
        if self.extra is not None:
            self.action = self.extra.name
            return self.run_action
        method = "GET" if request.method == "HEAD" else request.method
        self.action = ACTIONS.get((self.kind, method))
        handler = getattr(self, self.action, None) if self.action else None
        if handler is None:
            # The router registers only supported methods; this is a direct as_view() use.
            raise HTTPError(405, f"{request.method} is not supported here.")
        return cast(Callable[[], Response], handler)

    def _parent_view(self, mount: Mount) -> Resource:
        view = cast(Resource, mount.resource(mount, "item"))
        view.place, view.caller = self.place, self.caller
        view.action = "retrieve"  # a child is reachable only through a parent one may read
        view._check_action_permission()
        view.scope = view._resolve_scope()
        return view

    def view_at(self, mount: Mount) -> Resource | None:
        """A view of this request's caller, reading at another mount (a reference's
        target, a related model's resource); ``None`` when the caller may not read there
        or has no scope there."""
        view = cast(Resource, mount.resource(mount, "item"))
        view.place = Place([view], self.url_kwargs)
        view.caller, view.action = self.caller, "retrieve"
        try:
            view._check_action_permission()
            view.scope = view._resolve_scope()
        except HTTPException:
            return None
        return view

    # -- the caller and permissions ---------------------------------------------------------

    def get_current_user(self) -> Any:
        """The caller, from the app (Flask-Login's ``current_user``, Flask-JWT-Extended's
        identity...), or ``None`` when the request carries no valid credentials. Called
        at most once per request, only when a permission asks."""
        return None

    def current_user(self) -> Any:
        """The caller, as :meth:`get_current_user` said once for the whole request."""
        return self.caller.user(self.get_current_user)

    def _check_action_permission(self) -> None:
        rule = self.options.permission
        if rule is not None and not rule.has_permission(self):
            raise refusal(self, rule)

    def visibility_clauses(self) -> list[Any]:
        """The conditions of this resource's permissions on the rows the caller may see."""
        if self._visibility is None:
            rule = self.options.permission
            clause = rule.visible(self) if rule is not None else None
            self._visibility = [] if clause is None else [clause]
        return self._visibility

    def check_object_permissions(self, obj: Any) -> None:
        """403 (401 without a caller) unless the permissions allow this change of ``obj``."""
        rule = self.options.permission
        if rule is not None and not rule.has_object_permission(self, obj):
            raise refusal(self, rule, obj)

    # -- scope and the query path ---------------------------------------------------------

    def get_base_query_kwargs(self) -> Mapping[str, Any] | None:
        """Column values applied as filters to every query and stamped on created rows.
        Default: none; ``TenantScopeMixin`` requires an override."""
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
        """The session of every statement: ``session`` or Flask-SQLAlchemy's."""
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

        By default: the bind named by ``RESOURCES_KIT_READ_REPLICA`` for a list or
        retrieve, unless the client asks for ``Prefer: read-your-writes``; every write,
        and every read inside one, uses the primary. Called once per request."""
        return read_engine(self.action in READ_ACTIONS and self.extra is None)

    def execute_read(
        self, statement: Any, parameters: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        """Run a read of this request on the engine :meth:`get_read_bind` picks. The
        library's reads all go through here; use it for reads of your own in hooks."""
        bind = self.caller.read_bind(self.get_read_bind)
        session = self.get_session()
        if bind is None:
            return session.execute(statement, parameters)
        return session.execute(statement, parameters, bind_arguments={"bind": bind})

    def get_query(self) -> Select[Any]:
        """The unscoped base of every read and write: narrow it here (``return
        super().get_query().where(...)``); the narrowing is part of the row policy. Build
        on :meth:`get_scoped_query`, never on this, when you execute a query yourself."""
        return select(self.options.model)

    def get_scoped_query(self) -> Select[Any]:
        """The row policy as a query: :meth:`get_query` plus the tenant scope plus the whole
        parent chain of the URL plus ``visible``. Its values are bound parameters read
        when it runs, so it can be executed as it is anywhere in the request."""
        return self.row_policy.query()

    def guard_query(self, query: Select[Any]) -> Select[Any]:
        """``query`` kept inside the row policy (again): for a query an overridden step
        returned, which may not have been built on :meth:`get_scoped_query`."""
        return self.row_policy.guard(query)

    def related_rows(self, path: FieldPath) -> Any:
        """The condition on the related rows a ``"rel.col"`` filter, search or sort may
        match: those the related model's resources let this caller reach."""
        relationship = path.relationship
        if relationship is None:
            return None
        public = relationship.key in self.public_relationships
        return related_rows(self, relationship.mapper.class_, public)

    def check_parent(self) -> None:
        """404 unless every level of the parent chain in the URL is reachable under its
        own row policy (one statement). Later queries compare with the parent's key."""
        if self.mount.parent is None or self.place.parent_checked:
            return
        statement = cached(self.place.levels, False, "parent", self.row_policy.parent_statement)
        row = self.execute_read(statement).first()
        if row is None:
            raise not_found()
        self.place.resolve_parent(row[0])

    def get_object(self) -> Any:
        """The item the URL names, inside :attr:`row_policy`; 404 when none.

        A write with ``If-Match``, and every delete, reads it ``FOR UPDATE``: the row stays
        locked until the transaction ends, so the ETag check and the write are atomic."""
        options = self.query_options
        query = cached(
            self.place.levels,
            self.place.parent_checked,
            "object",
            lambda: self.get_scoped_query().where(lookup_clause(self, 0)).options(*options),
        )
        locking = request.method != "GET" and (request.if_match or request.method == "DELETE")
        if locking and self.action != "retrieve":
            # Lock the resource's own rows only: PostgreSQL refuses FOR UPDATE on the
            # nullable side of an outer join that joined eager loading adds.
            query = query.with_for_update(of=self.options.model)
        result = self.execute_read(query)
        obj = (result.unique() if options else result).scalar_one_or_none()
        if obj is None:
            raise not_found()
        return obj

    def check_object(self, obj: Any) -> None:
        """404 unless ``obj`` is inside the row policy (checked in one statement after an
        overridden :meth:`get_object`; the default found it there in SQL); for an action
        that changes it, 403 unless the permissions allow."""
        if type(self).get_object is not Resource.get_object and not self.row_policy.contains(obj):
            raise not_found()
        if self.action not in READ_ACTIONS and (self.extra is None or self.extra.writes):
            self.check_object_permissions(obj)

    def check_preconditions(self, obj: Any) -> None:
        """``If-Match`` on PUT, PATCH and DELETE: 412 unless it names the current ETag
        (or ``*``); 428 when it is missing and ``require_if_match`` is set."""
        if request.if_match or self.require_if_match:
            check_if_match(self.get_schema("detail").dump(obj), required=self.require_if_match)

    # -- schemas and serialization --------------------------------------------------------

    def get_schema(self, operation: str) -> ma.Schema:
        """The schema instance for ``"list"``, ``"detail"``, ``"create"``, ``"update"``,
        ``"patch"`` or an extra action's name; trimmed to ``?fields=`` for list and detail."""
        if self.sparse_fields is None or operation not in ("list", "detail"):
            return self.options.schemas[operation]
        return self.options.sparse_schema(operation, self.sparse_fields)

    def read_sparse_fields(self, operation: str) -> None:
        """Read ``?fields=`` for the ``operation`` schema; 400 naming unknown fields."""
        values = request.args.getlist("fields")  # comma-separated, or repeated
        if values:
            raw = ",".join(values)
            try:
                self.sparse_fields = sparse_field_names(raw, self.options.schemas[operation])
            except ma.ValidationError as exc:
                raise HTTPError(
                    400, "Bad query parameters: fields.", errors={"fields": exc.messages}
                ) from None

    def serialize(self, obj_or_objs: Any) -> Any:
        """The JSON-able body of one object (detail schema) or a list (list schema)."""
        if isinstance(obj_or_objs, list | tuple):
            return self.get_schema("list").dump(obj_or_objs, many=True)
        return self.get_schema("detail").dump(obj_or_objs)

    def sort_plan(self, args: Mapping[str, Any]) -> SortPlan:
        """The full order of a list (``[]`` for a resource without lists)."""
        get_list_config = getattr(self, "get_list_config", None)
        return get_list_config().sorting.get_plan(args) if get_list_config else []

    # -- writes ---------------------------------------------------------------------------

    def get_server_values(self, obj: Any = None) -> dict[str, Any]:
        """Columns the server sets: the scope and, when nested, the parent's key (checked
        first, so a create under a missing parent is a 404 before the body is read)."""
        values = dict(self.scope)
        key = self.mount.parent_key
        if key is not None:
            if obj is None:
                self.check_parent()
                values[key] = self.place.parent_key
            else:
                values[key] = getattr(obj, key)
        return values

    def get_request_data(self, operation: str, server_values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body loaded with the operation's schema (``partial`` for a patch),
        checked against the columns, then the server's values (never changed: 422)."""
        return load_body(self, operation, server_values)

    def perform_create(self, data: dict[str, Any]) -> Any:
        """Build the new object and add it to the session. Returning ``None`` is fine when
        exactly one new object of the model was added."""
        obj = self.options.model(**data)
        self.get_session().add(obj)
        return obj

    def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
        """Change ``obj`` in place. Return nothing (or ``obj``)."""
        for key, value in data.items():
            setattr(obj, key, value)

    def perform_delete(self, obj: Any) -> None:
        """Delete ``obj`` (default: ``session.delete``); override to archive instead."""
        self.get_session().delete(obj)

    def run_callbacks(self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]) -> None:
        """Run the ``<phase>_<operation>_callbacks``; ``CallbackMixin`` provides them."""

    def get_write_response(self, operation: str, obj: Any) -> Response:
        """The success response of a write, built before the commit: 201 with the item and
        ``Location`` for a create, 204 for a delete, 200 with the item otherwise."""
        if operation == "delete":
            return Response(status=204)
        response = item_response(self.serialize(obj), 201 if operation == "create" else 200)
        location = self.location(obj) if operation == "create" else None
        if location is not None:
            response.headers["Location"] = location
        return response

    def save(self, write: Write) -> Response:
        """Run ``write`` as one transaction (see :mod:`resources_kit.writing`)."""
        return run_write(self, write)

    def item_response(self, body: Any, status: int = 200) -> Response:
        """``body`` with its ``ETag``; 304 for a GET whose ``If-None-Match`` names it."""
        return item_response(body, status)

    def location(self, obj: Any) -> str | None:
        """The URL of a created item; 422 when the item has no value for the lookup field."""
        if not self.mount.has_item_route:
            return None
        value = getattr(obj, self.options.lookup_key)
        if value is None:
            raise HTTPError(
                422,
                "The request body failed validation; see 'errors'.",
                errors={self.options.lookup_key: ["Required: it names the item in its URL."]},
            )
        values = {**self.url_kwargs, self.options.url_variable: value}
        return url_for("." + self.mount.item_endpoint, **values)

    # -- extra actions ----------------------------------------------------------------------

    def run_action(self) -> Response:
        """An ``@action``: the item inside the row policy (or the parent chain checked),
        the body loaded with its schema, and for a writing action one :class:`Write`."""
        extra = cast(ExtraAction, self.extra)
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
        if not extra.writes:
            return extra.respond(getattr(self, extra.name)(*self._action_args(obj, data)))
        return self.save(Write(extra.name, data, server_values, self._perform_action, obj))

    def _action_args(self, obj: Any, data: dict[str, Any]) -> list[Any]:
        extra = cast(ExtraAction, self.extra)
        return ([obj] if extra.detail else []) + ([data] if extra.schema else [])

    def _perform_action(self, write: Write) -> Any:
        write.result = getattr(self, write.operation)(*self._action_args(write.item, write.data))
        return write.item


def permission_rule(cls: type[Resource]) -> Permission | None:
    """A class's ``permissions`` as one rule, made once per class."""
    return options_for(cls).permission


def restricts_rows(cls: type[Resource]) -> bool:
    """Whether the class's permissions may narrow the rows a caller sees."""
    rule = permission_rule(cls)
    return rule is not None and rule.restricts_rows()
