"""The benchmark's reads with flask-smorest, the peer the load comparison runs beside the
library and the hand-written apps: teachers scoped to the school of ``X-School``, a page
with the library's envelope (``items``, ``total``, ``limit``, ``offset``, ``links``) and an
item, written as flask-smorest's documentation shows (a ``Blueprint`` of ``MethodView``s,
``@arguments`` for the query string, ``@response`` for the body).

And the WSGI entry points gunicorn starts for ``benchmarks/loadtest.py --compare``: each
app on the database ``BENCH_DATABASE_URL`` names.
"""

from __future__ import annotations

import os
from typing import Any

import marshmallow as ma
from flask import Flask, abort, g
from flask.views import MethodView
from sqlalchemy import func, select

from benchmarks.apps import (
    Teacher,
    TeacherSchema,
    db,
    hand_written_app,
    make_app,
    page_links,
    resources_kit_app,
)
from benchmarks.floor import floor_app


class PageArgs(ma.Schema):
    limit = ma.fields.Integer(load_default=20, validate=ma.validate.Range(1, 100))
    offset = ma.fields.Integer(load_default=0, validate=ma.validate.Range(0))


class Links(ma.Schema):
    next = ma.fields.String(allow_none=True)
    prev = ma.fields.String(allow_none=True)


class TeacherPage(ma.Schema):
    items = ma.fields.List(ma.fields.Nested(TeacherSchema))
    total = ma.fields.Integer()
    limit = ma.fields.Integer()
    offset = ma.fields.Integer()
    links = ma.fields.Nested(Links)


def smorest_app(url: str) -> Flask:
    from flask_smorest import Api, Blueprint

    app = make_app(url)
    app.config.update(
        API_TITLE="bench", API_VERSION="1", OPENAPI_VERSION="3.0.3", OPENAPI_URL_PREFIX=None
    )
    api = Api(app)
    blp = Blueprint("teachers", __name__, url_prefix="/api/teachers")

    def school() -> int:
        if g.school_id is None:
            abort(403)
        return int(g.school_id)

    @blp.route("")
    class Teachers(MethodView):
        @blp.arguments(PageArgs, location="query")
        @blp.response(200, TeacherPage)
        def get(self, args: dict[str, Any]) -> dict[str, Any]:
            scope, limit, offset = school(), args["limit"], args["offset"]
            query = (
                select(Teacher).where(Teacher.school_id == scope).order_by(Teacher.name, Teacher.id)
            )
            items = db.session.scalars(query.limit(limit).offset(offset)).all()
            total = db.session.scalar(
                select(func.count()).select_from(Teacher).where(Teacher.school_id == scope)
            )
            return {
                "items": items,
                "total": total,
                "limit": limit,
                "offset": offset,
                "links": page_links(limit, offset, int(total or 0)),
            }

    @blp.route("/<int:teacher_id>")
    class TeacherItem(MethodView):
        @blp.response(200, TeacherSchema)
        def get(self, teacher_id: int) -> Any:
            query = select(Teacher).where(Teacher.id == teacher_id, Teacher.school_id == school())
            teacher = db.session.scalars(query).first()
            if teacher is None:
                abort(404)
            return teacher

    api.register_blueprint(blp)
    return app


#: The apps ``loadtest.py --compare`` serves, by name.
APPS = {
    "resources_kit": resources_kit_app,
    "hand-written": hand_written_app,
    "floor": floor_app,
    "flask-smorest": smorest_app,
}


def wsgi(name: str) -> Flask:
    """The app ``name`` on ``BENCH_DATABASE_URL`` (gunicorn: ``benchmarks.peers:wsgi('floor')``)."""
    return APPS[name](os.environ["BENCH_DATABASE_URL"])
