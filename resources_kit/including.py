"""``?include=``: related rows embedded in a list page or an item.

A resource names the relationships a client may include (``include_fields``, to any
depth: ``["students", "students.grades", "school"]``; a path allows its prefixes). Each
path is served by a registered resource of the related model, found when the router
checks its mounts: the one ``include_fields`` maps the path to, or else the first
registered resource of that model. Its row policy decides which related rows appear
(:func:`resources_kit.policy.reach`: its tenant scope, its ``visible``, and for a resource
mounted under a parent, a reachable parent row), and its list schema serializes them.

After the page (or the item) is loaded, each included level costs one statement, however
many rows the level above holds: ``SELECT related WHERE <key> IN (<keys of the rows one
level up>) AND <the related resource's row policy> ORDER BY <its default sort, then its
primary key>``; a level above with no keys costs none. A to-many relationship embeds a
list (empty when no row is reachable), a to-one an object or ``null``.
"""

from __future__ import annotations

import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import marshmallow as ma
from flask import request
from sqlalchemy import Select, select
from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import BinaryExpression

from .errors import HTTPError, ImproperlyConfigured
from .nesting import Mount
from .options import options_for
from .policy import reach, reachable
from .querying import ParsedParameter, order_terms, sort_plan, sparse_field_names


@dataclass(frozen=True)
class IncludeStep:
    """One path of ``include_fields``, resolved at registration."""

    #: ``"students.grades"``
    path: str
    #: The path one level up (``"students"``), ``""`` for the resource's own rows.
    parent: str
    #: The key the related rows are embedded under (the relationship's name).
    name: str
    relationship: RelationshipProperty[Any]
    #: The resource whose row policy and list schema the related rows get.
    resource: type[Any]
    #: Attribute of the rows one level up holding the key the related rows are found by.
    local_key: str
    #: Attribute of the related model compared with those keys.
    remote_key: str
    #: To-many (a list) or to-one (an object or ``null``).
    many: bool


_resolved: weakref.WeakKeyDictionary[Mount, dict[str, IncludeStep]] = weakref.WeakKeyDictionary()


def steps_of(mount: Mount) -> dict[str, IncludeStep]:
    """The resolved ``include_fields`` of a mount (empty when it has none)."""
    return _resolved.get(mount, {})


def check_includes(mount: Mount) -> None:
    """Resolve ``include_fields`` once every resource is registered; a path the row policy
    could not apply to is ``ImproperlyConfigured`` naming the fix."""
    cls = mount.resource
    options = options_for(cls)
    if not options.include_paths:
        return
    declared = cls.include_fields
    chosen: Mapping[str, Any] = declared if isinstance(declared, Mapping) else {}
    steps: dict[str, IncludeStep] = {}
    for path in options.include_paths:
        parent, _, name = path.rpartition(".")
        above = steps[parent].resource if parent else cls
        relationship = options_for(above).mapper.relationships[name]
        steps[path] = _step(mount, cls, path, parent, relationship, chosen.get(path))
    for path, step in steps.items():
        above = steps[step.parent].resource if step.parent else cls
        operations = ("list",) if step.parent else ("list", "detail")
        for operation in operations:
            schema = options_for(above).schemas[operation]
            keys = {field.data_key or key for key, field in schema.dump_fields.items()}
            if step.name in keys:
                raise ImproperlyConfigured(
                    f"{cls.__name__}.include_fields names {path!r}, but {type(schema).__name__} "
                    f"already has a field {step.name!r}; remove the field (the included rows "
                    "are embedded under the relationship's name) or the path."
                )
    _resolved[mount] = steps


def _step(
    mount: Mount,
    cls: type[Any],
    path: str,
    parent: str,
    relationship: RelationshipProperty[Any],
    chosen: Any,
) -> IncludeStep:
    where = f"{cls.__name__}.include_fields names {path!r}"
    model = relationship.mapper.class_
    if relationship.secondary is not None:
        raise ImproperlyConfigured(
            f"{where}, a many-to-many relationship (through {relationship.secondary}); "
            "include the association's own resource instead, or remove the path."
        )
    pairs = relationship.local_remote_pairs or []
    join = relationship.primaryjoin
    if len(pairs) != 1 or not (
        isinstance(join, BinaryExpression) and join.operator is operators.eq
    ):
        raise ImproperlyConfigured(
            f"{where}, whose join is not one column equal to another; include only "
            "relationships over a single foreign key."
        )
    if chosen is None:
        mounts = mount.registry.for_model(model)
        if not mounts:
            raise ImproperlyConfigured(
                f"{where}, but no registered resource serves {model.__name__}, so no row "
                "policy says which of its rows a caller may see; register one."
            )
        chosen = mounts[0].resource
    elif not (
        isinstance(chosen, type)
        and mount.registry.of(chosen)
        and options_for(chosen).model is model
    ):
        raise ImproperlyConfigured(
            f"{where} with {chosen!r}, which is not a registered resource of {model.__name__}."
        )
    local, remote = pairs[0]
    return IncludeStep(
        path=path,
        parent=parent,
        name=relationship.key,
        relationship=relationship,
        resource=chosen,
        local_key=relationship.parent.get_property_by_column(local).key,
        remote_key=relationship.mapper.get_property_by_column(remote).key,
        many=bool(relationship.uselist),
    )


def included_resources(mount: Mount) -> list[str]:
    """The names of the resources that write the rows an answer of ``mount`` may include
    (every registered resource of each included model)."""
    models = {step.relationship.mapper.class_ for step in steps_of(mount).values()}
    return sorted(
        {str(each.resource.name) for model in models for each in mount.registry.for_model(model)}
    )


# -- the request -------------------------------------------------------------------------


def include_names(raw: str, allowed: Sequence[str]) -> tuple[str, ...]:
    """``?include=students.grades,school`` to the paths to load, each path's prefixes
    too, parents first; a ``ValidationError`` names the paths not allowed."""
    requested = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in requested if name not in allowed]
    if not requested or unknown:
        message = f"Not allowed: {', '.join(unknown)}." if unknown else "Name at least one path."
        raise ma.ValidationError(f"{message} Allowed: {', '.join(allowed)}.")
    wanted: set[str] = set()
    for name in requested:
        steps = name.split(".")
        wanted.update(".".join(steps[: depth + 1]) for depth in range(len(steps)))
    return tuple(path for path in allowed if path in wanted)


def include_field(paths: Sequence[str]) -> ma.fields.Field[Any]:
    """The list's ``?include=`` parameter: a comma-separated list of ``paths``."""
    return ParsedParameter(
        lambda raw: include_names(raw, paths),
        multiple=True,
        metadata={
            "description": "Related rows to embed (comma-separated, or the parameter "
            f"repeated), of: {', '.join(paths)}.",
            "terms": list(paths),
        },
    )


def read_include_query(view: Any) -> tuple[str, ...] | None:
    """``?include=`` of an item read (comma-separated, or repeated); 400 naming the
    paths not allowed."""
    values = request.args.getlist("include")
    if not values:
        return None
    try:
        return include_names(",".join(values), view.options.include_paths)
    except ma.ValidationError as exc:
        raise HTTPError(
            400, "Bad query parameters: include.", errors={"include": exc.messages}
        ) from None


def use_includes(view: Any, include: tuple[str, ...] | None) -> None:
    """Take the request's includes, and split ``?fields=`` into the resource's own names
    and those of included rows (``students.name``); 400 for a dotted name whose path is
    not included, or that is no field of the included rows."""
    view.include = include
    fields = view.sparse_fields
    if fields is None or not any("." in name for name in fields):
        return
    own = tuple(name for name in fields if "." not in name)
    related: dict[str, list[str]] = {}
    for name in fields:
        if "." in name:
            path, _, field = name.rpartition(".")
            related.setdefault(path, []).append(field)
    steps = steps_of(view.mount)
    errors: list[str] = []
    picked: dict[str, tuple[str, ...]] = {}
    for path, names in related.items():
        if path not in (include or ()):
            errors.append(f"{path}.{names[0]} names {path!r}, which is not included.")
            continue
        schema = options_for(steps[path].resource).schemas["list"]
        try:
            picked[path] = sparse_field_names(",".join(names), schema)
        except ma.ValidationError as exc:
            errors.extend(f"{path}: {message}" for message in _messages(exc))
    if errors:
        raise HTTPError(400, "Bad query parameters: fields.", errors={"fields": errors})
    view.sparse_fields = own or None
    view.included_fields = picked


def _messages(exc: ma.ValidationError) -> list[str]:
    messages = exc.messages
    return [str(m) for m in messages] if isinstance(messages, list) else [str(messages)]


def embed(view: Any, objs: Sequence[Any], bodies: Sequence[dict[str, Any]]) -> None:
    """Load every included level (one statement each) and embed its rows in ``bodies``,
    the dumped ``objs``."""
    steps = steps_of(view.mount)
    picked: Mapping[str, tuple[str, ...]] = view.included_fields
    levels: dict[str, tuple[Sequence[Any], Sequence[dict[str, Any]]]] = {"": (objs, bodies)}
    for path in view.include:
        step = steps[path]
        above, above_bodies = levels[step.parent]
        keys = list(
            dict.fromkeys(key for obj in above if (key := getattr(obj, step.local_key)) is not None)
        )
        rows = related_rows(view, step, keys) if keys else []
        dumped = shown_as_listed(view, step, picked.get(path), rows)
        found: dict[Any, list[dict[str, Any]]] = {}
        for row, body in zip(rows, dumped, strict=True):
            found.setdefault(getattr(row, step.remote_key), []).append(body)
        for obj, body in zip(above, above_bodies, strict=True):
            matched = found.get(getattr(obj, step.local_key), [])
            body[step.name] = matched if step.many else (matched[0] if matched else None)
        levels[path] = (rows, dumped)


def related_rows(view: Any, step: IncludeStep, keys: Collection[Any]) -> Sequence[Any]:
    """The rows :func:`related_statement` selects: rows of the model's columns when the
    related resource's own list reads rows (``ListConfig.row_columns``: it shows them
    alike), else objects."""
    statement = related_statement(view, step, keys)
    config = options_for(step.resource).list_config
    columns = config.row_columns if config is not None else None
    if columns is None:
        return cast(Sequence[Any], view.execute_read(statement).scalars().all())
    return cast(Sequence[Any], view.read_rows(statement.with_only_columns(*columns)))


def shown_as_listed(
    view: Any, step: IncludeStep, names: tuple[str, ...] | None, rows: Sequence[Any]
) -> list[dict[str, Any]]:
    """``rows`` as the related resource's own list shows them to the caller (its
    ``serialize``: the list schema, link fields' ids), trimmed to ``names``."""
    if not rows:
        return []
    mounts = view.mount.registry.of(step.resource)
    shown = view.view_at(mounts[0]) if mounts else None
    if shown is None:  # pragma: no cover - no rows are reachable there
        return []
    shown.sparse_fields = names or None
    return list(shown.serialize(list(rows)))


def related_statement(view: Any, step: IncludeStep, keys: Collection[Any]) -> Select[Any]:
    """The related rows of ``keys`` the related resource's row policy lets the caller
    reach, in that resource's default order."""
    options = options_for(step.resource)
    mounts = view.mount.registry.of(step.resource)
    query: Select[Any] | None
    if len(mounts) == 1:
        query = reach(view, mounts[0])
    else:
        condition = reachable(view, mounts, options)
        query = None if condition is None else select(options.model).where(condition)
    if query is None:
        query = select(options.model)
    plan = sort_plan(options.default_sort, options.sort_paths, options.primary_key_paths)
    terms = [term for path, descending in plan for term in order_terms(path, descending)]
    remote = getattr(options.model, step.remote_key)
    query = query.where(remote.in_(list(keys))).order_by(*terms)
    loaders = step.resource.query_options
    return query.options(*loaders) if loaders else query
