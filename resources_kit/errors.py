"""Exceptions and RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any, cast

from flask import Response, current_app, request
from sqlalchemy import Index, UniqueConstraint
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_MIMETYPE = "application/problem+json"

#: Messages per field, as marshmallow reports them (a field may hold a nested mapping).
ErrorMessages = Mapping[str, Any]


class ResourcesKitError(Exception):
    """Root of every exception this library raises."""


class ResourcesKitWarning(UserWarning):
    """A configuration that works but may leak or surprise (a unique value across tenants)."""


class ImproperlyConfigured(ResourcesKitError):
    """A resource or router is configured wrongly; the message names the class and the fix."""


class HTTPError(ResourcesKitError, HTTPException):
    """An HTTP error rendered as problem details.

    It is a Werkzeug ``HTTPException`` too, so Flask's own error handling sees it.

    >>> raise HTTPError(409, "A teacher with this email already exists.")  # doctest: +SKIP
    """

    def __init__(
        self,
        code: int,
        detail: str | None = None,
        *,
        errors: ErrorMessages | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.code = code
        self.detail = detail if detail is not None else status_texts(code)[1]
        #: Messages per field (``{"name": ["Missing data for required field."]}``).
        self.errors = errors
        self.extra_headers: dict[str, str] = dict(headers or {})
        super().__init__(description=self.detail)

    @property
    def name(self) -> str:
        """The status's title (``"Conflict"``), also for codes Werkzeug does not know."""
        return status_texts(self.code or 500)[0]


def status_texts(code: int) -> tuple[str, str]:
    """The title and description of a status, also for codes Python's ``HTTPStatus``
    does not know (420, 499, 509...)."""
    try:
        status = HTTPStatus(code)
    except ValueError:
        return HTTP_STATUS_CODES.get(code, "Error"), "The request could not be completed."
    return status.phrase, status.description


def bad_request(detail: str, *, errors: ErrorMessages | None = None) -> HTTPError:
    return HTTPError(400, detail, errors=errors)


def bad_parameter(name: str, message: str) -> HTTPError:
    """A 400 naming one query parameter and what is wrong with it."""
    return bad_request(f"Bad query parameters: {name}.", errors={name: [message]})


def unprocessable(errors: ErrorMessages, detail: str | None = None) -> HTTPError:
    return HTTPError(
        422, detail or "The request body failed validation; see 'errors'.", errors=errors
    )


def not_found() -> HTTPError:
    return HTTPError(404, "No such resource.")


def problem_body(exc: HTTPException) -> dict[str, Any]:
    code = exc.code or 500
    title, description = status_texts(code)
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": code,
        # A Werkzeug description is a fixed sentence; ours never carries SQL or a trace.
        "detail": exc.description or description,
    }
    errors = getattr(exc, "errors", None)
    if errors:
        body["errors"] = errors
    return body


def problem_response(exc: HTTPException) -> Response:
    """Render any ``HTTPException`` as a problem+json response, keeping its headers
    (``Allow`` on a 405, ``WWW-Authenticate`` on a 401...)."""
    if exc.response is not None:
        # Someone built the exact response (``abort(make_response(...))``); respect it.
        return cast(Response, exc.response)
    response = current_app.response_class(
        json.dumps(problem_body(exc)), status=exc.code or 500, mimetype=PROBLEM_MIMETYPE
    )
    for key, value in exc.get_headers():
        if key.lower() != "content-type":
            response.headers[key] = value
    for key, value in getattr(exc, "extra_headers", {}).items():
        response.headers[key] = value
    return response


_CONFLICTS = {
    "unique": "A row with the same unique value already exists.",
    "foreign_key": (
        "The change refers to a row that does not exist, or would leave other rows "
        "referring to one that does not."
    ),
    "not_null": "A required value is missing.",
    "check": "A value breaks a rule of the database.",
}
_SQLSTATES = {"23505": "unique", "23503": "foreign_key", "23502": "not_null", "23514": "check"}
_MYSQL_ERRNOS = {
    1062: "unique",
    1451: "foreign_key",
    1452: "foreign_key",
    1048: "not_null",
    1364: "not_null",
    3819: "check",
}
_SQLITE_PHRASES = {
    "UNIQUE": "unique",
    "FOREIGN KEY": "foreign_key",
    "NOT NULL": "not_null",
    "CHECK": "check",
    "PRIMARY KEY": "unique",
}


_CONCURRENT = "The row was changed by a concurrent request; read it again and retry."
#: Deadlock, serialization failure: the transaction lost a race and may simply be retried.
_CONCURRENCY_SQLSTATES = {"40001", "40P01"}
_CONCURRENCY_ERRNOS = {1213}

#: PostgreSQL SQLSTATE classes of a database that is down or overloaded: connection
#: exception (08), insufficient resources (53: too many connections, out of memory),
#: operator intervention (57: the backend terminated, the server shutting down, a
#: statement timeout), system error (58); and a lock timeout.
_UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
_UNAVAILABLE_SQLSTATES = {"55P03"}
#: MariaDB/MySQL: too many connections, shutdown, lock wait timeout, query interrupted,
#: connection killed, statement timeouts (MariaDB, MySQL); every client error (2000-2999:
#: cannot connect, server gone away, lost connection) too.
_UNAVAILABLE_ERRNOS = {1040, 1053, 1205, 1317, 1927, 1969, 3024}
#: SQLite: another connection holds the lock past the busy timeout; the file is gone.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk I/O error")
UNAVAILABLE = "The database is unavailable or overloaded; nothing was changed. Retry shortly."
#: Seconds a client should wait before retrying after a 503 (``RESOURCES_KIT_RETRY_AFTER``).
DEFAULT_RETRY_AFTER = 1


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database error says the database is down, unreachable or overloaded
    (a lost or refused connection, a timeout, too many connections), rather than that
    the statement or the data is wrong."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    orig = exc.orig
    if type(orig).__module__.split(".")[0] == "psycopg":
        sqlstate = getattr(orig, "sqlstate", None)
        if sqlstate is None:  # raised by the client: no server answered
            return isinstance(exc, OperationalError)
        return sqlstate in _UNAVAILABLE_SQLSTATES or sqlstate[:2] in _UNAVAILABLE_SQLSTATE_CLASSES
    errno = _mysql_errno(exc)
    if errno is not None:
        return errno in _UNAVAILABLE_ERRNOS or 2000 <= errno < 3000
    text = str(orig)
    return isinstance(exc, OperationalError) and any(p in text for p in _SQLITE_UNAVAILABLE)


def service_unavailable() -> HTTPError:
    """A 503 with ``Retry-After``: the database is down or overloaded, and the request
    changed nothing."""
    retry_after = current_app.config.get("RESOURCES_KIT_RETRY_AFTER", DEFAULT_RETRY_AFTER)
    return HTTPError(503, UNAVAILABLE, headers={"Retry-After": str(retry_after)})


#: MariaDB/MySQL errors that PyMySQL may report as OperationalError: a CHECK constraint
#: (4025 on MariaDB), and values the column refuses (bad date or time, bad JSON, out of
#: range, too long, not a number).
_MYSQL_CHECK_ERRNOS = {4025, 3819}
_MYSQL_VALUE_ERRNOS = {1292, 1366, 1264, 1265, 1406, 3140, 4038}


def _is_concurrency_failure(exc: Any) -> bool:
    orig = getattr(exc, "orig", None)
    if getattr(orig, "sqlstate", None) in _CONCURRENCY_SQLSTATES:
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in _CONCURRENCY_ERRNOS


def conflict_kind(exc: Any) -> str | None:
    """Which constraint an ``IntegrityError`` broke, read from the driver's error."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _SQLSTATES:
        return _SQLSTATES[sqlstate]
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_ERRNOS:
        return _MYSQL_ERRNOS[args[0]]
    text = str(orig)
    for phrase, kind in _SQLITE_PHRASES.items():
        if f"{phrase} constraint failed" in text:
            return kind
    return None


_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (.+)$")
_POSTGRES_KEY = re.compile(r"^Key \(([^)]*)\)=")
_MYSQL_KEY = re.compile(r"for key '(?:[^']*\.)?([^'.]+)'$")


def unique_columns(exc: BaseException, table: Any) -> list[str]:
    """The names of the columns of ``table`` whose unique constraint an
    ``IntegrityError`` broke (none when the driver does not say), read from the
    constraint's name or the column list of the message, never from the values."""
    orig = getattr(exc, "orig", None)
    text = str(orig).strip()
    found = _SQLITE_UNIQUE.search(text)
    if found:
        return [part.strip().rpartition(".")[2] for part in found.group(1).split(",")]
    diag = getattr(orig, "diag", None)
    name = getattr(diag, "constraint_name", None)
    if name is None and _mysql_errno(exc) == 1062:
        key = _MYSQL_KEY.search(str(getattr(orig, "args", ("", ""))[-1]))
        name = key.group(1) if key else None
    if name is not None:
        for constraint in [*table.constraints, *table.indexes]:
            if constraint.name == name:
                return [column.name for column in constraint.columns]
        if name == "PRIMARY":
            return [column.name for column in table.primary_key.columns]
        if name in table.columns:  # MariaDB names an unnamed key after its first column
            return _unique_set_starting_with(table, name)
    detail = getattr(diag, "message_detail", None) or ""
    columns = _POSTGRES_KEY.match(detail)
    return [part.strip() for part in columns.group(1).split(",")] if columns else []


def unique_column_groups(table: Any) -> list[Any]:
    """The column groups a table holds unique, the primary key aside: each unique
    constraint's, each unique index's, and each column marked ``unique`` on its own."""
    groups: list[Any] = [
        constraint.columns
        for constraint in getattr(table, "constraints", ())
        if isinstance(constraint, UniqueConstraint)
    ]
    groups += [
        index.columns
        for index in getattr(table, "indexes", ())
        if isinstance(index, Index) and index.unique
    ]
    groups += [[column] for column in table.columns if column.unique and not column.primary_key]
    return groups


def _unique_set_starting_with(table: Any, first: str) -> list[str]:
    for group in unique_column_groups(table):
        names = [column.name for column in group]
        if names and names[0] == first:
            return names
    return [first]


def from_database_error(
    exc: BaseException, conflict_fields: Callable[[BaseException], list[str]] | None = None
) -> HTTPError | None:
    """The HTTP error for an error the database raised, or ``None`` for any other error.

    The response names the kind of conflict and, for a unique one, the fields
    ``conflict_fields(exc)`` returns: never SQL, parameters, values or table names.
    """
    if isinstance(exc, StaleDataError):
        # A version column's compare-and-set found the row changed by another request.
        if request.method == "DELETE":
            return not_found()  # deleted by a concurrent request
        if request.if_match:
            return HTTPError(412, "The resource has changed since it was read.")
        return HTTPError(409, _CONCURRENT)
    if isinstance(exc, OperationalError) and _is_concurrency_failure(exc):
        return HTTPError(409, _CONCURRENT)
    if is_unavailable(exc):
        return service_unavailable()
    errno = _mysql_errno(exc)
    if isinstance(exc, DBAPIError) and errno in _MYSQL_CHECK_ERRNOS:
        return HTTPError(409, _CONFLICTS["check"])
    if isinstance(exc, DBAPIError) and errno in _MYSQL_VALUE_ERRNOS:
        return HTTPError(422, _REFUSED_VALUE)
    if isinstance(exc, IntegrityError):
        kind = conflict_kind(exc)
        detail = _CONFLICTS.get(
            kind or "", "The change conflicts with the current state of the data."
        )
        fields = conflict_fields(exc) if kind == "unique" and conflict_fields else []
        if not fields:
            return HTTPError(409, detail)
        taken = (
            "A row with this value already exists."
            if len(fields) == 1
            else (f"A row with these values of {', '.join(fields)} already exists.")
        )
        return HTTPError(
            409, f"{detail[:-1]}: {', '.join(fields)}.", errors={name: [taken] for name in fields}
        )
    if isinstance(exc, DataError):
        return HTTPError(422, _REFUSED_VALUE)
    return None


_REFUSED_VALUE = "A value was refused by the database (too long, out of range or malformed)."


def _mysql_errno(exc: BaseException) -> int | None:
    args: tuple[Any, ...] = getattr(getattr(exc, "orig", None), "args", ())
    return args[0] if args and isinstance(args[0], int) else None
