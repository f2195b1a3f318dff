"""The row policy: which rows of a resource's model the caller may reach, here.

For a resource at one place it is mounted, the rows a caller may reach are those of its
``get_query()`` (the narrowing a subclass writes), inside the tenant scope, under every
level of the parent chain, and inside its permissions' ``visible``. That is one rule, and
every path that reads or writes rows asks it, never a partial copy of it:

========================================  ===============================================
path                                      how the policy applies
========================================  ===============================================
list, item, total, cursor page            built on :meth:`RowPolicy.query`
a step's or an override's query           :meth:`RowPolicy.guard` (another entity: refused)
an object ``get_object()`` returned       :meth:`RowPolicy.contains`
the row a write leaves behind             :meth:`RowPolicy.contains`, after the flush
``references`` in a body                  :func:`reaches_row`: the target's policy
``"rel.col"`` filters, search and sort    :func:`related_rows`: the related model's policy
rows a collection ``@action`` creates     stamped, then checked like a create's
rows ``?include=`` embeds                 :func:`reach` (its one mount) or :func:`reachable`
========================================  ===============================================

Away from the URL (a reference, a related row), a row is reachable when some mount of its
resource would show it: its resource's scope and ``visible`` for this caller, and, for a
resource mounted under a parent, a parent row that is itself reachable the same way, up to
the root. A relationship to a model no resource serves is refused at registration unless
the resource lists it in ``public_relationships``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Select, String, false, or_, select, tuple_

from .columns import exact_equals
from .errors import ImproperlyConfigured, ResourcesKitError
from .nesting import (
    GuardedView,
    Mount,
    Place,
    cached,
    guarded,
    parent_clauses,
    parent_reference,
    scope_clauses,
)
from .options import ResourceOptions, options_for


class PolicyView(GuardedView, Protocol):
    """What the policy needs of a resource instance."""

    place: Place

    def execute_read(self, statement: Any, parameters: Any = None) -> Any: ...

    def view_at(self, mount: Mount) -> PolicyView | None: ...


@dataclass(eq=False)
class RowPolicy:
    """The rows of ``view``'s model its caller may reach at the view's place in the URL.

    ``view.row_policy`` is this object; :meth:`query` is what ``get_scoped_query()``
    returns. Its statements read their values (scope, URL ids) when they run, so they are
    built once per shape and may be executed anywhere in the request."""

    view: PolicyView

    @property
    def levels(self) -> list[Any]:
        return self.view.place.levels

    def query(self) -> Select[Any]:
        """``SELECT`` of the model restricted to the reachable rows."""
        checked = self.view.place.parent_checked
        return cached(self.levels, checked, "scoped", lambda: guarded(self.levels, 0, checked))

    def parent_statement(self) -> Select[Any]:
        """The parent in the URL, selecting the key the child's foreign key refers to:
        found only when every level above is inside its own policy."""
        return parent_reference(self.levels, 1)

    def clauses(self) -> list[Any]:
        """The policy's conditions on the model's own table, ``get_query()`` aside."""
        view = self.view
        checked = view.place.parent_checked
        return [
            *scope_clauses(view, 0),
            *view.visibility_clauses(),
            *parent_clauses(self.levels, 0, checked),
        ]

    def guard(self, query: Select[Any]) -> Select[Any]:
        """``query`` (which an overridden step may have built from anything) kept inside
        the policy: the scope, the parent chain and ``visible`` applied again. A query of
        anything but the model itself (another model, an alias of it, whose rows the
        later steps and the policy would not name) is refused."""
        options = self.view.options
        entity = query.column_descriptions[0].get("entity") if query.column_descriptions else None
        if entity is not options.model:
            raise ResourcesKitError(
                f"{type(self.view).__name__}: a list step returned a query of {entity!r}; "
                f"return one of {options.model.__name__} itself (build on "
                "get_scoped_query()), which the row policy, the filters and the sort name."
            )
        return query.where(*self.clauses())

    def contains(self, obj: Any) -> bool:
        """Whether ``obj`` is one of the rows the policy reaches (one statement)."""
        options = self.view.options
        if not isinstance(obj, options.model):
            return False
        keys = [getattr(obj, column.key) for column in options.primary_key]
        if any(key is None for key in keys):
            return False
        query = (
            self.query()
            .where(*(column == key for column, key in zip(options.primary_key, keys, strict=True)))
            .with_only_columns(*options.primary_key)
            .limit(1)
        )
        return self.view.execute_read(query).first() is not None

    def outside(self, objs: Sequence[Any]) -> list[Any]:
        """Those of ``objs`` that are not rows the policy reaches: :meth:`contains` for
        many rows, in one statement (a bulk write's check)."""
        options = self.view.options
        keyed: dict[tuple[Any, ...], Any] = {}
        missing = []
        for obj in objs:
            keys = tuple(getattr(obj, column.key) for column in options.primary_key)
            if not isinstance(obj, options.model) or any(key is None for key in keys):
                missing.append(obj)
            else:
                keyed[keys] = obj
        if keyed:
            wanted = [keys[0] for keys in keyed] if len(options.primary_key) == 1 else list(keyed)
            query = (
                self.query()
                .where(_key(options.primary_key).in_(wanted))
                .with_only_columns(*options.primary_key)
            )
            for row in self.view.execute_read(query):
                keyed.pop(tuple(row), None)
        return missing + list(keyed.values())


def _key(columns: Sequence[Any]) -> Any:
    return columns[0] if len(columns) == 1 else tuple_(*columns)


# -- away from the URL: references and related rows ----------------------------------------


def reach(caller: PolicyView, mount: Mount) -> Select[Any] | None:
    """The rows of ``mount``'s model ``caller`` may reach through that mount under any
    parent: ``None`` when that is every row."""
    view = caller.view_at(mount)
    options = options_for(mount.resource)
    if view is None:  # the caller may not read there, or has no scope there
        return select(options.model).where(false())
    clauses = [exact_equals(options.column(key), value) for key, value in view.scope.items()]
    clauses += view.visibility_clauses()
    if mount.parent is not None and mount.parent_key is not None and mount.parent_ref:
        above = reach(caller, mount.parent)
        foreign_key = options.column(mount.parent_key)
        if above is not None:
            referred = options_for(mount.parent.resource).column(mount.parent_ref)
            clauses.append(foreign_key.in_(above.with_only_columns(referred)))
        elif _nullable(options, mount.parent_key):
            clauses.append(foreign_key.is_not(None))
    if not clauses and not mount.narrowed:
        return None
    return view.get_query().where(*clauses)


def reachable(caller: PolicyView, mounts: Sequence[Mount], options: ResourceOptions) -> Any:
    """A condition on ``options.model``'s rows: reachable through one of ``mounts``
    (``None``: every row is)."""
    reaches = [reach(caller, mount) for mount in mounts]
    if not mounts:
        return false()
    if any(found is None for found in reaches):
        return None
    keys = _key(options.primary_key)
    return or_(
        *(
            keys.in_(found.with_only_columns(*options.primary_key))
            for found in reaches
            if found is not None
        )
    )


def reaches_row(caller: PolicyView, resource: type[Any], key: str, value: Any) -> bool:
    """Whether the row of ``resource`` whose ``key`` is ``value`` is one the caller may
    reach through some mount of ``resource`` (a ``references`` check)."""
    options = options_for(resource)
    column = options.column(key)
    condition = reachable(caller, caller.mount.registry.of(resource), options)
    query = select(column).where(exact_equals(column, value))
    if condition is not None:
        query = query.where(condition)
    return caller.execute_read(query.limit(1)).first() is not None


def reachable_values(
    caller: PolicyView, resource: type[Any], key: str, values: Sequence[Any]
) -> set[Any]:
    """Those of ``values`` that name (by ``key``) a row of ``resource`` the caller may
    reach through some mount of it: :func:`reaches_row` for many values, in one
    statement (a bulk write's ``references``)."""
    options = options_for(resource)
    column = options.column(key)
    distinct = list(dict.fromkeys(values))
    condition = reachable(caller, caller.mount.registry.of(resource), options)
    if isinstance(getattr(column, "type", None), String):  # byte-exact, as reaches_row
        match = or_(*(exact_equals(column, value) for value in distinct))
    else:
        match = column.in_(distinct)
    query = select(column).where(match)
    if condition is not None:
        query = query.where(condition)
    return set(caller.execute_read(query).scalars())


def related_rows(caller: PolicyView, model: type[Any], public: bool) -> Any:
    """The condition on ``model``'s rows a filter, search or sort through a relationship
    may match: those some resource of ``model`` lets the caller reach (``None``: all,
    for a relationship declared public)."""
    if public:
        return None
    mounts = caller.mount.registry.for_model(model)
    if not mounts:
        return false()
    return reachable(caller, mounts, options_for(mounts[0].resource))


def check_paths(mount: Mount, public: Sequence[str], targets: Sequence[type[Any]]) -> None:
    """Refuse, at registration, a path the policy could not apply to: a relationship in a
    list allow-list whose model no registered resource serves (unless declared public),
    and a ``references`` target that is not registered."""
    options = options_for(mount.resource)
    name = mount.resource.__name__
    for attribute, paths in (
        ("filter_fields", options.filter_paths),
        ("sort_fields", options.sort_paths),
        ("search_fields", options.search_paths),
    ):
        for path in paths.values():
            relationship = path.relationship
            if relationship is None or relationship.key in public:
                continue
            if not mount.registry.for_model(relationship.mapper.class_):
                raise ImproperlyConfigured(
                    f"{name}.{attribute} names {path.key!r}, but no registered resource serves "
                    f"{relationship.mapper.class_.__name__}, so no row policy says which of its "
                    "rows a caller may match; register one, or list "
                    f"{relationship.key!r} in {name}.public_relationships."
                )
    for target in targets:
        if not mount.registry.of(target):
            raise ImproperlyConfigured(
                f"{name}.references names {target.__name__}, which is not registered on the "
                "router; register it, so its row policy can check the rows a body names."
            )


def _nullable(options: ResourceOptions, key: str) -> bool:
    column = options.mapper.column_attrs[key].columns[0]
    return bool(getattr(column, "nullable", True))
