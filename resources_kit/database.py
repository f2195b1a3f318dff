"""What the database does for a deployment: row-level security on PostgreSQL, engine
options for a transaction-mode pooler, and the engine that serves reads.

Row-level security (RLS) is a second, independent guard beside the library's own scoping:
each transaction of a request sets the tenant values as transaction-local settings
(``set_config(name, value, true)``, the function form of ``SET LOCAL``), and a policy on
each scoped table admits only the rows whose columns match them, for reads and writes.
Nothing outlives the transaction, so it works through PgBouncer in transaction mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from flask import Response, after_this_request, current_app, request
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import Table, event, func, inspect, make_url, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, scoped_session

from .errors import HTTPError, ImproperlyConfigured, is_unavailable, service_unavailable

#: Settings are named ``resources_kit.<column>``: a custom, dotted name as PostgreSQL
#: requires for settings it does not know.
SETTING_PREFIX = "resources_kit."
#: The name of the policy :func:`row_level_security_ddl` creates on each table.
POLICY_NAME = "resources_kit_tenant"

_settings: ContextVar[Mapping[str, str] | None] = ContextVar(
    "resources_kit_row_level_security", default=None
)


def setting_name(column: str) -> str:
    return f"{SETTING_PREFIX}{column}"


# -- the settings of each transaction ----------------------------------------------------


def _apply(connection: Connection, settings: Mapping[str, str]) -> None:
    if connection.dialect.name != "postgresql":
        raise ImproperlyConfigured(
            "row_level_security needs PostgreSQL; on "
            f"{connection.dialect.name} the library's own scoping is the only guard."
        )
    connection.execute(
        select(
            *(func.set_config(setting_name(key), value, True) for key, value in settings.items())
        )
    )


def _after_begin(session: Session, transaction: Any, connection: Connection) -> None:
    settings = _settings.get()
    # Another database the request also uses (a bind of another kind, a second session)
    # has no policies to feed: only PostgreSQL connections get the settings.
    if settings and connection.dialect.name == "postgresql":
        _apply(connection, settings)


def bind_settings(
    settings: Mapping[str, Any], session: Session | scoped_session[Session]
) -> Token[Mapping[str, str] | None]:
    """Make ``settings`` (column -> value) the tenant settings of every transaction the
    session begins until :func:`unbind_settings`, on every engine it uses (a replica's
    too), and of the transaction it is in already, if any."""
    if not event.contains(Session, "after_begin", _after_begin):
        event.listen(Session, "after_begin", _after_begin)
    values = {key: str(value) for key, value in settings.items()}
    token = _settings.set(values)
    real = session() if isinstance(session, scoped_session) else session
    if real.in_transaction():
        _apply(real.connection(), values)
    return token


def unbind_settings(token: Token[Mapping[str, str] | None]) -> None:
    _settings.reset(token)


def request_settings(levels: Iterable[Any]) -> dict[str, Any]:
    """The tenant settings of a request: for each level of the URL whose mount asks for
    row-level security, the scope values of its columns."""
    settings: dict[str, Any] = {}
    for level in levels:
        for column in level.mount.row_level_security:
            if column not in level.scope:
                raise ImproperlyConfigured(
                    f"{type(level).__name__}: row_level_security names {column!r}, but "
                    "get_base_query_kwargs() does not return it."
                )
            if settings.setdefault(column, level.scope[column]) != level.scope[column]:
                raise ImproperlyConfigured(
                    f"The levels of {type(level).__name__}'s URL scope {column!r} to "
                    "different values; one transaction has one setting per column."
                )
    return settings


@contextmanager
def row_level_security_settings(view: Any) -> Iterator[None]:
    """The tenant settings of ``view``'s request (every level of its URL) applied to each
    transaction begun inside the block; nothing when no level asks for them."""
    settings = request_settings(view.place.levels)
    if not settings:
        yield
        return
    token = bind_settings(settings, view.get_session())
    try:
        yield
    finally:
        unbind_settings(token)


def check_backend(url: str | None, what: str) -> None:
    """Refuse row-level security on a database that is not PostgreSQL, at startup."""
    if url is not None and make_url(url).get_backend_name() != "postgresql":
        raise ImproperlyConfigured(
            f"{what} uses row_level_security, which needs PostgreSQL; the app's database is "
            f"{make_url(url).get_backend_name()}. Leave it off there: the library's own "
            "scoping still applies."
        )


# -- policies ------------------------------------------------------------------------------


def _table(model_or_table: Any) -> Table:
    if isinstance(model_or_table, Table):
        return model_or_table
    table = inspect(model_or_table).local_table
    if not isinstance(table, Table):  # pragma: no cover - mapped to a select, not a table
        raise ImproperlyConfigured(f"{model_or_table!r} is not mapped to a table.")
    return table


def _condition(table: Table, columns: Sequence[str]) -> str:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    preparer = dialect.identifier_preparer
    parts = []
    for name in columns:
        if name not in table.columns:
            raise ImproperlyConfigured(f"Table {table.name} has no column {name!r}.")
        column = table.columns[name]
        cast = column.type.compile(dialect=dialect)
        # NULLIF: after a transaction that set it, an unset setting reads as '' (and a
        # cast of '' fails); NULL matches no row, so an unset tenant sees nothing.
        value = f"NULLIF(current_setting('{setting_name(name)}', true), '')::{cast}"
        parts.append(f"{preparer.quote(name)} = {value}")
    return " AND ".join(parts)


def row_level_security_ddl(
    model_or_table: Any, columns: Sequence[str], *, force: bool = True
) -> list[str]:
    """The statements that make PostgreSQL enforce the scope of ``columns`` on a table:
    enable (and, with ``force``, force) row-level security and (re)create the policy.
    Run them in a migration (``for sql in ...: op.execute(sql)``) as the table's owner.

    ``force`` applies the policy to the table's owner too; a role that migrates data
    across tenants then needs ``BYPASSRLS``. Superusers always bypass it: the app must
    connect as a role that is neither."""
    table = _table(model_or_table)
    name = postgresql.dialect().identifier_preparer.format_table(table)  # type: ignore[no-untyped-call]
    condition = _condition(table, columns)
    statements = [f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY"]
    if force:
        statements.append(f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
    statements += [
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}",
        f"CREATE POLICY {POLICY_NAME} ON {name} USING ({condition}) WITH CHECK ({condition})",
    ]
    return statements


def row_level_security_problems(
    connection: Connection, tables: Mapping[Any, Sequence[str]]
) -> list[str]:
    """What is missing or wrong for row-level security, one sentence each; empty when
    every table enforces its columns and the connected role cannot bypass the policies.

    ``tables`` maps a model or table to the columns its policy must compare."""
    problems = []
    role = connection.execute(
        text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
    ).one()
    if role.rolsuper or role.rolbypassrls:
        problems.append(
            "The app connects as a role that bypasses row-level security (superuser or "
            "BYPASSRLS); connect as one that does not."
        )
    for model_or_table, columns in tables.items():
        table = _table(model_or_table)
        problems += _table_problems(connection, table, columns)
    return problems


def _table_problems(connection: Connection, table: Table, columns: Sequence[str]) -> list[str]:
    row = connection.execute(
        text(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, "
            "pg_get_userbyid(c.relowner) = current_user AS owned "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = :name AND n.nspname = coalesce(:schema, current_schema())"
        ),
        {"name": table.name, "schema": table.schema},
    ).first()
    if row is None:
        return [f"Table {table.name} does not exist."]
    if not row.relrowsecurity:
        return [f"Table {table.name} does not have row-level security enabled."]
    problems = []
    if row.owned and not row.relforcerowsecurity:
        problems.append(
            f"Table {table.name} is owned by the app's role but does not FORCE row-level "
            "security, so its owner bypasses the policy."
        )
    policy = connection.execute(
        text(
            "SELECT cmd, permissive, qual, with_check FROM pg_policies "
            "WHERE tablename = :name AND schemaname = coalesce(:schema, current_schema()) "
            "AND policyname = :policy"
        ),
        {"name": table.name, "schema": table.schema, "policy": POLICY_NAME},
    ).first()
    if policy is None:
        return [*problems, f"Table {table.name} has no policy {POLICY_NAME}."]
    for column in columns:
        wanted = setting_name(column)
        for clause, expression in (("USING", policy.qual), ("WITH CHECK", policy.with_check)):
            if expression is None or wanted not in expression or column not in expression:
                problems.append(
                    f"Policy {POLICY_NAME} on {table.name} does not compare {column} with "
                    f"{wanted} in its {clause} clause."
                )
    if policy.cmd != "ALL" or policy.permissive != "PERMISSIVE":
        problems.append(f"Policy {POLICY_NAME} on {table.name} is not for ALL commands.")
    return problems


# -- engines -------------------------------------------------------------------------------


def pooled_engine_options(url: str) -> dict[str, Any]:
    """Engine options for a database reached through a pooler in transaction mode
    (PgBouncer ``pool_mode = transaction``), for ``SQLALCHEMY_ENGINE_OPTIONS`` or
    ``create_engine(url, **options)``.

    A server connection serves a different client after each transaction, so nothing
    may be kept per connection: psycopg 3 must not prepare statements (PgBouncer before
    1.21 cannot route them), and asyncpg must not cache them."""
    driver = make_url(url).get_driver_name()
    if driver == "psycopg":
        return {"connect_args": {"prepare_threshold": None}}
    if driver == "asyncpg":
        return {"connect_args": {"statement_cache_size": 0, "prepared_statement_cache_size": 0}}
    return {}


def _unknown_bind(key: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"RESOURCES_KIT_READ_REPLICA names the bind {key!r}, which SQLALCHEMY_BINDS does "
        "not define."
    )


def check_read_replica(config: Mapping[str, Any]) -> None:
    """Refuse, at startup, a read replica naming a bind the app does not have."""
    key = config.get("RESOURCES_KIT_READ_REPLICA")
    if key is not None and key not in (config.get("SQLALCHEMY_BINDS") or {}):
        raise _unknown_bind(key)


#: The ``Prefer`` token (RFC 7240) a client sends to read from the primary.
READ_YOUR_WRITES = "read-your-writes"


def preferences() -> set[str]:
    """The preference names of the request's ``Prefer`` headers, lowercased."""
    return {
        part.split(";")[0].split("=")[0].strip().lower()
        for header in request.headers.getlist("Prefer")
        for part in header.split(",")
    }


def _preference_applied(response: Response) -> Response:
    if response.status_code < 400:  # an error applied no preference
        response.headers.add("Preference-Applied", READ_YOUR_WRITES)
    return response


def read_engine(key: str, reading: bool) -> Engine | None:
    """The engine a request reads from: the replica bind ``key`` when the request is only
    ``reading`` and the client did not ask for ``Prefer: read-your-writes`` (then the
    response says ``Preference-Applied``); ``None`` for the primary."""
    if not reading:
        return None
    if READ_YOUR_WRITES in preferences():
        after_this_request(_preference_applied)
        return None
    return replica_engine(key)


def replica_engine(key: str) -> Engine:
    """The Flask-SQLAlchemy engine of bind ``key`` (``SQLALCHEMY_BINDS``)."""
    extension = current_app.extensions.get("sqlalchemy")
    engines: Mapping[str | None, Engine] = extension.engines if extension is not None else {}
    if key not in engines:
        raise _unknown_bind(key)
    return engines[key]


def outside_engine(
    session: Session | scoped_session[Session], mapper: Any, replica: Engine | None
) -> Engine | None:
    """The engine a read of rows may run on outside the request's session (a pooled
    connection of its own, as hand-written Core code reads), or ``None`` when only the
    session may answer it: while the session is in a transaction or holds changes (its
    autoflush and its uncommitted rows), when it has ``do_orm_execute`` listeners (which
    may add criteria such as a soft-delete filter), when row-level security settings
    are bound (they are set in the session's transactions), or when its bind is a
    connection rather than an engine (a test's outer transaction). ``replica`` is the
    request's read replica, if any.

    A scoped session with no session yet in this scope holds nothing: the read then
    does not create one, and the engine is the one a new session would pick, found once
    per session factory and mapper (see :func:`_new_session_engine`)."""
    if _settings.get() is not None or session_listens(session, ("do_orm_execute",)):
        return None
    if isinstance(session, scoped_session) and not session.registry.has():
        return replica if replica is not None else _new_session_engine(session, mapper)
    real = session() if isinstance(session, scoped_session) else session
    if real.in_transaction() or real.new or real.dirty or real.deleted:
        return None
    if replica is not None:
        return replica
    bind = real.get_bind(mapper=mapper)
    return bind if isinstance(bind, Engine) else None


def _class_listens(cls: type[Session], name: str = "do_orm_execute") -> bool:
    """Whether sessions of ``cls`` get ``name`` listeners from their class (or a base,
    or their ``sessionmaker``). This reads SQLAlchemy's per-class listener lists; where
    they cannot be read, it answers yes (the library takes the session's own path)."""
    levels = getattr(getattr(cls.dispatch, name), "_clslevel", None)
    if levels is None:  # pragma: no cover - another SQLAlchemy's internals
        return True
    return any(levels.get(base) for base in cls.__mro__)


def session_listens(session: Session | scoped_session[Session], names: Sequence[str]) -> bool:
    """Whether the request's session (or, before it exists, its class) has a listener
    of any of the events ``names``."""
    if isinstance(session, scoped_session) and not session.registry.has():
        cls = session.session_factory.class_
        return any(_class_listens(cls, name) for name in names)
    real = session() if isinstance(session, scoped_session) else session
    return any(getattr(real.dispatch, name) for name in names)


#: ``Session.get_bind`` methods whose answer depends only on the factory's arguments,
#: the app's engines and the mapper: SQLAlchemy's and Flask-SQLAlchemy's.
_PLAIN_GET_BINDS = {Session.get_bind, FlaskSession.get_bind}
_ENGINES = "resources_kit_session_engines"


def writes_by_statement(session: Session | scoped_session[Session], names: Sequence[str]) -> bool:
    """Whether a write may be a statement on the session's connection rather than an
    object it flushes: no listener of the events ``names``, and a ``get_bind`` that is
    SQLAlchemy's or Flask-SQLAlchemy's, whose engine for a mapper does not depend on the
    statement or on being in a flush (a session of its own may route writes by either,
    as a primary/replica split does)."""
    if isinstance(session, scoped_session):
        cls: type[Session] = session.session_factory.class_
    else:
        cls = type(session)
    return cls.get_bind in _PLAIN_GET_BINDS and not session_listens(session, names)


def _new_session_engine(session: scoped_session[Session], mapper: Any) -> Engine | None:
    """The engine (not a connection) a new session of ``session``'s factory would read
    ``mapper`` from, kept per app while the factory's arguments are unchanged; a session
    class with a ``get_bind`` of its own is asked every time."""
    factory = session.session_factory
    if factory.class_.get_bind not in _PLAIN_GET_BINDS:
        bind = session().get_bind(mapper=mapper)
        return bind if isinstance(bind, Engine) else None
    known = current_app.extensions.setdefault(_ENGINES, {})
    key = (factory, mapper)
    found = known.get(key)
    if found is None or found[0] != factory.kw:
        bind = factory().get_bind(mapper=mapper)  # a throwaway session: nothing to close
        found = known[key] = (dict(factory.kw), bind if isinstance(bind, Engine) else None)
    engine: Engine | None = found[1]
    return engine


# -- faults ----------------------------------------------------------------------------------


def database_failure(
    exc: DBAPIError, session: Session | scoped_session[Session]
) -> HTTPError | None:
    """The 503 (with ``Retry-After``) for an error saying the database is down or
    overloaded, or ``None`` for any other. The session is rolled back (or, when even that
    fails, invalidated), so that the next request starts on a sound connection: SQLAlchemy
    drops the connections a disconnect made stale, and ``pool_pre_ping`` checks the others."""
    if not is_unavailable(exc):
        return None
    try:
        session.rollback()
    except DBAPIError:
        (session() if isinstance(session, scoped_session) else session).invalidate()
    return service_unavailable()
