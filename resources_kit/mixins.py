"""Action mixins: each adds one operation as a short chain of public steps. They define
actions, never HTTP verbs; ``Resource.dispatch_request`` binds verbs to them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

import marshmallow as ma
from flask import Response, request
from sqlalchemy import Select

from .callbacks import CallbackMixin
from .conditional import json_response
from .errors import ImproperlyConfigured, not_found
from .including import include_field, use_includes
from .nesting import cached, lookup_clause
from .options import ResourceOptions, options_for
from .pagination import PAGINATIONS, CursorPagination, OffsetPagination, Page, Pagination
from .parsing import check_query_args, parse_query
from .querying import Filtering, Sorting, sort_spec, sparse_fields_field
from .representation import Representation, reads_plain_attributes
from .resource import Resource
from .writing import CreateMixin, DeleteMixin, PatchMixin, UpdateMixin

__all__ = [
    "CreateMixin",
    "DeleteMixin",
    "ListConfig",
    "ListMixin",
    "ModelResource",
    "PatchMixin",
    "RetrieveMixin",
    "UpdateMixin",
]

if TYPE_CHECKING:
    _Base = Resource
else:
    _Base = object

#: The list steps a resource may override; overriding any turns on the second guard.
LIST_HOOKS = ("get_list_query", "filter_list_query", "sort_list_query")


@dataclass(frozen=True)
class ListConfig:
    """A resource class's list pieces, made once at registration."""

    filtering: Filtering
    sorting: Sorting
    pagination: Pagination
    #: Every query parameter of the list: strictness, parsing and OpenAPI all read it.
    schema: ma.Schema
    #: Parameter -> why it is refused here (a feature the resource has not enabled).
    disabled: Mapping[str, str]
    #: The query steps are the library's own: statements are kept per shape, and the
    #: query needs no second guard.
    default_chain: bool
    #: The model's columns, when a page may be read as rows of them rather than as
    #: objects (see :func:`row_columns`); ``None`` otherwise.
    row_columns: tuple[Any, ...] | None = None
    #: The page's own statement checks the parent chain (a row of it is under a
    #: reachable parent), so ``check_parent`` runs only for an empty page: the library's
    #: own query steps and pagination, which read nothing of the parent before the page.
    parent_in_page: bool = False


class ListMixin(_Base):
    """``GET`` on the collection: a page of items (see *List queries* in the docs).

    ``list()`` = :meth:`parse_list_args` -> :meth:`check_parent` -> :meth:`get_list_query`
    -> :meth:`filter_list_query` -> :meth:`sort_list_query` -> :meth:`paginate_list_query`
    -> :meth:`list_response`. Override any step; when one of the query steps is
    overridden, the scope and the parent chain are applied again to what it returns.
    """

    #: ``OffsetPagination`` (``?limit=&offset=``, with a total), ``CursorPagination``
    #: (keyset pages, no count), a subclass of ``Pagination``, or ``"offset"``/``"cursor"``.
    pagination: ClassVar[str | type[Pagination]] = "offset"
    #: Reads ``?filters=`` and ``?search=``; replace with a ``Filtering`` subclass.
    filtering: ClassVar[type[Filtering]] = Filtering
    #: Reads ``?sort=``; replace with a ``Sorting`` subclass.
    sorting: ClassVar[type[Sorting]] = Sorting
    #: The resource's own query parameters (name -> marshmallow field), parsed with the
    #: built-in ones and passed to every list step in ``args``.
    list_args: ClassVar[Mapping[str, ma.fields.Field[Any]]] = {}

    @classmethod
    def check_configuration(cls) -> None:
        # After Resource in some MROs (see Resource.check_configuration): then nothing
        # follows that has the method.
        """Compile the list pieces at registration (``ImproperlyConfigured`` naming the fix)."""
        next_check = getattr(super(), "check_configuration", None)
        if next_check is not None:
            next_check()
        cls.get_list_config()

    @classmethod
    def compile_list_config(cls, options: ResourceOptions) -> ListConfig:
        """The list pieces, made once, when the class's options are compiled."""
        return _compile_list(cls, options)

    @classmethod
    def get_list_config(cls) -> ListConfig:
        """The list pieces (``options_for(cls).list_config``)."""
        return cast(ListConfig, options_for(cls).list_config)

    def list(self) -> Response:
        """The list action: the chain of steps in the class docstring. With the library's
        own steps, the parent chain is checked inside the page's statement, and on its
        own only when the page is empty (a missing parent, or no rows under it)."""
        args = self.parse_list_args()
        config = self.options.list_config
        if not config.parent_in_page:
            self.check_parent()
        query = self.get_list_query(args)
        query = self.filter_list_query(query, args)
        query = self.sort_list_query(query, args)
        if not config.default_chain:
            query = self.guard_query(query)  # whatever an overridden step built
        page = self.paginate_list_query(query, args)
        if config.parent_in_page and not page.items:
            self.check_parent()  # 404, or truly an empty page
        return self.list_response(page)

    def parse_list_args(self) -> dict[str, Any]:
        """The query string parsed with the list's arguments schema (400 naming every bad
        or unknown parameter); also reads ``?fields=`` and ``?include=``."""
        config = self.options.list_config
        args = parse_query(config.schema, config.disabled)
        args.setdefault("sort", config.sorting.default)  # the order, sortable or not
        self.sparse_fields = args.get("fields")
        if self.options.include_paths and ("include" in args or "fields" in args):
            use_includes(self, args.get("include"))
        return args

    def get_list_query(self, args: Mapping[str, Any]) -> Select[Any]:
        """:meth:`get_scoped_query` (the row policy) with the resource's loader options."""
        options = self.query_options
        return cached(
            self.place.levels,
            self.place.parent_checked,
            "list",
            lambda: self.get_scoped_query().options(*options),
        )

    def filter_list_query(self, query: Select[Any], args: Mapping[str, Any]) -> Select[Any]:
        """``query`` narrowed by ``?filters=`` and ``?search=`` (``Filtering.filter``)."""
        filtering: Filtering = self.options.list_config.filtering
        return filtering.filter(self, query, args)

    def sort_list_query(self, query: Select[Any], args: Mapping[str, Any]) -> Select[Any]:
        """``query`` ordered by ``?sort=`` (``Sorting.sort``); kept per sort order unless
        it joins a related model, whose row policy is this caller's."""
        sorting: Sorting = self.options.list_config.sorting
        plan = sorting.get_plan(args)
        if any(path.relationship is not None for path, _ in plan):
            return sorting.sort(self, query, args)
        return self.mount.statements.derive(
            query, ("sort", sort_spec(plan)), lambda: sorting.sort(self, query, args)
        )

    def paginate_list_query(self, query: Select[Any], args: Mapping[str, Any]) -> Page:
        """One page of ``query`` (``Pagination.paginate``)."""
        pagination: Pagination = self.options.list_config.pagination
        return pagination.paginate(self, query, args)

    def list_response(self, page: Page) -> Response:
        """The JSON response of a page: ``items`` plus its envelope fields, and the ``Link``
        header of its links."""
        body = {"items": self.serialize(page.items), **page.meta}
        response = json_response(body)
        if page.links:
            response.headers["Link"] = ", ".join(
                f'<{url}>; rel="{rel}"' for rel, url in page.links.items()
            )
        return response


def _compile_list(cls: type[Any], options: ResourceOptions) -> ListConfig:
    pagination = cls.pagination
    if isinstance(pagination, str):
        if pagination not in PAGINATIONS:
            raise ImproperlyConfigured(
                f'{cls.__name__}.pagination must be "offset", "cursor" or a Pagination '
                f"subclass, not {pagination!r}."
            )
        pagination = PAGINATIONS[pagination]
    for attribute, value, base in (
        ("pagination", pagination, Pagination),
        ("filtering", cls.filtering, Filtering),
        ("sorting", cls.sorting, Sorting),
    ):
        if not (isinstance(value, type) and issubclass(value, base)):
            raise ImproperlyConfigured(
                f"{cls.__name__}.{attribute} must be a {base.__name__} subclass, not {value!r}."
            )
    filtering, sorting = cls.filtering(options), cls.sorting(options, cls.sort_fields)
    pages = pagination(cls)
    declared: dict[str, ma.fields.Field[Any]] = {}
    for source, fields in (
        ("pagination", pages.get_args()),
        ("filtering", filtering.get_args()),
        ("sorting", sorting.get_args()),
        ("fields", {"fields": sparse_fields_field(options.schemas["list"], options.include_paths)}),
        (
            "include",
            {"include": include_field(options.include_paths)} if options.include_paths else {},
        ),
        ("list_args", dict(cls.list_args)),
    ):
        for name, field in fields.items():
            if name in declared or not isinstance(field, ma.fields.Field):
                raise ImproperlyConfigured(
                    f"{cls.__name__}: list argument {name!r} from {source} must be a "
                    "marshmallow field with a name no other list argument uses."
                )
            declared[name] = field
    disabled = {
        name: why
        for name, why in {**filtering.disabled, **sorting.disabled}.items()
        if name not in declared
    }
    default_chain = (
        type(filtering) is Filtering
        and type(sorting) is Sorting
        and all(getattr(cls, hook) is getattr(ListMixin, hook) for hook in LIST_HOOKS)
    )
    return ListConfig(
        filtering=filtering,
        sorting=sorting,
        pagination=pages,
        schema=ma.Schema.from_dict(declared, name=f"{cls.__name__}ListArgs")(),
        disabled=disabled,
        default_chain=default_chain,
        row_columns=row_columns(cls, options, pages) if default_chain else None,
        parent_in_page=default_chain and builtin_paginate(pages),
    )


def builtin_paginate(pages: Pagination) -> bool:
    """Whether ``pages`` paginates as the library's own classes do."""
    return type(pages).paginate in (OffsetPagination.paginate, CursorPagination.paginate)


#: The steps between a page's rows and its body (and their owners): a resource that
#: overrides one gets objects, as its step may read more than the columns.
ROW_STEPS = {
    "get_schema": Representation,
    "serialize": Representation,
    "serialize_many": Representation,
    "list_response": None,
    "paginate_list_query": None,
}


def row_columns(cls: type[Any], options: ResourceOptions, pages: Any) -> tuple[Any, ...] | None:
    """The model's column attributes, when a page may be read as rows of them: the
    library's own steps from the page to the body (and its own ``paginate``), and what
    :func:`plain_columns` asks of the model and the list schema."""
    if not keeps_steps(cls, ROW_STEPS, ListMixin) or not builtin_paginate(pages):
        return None
    return plain_columns(cls, options, "list")


def keeps_steps(cls: type[Any], steps: Mapping[str, Any], mixin: type[Any]) -> bool:
    """Whether ``cls`` has the library's own method for each of ``steps`` (step ->
    owner; ``None``: ``mixin``)."""
    return all(getattr(cls, step) is getattr(owner or mixin, step) for step, owner in steps.items())


def plain_columns(
    cls: type[Any], options: ResourceOptions, operation: str
) -> tuple[Any, ...] | None:
    """The model's column attributes, when its rows may stand for its objects in a body
    of ``operation``: no loader options, a model with no inheritance, and a schema every
    field of which the compiled dumper reads plainly from a column (a ``?fields=``
    subset then too)."""
    mapper = options.mapper
    if cls.query_options or mapper.inherits is not None or mapper.polymorphic_on is not None:
        return None
    if not reads_plain_attributes(options.schemas[operation], options.columns):
        return None
    return tuple(options.columns.values())


#: The steps of an item read (and their owners; ``None``: ``RetrieveMixin``): a resource
#: that overrides one gets the object, as its step may read more than the columns.
RETRIEVE_STEPS: dict[str, Any] = {
    "retrieve": None,
    "get_object": Resource,
    "check_object": Resource,
    "get_schema": Representation,
    "serialize": Representation,
    "serialize_many": Representation,
    "item_response": Representation,
}


class RetrieveMixin(_Base):
    """``GET`` on an item: :meth:`get_object`, :meth:`check_object`, :meth:`serialize`."""

    @classmethod
    def compile_retrieve_columns(cls, options: ResourceOptions) -> tuple[Any, ...] | None:
        """The model's columns, when an item read may be a row of them rather than an
        object: the library's own steps from the read to the body (:data:`RETRIEVE_STEPS`),
        and what :func:`plain_columns` asks."""
        if not keeps_steps(cls, RETRIEVE_STEPS, RetrieveMixin):
            return None
        return plain_columns(cls, options, "detail")

    def retrieve(self) -> Response:
        """``GET`` on an item: the object under every guard, serialized, with its ETag.
        With the library's own steps and a plain schema, the item is read as a row of its
        columns (outside the session where nothing there could change it): the same
        statement's conditions, no ORM object."""
        if request.query_string:  # nothing to check or read in none
            allowed = ("fields", "include") if self.options.include_paths else ("fields",)
            check_query_args(allowed, repeatable=allowed)
            self.read_sparse_fields("detail")
        columns = self.options.retrieve_columns
        if columns is not None:
            return self.item_response(self.serialize(self.get_row(columns)))
        obj = self.get_object()
        self.check_object(obj)
        return self.item_response(self.serialize(obj))

    def get_row(self, columns: tuple[Any, ...]) -> Any:
        """The item the URL names as a row of ``columns``, inside :attr:`row_policy`;
        404 when none (``get_object``'s statement, selecting the columns)."""
        query = cached(
            self.place.levels,
            self.place.parent_checked,
            "row",
            lambda: (
                self.get_scoped_query().where(lookup_clause(self, 0)).with_only_columns(*columns)
            ),
        )
        rows = self.read_rows(query)
        if not rows:
            raise not_found()
        return rows[0]


class ModelResource(
    CallbackMixin,
    ListMixin,
    RetrieveMixin,
    CreateMixin,
    UpdateMixin,
    PatchMixin,
    DeleteMixin,
    Resource,
):
    """All six actions plus callbacks: set ``name``, ``model`` and ``schema``."""
