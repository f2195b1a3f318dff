"""Where a resource is mounted, and the guarded statements built from its parent chain.

A ``Mount`` is one place a resource answers: its URL rules and its parent chain. The
guarded query of a request is ``get_query()`` of the resource, filtered by its tenant scope
and by every level of the parent chain in the URL (one statement, however deep).

Every value a guard compares with (scope values, ids in the URL, the parent's key) is a
bound parameter that reads its value, when the statement runs, from the request being
served (``GUARD_VALUES``, which ``dispatch_request`` sets). So a guarded statement can be
executed as it is, anywhere in the request, by the library or by user code; executed
outside it, it fails instead of running unscoped. And a statement's shape depends only on
where the resource is mounted and which scope columns apply: when no level overrides
``get_query()``, each shape is built once per mount and reused, and SQLAlchemy then skips
both building it and computing its cache key.

Parameter names: ``rk_<level>_<column>`` for scope values, ``rk_<level>_lookup`` for the id
in the URL, ``rk_0_parent`` for a parent key already checked; level 0 is the resource
itself, level 1 its parent, and so on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Select, bindparam
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.util import LRUCache

from .actions import ExtraAction
from .columns import exact_equals
from .errors import ImproperlyConfigured, ResourcesKitError
from .options import ResourceOptions, foreign_keys, options_for

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

#: The guard values of the statements executing in this context (the request's).
GUARD_VALUES: ContextVar[Mapping[str, Any]] = ContextVar("resources_kit_guard_values")


def bind_values(values: Mapping[str, Any]) -> Token[Mapping[str, Any]]:
    """Make ``values`` the guard values of the statements executed until
    ``unbind_values(token)``."""
    return GUARD_VALUES.set(values)


def unbind_values(token: Token[Mapping[str, Any]]) -> None:
    GUARD_VALUES.reset(token)


def _reader(name: str) -> Callable[[], Any]:
    def value() -> Any:
        try:
            return GUARD_VALUES.get()[name]
        except LookupError:
            raise ResourcesKitError(
                f"The guarded query needs {name!r}: execute it inside the request that built it."
            ) from None

    return value


def guard_param(name: str) -> BindParameter[Any]:
    return bindparam(name, callable_=_reader(name))


def guard_values(views: Sequence[GuardedView], url_kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The values of every guard parameter of a place (the parent key comes later): what
    ``Resource.dispatch_request`` binds level by level, for a place built elsewhere (a
    job's)."""
    values: dict[str, Any] = {}
    for level, view in enumerate(views):
        for key, value in view.scope.items():
            values[f"rk_{level}_{key}"] = value
        lookup = url_kwargs.get(view.options.url_variable)
        if lookup is not None:
            values[f"rk_{level}_lookup"] = lookup
    return values


#: The guard parameter of the parent key, once ``check_parent`` found it.
PARENT_KEY = "rk_0_parent"


#: Not worked out yet (the caller, the engine reads go to).
UNSET: Any = object()


@dataclass(eq=False)
class Caller:
    """Who makes the request, worked out once and shared by every view of it (each level
    of a nested URL, a reference's target)."""

    #: What ``get_current_user()`` returned.
    user: Any = UNSET
    #: The engine the request reads from (``None``: the session's own).
    read_bind: Any = UNSET
    #: The view the request is for: whose ``get_current_user()`` names the caller.
    source: Any = None
    #: Engine -> the connection the request's reads of rows outside the session use
    #: (``Resource.read_rows``), while ``dispatch_request`` serves it; ``None`` outside.
    connections: dict[Any, Any] | None = None


@dataclass(eq=False)
class Place:
    """A request's place in the URL chain: the view of each level (level 0 is the resource
    served, then its parent, up to the root), the URL's variables, and the values every
    guarded statement of the request is bound to."""

    levels: list[Any]
    url_kwargs: Mapping[str, Any]
    values: dict[str, Any] = field(default_factory=dict)
    #: Whether the parent chain was checked (``check_parent``): later statements then
    #: compare with the parent's key directly.
    parent_checked: bool = False
    #: The key of the parent in the URL, once checked.
    parent_key: Any = None


class Registry:
    """Every place a router mounted a resource: what references and relationship paths
    look a model's rows up in."""

    def __init__(self) -> None:
        self.mounts: list[Mount] = []

    def of(self, resource: type[Any]) -> list[Mount]:
        """The mounts of ``resource``'s own routes (a link mount reaches nothing more)."""
        return [m for m in self.mounts if m.resource is resource and m.link is None]

    def for_model(self, model: type[Any]) -> list[Mount]:
        return [m for m in self.mounts if options_for(m.resource).model is model and m.link is None]


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


#: How many compiled statements of one mount's row reads are kept.
COMPILED_KEPT = 64


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
    #: The resource overrides ``get_query()``: the rows it reaches are narrowed beyond the
    #: scope and the parent chain.
    narrowed: bool = False
    #: A written row must be checked against the row policy after the flush: the server
    #: stamps the scope and the parent key itself, so only a narrowed ``get_query()`` or a
    #: ``visible`` can leave it outside.
    rechecks_writes: bool = False
    #: Every mount of the router this one belongs to.
    registry: Registry = field(default_factory=Registry, repr=False)
    #: For a link mount (``Router.register_links``): the many-to-many relationship of the
    #: parent whose rows this mount lists, links and unlinks (a ``links.Link``).
    link: Any = None
    statements: Statements = field(default_factory=Statements, repr=False)
    #: SQLAlchemy's compiled forms of the mount's reads of rows (``read_rows``): two
    #: mounts whose statements have the same shape would otherwise share one compiled
    #: form, and the one that did not compile it would map every result's columns to
    #: its own statement's on every execution.
    compiled: Any = field(default_factory=lambda: LRUCache(COMPILED_KEPT), repr=False)
    #: The resource's compiled configuration.
    options: ResourceOptions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", options_for(self.resource))

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
        fks = foreign_keys(child_mapper.column_attrs[parent_field].columns, parent_mapper)
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
    return [
        exact_equals(view.options.column(key), guard_param(f"rk_{level}_{key}"))
        for key in view.scope
    ]


def guarded(views: Sequence[GuardedView], level: int, resolved: bool) -> Select[Any]:
    """``get_query()`` of the view at ``level``, its scope, and the chain above it (or the
    parent key already checked, when ``resolved``)."""
    view = views[level]
    query = view.get_query().where(*scope_clauses(view, level), *view.visibility_clauses())
    return query.where(*parent_clauses(views, level, resolved))


def parent_clauses(views: Sequence[GuardedView], level: int, resolved: bool) -> list[Any]:
    view = views[level]
    link = view.mount.link
    if link is not None:  # the rows linked to the parent, through the secondary table
        if level == 0 and resolved:
            return [link.clause(guard_param(PARENT_KEY))]
        return [link.clause(parent_reference(views, level + 1).scalar_subquery())]
    if view.mount.parent_key is None:
        return []
    foreign_key = view.options.column(view.mount.parent_key)
    if level == 0 and resolved:
        return [foreign_key == guard_param(PARENT_KEY)]
    if view.mount.parent_ref == views[level + 1].options.lookup_key:
        # The URL holds the very value the foreign key refers to: compare with it, and
        # ask that the parent exist inside its own policy. An EXISTS stops at the first
        # row; a scalar subquery reads every row it might return, to refuse a second.
        return [
            exact_equals(foreign_key, guard_param(f"rk_{level + 1}_lookup")),
            item(views, level + 1, False).exists(),
        ]
    return [foreign_key == parent_reference(views, level + 1).scalar_subquery()]


def item(views: Sequence[GuardedView], level: int, resolved: bool) -> Select[Any]:
    view = views[level]
    return guarded(views, level, resolved).where(lookup_clause(view, level))


def lookup_clause(view: GuardedView, level: int) -> Any:
    return exact_equals(view.options.lookup_attr, guard_param(f"rk_{level}_lookup"))


def parent_reference(views: Sequence[GuardedView], level: int) -> Select[Any]:
    """The item at ``level``, selecting the column the child's foreign key refers to."""
    reference = views[level - 1].mount.parent_ref
    if reference is None:  # pragma: no cover - set with every parent
        raise ImproperlyConfigured("A nested mount has no parent reference.")
    return item(views, level, False).with_only_columns(views[level].options.column(reference))
