"""``Resource``: verb binding, the request's place in the URL chain, the caller, the row
policy's hooks. Every action is a short chain of public methods. Two kinds:

- *hooks* a subclass overrides: ``get_query``, ``get_object``, ``get_schema``,
  ``get_request_data``, ``perform_create`` / ``perform_update`` / ``perform_delete``,
  ``serialize``, ``get_write_response``, ``check_preconditions``;
- *guards* it may call but never override (``ImproperlyConfigured`` at class creation):
  ``dispatch_request``, ``get_scoped_query``, ``guard_query``, ``check_parent``,
  ``check_object``, ``get_server_values`` and ``save``. They hold the row policy and the
  transaction, so that no override can widen what a request reaches or half-write it.

The class attributes are :class:`~resources_kit.options.ResourceConfig`'s, the write half
:class:`~resources_kit.writing.WriteHooks`, the row policy :mod:`resources_kit.policy`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any, cast

from flask import Response, current_app, request
from flask.views import MethodView
from sqlalchemy import Result, Select, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, scoped_session
from werkzeug.exceptions import HTTPException

from .actions import ACTIONS, ExtraAction
from .bulk import bulk_handler
from .conditional import check_if_match
from .database import (
    database_failure,
    outside_engine,
    read_engine,
    row_level_security_settings,
)
from .errors import HTTPError, ImproperlyConfigured, not_found, problem_response
from .guards import GuardsConfig
from .including import check_includes
from .linking import dump_links
from .linkroutes import link_handler
from .links import check_link_fields
from .nesting import (
    GUARD_VALUES,
    PARENT_KEY,
    UNSET,
    Caller,
    Mount,
    Place,
    cached,
    lookup_clause,
)
from .options import GUARDS, ResourceConfig, ResourceOptions, options_for
from .permissions import READ_ACTIONS, refusal
from .policy import RowPolicy, check_paths, related_rows
from .querying import FieldPath
from .representation import Representation
from .writing import WriteHooks


@lru_cache(maxsize=1024)
def int_segments(rule: str) -> tuple[tuple[int, str], ...]:
    """The ``<int:...>`` segments of a URL rule: (position, variable), read once per
    rule (each request then compares only those segments of its path)."""
    return tuple(
        (index, segment[5:-1])
        for index, segment in enumerate(rule.rstrip("/").split("/"))
        if segment.startswith("<int:")
    )


class Resource(GuardsConfig, WriteHooks, Representation, ResourceConfig, MethodView):
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

    #: Methods that hold a guard; a subclass defining one is refused at class creation.
    __guards__ = GUARDS

    @classmethod
    def as_view(cls, name: str, *class_args: Any, **class_kwargs: Any) -> Any:
        """Flask's ``View.as_view``, a new instance per request and ``decorators``
        applied, without ``ensure_sync``'s check per request: ``dispatch_request`` is a
        guard, never a coroutine."""

        def view(**kwargs: Any) -> Any:
            return view.view_class(*class_args, **class_kwargs).dispatch_request(**kwargs)  # type: ignore[attr-defined]

        if cls.decorators:
            view.__name__ = name
            view.__module__ = cls.__module__
            for decorator in cls.decorators:
                view = decorator(view)
        view.view_class = cls  # type: ignore[attr-defined]
        view.__name__ = name
        view.__doc__ = cls.__doc__
        view.__module__ = cls.__module__
        view.methods = cls.methods  # type: ignore[attr-defined]
        view.provide_automatic_options = cls.provide_automatic_options  # type: ignore[attr-defined]
        return view

    @classmethod
    def check_mount(cls, mount: Mount) -> None:
        """Refuse, once every resource is registered, a path the row policy could not
        apply to (see :mod:`resources_kit.policy`)."""
        targets = [target for target, _ in options_for(cls).references.values()]
        check_paths(mount, cls.public_relationships, targets)
        if mount.link is None and options_for(cls).link_fields:
            check_link_fields(mount)
        check_includes(mount)

    def __init__(self, mount: Mount, kind: str, extra: ExtraAction | None = None) -> None:
        #: Where this resource is mounted (its parent chain).
        self.mount: Mount = mount
        #: ``"collection"`` or ``"item"``: which of the mount's URLs was requested.
        self.kind = kind
        #: The extra action this view serves (``@action``), if any.
        self.extra = extra
        self.options: ResourceOptions = mount.options
        #: The request's place in the URL chain (every level's view, the URL's values).
        self.place: Place = Place([self], {})
        #: The column values every query of this request is filtered by.
        self.scope: dict[str, Any] = {}
        #: The action being served: ``"list"``, ``"retrieve"``, ``"create"``, ...
        self.action: str | None = None
        #: Schema field names asked for with ``?fields=`` (``None``: all).
        self.sparse_fields: tuple[str, ...] | None = None
        #: Paths ``?include=`` asked for, parents first (``None``: none).
        self.include: tuple[str, ...] | None = None
        #: Included path -> the field names ``?fields=`` picks of its rows.
        self.included_fields: dict[str, tuple[str, ...]] = {}
        #: Who makes the request; shared by every view of it.
        self.caller = Caller()
        #: The rows of the model this caller may reach here.
        self.row_policy: RowPolicy = RowPolicy(self)
        self._visibility: list[Any] | None = None

    @property
    def url_kwargs(self) -> Mapping[str, Any]:
        """The URL variables of the request (every level of the nesting)."""
        return self.place.url_kwargs

    # -- verb binding: the one place HTTP methods meet actions ---------------------------

    def dispatch_request(self, **url_kwargs: Any) -> Response:
        """Check the URL, resolve the permissions and the scope of every level (403 before
        any query when the scope is missing), then run the action with the request's
        guard values bound."""
        self.caller.connections = {}
        try:
            handler = self._handler()
            self.place = Place([self], url_kwargs)
            self.caller.source = self  # its get_current_user() speaks for every level
            self._check_url(url_kwargs)
            self._enter()
            level = self
            while level.mount.parent is not None:
                level = self._view(level.mount.parent, self.place)
                level._enter()
                self.place.levels.append(level)
            if self.guard_plan is not None:  # production guards: see guards.py
                handler = self.guard_plan.wrap(self, handler)
            token = GUARD_VALUES.set(self.place.values)  # what the guarded statements read
            try:
                if not any(view.mount.row_level_security for view in self.place.levels):
                    return handler()
                with row_level_security_settings(self):
                    return handler()
            finally:
                GUARD_VALUES.reset(token)
        except HTTPException as exc:
            return problem_response(exc)
        except DBAPIError as exc:  # a read's: a write translates its own in run_write
            failure = database_failure(exc, self.get_session())
            if failure is None:
                raise
            return problem_response(failure)
        finally:
            self._close_connections()

    def _close_connections(self) -> None:
        """Return the connections of the request's reads outside the session to the pool,
        their transactions committed: a read has nothing to commit, and a ``ROLLBACK``
        makes psycopg drop every statement it had prepared on the connection, so that
        PostgreSQL would plan each read again on every request. One whose commit or
        close fails is rolled back or dropped by the pool."""
        held, self.caller.connections = self.caller.connections or {}, None
        for connection in held.values():
            try:
                if connection.in_transaction() and not connection.invalidated:
                    connection.commit()
            except SQLAlchemyError:
                pass  # closing rolls it back, or the pool drops it
            finally:
                connection.close()

    def _handler(self) -> Callable[[], Response]:
        if self.mount.link is not None:  # a many-to-many's routes: see linkroutes.py
            found = link_handler(self, "GET" if request.method == "HEAD" else request.method)
            if found is None:
                raise HTTPError(405, f"{request.method} is not supported here.")
            return cast(Callable[[], Response], found)
        if self.extra is not None:
            self.action = self.extra.name
            return self.run_action
        method = "GET" if request.method == "HEAD" else request.method
        self.action = ACTIONS.get((self.kind, method))
        if self.options.bulk and self.kind == "collection":
            bulk = bulk_handler(self, method)  # an array body: see resources_kit.bulk
            if bulk is not None:
                return bulk
        handler = getattr(self, self.action, None) if self.action else None
        if handler is None:
            # The router registers only supported methods; this is a direct as_view() use.
            raise HTTPError(405, f"{request.method} is not supported here.")
        return cast(Callable[[], Response], handler)

    def _check_url(self, url_kwargs: dict[str, Any]) -> None:
        """One URL per item: an integer written another way (``0001``), or a value no row
        could have (past the column's range, not an Enum's value, not a canonical date) is
        missing. Converts the lookup of every level."""
        rule = request.url_rule
        segments = int_segments(rule.rule) if rule is not None else ()
        if segments:
            given = request.path.rstrip("/").split("/")
            for index, name in segments:
                written = given[index] if index < len(given) else None
                if written != str(url_kwargs.get(name)):
                    raise not_found()
        mount: Mount | None = self.mount
        while mount is not None:
            options = mount.options
            value = url_kwargs.get(options.url_variable)
            if value is not None and options.lookup_convert is not None:
                try:
                    value = url_kwargs[options.url_variable] = options.lookup_convert(value)
                except ValueError:
                    raise not_found() from None
            if value is not None and options.lookup_bounds is not None:
                if not options.lookup_bounds[0] <= value <= options.lookup_bounds[1]:
                    raise not_found()
            elif value is not None and options.lookup_check and options.lookup_check(value):
                raise not_found()
            mount = mount.parent

    def _enter(self) -> None:
        """This level's permission to read (or act) and its scope, bound as the guard
        values ``rk_<level>_<column>`` and ``rk_<level>_lookup``."""
        rule = self.options.permission
        if rule is not None and not rule.has_permission(self):
            raise refusal(self, rule)  # before the scope: no caller is a 401
        self.scope = self._resolve_scope()
        level = len(self.place.levels) if self.place.levels[0] is not self else 0
        values = self.place.values
        for key, value in self.scope.items():
            values[f"rk_{level}_{key}"] = value
        lookup = self.place.url_kwargs.get(self.options.url_variable)
        if lookup is not None:
            values[f"rk_{level}_lookup"] = lookup

    def _view(self, mount: Mount, place: Place) -> Resource:
        """A view of this request's caller at ``mount``, reading (a parent level, a
        reference's target, a related model's resource)."""
        view = cast(Resource, mount.resource(mount, "item"))
        view.place, view.caller, view.action = place, self.caller, "retrieve"
        return view

    def view_at(self, mount: Mount) -> Resource | None:
        """A view of this request's caller at another mount; ``None`` when the caller may
        not read there or has no scope there."""
        view = self._view(mount, Place([], self.url_kwargs))
        view.place.levels.append(view)
        try:
            view._enter()
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
        """The caller: :meth:`get_current_user` of the request's own resource, called once
        per request and shared by the views of every parent level."""
        if self.caller.user is UNSET:
            self.caller.user = (self.caller.source or self).get_current_user()
        return self.caller.user

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
            if key not in self.options.columns:  # a misspelled column must not widen it
                self.options.column(key)
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
        """The engine this request reads from, or ``None`` for the session's own: the bind
        ``RESOURCES_KIT_READ_REPLICA`` names, for a list or retrieve, unless the client
        asks for ``Prefer: read-your-writes``. Called once per request."""
        key = current_app.config.get("RESOURCES_KIT_READ_REPLICA")
        if key is None:
            return None
        return read_engine(key, self.action in READ_ACTIONS and self.extra is None)

    def execute_read(
        self, statement: Any, parameters: Mapping[str, Any] | None = None
    ) -> Result[Any]:
        """Run a read of this request on the engine :meth:`get_read_bind` picks. The
        library's reads all go through here; use it for reads of your own in hooks."""
        if self.caller.read_bind is UNSET:
            self.caller.read_bind = self.get_read_bind()
        session = self.get_session()
        if self.caller.read_bind is None:
            return session.execute(statement, parameters)
        bind = {"bind": self.caller.read_bind}
        return session.execute(statement, parameters, bind_arguments=bind)

    def read_rows(self, statement: Any, parameters: Mapping[str, Any] | None = None) -> Any:
        """The rows (not objects) of a read of this request. When nothing the session
        holds could change the answer (see :func:`~resources_kit.database.outside_engine`)
        and :meth:`execute_read` is the library's own, the statement runs on a pooled
        connection of its own, outside the ORM session, as hand-written Core code reads;
        else through :meth:`execute_read`."""
        if self.caller.read_bind is UNSET:
            self.caller.read_bind = self.get_read_bind()
        engine = None
        if type(self).execute_read is Resource.execute_read:
            engine = outside_engine(self.get_session(), self.options.mapper, self.caller.read_bind)
        if engine is None:
            return self.execute_read(statement, parameters).all()
        options = {"compiled_cache": self.mount.compiled}
        held = self.caller.connections
        if held is None:  # not serving a request (a job's read): a connection of its own
            with engine.begin() as connection:  # committed: see _close_connections
                return connection.execute(statement, parameters, execution_options=options).all()
        kept = held.get(engine)
        if kept is None:  # one per request: one transaction, one reset on return
            kept = held[engine] = engine.connect()
        return kept.execute(statement, parameters, execution_options=options).all()

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
        relationship = cast(Any, path.relationship)
        public = relationship.key in self.public_relationships
        return related_rows(self, relationship.mapper.class_, public)

    def check_parent(self) -> None:
        """404 unless every level of the parent chain in the URL is reachable under its
        own row policy (one statement). Later queries compare with the parent's key."""
        if self.mount.parent is None or self.place.parent_checked:
            return
        statement = cached(self.place.levels, False, "parent", self.row_policy.parent_statement)
        rows = self.read_rows(statement)
        if not rows:
            raise not_found()
        row = rows[0]
        self.place.parent_checked, self.place.parent_key = True, row[0]
        self.place.values[PARENT_KEY] = row[0]

    def get_object(self) -> Any:
        """The item the URL names, inside :attr:`row_policy`; 404 when none. A write with
        ``If-Match``, and every delete, reads it ``FOR UPDATE``, so the ETag check and the
        write are atomic."""
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
            body = self.get_schema("detail").dump(obj)
            if self.options.link_fields:  # the representation a GET's ETag is of
                dump_links(self, [obj], [body])
            check_if_match(body, required=self.require_if_match)
