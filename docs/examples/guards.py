"""Production guards on one resource: an Idempotency-Key on writes, a per-caller limit on
writes, and a cached list whose answers every write invalidates."""

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import ModelResource, Router, TenantScopeMixin
from resources_kit.guards import WRITES, Guards, Idempotency, RateLimit, ResponseCache


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    idempotency = Idempotency()  # Idempotency(required=True): 400 without the header
    rate_limits = [RateLimit("3/minute", per="caller", actions=WRITES)]
    cache = ResponseCache()  # depends_on=("students",) if answers embed students

    def get_base_query_kwargs(self):
        return {"school_id": g.school_id}

    def get_caller_key(self):  # default: the id of current_user()
        return request.headers.get("X-User")


def create_app(redis_url=None):
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    app.config["RESOURCES_KIT_REDIS_URL"] = redis_url  # every host the same Redis
    app.config["RESOURCES_KIT_CACHE_IN_PROCESS"] = redis_url is None  # one process here
    db.init_app(app)

    @app.before_request
    def school():
        g.school_id = int(request.headers.get("X-School", 0))

    api = Router(app, url_prefix="/api")
    api.register(TeacherResource)
    Guards(app)  # before create_all(): the idempotency table joins db.metadata
    with app.app_context():
        db.create_all()
    return app


def tour() -> None:
    client = create_app().test_client()
    ada = {"X-School": "1", "X-User": "ada"}

    # A retried POST: the same key, the same answer, one row.
    retry = {**ada, "Idempotency-Key": "3f1c-create-kay"}
    first = client.post("/api/teachers", json={"name": "Kay"}, headers=retry)
    again = client.post("/api/teachers", json={"name": "Kay"}, headers=retry)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    other = client.post("/api/teachers", json={"name": "Kim"}, headers=retry)
    assert other.status_code == 422  # the key names another request

    # The list is kept, and a write invalidates it at once.
    assert client.get("/api/teachers", headers=ada).headers["Cache-Status"].endswith("stored")
    assert client.get("/api/teachers", headers=ada).headers["Cache-Status"].endswith("hit")

    # Ada's fourth write in the minute (the replay and the 422 counted too): 429.
    refused = client.post("/api/teachers", json={"name": "Lou"}, headers=ada)
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert int(refused.headers["Retry-After"]) >= 1

    # Bob's budget is his own; his write invalidates the list Ada reads.
    bob = {"X-School": "1", "X-User": "bob"}
    assert client.post("/api/teachers", json={"name": "Lou"}, headers=bob).status_code == 201
    names = [t["name"] for t in client.get("/api/teachers", headers=ada).get_json()["items"]]
    assert names == ["Kay", "Lou"]
    # Cache-Control: no-cache (or Prefer: read-your-writes) reads the database.
    fresh = client.get("/api/teachers", headers={**ada, "Cache-Control": "no-cache"})
    assert not fresh.headers["Cache-Status"].endswith("hit")
