"""A tenant-scoped resource with a nested child: each school sees only its own rows."""

import marshmallow as ma
from flask import Flask, abort, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from resources_kit import ListMixin, ModelResource, Resource, Router, TenantScopeMixin


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


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema

    def get_base_query_kwargs(self):
        return {"school_id": g.get("school_id")}  # None: refused with 403


class StudentResource(ModelResource):  # scoped through its parent
    name = "students"
    model = Student
    schema = StudentSchema


# top-level-start
class AllStudents(ListMixin, Resource):
    """Every student of the caller's school, at the top level. Student has no tenant
    column, so no TenantScopeMixin: the scope is a join to the scoped parent, and a
    request without a tenant is refused, as the mixin would."""

    name = "all-students"
    model = Student
    schema = StudentSchema

    def get_query(self):
        school = g.get("school_id")
        if school is None:
            abort(403)
        return (
            super()
            .get_query()
            .join(Teacher, Teacher.id == Student.teacher_id)
            .where(Teacher.school_id == school)
        )


# top-level-end


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
    api.register(AllStudents)
    one, two = {"X-School": "1"}, {"X-School": "2"}
    with app.app_context():
        db.create_all()
        client = app.test_client()
        ada = client.post("/api/teachers", json={"name": "Ada"}, headers=one).json
        assert ada["school_id"] == 1  # stamped by the server
        client.post(f"/api/teachers/{ada['id']}/students", json={"name": "Cy"}, headers=one)

        assert client.get("/api/teachers", headers=two).json["total"] == 0
        assert client.get(f"/api/teachers/{ada['id']}", headers=two).status_code == 404
        assert client.get(f"/api/teachers/{ada['id']}/students", headers=two).status_code == 404
        assert client.get("/api/teachers").status_code == 403  # no tenant: fail closed
        moved = client.patch(f"/api/teachers/{ada['id']}", json={"school_id": 2}, headers=one)
        assert moved.status_code == 422

        everyone = "/api/all-students"
        assert [s["name"] for s in client.get(everyone, headers=one).json["items"]] == ["Cy"]
        assert client.get(everyone, headers=two).json["items"] == []
        assert client.get(everyone).status_code == 403


if __name__ == "__main__":
    tour()
    print("tenancy: all good")
