"""Bulk writes: a JSON array of items created (``POST``) or changed (``PATCH``) on a
collection in one transaction, all of them or none.

A resource opts in with ``bulk = ("create", "patch")`` (and ``max_bulk_items``). Every
item is a :class:`~resources_kit.writing.Write` and goes through the steps of a single
write (see :mod:`resources_kit.writing`), each step run for all the items before the
next, so that the statements do not grow with the items:

1. the array is read (400 if it is not one, 413 past ``max_bulk_items``, 422 when
   empty), each item loaded with :meth:`get_item_data`: every item's errors are
   reported at once, under its index (``{"errors": {"3": {"email": [...]}}}``);
2. a PATCH finds its rows inside the row policy in one statement (``pk IN (...)``); an
   id it does not find there is a 422 naming the item, and nothing is written;
3. ``references`` are checked under their target's row policy: one statement per
   reference column, with every item's value;
4. the perform step of every item, the server's values stamped, object permissions,
   pre callbacks; one flush (the INSERTs batched: SQLAlchemy's insertmanyvalues); post
   callbacks; a flush;
5. the rows written are checked (the server's values, references set other than by the
   body, the row policy: one statement for all the rows), read back in one statement
   where a column needs it;
6. the response (the items in order), the production guards' hook, one commit;
7. then per item: its jobs, signals and after-commit callbacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flask import Response, request
from sqlalchemy import String, inspect, or_, select, tuple_

from .columns import exact_equals
from .errors import HTTPError, unprocessable
from .linking import replace_links, restore_links, take_links
from .outbox import enqueue_declared
from .parsing import body_is_array, check_query_args, json_array, json_kind
from .policy import reachable_values
from .writing import (
    SERVER_SET,
    Write,
    added_here,
    after_commit,
    callbacks,
    commits_refused,
    created_object,
    one_transaction,
    stamp,
)

#: Not given, or no value a row could have.
_UNSET: Any = object()

#: The message of a bulk PATCH item whose id names no row the caller may reach.
NO_SUCH_ITEM = "No such item."


def bulk_handler(view: Any, method: str) -> Callable[[], Response] | None:
    """The handler of a bulk write on a collection, or ``None`` for any other request:
    a ``POST`` whose body is a JSON array (when ``"create"`` is enabled), and the
    collection's ``PATCH`` (registered only when ``"patch"`` is)."""
    bulk = view.options.bulk
    if method == "POST" and "create" in bulk and body_is_array():
        view.is_bulk = True
        return lambda: create_many(view)
    if method == "PATCH" and "patch" in bulk:
        view.is_bulk = True
        view.action = "partial_update"  # the permissions and guards of a PATCH
        return lambda: patch_many(view)
    return None


def read_items(view: Any) -> list[Any]:
    """The bulk body: a JSON array of 1 to ``max_bulk_items`` items."""
    check_query_args(())
    items = json_array()
    most = view.options.max_bulk_items
    if len(items) > most:
        raise HTTPError(413, f"A bulk write takes at most {most} items; this one has {len(items)}.")
    if not items:
        raise unprocessable(
            {"_schema": ["The array is empty; a bulk write needs at least one item."]}
        )
    return items


def item_errors(exc: HTTPError) -> Any:
    return exc.errors if exc.errors is not None else {"_schema": [exc.description]}


def load_items(
    view: Any,
    operation: str,
    bodies: Mapping[int, Any],
    server_values: Mapping[int, Mapping[str, Any]],
    errors: dict[str, Any],
) -> dict[int, dict[str, Any]]:
    """Each item loaded with the resource's ``get_item_data``; a 422 naming every bad
    item's index (with ``errors`` found before) when any is bad."""
    loaded: dict[int, dict[str, Any]] = {}
    for index, body in bodies.items():
        if not isinstance(body, dict):
            errors[str(index)] = {
                "_schema": [f"An item must be a JSON object, not {json_kind(body)}."]
            }
            continue
        try:
            loaded[index] = view.get_item_data(operation, body, server_values[index])
        except HTTPError as exc:
            if exc.code != 422:
                raise
            errors[str(index)] = item_errors(exc)
    if errors:
        raise unprocessable(dict(sorted(errors.items(), key=lambda item: int(item[0]))))
    return loaded


# -- the two bulk actions --------------------------------------------------------------------


def create_many(view: Any) -> Response:
    """``POST`` of an array: every item created, or none."""
    server_values = view.get_server_values()  # the parent checked once, before the body
    bodies = read_items(view)
    loaded = load_items(
        view,
        "create",
        dict(enumerate(bodies)),
        dict.fromkeys(range(len(bodies)), server_values),
        {},
    )
    made: list[Any] = []

    def perform(write: Write) -> Any:
        obj = created_object(view, view.perform_create(write.data), made)
        made.append(obj)
        return obj

    writes = [
        Write("create", loaded[index], server_values, perform) for index in range(len(bodies))
    ]
    return run_bulk(view, writes)


def patch_many(view: Any) -> Response:
    """``PATCH`` of an array of items with their ids: every row changed, or none."""
    if request.if_match:
        raise HTTPError(
            400,
            "A bulk PATCH takes no If-Match: an ETag names one item. PATCH the item itself "
            "to change it only if it is unchanged.",
        )
    bodies = read_items(view)
    view.check_parent()
    options = view.options
    key_name = options.bulk_key
    errors: dict[str, Any] = {}
    keys: dict[int, Any] = {}
    seen: dict[Any, int] = {}
    rest: dict[int, Any] = {}
    for index, body in enumerate(bodies):
        if not isinstance(body, dict):
            rest[index] = body  # refused by load_items
            continue
        if key_name not in body:
            errors[str(index)] = {key_name: ["Required: it names the item to change."]}
            continue
        key = lookup_value(options, body[key_name])
        if key is _UNSET:
            errors[str(index)] = {key_name: [NO_SUCH_ITEM]}
        elif key in seen:
            errors[str(index)] = {key_name: [f"Named by item {seen[key]} already."]}
        else:
            seen[key] = index
            keys[index] = key
            rest[index] = {name: value for name, value in body.items() if name != key_name}
    found = find_rows(view, list(keys.values())) if keys else {}
    for index, key in keys.items():
        if key not in found:
            errors[str(index)] = {key_name: [NO_SUCH_ITEM]}
            rest.pop(index)
    items = {index: found[key] for index, key in keys.items() if key in found}
    for obj in items.values():
        view.check_object_permissions(obj)  # a row the caller may see, before it changes
    server_values = {index: view.get_server_values(obj) for index, obj in items.items()}
    server_values |= {index: {} for index in rest if index not in items}
    loaded = load_items(view, "patch", rest, server_values, errors)
    writes = [
        Write("patch", loaded[index], server_values[index], view.perform_update_step, items[index])
        for index in range(len(bodies))
    ]
    return run_bulk(view, writes)


def lookup_value(options: Any, value: Any) -> Any:
    """A bulk PATCH item's id as the lookup column holds it, or ``_UNSET`` for a value no
    row could have (as the URL of a single PATCH converts it)."""
    if options.converter == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return _UNSET
        bounds = options.lookup_bounds
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            return _UNSET
        return value
    if not isinstance(value, str):
        return _UNSET
    if options.lookup_convert is not None:
        try:
            return options.lookup_convert(value)
        except ValueError:
            return _UNSET
    if options.lookup_check is not None and options.lookup_check(value):
        return _UNSET
    return value


def find_rows(view: Any, keys: Sequence[Any]) -> dict[Any, Any]:
    """The rows the keys name inside the row policy, in one statement: lookup value ->
    row."""
    options = view.options
    column = options.lookup_attr
    if isinstance(column.type, String):  # byte-exact, as the URL's lookup
        match = or_(*(exact_equals(column, key) for key in keys))
    else:
        match = column.in_(keys)
    query = view.get_scoped_query().where(match).options(*view.query_options)
    result = view.execute_read(query)
    rows = (result.unique() if view.query_options else result).scalars()
    return {getattr(row, options.lookup_key): row for row in rows}


# -- the transaction -------------------------------------------------------------------------


def run_bulk(view: Any, writes: list[Write]) -> Response:
    """Steps 3 to 7 of the module docstring, in one transaction committed once."""
    session = view.get_session()
    references = view.options.references
    befores: list[dict[str, Any]] = []
    for write in writes:
        write.session = session
        item = write.item
        befores.append({key: getattr(item, key) for key in references} if item is not None else {})
    with one_transaction(view, session) as settle:
        check_references(
            view, [(w.data, b, w.server_values) for w, b in zip(writes, befores, strict=True)]
        )
        for write, before in zip(writes, befores, strict=True):
            before |= {key: write.data[key] for key in references if key in write.data}
        what = f"the bulk {writes[0].operation} of {type(view).__name__}"
        with commits_refused(session, what):  # a commit by a perform step or a callback
            objs = perform_bulk(view, writes, befores)
        response: Response = view.get_bulk_response(writes[0].operation, objs)
        settle(response)
    for write, obj in zip(writes, objs, strict=True):
        after_commit(view, write, obj)
    return response


def perform_bulk(view: Any, writes: list[Write], befores: list[dict[str, Any]]) -> list[Any]:
    """Step 4 and 5 for every item: the perform steps, stamping, object permissions,
    callbacks around one flush, the checks of every row written, the read-back."""
    session = writes[0].session
    objs = []
    # Each item's many-to-many ids out of its data before its perform step (a 422 naming
    # the item), set once the flush gave the rows their keys: as a single write does.
    links = [taken_links(view, write, index) for index, write in enumerate(writes)]
    for write, taken in zip(writes, links, strict=True):
        obj = write.perform(write)
        if taken:
            restore_links(write, view, taken)
        write.rows = [obj]
        objs.append(obj)
        stamp(write)  # an overridden perform step cannot move a row
        if added_here(obj):
            view.check_object_permissions(obj)
    with session.no_autoflush:  # pre callbacks see nothing flushed, as documented
        for write, obj in zip(writes, objs, strict=True):
            callbacks(view, "pre", write, obj)
    for write in writes:
        stamp(write)
    session.flush()
    for write, obj, taken in zip(writes, objs, links, strict=True):
        if taken:
            replace_links(view, write, obj, taken)
        callbacks(view, "post", write, obj)
    session.flush()
    check_written(view, writes, befores)
    read_back(view, writes)
    specs = getattr(view, f"{writes[0].operation}_jobs", ())  # WriteJob (outbox.py)
    if specs:  # one INSERT of every item's jobs
        enqueue_declared(view, session, specs, [row for write in writes for row in write.rows])
    return objs


def taken_links(view: Any, write: Write, index: int) -> dict[str, list[Any]]:
    """``take_links`` of one bulk item: its 422 names the item's index."""
    if not view.options.link_fields:
        return {}
    try:
        return take_links(view, write)
    except HTTPError as exc:
        if exc.code != 422:
            raise
        raise unprocessable({str(index): exc.errors}) from None


def check_references(
    view: Any, entries: Sequence[tuple[Mapping[str, Any], Mapping[str, Any], Mapping[str, Any]]]
) -> None:
    """A 422 naming each item (by index) whose reference (changed since its ``before``)
    names no row the referenced resource's row policy lets the caller reach: one
    statement per reference column."""
    errors: dict[str, dict[str, list[str]]] = {}
    for key, (target, ref_key) in view.options.references.items():
        wanted: dict[int, Any] = {}
        for index, (values, before, server_values) in enumerate(entries):
            value = values.get(key)
            if value is None or key in server_values or before.get(key, _UNSET) == value:
                continue
            try:
                hash(value)
            except TypeError:
                errors.setdefault(str(index), {})[key] = [NO_SUCH_ITEM]
                continue
            wanted[index] = value
        found = reachable_values(view, target, ref_key, list(wanted.values())) if wanted else set()
        for index, value in wanted.items():
            if value not in found:
                errors.setdefault(str(index), {})[key] = [NO_SUCH_ITEM]
    if errors:
        raise unprocessable(dict(sorted(errors.items(), key=lambda item: int(item[0]))))


def check_written(view: Any, writes: list[Write], befores: list[dict[str, Any]]) -> None:
    """After the flush: the server's values still hold on every row, references set
    other than by the body are reachable, and every row is still inside the caller's
    row policy (403; one statement for all the rows)."""
    rows = []
    for index, write in enumerate(writes):
        for row in write.rows:
            if inspect(row).deleted or inspect(row).was_deleted:
                continue
            moved = [
                key for key, value in write.server_values.items() if getattr(row, key) != value
            ]
            if moved:
                raise unprocessable({str(index): {key: [SERVER_SET] for key in moved}})
            rows.append(row)
    references = view.options.references
    if references:
        now = [
            ({key: getattr(write.rows[0], key) for key in references}, before, write.server_values)
            for write, before in zip(writes, befores, strict=True)
        ]
        check_references(view, now)
    if view.mount.rechecks_writes and rows and view.row_policy.outside(rows):
        raise HTTPError(403, "The change would leave a row outside the rows you may reach here.")


def read_back(view: Any, writes: list[Write]) -> None:
    """Reload, in one statement for all the rows, what the database may have stored
    differently from what was sent (see :func:`resources_kit.writing.read_back`)."""
    options = view.options
    session = view.get_session()
    stale_rows = []
    for write in writes:
        obj = write.rows[0]
        state = inspect(obj)
        if state.deleted or state.was_deleted:
            continue
        stale = [key for key in write.data if key in options.stored_form_keys]
        relationships = [
            name
            for name, keys in options.relationship_keys.items()
            if name in state.dict and not keys.isdisjoint(write.data)
        ]
        if relationships:
            session.expire(obj, relationships)  # reloaded only if the response shows them
        if stale:
            session.expire(obj, stale)
            stale_rows.append(obj)
    if stale_rows:  # an expired attribute of a row in the session is filled by its load
        primary_key = options.primary_key
        keys = [tuple(getattr(obj, column.key) for column in primary_key) for obj in stale_rows]
        if len(primary_key) == 1:
            match = primary_key[0].in_([key[0] for key in keys])
        else:
            match = tuple_(*primary_key).in_(keys)
        session.execute(select(options.model).where(match)).all()
