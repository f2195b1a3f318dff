"""A guarded app the multi-process tests serve: ``python -m tests.guards_server PORT`` (a
threaded werkzeug server) or ``gunicorn 'tests.guards_server:create()'``.

``GUARDS_DB_URL`` names the database (the test models' tables, created by the test),
``GUARDS_REDIS_URL`` the Redis the hosts share. The caller is ``X-User``, the school
``X-School``; a caller sees only the teachers of its region (``X-Region``), so an answer
kept for one caller is wrong for another. ``X-Slow: S`` holds a create S seconds before
its commit; ``X-Crash-After-Commit: 1`` ends the process
after the commit of a create, before it answers.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from flask import Flask, g, request
from sqlalchemy import make_url

from resources_kit import Callback, Permission, Router
from resources_kit.database import pooled_engine_options
from resources_kit.guards import WRITES, Guards, Idempotency, RateLimit, ResponseCache

from . import models
from .models import db


class CrashAfterCommit(Callback):
    def execute(self) -> None:
        if request.headers.get("X-Crash-After-Commit"):
            os._exit(3)  # committed, never answered


class SlowWrite(Callback):
    def execute(self) -> None:
        time.sleep(float(request.headers.get("X-Slow", 0)))  # holds the key, uncommitted


class OwnRegion(Permission):
    def visible(self, view: Any) -> Any:
        region = request.headers.get("X-Region")
        return models.Teacher.region == region if region else None


class HostTeachers(models.ScopedTeacherResource):
    name = "teachers"
    permissions = [OwnRegion]
    idempotency = Idempotency()
    rate_limits = [RateLimit("10000/minute", actions=WRITES)]
    cache = ResponseCache()
    post_create_callbacks = [SlowWrite]
    after_commit_create_callbacks = [CrashAfterCommit]

    def get_current_user(self) -> Any:
        return request.headers.get("X-User")


class LimitedTeachers(HostTeachers):
    """Four requests a minute per caller, whichever host serves them."""

    name = "limited-teachers"
    rate_limits = [RateLimit("4/minute", per="caller")]


def create() -> Flask:
    app = Flask(__name__)
    url = os.environ["GUARDS_DB_URL"]
    if make_url(url).port == 6432:  # PgBouncer in transaction mode
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = pooled_engine_options(url)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        RESOURCES_KIT_REDIS_URL=os.environ.get("GUARDS_REDIS_URL"),
        RESOURCES_KIT_IDEMPOTENCY_STORAGE=os.environ.get("GUARDS_KEYS", "database"),
        RESOURCES_KIT_IDEMPOTENCY_WAIT=float(os.environ.get("GUARDS_WAIT", 20)),
    )
    db.init_app(app)

    @app.before_request
    def read_school() -> None:
        school = request.headers.get("X-School")
        if school is not None:
            g.school_id = int(school)

    router = Router(url_prefix="/api")
    router.register(HostTeachers)
    router.register(LimitedTeachers)
    router.init_app(app)
    Guards(app)
    return app


if __name__ == "__main__":
    from werkzeug.serving import run_simple

    run_simple("127.0.0.1", int(sys.argv[1]), create(), threaded=True)
