"""Many-to-many, the list-of-ids field: the ids a body names checked under the target's
row policy, the set replaced inside the write unit, the linked ids dumped (see
:mod:`resources_kit.links` for the declarations, :mod:`resources_kit.linkroutes` for the
routes)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Select, delete, insert, select

from .errors import unprocessable
from .links import Link
from .options import options_for
from .policy import reachable

# -- the rows the caller may reach ---------------------------------------------------------


def target_condition(caller: Any, link: Link) -> Any:
    """The condition on the target's rows: reachable by the caller through the target
    resource's own mounts (``None``: every row is)."""
    options = options_for(link.target)
    return reachable(caller, caller.mount.registry.of(link.target), options)


def _reachable_keys(caller: Any, link: Link) -> Any:
    """A ``SELECT`` of the target keys the caller may reach, or ``None`` for all."""
    condition = target_condition(caller, link)
    return None if condition is None else select(link.target_ref).where(condition)


def _linked_reachable(caller: Any, link: Link, parent_values: Any) -> Select[Any]:
    query = select(link.parent_column, link.target_column).where(
        link.parent_column.in_(parent_values)
    )
    keys = _reachable_keys(caller, link)
    if keys is not None:
        query = query.where(link.target_column.in_(keys))
    return query


# -- the list-of-ids field ----------------------------------------------------------------


def dump_links(view: Any, objs: Sequence[Any], bodies: Sequence[dict[str, Any]]) -> None:
    """Set each link field of ``bodies`` (dumped from ``objs``) to the ids of the rows
    linked to its object that the caller may reach: one statement per field."""
    names = view.sparse_fields
    for link_field in view.options.link_fields.values():
        if names is not None and link_field.field not in names:
            continue
        link = link_field.link
        keys = [getattr(obj, link.parent_ref) for obj in objs]
        found: dict[Any, list[Any]] = {key: [] for key in keys}
        present = [key for key in keys if key is not None]
        if present:
            query = _linked_reachable(view, link, present).order_by(link.target_column)
            for parent_key, target_key in view.execute_read(query):
                found[parent_key].append(target_key)
        for key, body in zip(keys, bodies, strict=True):
            body[link_field.dump_key] = found.get(key, [])


def take_links(view: Any, write: Any) -> dict[str, list[Any]]:
    """Take the link fields out of ``write.data`` (the perform step writes columns), and
    check every id: a list of distinct ids of rows the caller may reach through the
    target resource's own routes (one statement per field), else 422 naming the field."""
    taken: dict[str, list[Any]] = {}
    if write.operation not in ("create", "update", "patch"):
        return taken
    errors: dict[str, list[str]] = {}
    for name, link_field in view.options.link_fields.items():
        if link_field.load_key not in write.data:
            continue
        values = write.data.pop(link_field.load_key)
        problem = _check_ids(view, link_field.link, values)
        if problem:
            errors[link_field.dump_key] = [problem]
        taken[name] = list(values or ())
    if errors:
        raise unprocessable(errors)
    return taken


def _check_ids(view: Any, link: Link, values: Any) -> str | None:
    if not isinstance(values, list | tuple):
        return "Must be a list of ids."
    seen: set[Any] = set()
    for value in values:
        if not isinstance(value, int | str) or isinstance(value, bool):
            return f"No such item: {value!r}."
        if value in seen:
            return f"Names {value!r} more than once."
        seen.add(value)
    check = options_for(link.target).column_checks.get(link.target_ref.key)
    for value in values:
        message = check(value) if check is not None else None
        if value is None or message:
            return f"No such item: {value!r}."
    if not values:
        return None
    query = select(link.target_ref).where(link.target_ref.in_(list(values)))
    condition = target_condition(view, link)
    if condition is not None:
        query = query.where(condition)
    found = set(view.execute_read(query).scalars())
    missing = [value for value in values if value not in found]
    return f"No such item: {missing[0]!r}." if missing else None


def restore_links(write: Any, view: Any, taken: Mapping[str, list[Any]]) -> None:
    """Put the ids back in ``write.data`` once the perform step ran: callbacks and signals
    see them in ``kwargs``."""
    for name, values in taken.items():
        write.data[view.options.link_fields[name].load_key] = values


def replace_links(view: Any, write: Any, obj: Any, taken: Mapping[str, list[Any]]) -> None:
    """Make the rows linked to ``obj`` (flushed) the ones each field names, among those
    the caller may reach; links to rows it cannot reach stay as they are."""
    session = write.session
    for name, values in taken.items():
        link = view.options.link_fields[name].link
        parent_value = getattr(obj, link.parent_ref)
        existing: set[Any] = set()
        if write.operation != "create":
            query = _linked_reachable(view, link, [parent_value])
            existing = {target for _, target in session.execute(query)}
        wanted = set(values)
        removed = existing - wanted
        if removed:
            session.execute(
                delete(link.secondary).where(
                    link.parent_column == parent_value, link.target_column.in_(removed)
                )
            )
        added = [value for value in values if value not in existing]
        if added:
            rows = [
                {link.parent_column.key: parent_value, link.target_column.key: v} for v in added
            ]
            session.execute(insert(link.secondary), rows)
        if removed or added:
            expire_link(session, obj, link)


def expire_link(session: Any, obj: Any, link: Link) -> None:
    state = sa.inspect(obj)
    if link.name in state.dict:
        session.expire(obj, [link.name])
