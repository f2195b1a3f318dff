"""Conditional requests (RFC 9110): the ``ETag`` of a single-item response,
``If-None-Match`` answered with 304, and ``If-Match`` checked before a write (412)."""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from typing import Any, cast

from flask import Response, current_app, request
from flask.json.provider import DefaultJSONProvider

from .errors import HTTPError


@lru_cache(maxsize=16)
def _encoder(default: Any, ensure_ascii: bool, sort_keys: bool, indent: int | None) -> Any:
    separators = None if indent else (",", ":")
    return json.JSONEncoder(
        default=default,
        ensure_ascii=ensure_ascii,
        sort_keys=sort_keys,
        indent=indent,
        separators=separators,
    )


def json_response(body: Any, status: int = 200) -> Response:
    """What ``current_app.json.response(body)`` answers, with ``status``. For Flask's own
    provider it is made here, with one encoder kept per setting (``json.dumps`` makes an
    encoder per call when given its arguments): the same bytes and headers. Any other
    provider (orjson's, say) makes it itself."""
    provider = current_app.json
    if type(provider) is not DefaultJSONProvider:
        response = cast(Response, provider.response(body))
        response.status_code = status
        return response
    debug = current_app.debug
    indent = 2 if (provider.compact is None and debug) or provider.compact is False else None
    encoder = _encoder(provider.default, provider.ensure_ascii, provider.sort_keys, indent)
    text = f"{encoder.encode(body)}\n"
    return current_app.response_class(text, status, mimetype=provider.mimetype)


def json_with_etag(body: Any, status: int = 200) -> tuple[Response, str]:
    """The JSON response for ``body`` and the ETag of exactly the bytes it sends, so a
    write's If-Match check and a read's ETag agree by construction."""
    response = json_response(body, status)
    return response, hashlib.blake2b(response.get_data(), digest_size=16).hexdigest()


def item_response(body: Any, status: int = 200) -> Response:
    """A single item with its ``ETag``; a GET whose ``If-None-Match`` names it is a 304."""
    response, etag = json_with_etag(body, status)
    quoted = f'"{etag}"'  # a hex digest: nothing to escape
    if (
        status == 200
        and request.method in ("GET", "HEAD")
        and "If-None-Match" in request.headers
        and request.if_none_match.contains_weak(etag)  # weak comparison (RFC 9110)
    ):
        return Response(status=304, headers={"ETag": quoted})
    response.headers["ETag"] = quoted
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
