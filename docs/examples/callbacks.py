"""Callbacks around writes: a check before create, an audit row in the same transaction,
an email queued after commit, and a signal receiver."""

import marshmallow as ma
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import Callback, ModelResource, Router, signals


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    credential: Mapped[str]


class Audit(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    operation: Mapped[str]
    row: Mapped[int]


OUTBOX: list[str] = []


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    credential = ma.fields.String(required=True, load_only=True)


class VerifyCredentials(Callback):
    """pre: nothing is flushed yet; refusing here writes nothing."""

    def execute(self) -> None:
        if not self.kwargs["credential"].startswith("LIC-"):
            raise ma.ValidationError({"credential": ["Not a valid licence."]})


class AuditLog(Callback):
    """post: the id is assigned, and the audit row commits with the change."""

    def execute(self) -> None:
        db.session.add(Audit(operation=self.operation, row=self.resource.id))


class WelcomeEmail(Callback):
    """after commit: the teacher surely exists; a failure here is only logged."""

    def execute(self) -> None:
        OUTBOX.append(f"Welcome, {self.resource.name}!")


class TeacherResource(ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    pre_create_callbacks = [VerifyCredentials]
    post_create_callbacks = [AuditLog]
    after_commit_create_callbacks = [WelcomeEmail]


def tour() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    Router(app, url_prefix="/api").register(TeacherResource)
    created: list[str] = []

    @signals.resource_created.connect_via(TeacherResource)
    def remember(sender, resource, kwargs, operation):
        created.append(resource.name)

    with app.app_context():
        db.create_all()
        client = app.test_client()
        refused = client.post("/api/teachers", json={"name": "Eve", "credential": "forged"})
        assert refused.status_code == 422
        assert db.session.query(Teacher).count() == db.session.query(Audit).count() == 0
        assert OUTBOX == []
        assert created == []

        ok = client.post("/api/teachers", json={"name": "Ada", "credential": "LIC-0042"})
        assert ok.status_code == 201
        assert [(a.operation, a.row) for a in db.session.query(Audit)] == [("create", 1)]
        assert OUTBOX == ["Welcome, Ada!"]
        assert created == ["Ada"]


if __name__ == "__main__":
    tour()
    print("callbacks: all good")
