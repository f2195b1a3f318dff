"""Action mixins: each adds one operation. They define actions, never HTTP verbs;
``Resource.dispatch_request`` binds verbs to them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Response

from .callbacks import CallbackMixin
from .pagination import list_response
from .parsing import check_query_args
from .resource import ITEM_QUERY_ARGS, Resource

if TYPE_CHECKING:
    _Base = Resource
else:
    _Base = object


class ListMixin(_Base):
    """``GET`` on the collection: a page of items (see *List queries* in the docs)."""

    def list(self) -> Response:
        return list_response(self)


class RetrieveMixin(_Base):
    """``GET`` on an item."""

    def retrieve(self) -> Response:
        check_query_args(ITEM_QUERY_ARGS)
        self._read_sparse_fields("detail")
        return self.item_response(self.serialize(self.get_object()))


class CreateMixin(_Base):
    """``POST`` on the collection: 201 with a ``Location`` header."""

    def create(self) -> Response:
        self._resolve_parent()
        server_values = self._server_values()
        data = self._load_body("create", server_values)
        obj, body = self._write("create", data, lambda: self.perform_create(data), server_values)
        response = self.item_response(body, 201)
        location = self.location(obj)
        if location is not None:
            response.headers["Location"] = location
        return response


class UpdateMixin(_Base):
    """``PUT`` on an item: the full body is validated; the fields it holds are written."""

    def update(self) -> Response:
        return self._change("update")


class PatchMixin(_Base):
    """``PATCH`` on an item: loaded ``partial=True``; only the fields sent are touched."""

    def partial_update(self) -> Response:
        return self._change("patch")


class DeleteMixin(_Base):
    """``DELETE`` on an item: 204 with an empty body."""

    def destroy(self) -> Response:
        check_query_args(())
        obj = self.get_object()
        self.check_preconditions(obj)
        server_values = self._server_values(obj)

        def apply() -> Any:
            self.perform_delete(obj)
            return obj  # callbacks and signals see the deleted row

        self._write("delete", server_values, apply, server_values)
        return Response(status=204)


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
