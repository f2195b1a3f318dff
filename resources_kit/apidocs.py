"""The OpenAPI document's routes: ``{prefix}/openapi.json`` and the interactive
``{prefix}/docs`` page with its offline assets."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from flask import Response, current_app, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path

from .errors import HTTPError
from .openapi import docs_page


def add_docs_routes(
    add_url_rule: Callable[..., None],
    prefix: str,
    full_prefix: str,
    title: str,
    build: Callable[[str], dict[str, Any]],
) -> None:
    """``{prefix}/openapi.json`` (built at the first request, when every resource is
    registered) and the ``{prefix}/docs`` page with its offline assets."""
    document: dict[str, Any] = {}
    name = "rk_openapi" + full_prefix.replace("/", "_").replace("-", "_")

    def openapi_json() -> Response:
        if not document:
            document.update(build(full_prefix))
        return cast(Response, current_app.json.response(document))

    def docs_html() -> str:
        return docs_page(title, url_for(f".{name}_json"), url_for(f".{name}_docs"))

    def asset(filename: str) -> Response:
        if filename not in ("swagger-ui.css", "swagger-ui-bundle.js"):
            raise HTTPError(404, "No such asset.")
        return send_from_directory(str(swagger_ui_path), filename, max_age=86400)

    add_url_rule(f"{prefix}/openapi.json", endpoint=f"{name}_json", view_func=openapi_json)
    add_url_rule(
        f"{prefix}/docs", endpoint=f"{name}_docs", view_func=docs_html, strict_slashes=False
    )
    add_url_rule(f"{prefix}/docs/<path:filename>", endpoint=f"{name}_asset", view_func=asset)
