"""A multi-tenant school API built with resources_kit.

Schools are tenants. A request names its school with ``Authorization: Bearer <token>``;
teachers are scoped to the school, students are nested under teachers and inherit the
scope, and every write leaves an audit row in the same transaction.

Run it with ``python -m sample_app``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from resources_kit import Router

from .models import db
from .resources import StudentResource, TeacherResource, load_tenant
from .seed import seed


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("SAMPLE_APP_DATABASE_URL", "sqlite://"),
        MAX_CONTENT_LENGTH=1024 * 1024,
        SECRET_KEY=os.environ.get("SAMPLE_APP_SECRET_KEY", "change-me"),
    )
    app.config.update(config or {})
    db.init_app(app)
    app.before_request(load_tenant)

    api = Router(
        url_prefix="/api",
        title="School API",
        version="1.0.0",
        security_schemes={"bearer": {"type": "http", "scheme": "bearer"}},
        security=[{"bearer": []}],
    )
    api.register(TeacherResource)
    api.register(StudentResource, parent=TeacherResource)
    api.init_app(app)

    with app.app_context():
        db.create_all()
    return app


__all__ = ["create_app", "seed"]
