"""Bulk writes: a class list created at once, and many rows changed at once, every item
or none, each inside the caller's school."""

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import ModelResource, Router, TenantScopeMixin


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]


class Student(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teacher.id"))
    name: Mapped[str]
    grade_level: Mapped[int]


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    grade_level = ma.fields.Integer(required=True, validate=ma.validate.Range(min=1, max=12))


# bulk-start
class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    bulk = ("create", "patch")  # POST of an array; PATCH of an array on the collection
    max_bulk_items = 50  # more is a 413

    def get_base_query_kwargs(self):
        return {"school_id": g.get("school_id")}


class StudentResource(ModelResource):
    name = "students"
    model = Student
    schema = StudentSchema
    bulk = ("create",)


# bulk-end


def tour() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)

    @app.before_request
    def school_from_header():
        g.school_id = int(request.headers["X-School"]) if "X-School" in request.headers else None

    api = Router(app, url_prefix="/api")
    api.register(TeacherResource)
    api.register(StudentResource, parent=TeacherResource)
    one, two = {"X-School": "1"}, {"X-School": "2"}
    with app.app_context():
        db.create_all()
        client = app.test_client()

        # tour-start
        made = client.post("/api/teachers", json=[{"name": "Ada"}, {"name": "Bob"}], headers=one)
        assert made.status_code == 201  # every item, in order, each stamped with the scope
        ada, bob = made.json
        assert [ada["school_id"], bob["school_id"]] == [1, 1]

        # One bad item: a 422 naming its index and field, and nothing is written.
        students = f"/api/teachers/{ada['id']}/students"
        bad = client.post(
            students,
            json=[{"name": "Cy", "grade_level": 3}, {"name": "Di", "grade_level": 13}],
            headers=one,
        )
        assert bad.status_code == 422
        assert list(bad.json["errors"]) == ["1"]
        assert list(bad.json["errors"]["1"]) == ["grade_level"]
        assert db.session.scalar(select(func.count()).select_from(Student)) == 0

        # A PATCH of items with their ids; an id the caller cannot reach refuses it all.
        eve = client.post("/api/teachers", json={"name": "Eve"}, headers=two).json
        changes = [{"id": ada["id"], "name": "Ada B."}, {"id": eve["id"], "name": "Eve X."}]
        refused = client.patch("/api/teachers", json=changes, headers=one)
        assert refused.status_code == 422
        assert refused.json["errors"] == {"1": {"id": ["No such item."]}}
        assert client.get(f"/api/teachers/{ada['id']}", headers=one).json["name"] == "Ada"
        changed = client.patch("/api/teachers", json=changes[:1], headers=one)
        assert changed.status_code == 200
        assert changed.json[0]["name"] == "Ada B."

        too_many = client.post("/api/teachers", json=[{"name": "x"}] * 51, headers=one)
        assert too_many.status_code == 413
        # tour-end


if __name__ == "__main__":
    tour()
    print("bulk: all good")
