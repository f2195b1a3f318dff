"""Reading the request: the JSON body and strict query parameters."""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any, NoReturn

from flask import request

from .errors import HTTPError, bad_request


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def json_body() -> dict[str, Any]:
    """The request body as a JSON object, or a 415 / 413 / 400 naming what is wrong."""
    if not request.is_json:
        raise HTTPError(
            415,
            "The request body must be JSON, sent with 'Content-Type: application/json'.",
        )
    raw = request.get_data(cache=True)  # raises 413 past MAX_CONTENT_LENGTH
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad_request("The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON: {exc.msg} "
            f"(line {exc.lineno}, column {exc.colno})."
        ) from None
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise bad_request(f"The request body is not valid JSON: {message}.") from None
    if not isinstance(data, dict):
        raise bad_request(f"The request body must be a JSON object, not {_json_kind(data)}.")
    return data


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array"


def check_query_args(allowed: Collection[str]) -> None:
    """Refuse any query parameter not in ``allowed``, and any given more than once."""
    errors: dict[str, list[str]] = {}
    for key in request.args:
        if key not in allowed:
            errors[key] = ["Unknown query parameter."]
        elif len(request.args.getlist(key)) > 1:
            errors[key] = ["Given more than once."]
    if errors:
        names = ", ".join(sorted(errors))
        hint = f" Allowed: {', '.join(sorted(allowed))}." if allowed else ""
        raise bad_request(f"Bad query parameters: {names}.{hint}", errors=errors)
