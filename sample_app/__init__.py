"""A multi-tenant school API built with resources_kit.

Schools are tenants. A request signs in with ``Authorization: Bearer <token>``, a
Flask-JWT-Extended access token of a demo user: a school admin (changes anything in the
school), a teacher (reads the school, changes only their own students) or an auditor
(reads only). Teachers are scoped to the caller's school, students are nested under
teachers and inherit the scope, and every write leaves an audit row in the same
transaction.

Run it with ``python -m sample_app``.
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from flask_jwt_extended import JWTManager

from resources_kit import Router

from .models import db
from .resources import StudentResource, TeacherResource
from .seed import seed

#: The demo's signing key; set SAMPLE_APP_JWT_SECRET_KEY for anything but a demo.
DEMO_JWT_SECRET = "resources-kit-sample-app-demo-signing-key"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ.get("SAMPLE_APP_DATABASE_URL", "sqlite://"),
        MAX_CONTENT_LENGTH=1024 * 1024,
        SECRET_KEY=os.environ.get("SAMPLE_APP_SECRET_KEY", "change-me"),
        JWT_SECRET_KEY=os.environ.get("SAMPLE_APP_JWT_SECRET_KEY", DEMO_JWT_SECRET),
    )
    app.config.update(config or {})
    db.init_app(app)
    JWTManager(app)

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
