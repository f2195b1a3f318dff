"""The guarded statements of a request: ``get_query()``, the scope and the parent chain.

Values (scope, URL ids, the parent's key) are bound parameters, so a statement's shape
depends only on where the resource is mounted and which scope columns apply. When no level
of the chain overrides ``get_query()``, each shape is built once and reused: SQLAlchemy
then skips both building the statement and computing its cache key, which together cost
more than running a small query on SQLite. A chain with an overridden ``get_query()`` is
built afresh for every request, since the override may depend on it.

Parameter names: ``rk_<level>_<column>`` for scope values, ``rk_<level>_lookup`` for the
id in the URL, ``rk_0_parent`` for a parent key already checked; level 0 is the resource
itself, level 1 its parent, and so on.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Integer, Select, bindparam, func, select

if TYPE_CHECKING:
    from .resource import Resource
    from .routing import Mount

_cache: dict[Hashable, Select[Any]] = {}
_CACHE_SIZE = 2048
_default_query: dict[Mount, bool] = {}


def uses_default_query(mount: Mount) -> bool:
    """Whether no level of the mount's chain overrides ``get_query()``."""
    known = _default_query.get(mount)
    if known is None:
        from .resource import Resource

        known = _default_query[mount] = all(
            level.resource.get_query is Resource.get_query for level in mount.chain()
        )
    return known


def cached(
    views: list[Resource], resolved: bool, what: Hashable, build: Callable[[], Select[Any]]
) -> Select[Any]:
    """``build()`` once per shape; ``what=None`` (a shape with per-request parts, such as
    filters) builds every time."""
    if what is None or not uses_default_query(views[0].mount):
        return build()
    levels = views[:1] if resolved else views
    key = (views[0].mount, what, resolved, tuple(tuple(view.scope) for view in levels))
    statement = _cache.get(key)
    if statement is None:
        statement = build()
        if len(_cache) < _CACHE_SIZE:
            _cache[key] = statement
    return statement


def params(
    views: list[Resource], *, lookup: bool, parent_value: Any, resolved: bool
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for level, view in enumerate(views[:1] if resolved else views):
        for key, value in view.scope.items():
            values[f"rk_{level}_{key}"] = value
        if level or lookup:
            values[f"rk_{level}_lookup"] = view.url_kwargs[view.options.url_variable]
    if resolved:
        values["rk_0_parent"] = parent_value
    return values


def guarded(views: list[Resource], level: int, resolved: bool) -> Select[Any]:
    view = views[level]
    query = view.get_query()
    for key in view.scope:
        query = query.where(view.options.column(key) == bindparam(f"rk_{level}_{key}"))
    mount = view.mount
    if mount.parent_key is not None:
        foreign_key = view.options.column(mount.parent_key)
        if level == 0 and resolved:
            query = query.where(foreign_key == bindparam("rk_0_parent"))
        else:
            query = query.where(foreign_key == parent_reference(views, level + 1).scalar_subquery())
    return query


def item(views: list[Resource], level: int, resolved: bool) -> Select[Any]:
    view = views[level]
    return guarded(views, level, resolved).where(
        view.options.lookup_attr == bindparam(f"rk_{level}_lookup")
    )


def parent_reference(views: list[Resource], level: int) -> Select[Any]:
    """The item at ``level``, selecting the column the child's foreign key refers to."""
    reference = cast(str, views[level - 1].mount.parent_ref)  # set with every parent
    return item(views, level, False).with_only_columns(views[level].options.column(reference))


def count(counted: Select[Any]) -> Select[Any]:
    return select(func.count()).select_from(counted.order_by(None).subquery())


def page(base: Select[Any], counted: Select[Any]) -> Select[Any]:
    """An offset page and its total in one statement: ``SELECT ..., (SELECT count(*) ...)
    ... LIMIT :rk_limit OFFSET :rk_offset``.

    The total is an uncorrelated scalar subquery, which every backend evaluates once. A
    window ``count(*) OVER ()`` would be one statement too, but it makes the database
    materialize and sort every matching row instead of the top of them: measured on
    SQLite over 1,350 rows, 1,208 µs against 321 µs for this form (page + COUNT: 324 µs).
    """
    total = count(counted).scalar_subquery().label("resources_kit_total")
    return (
        base.add_columns(total)
        .limit(bindparam("rk_limit", type_=Integer))
        .offset(bindparam("rk_offset", type_=Integer))
    )


def cursor_page(base: Select[Any]) -> Select[Any]:
    return base.limit(bindparam("rk_limit", type_=Integer))
