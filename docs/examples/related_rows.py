"""``?include=``: teachers with their students (and the students' grades) in one answer,
one statement per included level, inside the students' own row policy."""

import marshmallow as ma
from flask import Flask, g, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, event
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import ModelResource, Permission, Router, TenantScopeMixin


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Teacher(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    school_id: Mapped[int]
    name: Mapped[str]
    students: Mapped[list["Student"]] = relationship(viewonly=True)


class Student(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teacher.id"))
    name: Mapped[str]
    withdrawn: Mapped[bool] = mapped_column(default=False)
    grades: Mapped[list["Grade"]] = relationship(viewonly=True)


class Grade(db.Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("student.id"))
    subject: Mapped[str]
    score: Mapped[int]


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)


class GradeSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    subject = ma.fields.String(required=True)
    score = ma.fields.Integer(required=True)


# resources-start
class CurrentStudents(Permission):
    """Withdrawn students are hidden: their own routes answer 404, and no include
    shows them either."""

    def visible(self, view):
        return Student.withdrawn.is_(False)


class TeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    default_sort = "name"
    include_fields = ["students.grades"]  # allows "students" too

    def get_base_query_kwargs(self):
        return {"school_id": g.school_id}


class StudentResource(ModelResource):
    name = "students"
    model = Student
    schema = StudentSchema  # the list schema serializes included students
    default_sort = "name"  # and orders them
    permissions = [CurrentStudents]


class GradeResource(ModelResource):
    name = "grades"
    model = Grade
    schema = GradeSchema
    default_sort = "subject"


api = Router(url_prefix="/api")
api.register(TeacherResource)
api.register(StudentResource, parent=TeacherResource)
api.register(GradeResource, parent=StudentResource)
# resources-end


def tour() -> None:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = "sqlite://"
    db.init_app(app)
    app.before_request(lambda: setattr(g, "school_id", int(request.headers["X-School"])))
    api.init_app(app)
    one = {"X-School": "1"}
    with app.app_context():
        db.create_all()
        ada, bob, eve = (
            Teacher(name=n, school_id=s) for n, s in (("Ada", 1), ("Bob", 1), ("Eve", 2))
        )
        db.session.add_all([ada, bob, eve])
        db.session.flush()
        cy = Student(name="Cy", teacher_id=ada.id)
        db.session.add_all([cy, Student(name="Di", teacher_id=ada.id, withdrawn=True)])
        db.session.add(Student(name="Fy", teacher_id=eve.id))
        db.session.flush()
        db.session.add_all([Grade(student_id=cy.id, subject=s, score=4) for s in ("math", "art")])
        db.session.commit()
        ada_id, bob_id, cy_id = ada.id, bob.id, cy.id
        client = app.test_client()
        statements = []
        event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))

        # usage-start
        page = client.get("/api/teachers?include=students", headers=one).json
        assert page["items"] == [
            {"id": ada_id, "name": "Ada", "students": [{"id": cy_id, "name": "Cy"}]},
            {"id": bob_id, "name": "Bob", "students": []},
        ]  # Di is withdrawn, Fy is another school's: neither appears
        assert len(statements) == 2  # the page (with its total), then every student of it

        item = client.get(
            f"/api/teachers/{ada.id}?include=students.grades&fields=name,students.name,"
            "students.grades.subject",
            headers=one,
        ).json
        assert item == {
            "name": "Ada",
            "students": [{"name": "Cy", "grades": [{"subject": "art"}, {"subject": "math"}]}],
        }
        bad = client.get("/api/teachers?include=school", headers=one)
        assert bad.status_code == 400
        assert "school" in bad.json["errors"]["include"][0]
        # usage-end


if __name__ == "__main__":
    tour()
    print("related rows: all good")
