"""Models, schemas and resources the tests run against: a school with teachers, students
nested under teachers, and grades nested under students."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import marshmallow as ma
from flask import g
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import (
    JSON,
    REAL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    Numeric,
    String,
    Table,
    Time,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from resources_kit import (
    CallbackMixin,
    CreateMixin,
    DeleteMixin,
    ListMixin,
    ModelResource,
    PatchMixin,
    Resource,
    RetrieveMixin,
    TenantScopeMixin,
    UpdateMixin,
)


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class School(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "schools"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)


class Teacher(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "teachers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(50))
    email: Mapped[str | None] = mapped_column(String(120))
    years_teaching: Mapped[int | None] = mapped_column(Integer)
    region: Mapped[str | None] = mapped_column(String(20))
    mentor_id: Mapped[int | None] = mapped_column(ForeignKey("teachers.id", ondelete="SET NULL"))
    school: Mapped[School | None] = relationship()
    # passive_deletes: let the database refuse deleting a teacher with students (409),
    # instead of the ORM loading them and nulling their teacher_id first.
    students: Mapped[list[Student]] = relationship(back_populates="teacher", passive_deletes="all")
    # Unique per school: across schools, a 409 would tell one school of another's value.
    __table_args__ = (UniqueConstraint("school_id", "email"),)


class Student(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "students"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    teacher_id: Mapped[int] = mapped_column(ForeignKey("teachers.id"))
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(50))
    age: Mapped[int | None] = mapped_column(Integer)
    #: Another student (``references = {"buddy_id": "self"}`` in the policy tests).
    buddy_id: Mapped[int | None] = mapped_column(ForeignKey("students.id", ondelete="SET NULL"))
    teacher: Mapped[Teacher] = relationship(back_populates="students")
    #: Read only (``?include=students.grades`` in the include tests).
    grades: Mapped[list[Grade]] = relationship(viewonly=True)


class Grade(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "grades"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    student_id: Mapped[int] = mapped_column(ForeignKey("students.id"))
    subject: Mapped[str] = mapped_column(String(30))
    score: Mapped[int] = mapped_column(Integer)
    __table_args__ = (UniqueConstraint("student_id", "subject"),)


class Enrolment(db.Model):  # type: ignore[name-defined,misc]
    """A school's record naming a student: a reference to a row mounted under a parent."""

    __tablename__ = "enrolments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    student_id: Mapped[int | None] = mapped_column(ForeignKey("students.id"))
    note: Mapped[str | None] = mapped_column(String(20))


class Counter(db.Model):  # type: ignore[name-defined,misc]
    """A row with a big integer and a NOT NULL column without a schema default."""

    __tablename__ = "counters"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(10), nullable=False, unique=True)
    value: Mapped[int | None] = mapped_column(BigInteger)


class Audit(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "audits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    operation: Mapped[str] = mapped_column(String(20))
    table: Mapped[str] = mapped_column(String(30))
    row_id: Mapped[int | None] = mapped_column(Integer)


class Note(db.Model):  # type: ignore[name-defined,misc]
    """A row with a version column: SQLAlchemy compares-and-sets it on every UPDATE."""

    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    __mapper_args__ = {"version_id_col": version}


class Gadget(db.Model):  # type: ignore[name-defined,misc]
    """One column of each type the list queries and writes must handle on every backend."""

    __tablename__ = "gadgets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(20))
    kind: Mapped[str | None] = mapped_column(Enum("small", "large", name="gadget_kind"))
    price: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    weight: Mapped[float | None] = mapped_column(REAL)
    made_on: Mapped[date | None] = mapped_column(Date)
    seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    extra: Mapped[Any] = mapped_column(JSON, nullable=True)
    token: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    rating: Mapped[int | None] = mapped_column(Integer, CheckConstraint("rating >= 0"))


class Color(enum.Enum):
    """Stored by name; its values sort in another order than its names."""

    red = "3"
    green = "1"
    blue = "2"


class Sortable(db.Model):  # type: ignore[name-defined,misc]
    """One nullable column of every type a list can be sorted by."""

    __tablename__ = "sortables"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str | None] = mapped_column(String(20))
    count: Mapped[int | None] = mapped_column(Integer)
    big: Mapped[int | None] = mapped_column(BigInteger)
    flag: Mapped[bool | None] = mapped_column(Boolean)
    color: Mapped[Color | None] = mapped_column(Enum(Color, name="sortable_color"))
    amount: Mapped[Decimal | None] = mapped_column(Numeric(10, 2))
    #: FLOAT: single precision on MariaDB, double on PostgreSQL.
    ratio: Mapped[float | None] = mapped_column(Float)
    #: REAL: single precision on PostgreSQL, double on MariaDB.
    small: Mapped[float | None] = mapped_column(REAL)
    day: Mapped[date | None] = mapped_column(Date)
    moment: Mapped[datetime | None] = mapped_column(DateTime)
    stamp: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    at: Mapped[time | None] = mapped_column(Time)
    code: Mapped[uuid.UUID | None] = mapped_column(Uuid)


#: Which tags a book has: a many-to-many (see linking.py and test_links.py).
book_tags = Table(
    "book_tags",
    Base.metadata,
    Column("book_id", ForeignKey("books.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True),
)


class Tag(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "tags"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    name: Mapped[str] = mapped_column(String(30))


class Book(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    school_id: Mapped[int | None] = mapped_column(ForeignKey("schools.id"))
    title: Mapped[str] = mapped_column(String(50))
    tags: Mapped[list[Tag]] = relationship(secondary=book_tags, order_by=Tag.id)


ALL_MODELS: tuple[Any, ...] = (
    book_tags,
    Book,
    Tag,
    Audit,
    Enrolment,
    Grade,
    Student,
    Counter,
    Teacher,
    School,
    Note,
    Gadget,
    Sortable,
)  # children first


class TeacherSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    email = ma.fields.Email(allow_none=True)
    years_teaching = ma.fields.Integer(allow_none=True)
    region = ma.fields.String(allow_none=True)


class StudentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    teacher_id = ma.fields.Integer()
    school_id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String(required=True)
    age = ma.fields.Integer(allow_none=True)


class GradeSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    student_id = ma.fields.Integer(dump_only=True)
    subject = ma.fields.String(required=True)
    score = ma.fields.Integer(required=True)


class NoteSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    text = ma.fields.String(required=True)
    version = ma.fields.Integer(dump_only=True)


class CounterSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    label = ma.fields.String(allow_none=True)
    value = ma.fields.Integer(allow_none=True)


class GadgetSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    label = ma.fields.String(required=True)
    kind = ma.fields.String(allow_none=True, validate=ma.validate.OneOf(["small", "large"]))
    price = ma.fields.Decimal(allow_none=True, as_string=True)
    weight = ma.fields.Float(allow_none=True)
    made_on = ma.fields.Date(allow_none=True)
    seen_at = ma.fields.AwareDateTime(allow_none=True)
    extra = ma.fields.Raw(allow_none=True)
    token = ma.fields.UUID(allow_none=True)
    rating = ma.fields.Integer(allow_none=True)


class GadgetResource(ModelResource):
    name = "gadgets"
    model = Gadget
    schema = GadgetSchema
    filter_fields = ["label", "kind", "price", "weight", "made_on", "seen_at", "token", "rating"]
    sort_fields = ["label", "kind", "price", "weight", "made_on", "seen_at", "rating"]
    search_fields = ["label"]


class CursorGadgetResource(GadgetResource):
    name = "cursor-gadgets"
    pagination = "cursor"


class SortableSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    label = ma.fields.String(allow_none=True)
    count = ma.fields.Integer(allow_none=True)
    big = ma.fields.Integer(allow_none=True)
    flag = ma.fields.Boolean(allow_none=True)
    color = ma.fields.Enum(Color, allow_none=True)
    amount = ma.fields.Decimal(allow_none=True, as_string=True)
    ratio = ma.fields.Float(allow_none=True)
    small = ma.fields.Float(allow_none=True)
    day = ma.fields.Date(allow_none=True)
    moment = ma.fields.NaiveDateTime(allow_none=True)
    stamp = ma.fields.AwareDateTime(allow_none=True)
    at = ma.fields.Time(allow_none=True)
    code = ma.fields.UUID(allow_none=True)


#: Every column of Sortable but its key.
SORTABLE_FIELDS = [
    "label",
    "count",
    "big",
    "flag",
    "color",
    "amount",
    "ratio",
    "small",
    "day",
    "moment",
    "stamp",
    "at",
    "code",
]


class SortableResource(ListMixin, Resource):
    name = "sortables"
    model = Sortable
    schema = SortableSchema
    sort_fields = SORTABLE_FIELDS
    filter_fields = SORTABLE_FIELDS
    max_page_size = 200


class CursorSortableResource(SortableResource):
    name = "cursor-sortables"
    pagination = "cursor"


class TeacherResource(ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    default_sort = "name"
    filter_fields = ["name", "email", "years_teaching", "region", "students.name"]
    sort_fields = ["name", "years_teaching", "region"]
    search_fields = ["name", "email"]


class LoneTeacherResource(TeacherResource):
    """``TeacherResource`` for apps that register it without a resource of students: the
    ``students.name`` filter then has no row policy to apply, and must be declared public."""

    public_relationships = ["students"]


class StudentResource(ModelResource):
    name = "students"
    model = Student
    schema = StudentSchema
    filter_fields = ["name", "age", "teacher.name"]
    sort_fields = ["name", "age", "teacher.name"]
    search_fields = ["name"]


class GradeResource(ModelResource):
    name = "grades"
    model = Grade
    schema = GradeSchema


class CounterResource(ListMixin, CreateMixin, PatchMixin, Resource):
    name = "counters"
    model = Counter
    schema = CounterSchema


class NoteResource(ModelResource):
    name = "notes"
    model = Note
    schema = NoteSchema


class StrictTeacherResource(TeacherResource):
    name = "strict-teachers"
    require_if_match = True


class CursorTeacherResource(ListMixin, Resource):
    name = "cursor-teachers"
    model = Teacher
    schema = TeacherSchema
    pagination = "cursor"
    default_sort = "name"
    filter_fields = ["name", "years_teaching", "region"]
    sort_fields = ["name", "years_teaching", "region"]
    search_fields = ["name", "email"]


class ReadOnlyTeacherResource(ListMixin, RetrieveMixin, Resource):
    name = "readonly-teachers"
    model = Teacher
    schema = TeacherSchema


# -- tenant-scoped resources (a school is the tenant; the request names it in a header) ---


def current_school() -> Any:
    return g.get("school_id")


class ScopedTeacherResource(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema

    def get_base_query_kwargs(self) -> dict[str, Any]:
        school = current_school()
        return {"school_id": school} if school is not None else {}


class ScopedStudentResource(
    CallbackMixin,
    ListMixin,
    RetrieveMixin,
    CreateMixin,
    UpdateMixin,
    PatchMixin,
    DeleteMixin,
    Resource,
):
    """Not tenant-scoped itself: it inherits the scope through its parent."""

    name = "students"
    model = Student
    schema = StudentSchema
