"""How a resource's rows become JSON: the schema of each operation, ``?fields=``, the
serialized body, and single-item responses with their ``ETag``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import marshmallow as ma
from flask import Response, request

from .conditional import item_response
from .errors import HTTPError
from .including import embed, read_include_query, use_includes
from .querying import sparse_field_names


class Representation:
    """The representation half of ``Resource`` (which inherits it)."""

    if TYPE_CHECKING:  # provided by Resource
        options: Any
        sparse_fields: tuple[str, ...] | None
        include: tuple[str, ...] | None

    def get_schema(self, operation: str) -> ma.Schema:
        """The schema instance for ``"list"``, ``"detail"``, ``"create"``, ``"update"``,
        ``"patch"`` or an extra action's name; trimmed to ``?fields=`` for list and detail."""
        if self.sparse_fields is None or operation not in ("list", "detail"):
            schema: ma.Schema = self.options.schemas[operation]
            return schema
        sparse: ma.Schema = self.options.sparse_schema(operation, self.sparse_fields)
        return sparse

    def read_sparse_fields(self, operation: str) -> None:
        """Read ``?fields=`` (comma-separated, or repeated); 400 naming unknown fields.
        With ``include_fields``, also ``?include=`` (and ``path.field`` names)."""
        values = request.args.getlist("fields")
        related = self.options.include_paths
        if values:
            try:
                names = sparse_field_names(
                    ",".join(values), self.options.schemas[operation], related
                )
            except ma.ValidationError as exc:
                raise HTTPError(
                    400, "Bad query parameters: fields.", errors={"fields": exc.messages}
                ) from None
            self.sparse_fields = names
        if related and (values or "include" in request.args):
            use_includes(self, read_include_query(self))

    def serialize(self, obj_or_objs: Any) -> Any:
        """The JSON-able body of one object (detail schema) or a list (list schema), with
        the related rows ``?include=`` asked for embedded."""
        if isinstance(obj_or_objs, list | tuple):
            bodies = self.get_schema("list").dump(obj_or_objs, many=True)
            if self.include:
                embed(self, obj_or_objs, bodies)
            return bodies
        body = self.get_schema("detail").dump(obj_or_objs)
        if self.include:
            embed(self, [obj_or_objs], [body])
        return body

    def item_response(self, body: Any, status: int = 200) -> Response:
        """``body`` with its ``ETag``; 304 for a GET whose ``If-None-Match`` names it."""
        return item_response(body, status)
