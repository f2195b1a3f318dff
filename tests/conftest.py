"""Fixtures: ``app -> db -> client`` on a real database.

``RESOURCES_KIT_TEST_DB`` picks it: ``sqlite`` (default, a temporary file), ``postgresql`` or
``mysql`` (the local servers; the run is skipped with a message when none answers),
``pgbouncer`` (PostgreSQL through PgBouncer in transaction mode on port 6432), or a full
SQLAlchemy URL.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask, g, request
from sqlalchemy import create_engine, event, make_url, text
from sqlalchemy.engine import Engine

from resources_kit import Router
from resources_kit.database import pooled_engine_options

from . import models
from .models import db

#: One SQLite file for the whole run, so that every app a test makes sees the same
#: database, as they do on a server.
SQLITE_FILE = os.path.join(tempfile.gettempdir(), f"resources_kit_tests_{os.getpid()}.sqlite3")
URLS = {
    "sqlite": f"sqlite:///{SQLITE_FILE}",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/test?charset=utf8mb4",
    # PostgreSQL through PgBouncer in transaction pooling mode (.ci/services starts it).
    "pgbouncer": "postgresql+psycopg://postgres@127.0.0.1:6432/test",
}
DB = os.environ.get("RESOURCES_KIT_TEST_DB", "sqlite")
DB_URL = URLS.get(DB, DB)
#: What every engine of the tests needs for this database (a pooler's, say).
ENGINE_OPTIONS = pooled_engine_options(DB_URL) if make_url(DB_URL).port == 6432 else {}


def _server_reachable(url: str) -> str | None:
    if url.startswith("sqlite"):
        return None
    try:
        engine = create_engine(url, **ENGINE_OPTIONS)
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # any failure to connect means: no server here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def pytest_report_header() -> str:
    return f"resources_kit test database: {DB_URL}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problem = _server_reachable(DB_URL)
    if problem is None:
        return
    if os.environ.get("RESOURCES_KIT_REQUIRE_SERVER"):
        raise pytest.UsageError(f"no database server at {DB_URL} ({problem}), and CI needs it")
    skip = pytest.mark.skip(reason=f"no database server at {DB_URL} ({problem})")
    for item in items:
        item.add_marker(skip)


@event.listens_for(Engine, "connect")
def _sqlite_foreign_keys(dbapi_connection: Any, connection_record: Any) -> None:
    if type(dbapi_connection).__module__.startswith("sqlite3"):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=OFF")  # test data need not survive a power cut
        cursor.close()


def register_all(router: Router) -> None:
    router.register(models.TeacherResource)
    router.register(models.StudentResource, parent=models.TeacherResource)
    router.register(models.GradeResource, parent=models.StudentResource)
    router.register(models.CounterResource)
    router.register(models.ReadOnlyTeacherResource)
    router.register(models.CursorTeacherResource)
    router.register(models.NoteResource)
    router.register(models.StrictTeacherResource)
    router.register(models.GadgetResource)
    router.register(models.CursorGadgetResource)


def register_scoped(router: Router) -> None:
    router.register(models.ScopedTeacherResource)
    router.register(models.ScopedStudentResource, parent=models.ScopedTeacherResource)


def make_app(
    register: Callable[[Router], None] = register_all, url_prefix: str = "/api", **config: Any
) -> Flask:
    app = Flask(__name__)
    app.config.update(
        {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": DB_URL,
            "SQLALCHEMY_ENGINE_OPTIONS": ENGINE_OPTIONS,
            "SECRET_KEY": "test",
            "MAX_CONTENT_LENGTH": 64 * 1024,
            **config,
        }
    )
    db.init_app(app)

    @app.before_request
    def read_school() -> None:
        school = request.headers.get("X-School")
        if school is not None:
            g.school_id = int(school)

    router = Router(url_prefix=url_prefix)
    register(router)
    router.init_app(app)
    _APPS.append(app)
    return app


#: Every app the tests made, so that their engines are closed, not garbage-collected open.
_APPS: list[Flask] = []


@pytest.fixture(scope="session", autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    for made in _APPS:
        with made.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()
    if os.path.exists(SQLITE_FILE):
        os.remove(SQLITE_FILE)


def reset_database() -> None:
    """Empty every table (fast enough to run per Hypothesis example)."""
    db.session.rollback()
    for model in models.ALL_MODELS:
        db.session.execute(getattr(model, "__table__", model).delete())
    db.session.commit()
    # Ids are reused after a delete; objects of the old rows must not linger in the session.
    db.session.expunge_all()


@pytest.fixture(scope="session")
def app() -> Iterator[Flask]:
    app = make_app()
    with app.app_context():
        db.drop_all()
        db.create_all()
    yield app
    with app.app_context():
        db.session.remove()
        db.drop_all()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def database(app: Flask) -> Iterator[Any]:
    with app.app_context():
        reset_database()
        yield db
        db.session.remove()
        reset_database()


@pytest.fixture
def client(app: Flask, database: Any) -> Any:
    return app.test_client()


@pytest.fixture
def statements(app: Flask) -> Iterator[list[str]]:
    """The SQL statements run while the test runs."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def seed(*rows: Any) -> None:
    """Add rows in the current app context and commit, so the request sees them."""
    db.session.add_all(rows)
    db.session.commit()


def seed_two_schools() -> dict[str, int]:
    """Two schools, a teacher in each (Ada in one, Bob in two), a student of each (Cy of
    Ada, Di of Bob); their ids by name."""
    one, two = models.School(name="One"), models.School(name="Two")
    seed(one, two)
    ada = models.Teacher(name="Ada", school_id=one.id, region="n")
    bob = models.Teacher(name="Bob", school_id=two.id, region="s")
    seed(ada, bob)
    cy = models.Student(name="Cy", teacher_id=ada.id)
    di = models.Student(name="Di", teacher_id=bob.id)
    seed(cy, di)
    return {"one": one.id, "two": two.id, "ada": ada.id, "bob": bob.id, "cy": cy.id, "di": di.id}


def walk_cursor(client: Any, url: str, pages: int = 50) -> list[int]:
    """The ids a cursor walk from ``url`` (a list URL with its query) visits, in order."""
    seen: list[int] = []
    next_url = url
    for _ in range(pages):
        body = client.get(next_url).json
        seen.extend(item["id"] for item in body["items"])
        if body["next"] is None:
            return seen
        next_url = f"{url}&cursor={body['next']}"
    raise AssertionError(f"the walk from {url} did not end in {pages} pages")


@contextmanager
def running(app: Flask) -> Iterator[Any]:
    """A test client of an extra app, with the tables created (its own in-memory SQLite
    database, or the shared server database) and emptied afterwards."""
    with app.app_context():
        db.create_all()
        try:
            yield app.test_client()
        finally:
            db.session.remove()
            reset_database()
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()


def sample_app_config(url: str) -> dict[str, Any]:
    """The sample app's test config on ``url``: its own engine options plus the pooler's
    (no prepared statements through PgBouncer), as ``SAMPLE_APP_POOLED=1`` gives it."""
    options = {"pool_pre_ping": not url.startswith("sqlite"), **ENGINE_OPTIONS}
    return {"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "SQLALCHEMY_ENGINE_OPTIONS": options}


def separate_database_url(name: str) -> str:
    """A URL of a second database on the same backend, created if missing: for apps whose
    tables would collide with the test models' (the sample app)."""
    url = make_url(DB_URL)
    if url.get_backend_name() == "sqlite":
        return f"sqlite:///{SQLITE_FILE[: -len('.sqlite3')]}_{name}.sqlite3"
    # Named after the test database too, so runs against different databases of one
    # server (two checkouts at once) never share the second one.
    name = f"{url.database}_{name}" if url.database != "test" else name
    engine = create_engine(url, isolation_level="AUTOCOMMIT", **ENGINE_OPTIONS)
    with engine.connect() as connection:
        if url.get_backend_name() == "postgresql":
            exists = connection.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).first()
            if not exists:
                connection.execute(text(f'CREATE DATABASE "{name}"'))
        else:
            connection.execute(text(f"CREATE DATABASE IF NOT EXISTS `{name}`"))
    engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)
