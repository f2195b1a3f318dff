"""Where a resource is mounted, and the guarded statements built from its parent chain.

A ``Mount`` is one place a resource answers: its URL rules and its parent chain. The
guarded query of a request is ``get_query()`` of the resource, filtered by its tenant scope
and by every level of the parent chain in the URL (one statement, however deep).

Every value a guard compares with (scope values, ids in the URL, the parent's key) is a
bound parameter that reads its value, when the statement runs, from the request being
served (``bind()``). So a guarded statement can be executed as it is, anywhere in the
request, by the library or by user code; executed outside it, it fails instead of running
unscoped. And a statement's shape depends only on where the resource is mounted and which
scope columns apply: when no level overrides ``get_query()``, each shape is built once per
mount and reused, and SQLAlchemy then skips both building it and computing its cache key.

Parameter names: ``rk_<level>_<column>`` for scope values, ``rk_<level>_lookup`` for the id
in the URL, ``rk_0_parent`` for a parent key already checked; level 0 is the resource
itself, level 1 its parent, and so on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Integer, Select, bindparam, func, select
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import BindParameter

from .actions import ExtraAction
from .errors import ImproperlyConfigured, ResourcesKitError
from .options import ResourceOptions, options_for

#: Statements kept per mount, least recently used dropped first.
STATEMENTS_KEPT = 256


class GuardedView(Protocol):
    """What the statement builders need of a resource instance."""

    mount: Mount
    options: ResourceOptions
    scope: dict[str, Any]

    def get_query(self) -> Select[Any]: ...

    def visibility_clauses(self) -> list[Any]: ...


# -- values bound at execution -----------------------------------------------------------------

_values: ContextVar[Mapping[str, Any]] = ContextVar("resources_kit_guard_values")


def bind_values(values: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Make ``values`` the guard values of the statements executed until
    ``unbind_values(token)``."""
    return _values.set(values)


def unbind_values(token: Token[Mapping[str, Any]]) -> None:
    _values.reset(token)


@contextmanager
def bind(values: Mapping[str, Any]) -> Iterator[None]:
    """Make ``values`` the guard values of the statements executed inside the block."""
    token = bind_values(values)
    try:
        yield
    finally:
        unbind_values(token)


def _reader(name: str) -> Callable[[], Any]:
    def value() -> Any:
        try:
            return _values.get()[name]
        except LookupError:
            raise ResourcesKitError(
                f"The guarded query needs {name!r}: execute it inside the request that built it."
            ) from None

    return value


def guard_param(name: str) -> BindParameter[Any]:
    return bindparam(name, callable_=_reader(name))


def guard_values(views: Sequence[GuardedView], url_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The values of every guard parameter of a request (the parent key comes later)."""
    values: dict[str, Any] = {}
    for level, view in enumerate(views):
        for key, value in view.scope.items():
            values[f"rk_{level}_{key}"] = value
        lookup = url_kwargs.get(view.options.url_variable)
        if lookup is not None:
            values[f"rk_{level}_lookup"] = lookup
    return values


# -- mounts --------------------------------------------------------------------------------------


class Statements:
    """A mount's built statements, by shape; a statement derived from a kept one by a
    default hook (sorting, paging) is kept too."""

    def __init__(self) -> None:
        self._by_key: OrderedDict[Hashable, Select[Any]] = OrderedDict()
        self._kept: dict[int, Hashable] = {}  # id of a kept statement -> its key

    def get(self, key: Hashable, build: Callable[[], Select[Any]]) -> Select[Any]:
        statement = self._by_key.get(key)
        if statement is None:
            statement = build()
            self._by_key[key] = statement
            self._kept[id(statement)] = key
            if len(self._by_key) > STATEMENTS_KEPT:
                _, dropped = self._by_key.popitem(last=False)
                self._kept.pop(id(dropped), None)
        else:
            self._by_key.move_to_end(key)
        return statement

    def derive(
        self, base: Select[Any], step: Hashable, build: Callable[[], Select[Any]]
    ) -> Select[Any]:
        """``build()`` (a function of ``base`` and ``step`` only), kept when ``base`` is."""
        key = self._kept.get(id(base))
        if key is None or self._by_key.get(key) is not base:
            return build()
        return self.get((key, step), build)


@dataclass(frozen=True, eq=False)
class Mount:
    """One place a resource is mounted: its parent chain and its URL rules."""

    #: The resource class (a ``Resource`` subclass).
    resource: type[Any]
    parent: Mount | None
    #: Attribute of the child model holding the foreign key to the parent.
    parent_key: str | None
    #: Attribute of the parent model that foreign key refers to.
    parent_ref: str | None
    #: The collection rule, relative to the router's prefix.
    rule: str
    #: Endpoint prefix: the names of the chain joined by ``_`` (``teachers_students``).
    endpoint: str
    collection_methods: tuple[str, ...]
    item_methods: tuple[str, ...]
    extra_actions: tuple[ExtraAction, ...] = ()
    #: No level of the chain overrides ``get_query()`` or has permissions that narrow the
    #: rows: statements are built once per shape.
    cacheable: bool = False
    #: The scope columns PostgreSQL enforces with row-level security on this mount.
    row_level_security: tuple[str, ...] = ()
    statements: Statements = field(default_factory=Statements, repr=False)

    @classmethod
    def standalone(cls, resource: type[Any]) -> Mount:
        """A mount with no routes, for a resource used outside its URLs (references)."""
        return cls(resource, None, None, None, "", f"rk_{resource.__name__}", (), ())

    @property
    def item_rule(self) -> str:
        options = options_for(self.resource)
        return f"{self.rule}/<{options.converter}:{options.url_variable}>"

    @property
    def collection_endpoint(self) -> str:
        return f"{self.endpoint}_collection"

    @property
    def item_endpoint(self) -> str:
        return f"{self.endpoint}_item"

    @property
    def has_item_route(self) -> bool:
        return bool(self.item_methods)

    def action_rule(self, extra: ExtraAction) -> str:
        return f"{self.item_rule if extra.detail else self.rule}/{extra.url_path}"

    def action_endpoint(self, extra: ExtraAction) -> str:
        return f"{self.endpoint}_{extra.name}"

    def chain(self) -> list[Mount]:
        """This mount and its ancestors, root first."""
        mounts: list[Mount] = []
        mount: Mount | None = self
        while mount is not None:
            mounts.insert(0, mount)
            mount = mount.parent
        return mounts


def find_parent_key(
    child: type[Any], parent: type[Any], parent_field: str | None
) -> tuple[str, str]:
    """The child attribute holding the foreign key to the parent, and the parent attribute
    it refers to, found from the models."""
    child_mapper: Mapper[Any] = options_for(child).mapper
    parent_mapper: Mapper[Any] = options_for(parent).mapper
    child_model, parent_model = child_mapper.class_.__name__, parent_mapper.class_.__name__
    if parent_field is not None:
        if parent_field not in child_mapper.column_attrs:
            raise ImproperlyConfigured(
                f"{child.__name__}: parent_field={parent_field!r} is not a column attribute of "
                f"{child_model}."
            )
        columns = child_mapper.column_attrs[parent_field].columns
        fks = [
            fk
            for column in columns
            for fk in getattr(column, "foreign_keys", ())
            if fk.column.table in parent_mapper.tables
        ]
        if len(fks) != 1:
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model}.{parent_field} has no foreign key to "
                f"{parent_model}; pass parent_field= naming the column that refers to it."
            )
    else:
        fks = [
            fk
            for table in child_mapper.tables
            for fk in table.foreign_keys
            if fk.column.table in parent_mapper.tables
        ]
        if not fks:
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model} has no foreign key to {parent_model}; add "
                "one, or pass parent_field= naming the column that refers to it."
            )
        if len(fks) > 1:
            names = ", ".join(sorted(fk.parent.name for fk in fks))
            raise ImproperlyConfigured(
                f"{child.__name__}: {child_model} has {len(fks)} foreign keys to "
                f"{parent_model} ({names}); pass parent_field= to choose one."
            )
    fk = fks[0]
    return (
        child_mapper.get_property_by_column(fk.parent).key,
        parent_mapper.get_property_by_column(fk.column).key,
    )


# -- the guarded statements ------------------------------------------------------------------


def cached(
    views: Sequence[GuardedView], resolved: bool, what: Hashable, build: Callable[[], Select[Any]]
) -> Select[Any]:
    """``build()`` once per shape of the mount, when its chain allows it."""
    mount = views[0].mount
    if not mount.cacheable:
        return build()
    levels = views[:1] if resolved else views
    key = (what, resolved, tuple(tuple(view.scope) for view in levels))
    return mount.statements.get(key, build)


def scope_clauses(view: GuardedView, level: int) -> list[Any]:
    return [view.options.column(key) == guard_param(f"rk_{level}_{key}") for key in view.scope]


def guarded(views: Sequence[GuardedView], level: int, resolved: bool) -> Select[Any]:
    """``get_query()`` of the view at ``level``, its scope, and the chain above it (or the
    parent key already checked, when ``resolved``)."""
    view = views[level]
    query = view.get_query().where(*scope_clauses(view, level), *view.visibility_clauses())
    return query.where(*parent_clauses(views, level, resolved))


def parent_clauses(views: Sequence[GuardedView], level: int, resolved: bool) -> list[Any]:
    view = views[level]
    if view.mount.parent_key is None:
        return []
    foreign_key = view.options.column(view.mount.parent_key)
    if level == 0 and resolved:
        return [foreign_key == guard_param("rk_0_parent")]
    return [foreign_key == parent_reference(views, level + 1).scalar_subquery()]


def item(views: Sequence[GuardedView], level: int, resolved: bool) -> Select[Any]:
    view = views[level]
    return guarded(views, level, resolved).where(lookup_clause(view, level))


def lookup_clause(view: GuardedView, level: int) -> Any:
    return view.options.lookup_attr == guard_param(f"rk_{level}_lookup")


def parent_reference(views: Sequence[GuardedView], level: int) -> Select[Any]:
    """The item at ``level``, selecting the column the child's foreign key refers to."""
    reference = views[level - 1].mount.parent_ref
    if reference is None:  # pragma: no cover - set with every parent
        raise ImproperlyConfigured("A nested mount has no parent reference.")
    return item(views, level, False).with_only_columns(views[level].options.column(reference))


def count(query: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(query.order_by(None).subquery())


def page(query: Select[Any]) -> Select[Any]:
    """An offset page and its total in one statement: ``SELECT ..., (SELECT count(*) ...)
    ... LIMIT :rk_limit OFFSET :rk_offset``.

    The total is an uncorrelated scalar subquery, which every backend evaluates once. A
    window ``count(*) OVER ()`` would be one statement too, but it makes the database
    materialize and sort every matching row instead of the top of them: measured on
    SQLite over 1,350 rows, 1,208 µs against 321 µs for this form (page + COUNT: 324 µs).
    """
    total = count(query).scalar_subquery().label("resources_kit_total")
    return (
        query.add_columns(total)
        .limit(bindparam("rk_limit", type_=Integer))
        .offset(bindparam("rk_offset", type_=Integer))
    )


def limited(query: Select[Any]) -> Select[Any]:
    return query.limit(bindparam("rk_limit", type_=Integer))
