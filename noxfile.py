"""Sessions: tests on SQLite, PostgreSQL and MariaDB/MySQL, lowest dependency versions,
lint, typing and docs. ``nox -s tests`` needs nothing but Python; the server sessions skip
with a message when no server answers (``.ci/run`` requires them)."""

from __future__ import annotations

import nox

nox.options.sessions = ["lint", "typing", "tests", "docs"]
nox.options.reuse_existing_virtualenvs = True

#: The lowest versions setup.cfg admits; the "minimums" session proves they still work.
MINIMUMS = [
    "Flask==3.0.0",
    "Werkzeug==3.0.0",
    "Flask-SQLAlchemy==3.1.0",
    "SQLAlchemy==2.0.20",
    "marshmallow==3.18.0",
    "webargs==8.3.0",
    "apispec==6.0.0",
    "blinker==1.6.2",
]


@nox.session
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test]")
    session.run("pytest", *session.posargs)


@nox.session
def tests_postgres(session: nox.Session) -> None:
    session.install("-e", ".[test,postgres]")
    session.run("pytest", *session.posargs, env={"RESOURCES_KIT_TEST_DB": "postgresql"})


@nox.session
def tests_mysql(session: nox.Session) -> None:
    session.install("-e", ".[test,mysql]")
    session.run("pytest", *session.posargs, env={"RESOURCES_KIT_TEST_DB": "mysql"})


@nox.session
def marshmallow3(session: nox.Session) -> None:
    """The newest marshmallow 3 (the default install gets marshmallow 4)."""
    session.install("-e", ".[test,client]", "marshmallow>=3.26,<4")
    session.run("pytest", *session.posargs, env={"RESOURCES_KIT_REQUIRE_CLIENT": "1"})


@nox.session
def minimums(session: nox.Session) -> None:
    session.install("-e", ".[test]", *MINIMUMS)
    session.run("pip", "freeze")
    # The generated-client test needs the newest httpx and pydantic: not a minimums matter.
    # The mutation suite pins the examples it draws with the newest marshmallow (older
    # versions build other strategies, and the planted bugs need other draws); the library
    # itself is checked against the oldest versions by everything else.
    session.run(
        "pytest",
        "--deselect",
        "tests/test_mutants.py::test_every_mutant_is_caught_and_explained",
        *session.posargs,
        env={"RESOURCES_KIT_REQUIRE_CLIENT": ""},
    )


#: What ruff checks and formats.
SOURCES = ["resources_kit", "tests", "sample_app", "benchmarks", "docs/examples", "noxfile.py"]


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", *SOURCES)
    session.run("ruff", "format", "--check", *SOURCES)


@nox.session
def typing(session: nox.Session) -> None:
    # Celery, Alembic, Flask-Limiter and redis too: the modules are checked against them.
    session.install("-e", ".[testing,jobs,migrations,guards]", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    session.install("-e", ".[docs,testing]")  # the API reference imports resources_kit.testing
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")
