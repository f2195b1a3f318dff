"""The same small API twice: by hand (Flask ``MethodView`` + SQLAlchemy 2 + marshmallow,
written the way a careful developer would) and with resources_kit.

Teachers are scoped to a school (the tenant, from the ``X-School`` header); students are
nested under teachers. Both apps answer with the same bodies and status codes, do the same
checks (tenant scope, parent chain, validation, 404s) and return problem+json errors.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import marshmallow as ma
from flask import Flask, Response, g, request, url_for
from flask.views import MethodView
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import ForeignKey, Integer, String, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, selectinload

from resources_kit import (
    CreateMixin,
    DeleteMixin,
    IsAuthenticated,
    Jobs,
    ListMixin,
    PatchMixin,
    Resource,
    RetrieveMixin,
    Router,
    TenantScopeMixin,
    UpdateMixin,
    WriteJob,
)


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class School(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "bench_schools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))


class Teacher(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "bench_teachers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int] = mapped_column(ForeignKey("bench_schools.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200))
    years_teaching: Mapped[int] = mapped_column(Integer)
    #: In id order (``?include=students``; the hand-written list loads them with
    #: ``selectinload``).
    students: Mapped[list[Student]] = relationship(order_by="Student.id", viewonly=True)


class Student(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "bench_students"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("bench_teachers.id"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    grade_level: Mapped[int] = mapped_column(Integer)


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(max=100))
    email = ma.fields.Email(required=True, validate=ma.validate.Length(max=200))
    years_teaching = ma.fields.Integer(required=True, validate=ma.validate.Range(0, 80))


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True, validate=ma.validate.Length(max=100))
    grade_level = ma.fields.Integer(required=True, validate=ma.validate.Range(1, 12))


class TeacherWithStudentsSchema(TeacherSchema):
    """The hand-written list's teachers with their students (``?include=students``)."""

    students = ma.fields.List(ma.fields.Nested(StudentSchema), dump_only=True)


def read_school() -> None:
    school = request.headers.get("X-School")
    g.school_id = int(school) if school and school.isdigit() else None


def make_app(url: str, secret: str = "bench") -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, SECRET_KEY=secret)
    db.init_app(app)
    app.before_request(read_school)
    return app


# -- by hand ------------------------------------------------------------------------------

teacher_schema, teachers_schema = TeacherSchema(), TeacherSchema(many=True)
student_schema, students_schema = StudentSchema(), StudentSchema(many=True)
teachers_with_students_schema = TeacherWithStudentsSchema(many=True)


def problem(status: int, detail: str, errors: Any = None) -> Response:
    body = {"type": "about:blank", "title": "", "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return Response(json.dumps(body), status, mimetype="application/problem+json")


def school_or_403() -> int | Response:
    if g.school_id is None:
        return problem(403, "No tenant scope for this request.")
    return int(g.school_id)


def page_args() -> tuple[int, int] | Response:
    try:
        limit = int(request.args.get("limit", 20))
        offset = int(request.args.get("offset", 0))
    except ValueError:
        return problem(400, "Bad query parameters.")
    if not 1 <= limit <= 100 or offset < 0:
        return problem(400, "Bad query parameters.")
    return limit, offset


def json_body() -> dict[str, Any] | Response:
    if not request.is_json:
        return problem(415, "The request body must be JSON.")
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return problem(400, "The request body must be a JSON object.")
    return data


def page(query: Any, limit: int, offset: int) -> tuple[list[Any], int]:
    items = db.session.scalars(query.limit(limit).offset(offset)).all()
    total = db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    return list(items), int(total or 0)


def page_links(limit: int, offset: int, total: int) -> dict[str, str | None]:
    """The next and prev page URLs a list body carries (a careful hand-written API does
    the same for its clients)."""

    def at(start: int) -> str:
        args = {**request.args.to_dict(), "limit": limit, "offset": start}
        return f"{request.base_url}?{urlencode(args)}"

    return {
        "next": at(offset + limit) if offset + limit < total else None,
        "prev": at(max(offset - limit, 0)) if offset > 0 else None,
    }


def visible_teacher(school: int, teacher_id: int) -> bool:
    query = select(Teacher.id).where(Teacher.id == teacher_id, Teacher.school_id == school)
    return db.session.execute(query).first() is not None


class TeacherList(MethodView):
    def get(self) -> Any:
        school = school_or_403()
        if isinstance(school, Response):
            return school
        args = page_args()
        if isinstance(args, Response):
            return args
        limit, offset = args
        query = (
            select(Teacher).where(Teacher.school_id == school).order_by(Teacher.name, Teacher.id)
        )
        include = request.args.get("include")
        if include not in (None, "students"):
            return problem(400, "Bad query parameters.")
        schema = teachers_schema
        if include == "students":  # one more statement for the page's students
            query = query.options(selectinload(Teacher.students))
            schema = teachers_with_students_schema
        items, total = page(query, limit, offset)
        return {
            "items": schema.dump(items),
            "total": total,
            "limit": limit,
            "offset": offset,
            "links": page_links(limit, offset, total),
        }

    def post(self) -> Any:
        school = school_or_403()
        if isinstance(school, Response):
            return school
        body = json_body()
        if isinstance(body, Response):
            return body
        try:
            data = teacher_schema.load(body)
        except ma.ValidationError as exc:
            return problem(422, "Validation failed.", exc.messages)
        teacher = Teacher(**data, school_id=school)
        db.session.add(teacher)
        db.session.commit()
        response = Response(
            json.dumps(teacher_schema.dump(teacher)), 201, mimetype="application/json"
        )
        response.headers["Location"] = url_for("hand_teacher", teacher_id=teacher.id)
        return response


class TeacherItem(MethodView):
    def _get(self, teacher_id: int) -> Any:
        school = school_or_403()
        if isinstance(school, Response):
            return school
        teacher = db.session.scalars(
            select(Teacher).where(Teacher.id == teacher_id, Teacher.school_id == school)
        ).first()
        return teacher or problem(404, "No such resource.")

    def get(self, teacher_id: int) -> Any:
        teacher = self._get(teacher_id)
        return teacher if isinstance(teacher, Response) else teacher_schema.dump(teacher)

    def patch(self, teacher_id: int) -> Any:
        return self._change(teacher_id, partial=True)

    def put(self, teacher_id: int) -> Any:
        return self._change(teacher_id, partial=False)

    def _change(self, teacher_id: int, partial: bool) -> Any:
        teacher = self._get(teacher_id)
        if isinstance(teacher, Response):
            return teacher
        body = json_body()
        if isinstance(body, Response):
            return body
        try:
            data = teacher_schema.load(body, partial=partial)
        except ma.ValidationError as exc:
            return problem(422, "Validation failed.", exc.messages)
        for key, value in data.items():
            setattr(teacher, key, value)
        db.session.commit()
        return teacher_schema.dump(teacher)

    def delete(self, teacher_id: int) -> Any:
        teacher = self._get(teacher_id)
        if isinstance(teacher, Response):
            return teacher
        db.session.delete(teacher)
        db.session.commit()
        return Response(status=204)


class StudentList(MethodView):
    def get(self, teacher_id: int) -> Any:
        school = school_or_403()
        if isinstance(school, Response):
            return school
        args = page_args()
        if isinstance(args, Response):
            return args
        if not visible_teacher(school, teacher_id):
            return problem(404, "No such resource.")
        limit, offset = args
        query = select(Student).where(Student.teacher_id == teacher_id).order_by(Student.id)
        items, total = page(query, limit, offset)
        return {
            "items": students_schema.dump(items),
            "total": total,
            "limit": limit,
            "offset": offset,
            "links": page_links(limit, offset, total),
        }


class StudentItem(MethodView):
    def get(self, teacher_id: int, student_id: int) -> Any:
        school = school_or_403()
        if isinstance(school, Response):
            return school
        student = db.session.scalars(
            select(Student)
            .join(Teacher, Student.teacher_id == Teacher.id)
            .where(Student.id == student_id, Teacher.id == teacher_id, Teacher.school_id == school)
        ).first()
        return student_schema.dump(student) if student else problem(404, "No such resource.")


def hand_written_app(url: str) -> Flask:
    app = make_app(url)
    app.add_url_rule("/api/teachers", view_func=TeacherList.as_view("hand_teachers"))
    app.add_url_rule(
        "/api/teachers/<int:teacher_id>", view_func=TeacherItem.as_view("hand_teacher")
    )
    app.add_url_rule(
        "/api/teachers/<int:teacher_id>/students", view_func=StudentList.as_view("hand_students")
    )
    app.add_url_rule(
        "/api/teachers/<int:teacher_id>/students/<int:student_id>",
        view_func=StudentItem.as_view("hand_student"),
    )
    return app


# -- with resources_kit -------------------------------------------------------------------


class TeacherResource(
    TenantScopeMixin,
    ListMixin,
    RetrieveMixin,
    CreateMixin,
    UpdateMixin,
    PatchMixin,
    DeleteMixin,
    Resource,
):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    default_sort = "name"
    include_fields = ["students"]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.school_id}


class StudentResource(ListMixin, RetrieveMixin, Resource):
    name = "students"
    model = Student
    schema = StudentSchema


class CursorTeacherResource(ListMixin, Resource):
    """For the keyset measurement: a big table walked by id."""

    name = "cursor-teachers"
    model = Teacher
    schema = TeacherSchema
    pagination = "cursor"
    max_page_size = 100


class PermittedTeacherResource(TeacherResource):
    """The same resource behind one simple permission: the permission overhead run."""

    name = "permitted-teachers"
    permissions = [IsAuthenticated]

    def get_current_user(self) -> Any:
        return request.headers.get("X-User")


class BulkTeacherResource(TeacherResource):
    """The same resource with bulk creates: the bulk run (one POST of 100 items against
    100 single POSTs)."""

    name = "bulk-teachers"
    bulk = ("create",)


#: Background work: the outbox table joins the benchmark's tables.
jobs = Jobs(db)


@jobs.task(name="bench.welcome")
def welcome(name: str) -> None:
    """What the benchmark's job would do; the create is measured, not the job."""


class JobTeacherResource(TeacherResource):
    """The same create, plus one job in its transaction: the job overhead run."""

    name = "job-teachers"
    create_jobs = [WriteJob(welcome, name="name")]


def resources_kit_app(url: str, broker: str | None = None) -> Flask:
    """The resources_kit app; with ``broker``, its jobs are published there (Celery)."""
    app = make_app(url)
    app.config["RESOURCES_KIT_JOBS_BROKER_URL"] = broker
    api = Router(url_prefix="/api")
    api.register(TeacherResource)
    api.register(PermittedTeacherResource)
    api.register(StudentResource, parent=TeacherResource)
    api.register(CursorTeacherResource)
    api.register(JobTeacherResource)
    api.register(BulkTeacherResource)
    api.init_app(app)
    jobs.init_app(app)
    return app
