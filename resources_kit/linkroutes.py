"""Many-to-many, the routes ``Router.register_links`` mounts: the linked rows' list is the
target's list (the link is one more level of the parent chain, see
``nesting.parent_clauses``); ``PUT`` links and ``DELETE`` unlinks, each one write of the
parent through the write unit."""

from __future__ import annotations

from functools import partial
from typing import Any

from flask import Response, current_app
from sqlalchemy import delete, insert, select

from .columns import exact_equals
from .errors import not_found
from .guards import EXTENSION as GUARDS
from .linking import expire_link, target_condition
from .links import Link
from .nesting import item
from .parsing import check_query_args
from .permissions import refusal
from .writing import Write

# -- link and unlink routes ----------------------------------------------------------------


def link_handler(view: Any, method: str) -> Any:
    """The handler of a request to a link mount: the target's list, a link or an unlink;
    ``None`` for another method."""
    if view.kind == "collection":
        if method != "GET" or not callable(getattr(view, "list", None)):
            return None
        view.action = "list"
        return view.list
    operation = {"PUT": "link", "DELETE": "unlink"}.get(method)
    if operation is None:
        return None
    # The target row is only read (as the target's own routes would show it); the change
    # is the parent's, whose permissions decide it.
    view.action = "retrieve"
    return partial(change_link, view, operation)


def change_link(view: Any, operation: str) -> Response:
    """``PUT`` (link) or ``DELETE`` (unlink) of the target the URL names to the parent the
    URL names: both inside the caller's policies (404), the parent's permissions for
    ``operation`` (403), one write of the parent. 204; both are idempotent."""
    check_query_args(())
    view.caller.read_bind = None  # a write reads the primary
    link: Link = view.mount.link
    parent_view = view.place.levels[1]
    parent_view.action = operation
    rule = parent_view.options.permission
    if rule is not None and not rule.has_permission(parent_view):
        raise refusal(parent_view, rule)
    parent = _load_parent(view)
    target_value = _target_key(view, link)
    parent_view.check_object_permissions(parent)
    data = {"relationship": link.name, "target": target_value}
    write = Write(operation, data, {}, partial(_perform, link, parent, target_value), parent)
    write.stays_reachable = False  # the parent's columns do not change
    response: Response = parent_view.save(write)
    guards = current_app.extensions.get(GUARDS)
    if guards is not None and response.status_code < 400:
        guards.committed(view)  # the target's answers under the parent changed too
    return response


def _load_parent(view: Any) -> Any:
    """The parent the URL names, inside its policy and every level above (one
    statement); 404 when none."""
    levels = view.place.levels
    statement = item(levels, 1, False)
    parent = levels[1].execute_read(statement).scalar_one_or_none()
    if parent is None:
        raise not_found()
    return parent


def _target_key(view: Any, link: Link) -> Any:
    """The key the secondary table stores for the target the URL names, when the caller
    may reach that row through the target resource's own routes; 404 otherwise."""
    options = view.options
    lookup = view.url_kwargs[options.url_variable]
    query = select(link.target_ref).where(exact_equals(options.lookup_attr, lookup))
    condition = target_condition(view, link)
    if condition is not None:
        query = query.where(condition)
    row = view.execute_read(query.limit(1)).first()
    if row is None:
        raise not_found()
    return row[0]


def _perform(link: Link, parent: Any, target_value: Any, write: Any) -> Any:
    session = write.session
    parent_value = getattr(parent, link.parent_ref)
    match = (link.parent_column == parent_value, link.target_column == target_value)
    if write.operation == "link":
        exists = session.execute(select(link.parent_column).where(*match).limit(1)).first()
        if exists is None:
            values = {link.parent_column.key: parent_value, link.target_column.key: target_value}
            session.execute(insert(link.secondary).values(values))
            expire_link(session, parent, link)
    else:
        if session.execute(delete(link.secondary).where(*match)).rowcount:
            expire_link(session, parent, link)
    return parent
