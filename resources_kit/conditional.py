"""Conditional requests (RFC 9110): the ``ETag`` of a single-item response,
``If-None-Match`` answered with 304, and ``If-Match`` checked before a write (412)."""

from __future__ import annotations

import hashlib
from typing import Any, cast

from flask import Response, current_app, request

from .errors import HTTPError


def json_with_etag(body: Any) -> tuple[Response, str]:
    """The JSON response for ``body`` and the ETag of exactly the bytes it sends, so a
    write's If-Match check and a read's ETag agree by construction."""
    response = cast(Response, current_app.json.response(body))
    return response, hashlib.blake2b(response.get_data(), digest_size=16).hexdigest()


def item_response(body: Any, status: int = 200) -> Response:
    """A single item with its ``ETag``; a GET whose ``If-None-Match`` names it is a 304."""
    response, etag = json_with_etag(body)
    response.status_code = status
    response.set_etag(etag)
    if (
        status == 200
        and request.method in ("GET", "HEAD")
        and request.if_none_match.contains_weak(etag)  # weak comparison (RFC 9110)
    ):
        return Response(status=304, headers={"ETag": response.headers["ETag"]})
    return response


def check_if_match(current_body: Any, *, required: bool) -> None:
    """``If-Match`` of a write: 412 unless it names the ETag of ``current_body`` (or is
    ``*``); 428 when it is missing and ``required``."""
    if_match = request.if_match
    if not if_match:
        if required:
            raise HTTPError(
                428, "This resource requires If-Match with the ETag of the version you read."
            )
        return
    _, current = json_with_etag(current_body)
    if if_match.star_tag or if_match.contains(current):
        return
    raise HTTPError(
        412, "The resource has changed since it was read: If-Match does not match its ETag."
    )
