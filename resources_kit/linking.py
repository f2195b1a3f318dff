"""Many-to-many: the rows a relationship with a ``secondary`` table links, as routes and
as a list-of-ids field of the parent's body.

- ``Router.register_links(BookResource, "tags", TagResource)`` mounts, under every mount
  of ``BookResource``, ``GET /books/<id>/tags`` (``TagResource``'s list, restricted to
  the rows linked to that book), ``PUT /books/<id>/tags/<tag>`` (link) and ``DELETE``
  (unlink). The list is ``TagResource``'s row policy plus one more level of the parent
  chain: the link (an ``IN`` over the secondary table, see ``nesting.parent_clauses``).
- ``link_fields = {"tag_ids": ("tags", TagResource)}`` on ``BookResource`` makes the
  schema field ``tag_ids`` (a list of ids) replace the set of linked rows on create,
  update and patch, and dump the ids of the linked rows.

Both ends stay inside the caller's row policies: the parent under its own (404), every
target row as the target resource's own routes would reach it (``policy.reachable``;
404 in a URL, 422 in a body). Links to rows the caller cannot reach are neither shown nor
changed. A link or unlink is one write (``writing.run_write``) of the parent, with the
operation ``"link"`` or ``"unlink"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

import marshmallow as ma
import sqlalchemy as sa
from flask import Response, current_app
from sqlalchemy import Select, delete, insert, select
from sqlalchemy.orm import Mapper, RelationshipProperty

from .errors import ImproperlyConfigured, not_found, unprocessable
from .guards import EXTENSION as GUARDS
from .parsing import check_query_args

#: The operations of a link and an unlink: what callbacks and signals call them.
LINK_OPERATIONS = ("link", "unlink")


@dataclass(frozen=True, eq=False)
class Link:
    """A relationship with a ``secondary`` table, from a parent model to a target
    resource's model."""

    #: The relationship's name on the parent model (``"tags"``).
    name: str
    relationship: RelationshipProperty[Any]
    #: The resource whose rows the relationship links.
    target: type[Any]
    secondary: sa.Table
    #: The secondary table's column naming the parent, and the parent attribute it
    #: refers to.
    parent_column: sa.Column[Any]
    parent_ref: str
    #: The secondary table's column naming the target, and the target's column it
    #: refers to.
    target_column: sa.Column[Any]
    target_ref: Any

    def linked(self, parent_value: Any) -> Select[Any]:
        """The targets' keys linked to the parent whose key is ``parent_value``."""
        return select(self.target_column).where(self.parent_column == parent_value)

    def clause(self, parent_value: Any) -> Any:
        """The condition on the target's rows: linked to that parent."""
        return self.target_ref.in_(self.linked(parent_value))


def compile_link(owner: str, parent_model: type[Any], name: str, target: Any) -> Link:
    """``parent_model.name`` as a :class:`Link` to ``target``'s rows; a relationship
    without a plain ``secondary`` table, or to another model, is ``ImproperlyConfigured``."""
    mapper: Mapper[Any] = sa.inspect(parent_model)
    relationship = mapper.relationships.get(name) if isinstance(name, str) else None
    if relationship is None:
        raise ImproperlyConfigured(
            f"{owner}: {parent_model.__name__} has no relationship {name!r}; name the "
            "many-to-many relationship (one with a secondary table)."
        )
    target_model = getattr(target, "model", None)
    if not (isinstance(target, type) and hasattr(target, "get_scoped_query")) or (
        target_model is None
    ):
        raise ImproperlyConfigured(
            f"{owner}: the target of {name!r} must be a Resource class, not {target!r}."
        )
    secondary = relationship.secondary
    if not isinstance(secondary, sa.Table):
        raise ImproperlyConfigured(
            f"{owner}: {parent_model.__name__}.{name} has no secondary table; links are for "
            "a many-to-many relationship (relationship(secondary=...)). Nest a one-to-many "
            "child with register(..., parent=...) instead."
        )
    if relationship.mapper.class_ is not target_model:
        raise ImproperlyConfigured(
            f"{owner}: {parent_model.__name__}.{name} links {relationship.mapper.class_.__name__}"
            f" rows, but {target.__name__} serves {target_model.__name__}; name a resource of "
            f"{relationship.mapper.class_.__name__}."
        )
    pairs = relationship.synchronize_pairs
    target_pairs = relationship.secondary_synchronize_pairs or []
    if len(pairs) != 1 or len(target_pairs) != 1:
        raise ImproperlyConfigured(
            f"{owner}: {parent_model.__name__}.{name} joins on composite keys; a link needs "
            "one column to each side in the secondary table."
        )
    (parent_key_column, parent_column), (target_key_column, target_column) = (
        pairs[0],
        target_pairs[0],
    )
    target_mapper: Mapper[Any] = sa.inspect(target_model)
    target_ref = getattr(target_model, target_mapper.get_property_by_column(target_key_column).key)
    return Link(
        name=name,
        relationship=relationship,
        target=target,
        secondary=secondary,
        parent_column=cast(sa.Column[Any], parent_column),
        parent_ref=mapper.get_property_by_column(parent_key_column).key,
        target_column=cast(sa.Column[Any], target_column),
        target_ref=target_ref,
    )


@dataclass(frozen=True, eq=False)
class LinkField:
    """A schema field holding the ids of the rows a link relationship links."""

    link: Link
    #: The schema field's name, the key it loads into, and the key it dumps as.
    field: str
    load_key: str
    dump_key: str


def compile_link_fields(
    cls: type[Any], mapper: Mapper[Any], schemas: Mapping[str, ma.Schema]
) -> dict[str, LinkField]:
    """``cls.link_fields`` compiled (schema field -> :class:`LinkField`)."""
    declared = getattr(cls, "link_fields", None) or {}
    compiled: dict[str, LinkField] = {}
    for field_name, spec in dict(declared).items():
        where = f"{cls.__name__}.link_fields[{field_name!r}]"
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ImproperlyConfigured(
                f"{where} must be a (relationship name, target resource) pair, not {spec!r}."
            )
        link = compile_link(where, mapper.class_, spec[0], spec[1])
        found = [s.fields[field_name] for s in schemas.values() if field_name in s.fields]
        if not found:
            raise ImproperlyConfigured(
                f"{where}: no schema of {cls.__name__} has a field {field_name!r}; declare "
                f"it, e.g. {field_name} = fields.List(fields.Integer())."
            )
        if not all(isinstance(field, ma.fields.List) for field in found):
            raise ImproperlyConfigured(
                f"{where}: the schema field {field_name!r} must be a fields.List of the "
                f"{link.target.__name__} ids."
            )
        field = found[0]
        compiled[field_name] = LinkField(
            link=link,
            field=field_name,
            load_key=field.attribute or field_name,
            dump_key=field.data_key or field_name,
        )
    return compiled


def check_link_fields(mount: Any) -> None:
    """At the router's check: every target of ``link_fields`` is registered, so its row
    policy can check the ids a body names."""
    for link_field in mount.options.link_fields.values():
        target = link_field.link.target
        if not mount.registry.of(target):
            raise ImproperlyConfigured(
                f"{mount.resource.__name__}.link_fields[{link_field.field!r}] names "
                f"{target.__name__}, which is not registered on the router; register it, so "
                "its row policy can check the ids a body names."
            )


# -- the rows the caller may reach ---------------------------------------------------------


def _reachable(caller: Any, link: Link) -> Any:
    """The condition on the target's rows: reachable by the caller through the target
    resource's own mounts (``None``: every row is)."""
    from .options import options_for
    from .policy import reachable

    options = options_for(link.target)
    return reachable(caller, caller.mount.registry.of(link.target), options)


def _reachable_keys(caller: Any, link: Link) -> Any:
    """A ``SELECT`` of the target keys the caller may reach, or ``None`` for all."""
    condition = _reachable(caller, link)
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
    from .options import options_for

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
    condition = _reachable(view, link)
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
            _expire(session, obj, link)


def _expire(session: Any, obj: Any, link: Link) -> None:
    state = sa.inspect(obj)
    if link.name in state.dict:
        session.expire(obj, [link.name])


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
    from .writing import Write

    check_query_args(())
    view.caller.read_bind = None  # a write reads the primary
    link: Link = view.mount.link
    parent_view = view.place.levels[1]
    parent_view.action = operation
    rule = parent_view.options.permission
    if rule is not None and not rule.has_permission(parent_view):
        from .permissions import refusal

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
    from .nesting import item

    levels = view.place.levels
    statement = item(levels, 1, False)
    parent = levels[1].execute_read(statement).scalar_one_or_none()
    if parent is None:
        raise not_found()
    return parent


def _target_key(view: Any, link: Link) -> Any:
    """The key the secondary table stores for the target the URL names, when the caller
    may reach that row through the target resource's own routes; 404 otherwise."""
    from .columns import exact_equals

    options = view.options
    lookup = view.url_kwargs[options.url_variable]
    query = select(link.target_ref).where(exact_equals(options.lookup_attr, lookup))
    condition = _reachable(view, link)
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
            _expire(session, parent, link)
    else:
        if session.execute(delete(link.secondary).where(*match)).rowcount:
            _expire(session, parent, link)
    return parent


def check_link_mount(mount: Any) -> None:
    """A link mount's target must be registered elsewhere on the router: its own routes
    say which of its rows a caller may reach."""
    if not mount.registry.of(mount.resource):
        raise ImproperlyConfigured(
            f"register_links: register {mount.resource.__name__} on the router first; its "
            "own routes' row policy says which rows may be linked."
        )
