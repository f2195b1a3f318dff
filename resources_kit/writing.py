"""The write unit: every write (create, update, patch, delete, a writing ``@action``) is one
:class:`Write` run by :func:`run_write`, in one transaction.

1. the body is loaded and checked (:func:`load_body`), the server's values win;
2. ``references`` in the body are checked under their target's row policy;
3. the mixin's perform step runs (``perform_create``...), and the server's values are
   stamped on every row it wrote;
4. pre callbacks (nothing flushed), flush, post callbacks, flush;
5. the rows written are checked: the server's values still hold, references set other than
   by the body are reachable, and each row is still inside the caller's row policy (403);
6. the response is built, then one commit; any error before rolls everything back;
7. the write's jobs are delivered, then signals and after-commit callbacks, which cannot
   undo the commit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

import marshmallow as ma
from flask import Response, current_app
from sqlalchemy import inspect
from sqlalchemy.orm import Session, scoped_session

from . import signals
from .errors import HTTPError, ImproperlyConfigured, from_database_error, unprocessable
from .outbox import deliver_committed
from .parsing import check_query_args, json_body
from .policy import reaches_row

#: The message of a value the server sets that a body or an override tried to change.
SERVER_SET = "Set by the server from the URL or scope; cannot be changed."


@dataclass(eq=False)
class Write:
    """One write in progress."""

    #: ``"create"``, ``"update"``, ``"patch"``, ``"delete"`` or a writing action's name:
    #: what callbacks and signals call it.
    operation: str
    #: The validated body plus the server's values (what callbacks see as ``kwargs``).
    data: dict[str, Any]
    #: Columns the server sets (scope, parent key): stamped on every row written.
    server_values: Mapping[str, Any]
    #: The mixin's step that makes the change and returns the object it wrote (``None``
    #: for a collection action, whose new rows are found in the session).
    perform: Callable[[Write], Any]
    #: The row the write changes; ``None`` for a create or a collection action.
    item: Any = None
    #: What an ``@action`` returned (its response).
    result: Any = None
    #: Whether the rows written must still be inside the caller's row policy afterwards
    #: (a delete's need not: an archived row may leave it).
    stays_reachable: bool = True
    #: The rows the write leaves behind, once performed.
    rows: list[Any] = field(default_factory=list)


class WriterView(Protocol):
    """What the write unit needs of a resource instance."""

    options: Any
    extra: Any
    row_policy: Any

    def get_session(self) -> Session | scoped_session[Session]: ...

    def get_schema(self, operation: str) -> ma.Schema: ...

    def run_callbacks(
        self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]
    ) -> None: ...

    def check_object_permissions(self, obj: Any) -> None: ...

    def get_write_response(self, operation: str, obj: Any) -> Response: ...


def load_body(view: WriterView, operation: str, server_values: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON body loaded with the operation's schema (``partial`` for a patch), checked
    against the columns, then the server's values (a body may repeat one, never change
    it: 422)."""
    check_query_args(())
    body = json_body()
    try:
        data: dict[str, Any] = dict(
            view.get_schema(operation).load(body, partial=operation == "patch")
        )
    except ma.ValidationError as exc:
        raise unprocessable(validation_messages(exc)) from None
    errors: dict[str, list[str]] = {}
    for key, normalize in view.options.column_normalizers.items():
        if key in data:
            data[key] = normalize(data[key])
    for key, value in data.items():
        check = view.options.column_checks.get(key)
        message = check(value) if check else None
        if message:
            errors[key] = [message]
        elif key in server_values and value != server_values[key]:
            errors[key] = [SERVER_SET]
    if errors:
        raise unprocessable(errors)
    return {**data, **server_values}


def run_write(view: WriterView, write: Write) -> Response:
    """Steps 2 to 7 of the write, in one transaction committed once."""
    session = view.get_session()
    try:
        references = view.options.references
        before = {key: getattr(write.item, key) for key in references} if write.item else {}
        check_references(view, write.data, before, write.server_values)  # before any SQL
        before |= {key: write.data[key] for key in references if key in write.data}
        obj = write.perform(write)
        write.rows = [obj] if obj is not None else new_rows(view)
        new = [row for row in write.rows if added_here(row)]
        stamp(write)  # an overridden perform step cannot move a row
        for row in new:
            view.check_object_permissions(row)
        with session.no_autoflush:  # pre callbacks see nothing flushed, as documented
            view.run_callbacks("pre", write.operation, obj, write.data)
        stamp(write)
        session.flush()
        view.run_callbacks("post", write.operation, obj, write.data)
        session.flush()
        check_written(view, write, before)
        read_back(view, obj, write.data)
        response = respond(view, write, obj)
        commit(session)
    except BaseException as exc:
        session.rollback()
        translated = from_database_error(exc)
        if translated is not None:
            raise translated from exc
        if isinstance(exc, ma.ValidationError):
            raise unprocessable(validation_messages(exc)) from exc
        raise
    after_commit(view, write.operation, obj, write.data)
    return response


def respond(view: WriterView, write: Write, obj: Any) -> Response:
    if view.extra is not None:
        return cast(Response, view.extra.respond(write.result))
    return view.get_write_response(write.operation, obj)


def stamp(write: Write) -> None:
    for row in write.rows:
        for key, value in write.server_values.items():
            if getattr(row, key) != value:
                setattr(row, key, value)


def check_references(
    view: Any,
    values: Mapping[str, Any],
    before: Mapping[str, Any],
    server_values: Mapping[str, Any],
) -> None:
    """422 for each reference in ``values`` (changed since ``before``) that names no row
    the referenced resource's row policy lets the caller reach."""
    errors = {}
    for key, (target, ref_key) in view.options.references.items():
        value = values.get(key)
        if value is None or key in server_values or before.get(key, _UNSET) == value:
            continue
        if not reaches_row(view, target, ref_key, value):
            errors[key] = ["No such item."]
    if errors:
        raise unprocessable(errors)


def check_written(view: WriterView, write: Write, before: Mapping[str, Any]) -> None:
    """After the flush, when foreign keys synced from relationships are known: the
    server's values still hold, each declared reference names a reachable row, and each
    row written is still one the caller may reach (else 403)."""
    if not write.stays_reachable:
        return
    for row in write.rows:
        if inspect(row).deleted or inspect(row).was_deleted:
            continue
        moved = {
            key: [SERVER_SET]
            for key, value in write.server_values.items()
            if getattr(row, key) != value
        }
        if moved:
            raise unprocessable(moved)
        if view.options.references:
            now = {key: getattr(row, key) for key in view.options.references}
            check_references(view, now, before if row is write.item else {}, write.server_values)
        if view.row_policy.rechecks_writes() and not view.row_policy.contains(row):
            raise HTTPError(
                403,
                "The change would leave the row outside the rows you may reach here.",
            )


def new_rows(view: WriterView) -> list[Any]:
    """The new rows of the model in the session: what a collection action created."""
    session = view.get_session()
    model = view.options.model
    found = [obj for obj in session.new if isinstance(obj, model)]
    found += [
        obj
        for obj in list(session.identity_map.values())
        if isinstance(obj, model) and added_here(obj)
    ]
    return found


def created_object(view: Any, result: Any) -> Any:
    """The object ``perform_create`` made: what it returned, or the one new object of
    the model it added (pending, or flushed by the override); never a row that was in
    the session before it ran, which stamping would move."""
    model = view.options.model
    name = type(view).__name__
    if result is None:
        added = new_rows(view)
        if len(added) != 1:
            raise ImproperlyConfigured(
                f"{name}.perform_create() returned None and added {len(added)} new "
                f"{model.__name__} objects; return the one it created."
            )
        return added[0]
    state = inspect(result, raiseerr=False)
    existing = state is not None and state.persistent and not added_here(result)
    if not isinstance(result, model) or state is None or existing:
        raise ImproperlyConfigured(
            f"{name}.perform_create() must return a new {model.__name__}, not {result!r}."
        )
    if state.transient:
        view.get_session().add(result)
    return result


def updated_object(view: Any, obj: Any, result: Any) -> Any:
    if result is not None and result is not obj:
        raise ImproperlyConfigured(
            f"{type(view).__name__}.perform_update() must change the object it is given "
            "and return None (or that object)."
        )
    return obj


def read_back(view: WriterView, obj: Any, data: Mapping[str, Any]) -> None:
    """Expire what the database may have stored differently from what was sent, so the
    response (and its ETag) is what a GET returns afterwards: one SELECT, and only for
    a write that set such a column or re-pointed a loaded relationship."""
    options = view.options
    if obj is None or not isinstance(obj, options.model):
        return
    state = inspect(obj)
    if state.deleted or state.was_deleted:
        return
    stale = [key for key in data if key in options.stored_form_keys]
    stale += [
        name
        for name, keys in options.relationship_keys.items()
        if name in state.dict and not keys.isdisjoint(data)
    ]
    if stale:
        view.get_session().expire(obj, stale)


def after_commit(view: WriterView, operation: str, obj: Any, data: dict[str, Any]) -> None:
    """Signals, then after-commit callbacks; each receiver runs on its own, and a
    failure is logged and cannot undo the commit or stop the others."""
    # The write's jobs first: published (or run, with no broker) right after the commit.
    deliver_committed(view.get_session())
    signal = signals.BY_OPERATION.get(operation, signals.action_performed)
    sender = type(view)
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, resource=obj, kwargs=data, operation=operation)
        except Exception:
            view.get_session().rollback()
            current_app.logger.exception(
                "A %s receiver failed after commit for %s", signal.name, sender.__name__
            )
    view.run_callbacks("after_commit", operation, obj, data)


def commit(session: Session | scoped_session[Session]) -> None:
    # The request ends right after; expiring everything would only make after-commit
    # callbacks and signal receivers re-SELECT what was just written.
    real = session() if isinstance(session, scoped_session) else session
    expire = real.expire_on_commit
    real.expire_on_commit = False
    try:
        real.commit()
    finally:
        real.expire_on_commit = expire


def added_here(obj: Any) -> bool:
    """Whether the session received ``obj`` as a new object (then flushed it, perhaps),
    rather than loading an existing row: only new objects get an insert order."""
    return inspect(obj).insert_order is not None


def validation_messages(exc: ma.ValidationError) -> dict[str, Any]:
    messages = exc.messages
    if isinstance(messages, dict):
        return messages
    return {"_schema": messages if isinstance(messages, list) else [messages]}


_UNSET: Any = object()
