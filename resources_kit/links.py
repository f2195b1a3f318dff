"""Many-to-many, declared: the rows a relationship with a ``secondary`` table links, as
routes and as a list-of-ids field of the parent's body (``linking`` runs the field,
``linkroutes`` the routes).

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

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import marshmallow as ma
import sqlalchemy as sa
from sqlalchemy import Select, select
from sqlalchemy.orm import Mapper, RelationshipProperty

from .errors import ImproperlyConfigured

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
