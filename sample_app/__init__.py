"""A multi-tenant school API built with resources_kit.

Schools are tenants. A request signs in with ``Authorization: Bearer <token>``, a
Flask-JWT-Extended access token of a demo user: a school admin (changes anything in the
school), a teacher (reads the school, changes only their own students) or an auditor
(reads only). Teachers are scoped to the caller's school, students are nested under
teachers and inherit the scope, and every write leaves an audit row in the same
transaction.

Run it with ``python -m sample_app`` (``--help`` lists the commands).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_jwt_extended import JWTManager

from resources_kit import Router
from resources_kit.database import pooled_engine_options, row_level_security_ddl
from resources_kit.guards import Guards

from . import tasks
from .models import Club, Teacher, db, jobs
from .resources import ClubResource, JobStatus, StudentResource, TeacherResource
from .seed import seed

#: The scope column PostgreSQL enforces when row-level security is on.
ROW_LEVEL_SECURITY = ("school_id",)


def policies() -> list[str]:
    """The DDL of the row-level security policies on teachers and clubs (run it as the
    tables' owner)."""
    return [
        *row_level_security_ddl(Teacher, ROW_LEVEL_SECURITY),
        *row_level_security_ddl(Club, ROW_LEVEL_SECURITY),
    ]


#: The demo's signing key; set SAMPLE_APP_JWT_SECRET_KEY for anything but a demo.
DEMO_JWT_SECRET = "resources-kit-sample-app-demo-signing-key"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The app. Its environment, all optional:

    - ``SAMPLE_APP_DATABASE_URL`` (default: an in-memory SQLite database);
    - ``SAMPLE_APP_POOLED=1``: the URL is a pooler in transaction mode (PgBouncer);
    - ``SAMPLE_APP_READ_REPLICA_URL``: lists and item reads go to this replica;
    - ``SAMPLE_APP_ROW_LEVEL_SECURITY=1``: PostgreSQL enforces the school scope of
      teachers too (the policy must exist: ``python -m sample_app policies`` prints it);
    - ``SAMPLE_APP_BROKER_URL``: a Celery broker (``redis://127.0.0.1:6379/0``); the jobs
      then run in ``python -m sample_app worker``; without it, in-process after the commit;
    - ``SAMPLE_APP_REDIS_URL``: the Redis every host shares for rate limits and the
      teachers' cache (without it, the cache is on only when ``SAMPLE_APP_ONE_PROCESS=1``
      says one process serves, as ``python -m sample_app`` does);
    - ``SAMPLE_APP_WRITE_LIMIT``: each user's writes per action (``600/minute``);
    - ``SAMPLE_APP_SECRET_KEY`` (cursors) and ``SAMPLE_APP_JWT_SECRET_KEY`` (tokens): the
      same on every host.
    """
    environ = os.environ
    url = environ.get("SAMPLE_APP_DATABASE_URL", "sqlite://")
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        MAX_CONTENT_LENGTH=1024 * 1024,
        SECRET_KEY=environ.get("SAMPLE_APP_SECRET_KEY", "change-me"),
        JWT_SECRET_KEY=environ.get("SAMPLE_APP_JWT_SECRET_KEY", DEMO_JWT_SECRET),
        RESOURCES_KIT_REDIS_URL=environ.get("SAMPLE_APP_REDIS_URL"),
        RESOURCES_KIT_CACHE_IN_PROCESS=environ.get("SAMPLE_APP_ONE_PROCESS") == "1",
    )
    # A connection a database restart left stale is replaced before a request gets it.
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"pool_pre_ping": not url.startswith("sqlite")}
    if environ.get("SAMPLE_APP_POOLED") == "1":
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] |= pooled_engine_options(url)
    if environ.get("SAMPLE_APP_BROKER_URL"):
        app.config["RESOURCES_KIT_JOBS_BROKER_URL"] = environ["SAMPLE_APP_BROKER_URL"]
    if environ.get("SAMPLE_APP_READ_REPLICA_URL"):
        app.config["SQLALCHEMY_BINDS"] = {"replica": environ["SAMPLE_APP_READ_REPLICA_URL"]}
        app.config["RESOURCES_KIT_READ_REPLICA"] = "replica"
    app.config.update(config or {})
    db.init_app(app)
    JWTManager(app)
    Guards(app)  # before create_all: the idempotency table joins the metadata

    api = Router(
        url_prefix="/api",
        title="School API",
        version="1.0.0",
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
        row_level_security=ROW_LEVEL_SECURITY
        if environ.get("SAMPLE_APP_ROW_LEVEL_SECURITY") == "1"
        else (),
    )
    api.register(TeacherResource)
    api.register(StudentResource, parent=TeacherResource)
    api.register(ClubResource)
    api.register_links(StudentResource, "clubs", ClubResource)
    api.register(JobStatus)
    api.init_app(app)
    jobs.init_app(app)

    with app.app_context():
        db.create_all()
    return app


__all__ = ["create_app", "policies", "seed", "tasks"]
