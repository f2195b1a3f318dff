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

Where nothing would see the object (no callbacks, listeners or overridden steps: see
:func:`direct_columns` and the mixins' ``direct_*`` methods), steps 3 to 5 are one
``INSERT``, ``UPDATE ... RETURNING`` or ``DELETE`` of the row policy, and the row
returned is the answer's item.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial
from importlib import import_module
from typing import TYPE_CHECKING, Any, Protocol, cast

import marshmallow as ma
from flask import Response, current_app, request, url_for
from sqlalchemy import delete, event, insert, inspect, update
from sqlalchemy.orm import MANYTOONE, Session, scoped_session

from . import signals
from .actions import ExtraAction
from .database import session_listens, writes_by_statement
from .errors import (
    HTTPError,
    ImproperlyConfigured,
    from_database_error,
    not_found,
    unique_column_groups,
    unprocessable,
)
from .guards import EXTENSION as GUARDS
from .linking import replace_links, restore_links, take_links
from .nesting import cached, lookup_clause
from .outbox import COMMITTED, deliver_committed, enqueue_declared
from .parsing import check_query_args, json_body
from .policy import reaches_row
from .representation import reads_plain_attributes

#: Operations whose success response has no body.
NO_CONTENT = frozenset({"delete", "link", "unlink"})

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
    #: The session the write runs in.
    session: Any = None
    #: A server-set column the perform step changed is a 422 (an action's), rather than
    #: stamped back silently (an overridden ``perform_*``'s).
    moves_refused: bool = False
    #: The perform step is one ``INSERT`` or ``UPDATE ... RETURNING`` and returns its
    #: row: no object, so nothing to stamp, call back, flush or check afterwards (see
    #: :class:`DirectColumns`).
    direct: bool = False


class WriterView(Protocol):
    """What the write unit needs of a resource instance."""

    options: Any
    extra: Any
    mount: Any
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
    return load_data(view, operation, json_body(), server_values)


def load_data(
    view: WriterView, operation: str, body: Any, server_values: Mapping[str, Any]
) -> dict[str, Any]:
    """One JSON object (a body, or one item of a bulk write) loaded as
    :func:`load_body` loads the body."""
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


@contextmanager
def one_transaction(view: Any, session: Any) -> Iterator[Callable[[Response], None]]:
    """The frame of a write (one, or a bulk write's many): the block runs the write and
    calls the function it is given with the answer, which passes the production guards
    (see guards.py) and commits once. Any error rolls everything back, a database's
    refusal or a validation error raised late answered as a 409 or a 422; once the block
    is done, the guards learn of the commit."""
    guards = current_app.extensions.get(GUARDS)
    committed: list[bool] = []

    def settle(response: Response) -> None:
        if guards is not None:
            guards.before_commit(view, session, response)
        commit(session)
        committed.append(True)

    try:
        yield settle
    except BaseException as exc:
        session.rollback()
        translated = from_database_error(exc, view.options.conflict_fields)
        if translated is not None:
            raise translated from exc
        if isinstance(exc, ma.ValidationError):
            raise unprocessable(validation_messages(exc)) from exc
        raise
    if guards is not None and committed:  # not for an answer that wrote nothing
        guards.committed(view)


def run_write(view: WriterView, write: Write) -> Response:
    """Steps 2 to 7 of the write, in one transaction committed once."""
    session = write.session = view.get_session()
    with one_transaction(view, session) as settle:
        references = view.options.references
        before = {key: getattr(write.item, key) for key in references} if write.item else {}
        check_references(view, write.data, before, write.server_values)  # before any SQL
        before |= {key: write.data[key] for key in references if key in write.data}
        with commits_refused(session, f"the {write.operation} of {type(view).__name__}"):
            obj = perform_write(view, write, before)
        response = respond(view, write, obj)
        if response.status_code >= 400:  # an action that answered an error writes nothing
            session.rollback()
            return response
        settle(response)
    after_commit(view, write, obj)
    return response


def perform_write(view: WriterView, write: Write, before: dict[str, Any]) -> Any:
    """Steps 3 to 5: the perform step, stamping, callbacks around the flush, the checks
    of every row written. Returns the object written."""
    specs = getattr(view, f"{write.operation}_jobs", ())  # WriteJob (outbox.py)
    if write.direct:
        row = write.perform(write)
        write.rows = [row]
        if specs:
            enqueue_declared(view, write.session, specs, write.rows)
        return row
    session = write.session
    links = take_links(view, write) if view.options.link_fields else {}  # 422 before SQL
    obj = write.perform(write)
    if links:
        restore_links(write, view, links)
    write.rows = [obj] if obj is not None else new_rows(view)
    new = [row for row in write.rows if added_here(row)]
    if write.moves_refused:
        check_moved(write, [row for row in write.rows if row not in new])
    stamp(write)  # an overridden perform step cannot move a row
    for row in new:
        view.check_object_permissions(row)
    with session.no_autoflush:  # pre callbacks see nothing flushed, as documented
        callbacks(view, "pre", write, obj)
    stamp(write)
    session.flush()
    if links:  # the many-to-many sets a body names (see linking.py), once obj has its key
        replace_links(view, write, obj, links)
    callbacks(view, "post", write, obj)
    session.flush()
    check_written(view, write, before)
    read_back(view, obj, write.data)
    if specs:
        enqueue_declared(view, session, specs, write.rows)
    return obj


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


def check_moved(write: Write, rows: list[Any]) -> None:
    """422 when a column the server sets no longer holds its value on one of ``rows``."""
    moved = {
        key: [SERVER_SET]
        for row in rows
        for key, value in write.server_values.items()
        if getattr(row, key) != value
    }
    if moved:
        raise unprocessable(moved)


#: The session of the write in progress in this context and what the write is, while its
#: perform step and callbacks run.
_writing: ContextVar[tuple[Session, str] | None] = ContextVar("resources_kit_writing", default=None)


@contextmanager
def commits_refused(session: Session | scoped_session[Session], what: str) -> Iterator[None]:
    """While the block runs (a bulk write's perform steps and callbacks), a
    ``session.commit()`` of ``session`` is refused, as within :func:`run_write`."""
    real = session() if isinstance(session, scoped_session) else session
    token = _writing.set((real, what))
    try:
        yield
    finally:
        _writing.reset(token)


def refuse_commit(session: Session) -> None:
    """While a write's perform step and callbacks run, a ``session.commit()`` of theirs is
    refused: the write commits once, after every check, or not at all."""
    writing = _writing.get()
    if writing is not None and writing[0] is session:  # another session commits freely
        raise HTTPError(
            500,
            f"A hook or callback of {writing[1]} called session.commit(); the library commits "
            "the write once, after its checks. Remove the commit (see Callbacks in the docs).",
        )


def check_written(view: WriterView, write: Write, before: Mapping[str, Any]) -> None:
    """After the flush, when foreign keys synced from relationships are known: the
    server's values still hold, each declared reference names a reachable row, and each
    row written is still one the caller may reach (else 403)."""
    if not write.stays_reachable:
        return
    for row in write.rows:
        if inspect(row).deleted or inspect(row).was_deleted:
            continue
        check_moved(write, [row])
        if view.options.references:
            now = {key: getattr(row, key) for key in view.options.references}
            check_references(view, now, before if row is write.item else {}, write.server_values)
        if view.mount.rechecks_writes and not view.row_policy.contains(row):
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


def created_object(view: Any, result: Any, earlier: Sequence[Any] = ()) -> Any:
    """The object ``perform_create`` made: what it returned, or the one new object of
    the model it added (pending, or flushed by the override); never a row that was in
    the session before it ran, which stamping would move, nor one an ``earlier`` item of
    a bulk create made."""
    model = view.options.model
    name = type(view).__name__
    if result is None:
        added = new_rows(view)
        if earlier:
            made = {id(obj) for obj in earlier}
            added = [obj for obj in added if id(obj) not in made]
        if len(added) != 1:
            raise ImproperlyConfigured(
                f"{name}.perform_create() returned None and added {len(added)} new "
                f"{model.__name__} objects; return the one it created."
            )
        return added[0]
    state = inspect(result, raiseerr=False)
    existing = state is not None and state.persistent and not added_here(result)
    existing = existing or any(result is obj for obj in earlier)
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


def after_commit(view: WriterView, write: Write, obj: Any) -> None:
    """Signals, then after-commit callbacks; each receiver runs on its own, and a
    failure is logged and cannot undo the commit or stop the others."""
    # The write's jobs first: published (or run, with no broker) right after the commit.
    session = write.session() if isinstance(write.session, scoped_session) else write.session
    if session.info.get(COMMITTED):
        deliver_committed(session)
    signal = signals.BY_OPERATION.get(write.operation, signals.action_performed)
    sender = type(view)
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, resource=obj, kwargs=write.data, operation=write.operation)
        except Exception:
            view.get_session().rollback()
            current_app.logger.exception(
                "A %s receiver failed after commit for %s", signal.name, sender.__name__
            )
    callbacks(view, "after_commit", write, obj)


def callbacks(view: WriterView, phase: str, write: Write, obj: Any) -> None:
    view.run_callbacks(phase, write.operation, obj, write.data)


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


# -- the write hooks of a resource, and the write mixins ---------------------------------------


class WriteHooks:
    r"""The write half of ``Resource``: the server's values, the body, the perform hooks,
    the response, :meth:`save`, and ``@action``\ s. ``Resource`` inherits it; the write
    mixins below call it."""

    if TYPE_CHECKING:  # provided by Resource
        options: Any
        mount: Any
        place: Any
        scope: dict[str, Any]
        extra: ExtraAction | None
        row_policy: Any

        def get_session(self) -> Session | scoped_session[Session]: ...
        def get_schema(self, operation: str) -> ma.Schema: ...
        def serialize(self, obj_or_objs: Any) -> Any: ...
        def serialize_many(self, objs: Any, operation: str = "detail") -> list[Any]: ...
        def item_response(self, body: Any, status: int = 200) -> Response: ...
        def check_parent(self) -> None: ...
        def get_object(self) -> Any: ...
        def check_object(self, obj: Any) -> None: ...
        def check_preconditions(self, obj: Any) -> None: ...
        def check_object_permissions(self, obj: Any) -> None: ...

    #: Whether the request being served is a bulk write (an array of items).
    is_bulk: bool = False

    def get_server_values(self, obj: Any = None) -> dict[str, Any]:
        """Columns the server sets: the scope and, when nested, the parent's key (checked
        first, so a create under a missing parent is a 404 before the body is read)."""
        values = dict(self.scope)
        key = self.mount.parent_key
        if key is not None:
            if obj is None:
                self.check_parent()
                values[key] = self.place.parent_key
            else:
                values[key] = getattr(obj, key)
        return values

    def get_request_data(self, operation: str, server_values: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON body loaded with the operation's schema (``partial`` for a patch),
        checked against the columns, then the server's values (never changed: 422)."""
        return load_body(self, operation, server_values)

    def get_item_data(
        self, operation: str, body: Any, server_values: Mapping[str, Any]
    ) -> dict[str, Any]:
        """One item of a bulk write (``"create"`` or ``"patch"``) loaded as
        :meth:`get_request_data` loads a body; a 422 here is reported under the item's
        index."""
        return load_data(self, operation, body, server_values)

    def get_bulk_response(self, operation: str, objs: list[Any]) -> Response:
        """The success response of a bulk write, built before the commit: the items
        written, in order, with the detail schema (201 for a create, 200 for a patch); no
        ``ETag`` or ``Location``, which name one item."""
        body = self.serialize_many(objs)
        response = cast(Response, current_app.json.response(body))
        response.status_code = 201 if operation == "create" else 200
        return response

    def perform_create(self, data: dict[str, Any]) -> Any:
        """Build the new object and add it to the session. Returning ``None`` is fine when
        exactly one new object of the model was added."""
        obj = self.options.model(**data)
        self.get_session().add(obj)
        return obj

    def perform_update(self, obj: Any, data: dict[str, Any]) -> Any:
        """Change ``obj`` in place. Return nothing (or ``obj``)."""
        for key, value in data.items():
            setattr(obj, key, value)

    def perform_delete(self, obj: Any) -> None:
        """Delete ``obj`` (default: ``session.delete``); override to archive instead."""
        self.get_session().delete(obj)

    def run_callbacks(self, phase: str, operation: str, obj: Any, kwargs: dict[str, Any]) -> None:
        """Run the ``<phase>_<operation>_callbacks``; ``CallbackMixin`` provides them."""

    def get_write_response(self, operation: str, obj: Any) -> Response:
        """The success response of a write, built before the commit: 201 with the item and
        ``Location`` for a create, 204 for a delete, 200 with the item otherwise."""
        if operation in NO_CONTENT:
            return Response(status=204)
        response = self.item_response(self.serialize(obj), 201 if operation == "create" else 200)
        location = self.location(obj) if operation == "create" else None
        if location is not None:
            response.headers["Location"] = location
        return response

    def location(self, obj: Any) -> str | None:
        """The URL of a created item; 422 when the item has no value for the lookup field."""
        if not self.mount.item_methods:
            return None
        value = getattr(obj, self.options.lookup_key)
        if value is None:
            raise unprocessable(
                {self.options.lookup_key: ["Required: it names the item in its URL."]}
            )
        values = {**self.place.url_kwargs, self.options.url_variable: value}
        return url_for(f".{self.mount.endpoint}_item", **values)

    @classmethod
    def compile_direct_update(cls, options: Any) -> DirectColumns | None:
        """What a PUT or PATCH by one ``UPDATE ... RETURNING`` of the row policy needs,
        or ``None`` when the class needs the object: the library's own steps
        (:data:`DIRECT_UPDATE_STEPS`), no update or patch callbacks, no column the
        database sets on update, and what :func:`direct_columns` asks. At request time
        :meth:`direct_update` adds what may change then."""
        if not keeps_owned_steps(cls, DIRECT_UPDATE_STEPS):
            return None
        if has_callbacks(cls, ("update", "patch")):
            return None
        direct = direct_columns(options)
        table = options.mapper.local_table
        if (
            direct is None
            or not jobs_read_returned(cls, ("update", "patch"), direct)
            or not names_one_row(options)
            or any(
                column.onupdate is not None or column.server_onupdate is not None
                for column in table.columns
            )
        ):
            return None
        return direct

    def direct_update(self, operation: str) -> Any:
        """The ``UPDATE`` statement of the item the URL names, inside the row policy, or
        ``None`` when the change must read the object first: the class allows it
        (:meth:`compile_direct_update`), the item is not nested (its server values are
        the scope alone), the request has no ``If-Match``, nothing receives the signal,
        and nothing the flush of an object would run is listening (see
        :func:`direct_listeners`). The body decides the rest (:meth:`change_item`)."""
        view = cast(Any, self)  # a Resource
        direct = self.options.direct_update
        if direct is None or self.mount.parent_key is not None or self.mount.rechecks_writes:
            return None
        if request.if_match or view.require_if_match:
            return None
        mapper = self.options.mapper
        signal = signals.BY_OPERATION[operation]
        if direct_listeners(self, signal, ("before_update", "after_update"), "update_returning"):
            return None
        if holds_instances(self.get_session(), mapper):  # it would hold a stale copy
            return None
        return cached(self.place.levels, self.place.parent_checked, "update", self._update)

    def _update(self) -> Any:
        where = item_where(self)
        if where is None:
            return None
        direct = self.options.direct_update
        return update(direct.table).where(where).returning(*direct.returning)

    def change_item(self, operation: str) -> Response:
        """A PUT (``"update"``) or PATCH (``"patch"``) of the item the URL names: found
        inside the row policy, ``If-Match`` checked, the body loaded, one write. Where
        :meth:`direct_update` allows and the body sets only plain columns, that write is
        one ``UPDATE ... RETURNING`` (404 when it changes nothing), with no read first."""
        statement = self.direct_update(operation)
        if statement is None:
            obj = self.get_object()
            self.check_object(obj)
            self.check_preconditions(obj)
            server_values = self.get_server_values(obj)
            data = self.get_request_data(operation, server_values)
            return self.save(Write(operation, data, server_values, self.perform_update_step, obj))
        server_values = self.get_server_values(None)
        try:
            data = self.get_request_data(operation, server_values)
        except HTTPError:
            self.check_object(self.get_object())  # a missing item is a 404 before the body
            raise
        direct = self.options.direct_update
        values = direct.values(data, server_values) if direct.takes(data) else None
        if values and not any(key in self.options.references for key in data):
            perform = partial(self.perform_direct_update, statement, values)
            write = Write(operation, data, server_values, perform)
            write.direct = True
            return self.save(write)
        obj = self.get_object()
        self.check_object(obj)
        return self.save(Write(operation, data, server_values, self.perform_update_step, obj))

    def perform_direct_update(self, statement: Any, values: Mapping[str, Any], write: Write) -> Any:
        """The change as one statement, returning the row; 404 when no row inside the
        policy matched."""
        row = execute_direct(self, statement, values, write).first()
        if row is None:
            raise not_found()
        return row

    def perform_update_step(self, write: Write) -> Any:
        """The perform step of a PUT or PATCH: :meth:`perform_update` on the item."""
        return updated_object(self, write.item, self.perform_update(write.item, write.data))

    def save(self, write: Write) -> Response:
        """Run ``write`` as one transaction (see this module's docstring)."""
        return run_write(self, write)

    def run_action(self) -> Response:
        """An ``@action``: the item inside the row policy (or the parent chain checked),
        the body loaded with its schema, and for a writing action one :class:`Write`."""
        extra = cast(ExtraAction, self.extra)
        check_query_args(())
        obj = None
        if extra.detail:
            obj = self.get_object()
            self.check_object(obj)
            if extra.writes:
                self.check_preconditions(obj)
        else:
            self.check_parent()
        server_values = self.get_server_values(obj)
        data = self.get_request_data(extra.name, server_values) if extra.schema else {}
        if not extra.writes:
            return extra.respond(getattr(self, extra.name)(*self.action_args(obj, data)))
        write = Write(extra.operation, data, server_values, self.perform_action, obj)
        write.moves_refused = True  # no stamping over what the action set: a 422
        return self.save(write)

    def action_args(self, obj: Any, data: dict[str, Any]) -> list[Any]:
        """What an ``@action`` method is called with: the item, then the loaded body."""
        extra = cast(ExtraAction, self.extra)
        return ([obj] if extra.detail else []) + ([data] if extra.schema else [])

    def perform_action(self, write: Write) -> Any:
        """A writing action's perform step: the method, its result kept for the response."""
        method = getattr(self, cast(ExtraAction, self.extra).name)
        write.result = method(*self.action_args(write.item, write.data))
        return write.item


if TYPE_CHECKING:
    _Base = WriteHooks
else:
    _Base = object


class CreateMixin(_Base):
    """``POST`` on the collection: 201 with a ``Location`` header."""

    @classmethod
    def compile_direct_create(cls, options: Any) -> DirectColumns | None:
        """What a create by one ``INSERT ... RETURNING`` needs, or ``None`` when the
        class needs the object: the library's own steps (:data:`DIRECT_CREATE_STEPS`),
        no create callbacks, and what :func:`direct_columns` asks. At request time
        :meth:`direct_create` adds what may change then."""
        if not keeps_owned_steps(cls, DIRECT_CREATE_STEPS) or has_callbacks(cls, ("create",)):
            return None
        direct = direct_columns(options)
        return direct if jobs_read_returned(cls, ("create",), direct) else None

    def direct_create(self, data: Mapping[str, Any]) -> DirectColumns | None:
        """What the create of ``data`` by one statement needs, or ``None`` for the ORM's
        path: the class allows it (:meth:`compile_direct_create`), ``data`` sets only
        plain columns, no write of this mount is checked against the policy afterwards,
        nothing receives the signal, and nothing the flush of an object would run is
        listening (see :func:`direct_listeners`)."""
        direct: DirectColumns | None = self.options.direct_create
        if direct is None or self.mount.rechecks_writes or not direct.takes(data):
            return None
        signal = signals.resource_created
        if direct_listeners(self, signal, ("before_insert", "after_insert"), "insert_returning"):
            return None
        init = self.options.mapper.class_manager.dispatch.init
        if any(listener is not _ORM_INIT for listener in init):
            return None  # an init listener of the model's (it may set what the body left out)
        return direct

    def create(self) -> Response:
        """``POST`` on the collection: 201 with the new item and its ``Location``. Where
        :meth:`direct_create` allows, one ``INSERT ... RETURNING`` whose row is the
        answer."""
        server_values = self.get_server_values()
        data = self.get_request_data("create", server_values)
        direct = self.direct_create(data)
        if direct is not None:
            perform = partial(self.perform_direct_create, direct)
            write = Write("create", data, server_values, perform)
            write.direct = True
            return self.save(write)
        return self.save(Write("create", data, server_values, self.perform_create_step))

    def perform_direct_create(self, direct: DirectColumns, write: Write) -> Any:
        """The create as one statement: the new row, as the database stored it."""
        return execute_direct(self, direct.insert, direct.insert_values(write.data), write).one()

    def perform_create_step(self, write: Write) -> Any:
        """The create's perform step: :meth:`perform_create`, and the object it made."""
        return created_object(self, self.perform_create(write.data))


class UpdateMixin(_Base):
    """``PUT`` on an item: the full body is validated; the fields it holds are written."""

    def update(self) -> Response:
        """``PUT`` on an item: every input field replaced (``If-Match`` checked)."""
        return self.change_item("update")


class PatchMixin(_Base):
    """``PATCH`` on an item: loaded ``partial=True``; only the fields sent are touched."""

    def partial_update(self) -> Response:
        """``PATCH`` on an item: only the fields sent (loaded ``partial=True``)."""
        return self.change_item("patch")


class DeleteMixin(_Base):
    """``DELETE`` on an item: 204 with an empty body."""

    @classmethod
    def compile_direct_delete(cls, options: Any) -> bool:
        """Whether a delete may be one ``DELETE`` statement of the row policy, with no
        object read first: the library's own delete steps, no delete callbacks, no
        permissions, and a model whose delete the ORM would not cascade or check (no
        inheritance, no version column, no relationship but a many-to-one, a view-only one
        or one with ``passive_deletes="all"``). At request time :meth:`direct_delete`
        adds what may change then."""
        if not keeps_owned_steps(cls, DIRECT_DELETE_STEPS) or has_callbacks(cls, ("delete",)):
            return False
        if getattr(cls, "delete_jobs", ()):  # their arguments come from the deleted row
            return False
        mapper = options.mapper
        if options.permission is not None or mapper.inherits is not None:
            return False
        if mapper.version_id_col is not None or mapper.polymorphic_on is not None:
            return False
        if not names_one_row(options):
            return False
        return all(
            rel.viewonly or rel.direction is MANYTOONE or rel.passive_deletes == "all"
            for rel in mapper.relationships
        )

    def direct_delete(self) -> Any:
        """The ``DELETE`` statement of the item the URL names, inside the row policy, or
        ``None`` when the delete must read the object first: the class allows it
        (:meth:`compile_direct_delete`), the request has no ``If-Match``, nothing
        receives the delete signal, no listener of the mapper or the session's flush
        would see the delete, and the session holds no object of the model (one it
        held would outlive its row: a session kept across requests, as under an
        application context a test pushed, deletes through the ORM)."""
        view = cast(Any, self)  # a Resource
        if not self.options.direct_delete or request.if_match or view.require_if_match:
            return None
        if signals.resource_deleted.has_receivers_for(type(self)):
            return None
        dispatch = self.options.mapper.dispatch
        if dispatch.before_delete or dispatch.after_delete:
            return None
        session = self.get_session()
        if session_listens(session, FLUSH_EVENTS) or holds_instances(session, self.options.mapper):
            return None
        return cached(self.place.levels, self.place.parent_checked, "delete", self._delete)

    def _delete(self) -> Any:
        where = item_where(self)
        return None if where is None else delete(self.options.model).where(where)

    def destroy(self) -> Response:
        """``DELETE`` on an item: 204 with an empty body. Where :meth:`direct_delete`
        allows, that one statement (404 when it deletes nothing)."""
        check_query_args(())
        statement = self.direct_delete()
        if statement is not None:
            server_values = dict(self.scope)
            perform = partial(self.perform_direct_delete, statement)
            write = Write("delete", dict(server_values), server_values, perform)
            write.stays_reachable = False
            return self.save(write)
        obj = self.get_object()
        self.check_object(obj)
        self.check_preconditions(obj)
        server_values = self.get_server_values(obj)
        write = Write("delete", dict(server_values), server_values, self.perform_delete_step, obj)
        write.stays_reachable = False  # an archived row may leave the policy
        return self.save(write)

    def perform_delete_step(self, write: Write) -> Any:
        """The delete's perform step: :meth:`perform_delete`; callbacks and signals see the
        deleted row."""
        self.perform_delete(write.item)
        return write.item

    def perform_direct_delete(self, statement: Any, write: Write) -> Any:
        """The delete as one statement; 404 when no row inside the policy matched."""
        options = {"synchronize_session": False}
        result = write.session.execute(statement, execution_options=options)
        if result.rowcount == 0:
            raise not_found()


#: The steps of a delete and the library's own methods for each: a resource that
#: overrides one has its delete read the object first.
DIRECT_DELETE_STEPS = {
    "destroy": {"resources_kit.writing:DeleteMixin.destroy"},
    "perform_delete": {"resources_kit.writing:WriteHooks.perform_delete"},
    "perform_delete_step": {"resources_kit.writing:DeleteMixin.perform_delete_step"},
    "get_write_response": {"resources_kit.writing:WriteHooks.get_write_response"},
    "get_object": {"resources_kit.resource:Resource.get_object"},
    "check_preconditions": {"resources_kit.resource:Resource.check_preconditions"},
    "run_callbacks": {
        "resources_kit.writing:WriteHooks.run_callbacks",
        "resources_kit.callbacks:CallbackMixin.run_callbacks",
    },
}
CALLBACK_PHASES = ("pre", "post", "after_commit")
#: Session events that would see a delete the ORM flushes, and miss one it executes.
FLUSH_EVENTS = ("before_flush", "after_flush", "after_flush_postexec")


#: The steps of a create and the library's own methods for each: a resource that
#: overrides one creates through an object.
DIRECT_CREATE_STEPS = {
    "create": {"resources_kit.writing:CreateMixin.create"},
    "perform_create": {"resources_kit.writing:WriteHooks.perform_create"},
    "perform_create_step": {"resources_kit.writing:CreateMixin.perform_create_step"},
    "perform_direct_create": {"resources_kit.writing:CreateMixin.perform_direct_create"},
    "location": {"resources_kit.writing:WriteHooks.location"},
}
#: The steps of a PUT or PATCH and the library's own methods for each: a resource that
#: overrides one reads the object and changes it.
DIRECT_UPDATE_STEPS = {
    "change_item": {"resources_kit.writing:WriteHooks.change_item"},
    "get_server_values": {"resources_kit.writing:WriteHooks.get_server_values"},
    "perform_update": {"resources_kit.writing:WriteHooks.perform_update"},
    "perform_update_step": {"resources_kit.writing:WriteHooks.perform_update_step"},
    "perform_direct_update": {"resources_kit.writing:WriteHooks.perform_direct_update"},
    "get_object": {"resources_kit.resource:Resource.get_object"},
    "check_object": {"resources_kit.resource:Resource.check_object"},
    "check_preconditions": {"resources_kit.resource:Resource.check_preconditions"},
}
#: The steps every direct write shares: the answer is built from the row.
DIRECT_RESPONSE_STEPS = {
    "get_write_response": {"resources_kit.writing:WriteHooks.get_write_response"},
    "check_object_permissions": {"resources_kit.resource:Resource.check_object_permissions"},
    "get_schema": {"resources_kit.representation:Representation.get_schema"},
    "serialize": {"resources_kit.representation:Representation.serialize"},
    "serialize_many": {"resources_kit.representation:Representation.serialize_many"},
    "item_response": {"resources_kit.representation:Representation.item_response"},
    "run_callbacks": DIRECT_DELETE_STEPS["run_callbacks"],
}
DIRECT_CREATE_STEPS |= DIRECT_RESPONSE_STEPS
DIRECT_UPDATE_STEPS |= DIRECT_RESPONSE_STEPS
#: The listener every mapped class has of its objects' ``init`` (the ORM's own).
_ORM_INIT = getattr(import_module("sqlalchemy.orm.mapper"), "_event_on_init", None)
#: Session events that would see an object the ORM adds and flushes, and miss a row a
#: statement writes.
OBJECT_EVENTS = (
    *FLUSH_EVENTS,
    "do_orm_execute",
    "transient_to_pending",
    "pending_to_persistent",
    "before_attach",
    "after_attach",
)


def keeps_owned_steps(cls: type[Any], steps: Mapping[str, set[str]]) -> bool:
    """Whether ``cls`` has, for each of ``steps``, one of the library's methods named."""
    for step, owners in steps.items():
        method = getattr(cls, step)
        if f"{method.__module__}:{method.__qualname__}" not in owners:
            return False
    return True


def has_callbacks(cls: type[Any], operations: Sequence[str]) -> bool:
    return any(
        getattr(cls, f"{phase}_{operation}_callbacks", ())
        for phase in CALLBACK_PHASES
        for operation in operations
    )


def jobs_read_returned(
    cls: type[Any], operations: Sequence[str], direct: DirectColumns | None
) -> bool:
    """Whether the jobs ``cls`` declares for ``operations`` (``WriteJob``) read only what
    a statement's row returns: named attributes among its columns, no ``arguments``
    function (which may read any attribute of the object)."""
    if direct is None:
        return True
    for operation in operations:
        for spec in getattr(cls, f"{operation}_jobs", ()):
            if spec.arguments is not None or not set(spec.attributes.values()) <= set(direct.keys):
                return False
    return True


@dataclass(frozen=True, eq=False)
class DirectColumns:
    """What a create or change by one statement of the model's table needs: the table,
    the column key of each attribute a body may set, and the columns ``RETURNING``
    gives back, named by their attributes (a row of them is the item the answer
    dumps, as an item read's row is)."""

    table: Any
    keys: Mapping[str, str]
    returning: tuple[Any, ...]
    insert: Any
    #: What a create sets to ``NULL`` when the body leaves it out: the mapped columns
    #: with no default, as the ORM's insert does (MariaDB's strict mode refuses a column
    #: left out that has no default, where it would refuse the ``NULL`` as a constraint).
    nulls: Mapping[str, None]
    #: The columns whose type stores ``None`` as a value (JSON's ``null``): any other
    #: column a create's body sets to ``None`` is left out, as the ORM leaves it, so
    #: that its default applies (and ``NULL`` where it has none).
    keeps_none: frozenset[str]

    def insert_values(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A create's values, as the ORM's insert would send them."""
        keys, keeps = self.keys, self.keeps_none
        values = {
            keys[key]: value
            for key, value in data.items()
            if value is not None or keys[key] in keeps
        }
        return {**self.nulls, **values}

    def takes(self, data: Mapping[str, Any]) -> bool:
        """Whether ``data`` sets only plain columns."""
        return all(key in self.keys for key in data)

    def values(self, data: Mapping[str, Any], server_values: Mapping[str, Any]) -> dict[str, Any]:
        """``data`` keyed by column, less what ``server_values`` hold (a change's scope,
        which the policy's conditions already hold)."""
        keys = self.keys
        return {keys[key]: value for key, value in data.items() if key not in server_values}


def direct_columns(options: Any) -> DirectColumns | None:
    """What a write by one statement needs, or ``None`` when the ORM's object is needed:
    no permissions and no link fields; a model with no inheritance, version column,
    ``@validates`` or ``__init__`` of its own; every column attribute a column of its
    table; and a detail schema the compiled dumper reads plainly from them (as an item
    read's row is read)."""
    mapper = options.mapper
    if options.permission is not None or options.link_fields:
        return None
    if mapper.inherits is not None or mapper.polymorphic_on is not None:
        return None
    if mapper.version_id_col is not None or mapper.validators:
        return None
    if mapper.class_manager.original_init is not mapper.registry.constructor:
        return None
    if not reads_plain_attributes(options.schemas["detail"], options.columns):
        return None
    table = mapper.local_table
    keys: dict[str, str] = {}
    returning = []
    for key in options.columns:
        column = mapper.column_attrs[key].columns[0]
        if column.table is not table:
            return None
        keys[key] = column.key
        returning.append(column if column.key == key == column.name else column.label(key))
    columns = [table.c[key] for key in keys.values()]
    nulls = {
        column.key: None
        for column in columns
        if not column.primary_key
        and column.default is None
        and column.server_default is None
        and not column.type.should_evaluate_none
    }
    keeps_none = frozenset(column.key for column in columns if column.type.should_evaluate_none)
    statement = insert(table).returning(*returning)
    return DirectColumns(table, keys, tuple(returning), statement, nulls, keeps_none)


def names_one_row(options: Any) -> bool:
    """Whether the lookup column is unique by itself (the primary key, or a unique
    constraint or index of that column alone): then a statement on the item the URL
    names changes one row at most. A lookup unique only with other columns, or not at
    all, reads its object (where more than one row is an error, not a write to each)."""
    mapper = options.mapper
    column = mapper.column_attrs[options.lookup_key].columns[0]
    table = mapper.local_table
    alone = [column]
    if list(table.primary_key.columns) == alone or column.unique:
        return True
    return any(list(group) == alone for group in unique_column_groups(table))


def direct_listeners(view: Any, signal: Any, mapper_events: Sequence[str], returns: str) -> bool:
    """Whether something would miss a row written by one statement, or the database
    cannot return it: a receiver of ``signal``, a listener of the mapper's
    ``mapper_events``, of an attribute's ``set`` or of the session's
    :data:`OBJECT_EVENTS`; or a dialect without ``returns`` (MariaDB's ``UPDATE``)."""
    if signal.has_receivers_for(type(view)):
        return True
    mapper = view.options.mapper
    if any(getattr(mapper.dispatch, name) for name in mapper_events):
        return True
    if any(attribute.dispatch.set for attribute in view.options.columns.values()):
        return True
    session = view.get_session()
    if not writes_by_statement(session, OBJECT_EVENTS):
        return True
    return not getattr(session.get_bind(mapper=mapper).dialect, returns)


def execute_direct(view: Any, statement: Any, values: Mapping[str, Any], write: Write) -> Any:
    """``statement`` with ``values``, on the session's connection (in its transaction,
    which commits the write)."""
    connection = write.session.connection(bind_arguments={"mapper": view.options.mapper})
    return connection.execute(statement, values)


def item_where(view: Any) -> Any:
    """The conditions of the item the URL names inside the row policy, for a statement
    on the model's table alone; ``None`` when the policy joins another table, or reads
    the model's own table above (MySQL cannot change a table its subquery reads)."""
    table = view.options.mapper.local_table
    if any(level.options.mapper.local_table is table for level in view.place.levels[1:]):
        return None
    query = view.get_scoped_query().where(lookup_clause(view, 0))
    if query.get_final_froms() != [table]:
        return None  # a join of get_query(): the ORM's path
    return query.whereclause


def holds_instances(session: Any, mapper: Any) -> bool:
    """Whether the session's identity map holds an object of the mapper's class (its
    identity keys name the base mapper's class)."""
    identity_class = mapper.base_mapper.class_
    return any(key[0] is identity_class for key in session.identity_map)


# One listener for every session: it acts only inside a write (see refuse_commit).
event.listen(Session, "before_commit", refuse_commit)
