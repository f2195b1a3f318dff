"""What a router installs on a Flask app besides its resources' URL rules and its command
(:mod:`resources_kit.cli`) and docs routes (:mod:`resources_kit.apidocs`): the state the
routers of one app share, and problem+json for every HTTP error under their prefixes."""

from __future__ import annotations

from typing import Any

from flask import request
from flask.sansio.app import App
from werkzeug.exceptions import HTTPException

from .errors import problem_response


def app_state(app: App) -> dict[str, Any]:
    """What the routers of one app share: API prefixes, mounts per router, what is
    installed."""
    state: dict[str, Any] = app.extensions.setdefault(
        "resources_kit", {"prefixes": set(), "routers": []}
    )
    return state


def install_error_handler(app: App, prefix: str) -> None:
    """Make every HTTP error under ``prefix`` (Flask's own 404, 405 and 500 included)
    problem+json. Errors elsewhere go to the handler the app had before, or Flask's own."""
    state = app_state(app)
    prefixes: set[str] = state["prefixes"]
    prefixes.add(prefix)
    if "handler" in state:
        return
    previous = app.error_handler_spec[None][None].get(HTTPException)

    def handle_http_exception(exc: HTTPException) -> Any:
        path = request.path
        if any(path == p or path.startswith(p + "/") for p in prefixes):
            return problem_response(exc)
        return previous(exc) if previous is not None else exc

    state["handler"] = handle_http_exception
    app.register_error_handler(HTTPException, handle_http_exception)
