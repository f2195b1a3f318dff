"""The small school API the Extending recipes build on: teachers scoped to the school
named by the ``X-School`` header."""

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import ModelResource, Router, TenantScopeMixin


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]
    email: Mapped[str]
    years: Mapped[int] = mapped_column(default=0)
    archived: Mapped[bool] = mapped_column(default=False)
    # Unique per school: unique across schools, a 409 would tell one school of another's.
    __table_args__ = (UniqueConstraint("school_id", "email"),)


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    email = ma.fields.Email(required=True)
    years = ma.fields.Integer(load_default=0)
    archived = ma.fields.Boolean(dump_only=True)


class Teachers(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    sort_fields = ["name", "years"]

    def get_base_query_kwargs(self):
        return {"school_id": g.school_id}


def client_for(*resources, **config):
    """A test client of an app serving ``resources``, with two teachers in school 1
    (Ada, 2 years; Bob, 7 years) and one in school 2 (Cy); ``config`` goes to the app."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    app.config.update(config)
    db.init_app(app)

    @app.before_request
    def school_from_header():
        g.school_id = int(request.headers["X-School"]) if "X-School" in request.headers else None

    api = Router(app, url_prefix="/api")
    for resource in resources:
        api.register(resource)
    app.app_context().push()
    db.create_all()
    client = app.test_client()
    for school, name, years in ((1, "Ada", 2), (1, "Bob", 7), (2, "Cy", 4)):
        body = {"name": name, "email": f"{name.lower()}@school{school}.org", "years": years}
        client.post("/api/teachers", json=body, headers={"X-School": str(school)})
    return client


ONE, TWO = {"X-School": "1"}, {"X-School": "2"}


class Note(db.Model):
    """A teacher's notes: a collection to load eagerly."""

    id: Mapped[int] = mapped_column(primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teacher.id"))
    text: Mapped[str]


Teacher.notes = relationship(Note, order_by=Note.id)
