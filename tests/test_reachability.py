"""The reachability property: whatever the caller, the tenant, the permissions and the
depth of nesting, every row observable through any path (a list, an item, a total, a
cursor page, a relationship filter, search and sort, a ``references`` write, the row a
write leaves behind, an action, every item of a bulk write, a many-to-many's links) lies
inside that caller's row policy.

The world is drawn at random: two schools, teachers in each, students under teachers,
grades under students. A caller is a school plus a set of hidden names (its
permissions' ``visible``). The policy is also computed here, in Python, from the rows;
the API must agree with it on every path, ``?include=`` too: an included list holds
exactly the reachable related rows, a to-one is ``null`` when its row is not reachable."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import marshmallow as ma
import pytest
from flask import g, request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from resources_kit import ModelResource, Permission, Router, TenantScopeMixin, action

from .conftest import make_app, reset_database, running, seed
from .models import (
    Book,
    Enrolment,
    Grade,
    GradeSchema,
    School,
    Student,
    StudentSchema,
    Tag,
    Teacher,
    TeacherSchema,
    book_tags,
    db,
)

NAMES = ["Ada", "Bob", "Cy", "Di"]


def hidden() -> set[str]:
    return set(filter(None, request.headers.get("X-Hide", "").split(",")))


class HideTeachers(Permission):
    def visible(self, view: Any) -> Any:
        return Teacher.name.not_in(hidden()) if hidden() else None


class HideStudents(Permission):
    def visible(self, view: Any) -> Any:
        return Student.name.not_in(hidden()) if hidden() else None


class Teachers(TenantScopeMixin, ModelResource):
    name = "teachers"
    model = Teacher
    schema = TeacherSchema
    permissions = [HideTeachers]
    filter_fields = ["name", "students.name"]
    search_fields = ["name", "students.name"]
    sort_fields = ["name"]
    bulk = ("create", "patch")

    include_fields = ["students.grades"]

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}

    @action(detail=True)
    def rename(self, obj: Teacher) -> Any:
        obj.name = obj.name  # a writing action: the row it leaves must be reachable
        return self.serialize(obj)


class MovableStudentSchema(StudentSchema):
    teacher_id = ma.fields.Integer(dump_only=True)


class Students(ModelResource):
    name = "students"
    model = Student
    schema = MovableStudentSchema
    permissions = [HideStudents]
    pagination = "cursor"
    sort_fields = ["name"]
    bulk = ("create", "patch")

    include_fields = ["teacher"]


class Grades(ModelResource):
    name = "grades"
    model = Grade
    schema = GradeSchema


class EnrolmentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    student_id = ma.fields.Integer(allow_none=True)


class Enrolments(TenantScopeMixin, ModelResource):
    name = "enrolments"
    model = Enrolment
    schema = EnrolmentSchema
    references = {"student_id": Students}
    bulk = ("create", "patch")

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


class PupilsByTeacher(ModelResource):
    """Students at the top level, sorted and filtered through their teacher."""

    name = "pupils"
    model = Student
    schema = MovableStudentSchema
    permissions = [HideStudents]
    filter_fields = ["teacher.name"]
    sort_fields = ["teacher.name"]
    include_fields = ["teacher"]

    def get_query(self) -> Any:  # scoped through the teacher, in get_query()
        school = select(Teacher.id).where(Teacher.school_id == g.get("school_id"))
        return super().get_query().where(Student.teacher_id.in_(school))


class HideBooks(Permission):
    def visible(self, view: Any) -> Any:
        return Book.title.not_in(hidden()) if hidden() else None


class HideTags(Permission):
    def visible(self, view: Any) -> Any:
        return Tag.name.not_in(hidden()) if hidden() else None


class TagSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    name = ma.fields.String()


class BookSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    title = ma.fields.String()
    tag_ids = ma.fields.List(ma.fields.Integer())


class Tags(TenantScopeMixin, ModelResource):
    name = "tags"
    model = Tag
    schema = TagSchema
    permissions = [HideTags]
    pagination = "cursor"

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


class Books(TenantScopeMixin, ModelResource):
    name = "books"
    model = Book
    schema = BookSchema
    permissions = [HideBooks]
    link_fields = {"tag_ids": ("tags", Tags)}

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


def register(router: Router) -> None:
    router.register(Tags)
    router.register(Books)
    router.register_links(Books, "tags", Tags)
    router.register(Teachers)
    router.register(Students, parent=Teachers)
    router.register(Grades, parent=Students)
    router.register(Enrolments)
    router.register(PupilsByTeacher)


@dataclass(frozen=True)
class Caller:
    school: int
    hide: frozenset[str]

    @property
    def headers(self) -> dict[str, str]:
        return {"X-School": str(self.school), "X-Hide": ",".join(sorted(self.hide))}


class World:
    """The rows, and the policy computed from them."""

    def __init__(self) -> None:
        self.teachers = {t.id: t for t in db.session.scalars(select(Teacher))}
        self.students = {s.id: s for s in db.session.scalars(select(Student))}
        self.grades = {x.id: x for x in db.session.scalars(select(Grade))}

    def teachers_of(self, caller: Caller) -> set[int]:
        return {
            i
            for i, t in self.teachers.items()
            if t.school_id == caller.school and t.name not in caller.hide
        }

    def students_of(self, caller: Caller) -> set[int]:
        teachers = self.teachers_of(caller)
        return {
            i
            for i, s in self.students.items()
            if s.teacher_id in teachers and s.name not in caller.hide
        }

    def pupils_of(self, caller: Caller) -> set[int]:  # the top-level mount: join scope
        return {
            i
            for i, s in self.students.items()
            if self.teachers[s.teacher_id].school_id == caller.school and s.name not in caller.hide
        }

    def grades_of(self, caller: Caller) -> set[int]:
        students = self.students_of(caller)
        return {i for i, x in self.grades.items() if x.student_id in students}


rows = st.fixed_dictionaries(
    {
        "teachers": st.lists(
            st.tuples(st.sampled_from([1, 2]), st.sampled_from(NAMES)), min_size=1, max_size=4
        ),
        "students": st.lists(
            st.tuples(st.integers(0, 3), st.sampled_from(NAMES)), min_size=0, max_size=5
        ),
        "grades": st.lists(st.integers(0, 4), max_size=4),
        "books": st.lists(st.tuples(st.sampled_from([1, 2]), st.sampled_from(NAMES)), max_size=3),
        "tags": st.lists(st.tuples(st.sampled_from([1, 2]), st.sampled_from(NAMES)), max_size=3),
        "links": st.sets(st.tuples(st.integers(0, 2), st.integers(0, 2)), max_size=5),
    }
)
callers = st.builds(
    Caller,
    school=st.sampled_from([1, 2]),
    hide=st.frozensets(st.sampled_from(NAMES), max_size=2),
)


def build(drawn: dict[str, Any]) -> None:
    seed(School(id=1, name="One"), School(id=2, name="Two"))
    teachers = [Teacher(name=n, school_id=s) for s, n in drawn["teachers"]]
    seed(*teachers)
    students = [
        Student(name=n, teacher_id=teachers[i % len(teachers)].id) for i, n in drawn["students"]
    ]
    seed(*students)
    if students:
        seed(
            *(
                Grade(student_id=students[i % len(students)].id, subject=f"s{k}", score=1)
                for k, i in enumerate(drawn["grades"])
            )
        )


def build_links(drawn: dict[str, Any]) -> None:
    books = [Book(school_id=s, title=n) for s, n in drawn["books"]]
    tags = [Tag(school_id=s, name=n) for s, n in drawn["tags"]]
    seed(*books, *tags)
    pairs = {
        (books[b].id, tags[t].id) for b, t in drawn["links"] if b < len(books) and t < len(tags)
    }
    if pairs:
        db.session.execute(book_tags.insert(), [{"book_id": b, "tag_id": t} for b, t in pairs])
        db.session.commit()


def linked_pairs() -> set[tuple[int, int]]:
    db.session.rollback()
    query = select(book_tags.c.book_id, book_tags.c.tag_id)
    found = {(book, tag) for book, tag in db.session.execute(query)}
    db.session.rollback()  # no transaction left open while the API writes
    return found


def ids(items: list[dict[str, Any]]) -> set[int]:
    return {item["id"] for item in items}


def walk(client: Any, url: str, headers: dict[str, str]) -> set[int]:
    seen: set[int] = set()
    next_url = url
    for _ in range(20):
        body = client.get(next_url, headers=headers).json
        seen |= ids(body["items"])
        if body["next"] is None:
            return seen
        next_url = f"{url}{'&' if '?' in url else '?'}cursor={body['next']}"
    raise AssertionError("the cursor walk did not end")


@pytest.fixture(scope="module")
def app(app: Any) -> Any:
    return make_app(register)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=rows, caller=callers, name=st.sampled_from(NAMES))
def test_every_observable_row_is_inside_the_callers_policy(
    app: Any, database: Any, drawn: dict[str, Any], caller: Caller, name: str
) -> None:
    with running(app) as client:
        reset_database()
        build(drawn)
        world = World()
        h = caller.headers
        teachers, students = world.teachers_of(caller), world.students_of(caller)
        grades, pupils = world.grades_of(caller), world.pupils_of(caller)

        # lists and totals, with relationship filters, search and sort
        page = client.get("/api/teachers?limit=100", headers=h).json
        assert ids(page["items"]) == teachers
        assert page["total"] == len(teachers)
        by_pupil = client.get(
            f'/api/teachers?limit=100&filters={{"students.name": "{name}"}}', headers=h
        ).json
        expected = {
            world.students[s].teacher_id for s in students if world.students[s].name == name
        }
        assert ids(by_pupil["items"]) == expected, "a relationship filter reached a hidden row"
        searched = ids(
            client.get(f"/api/teachers?limit=100&search={name}", headers=h).json["items"]
        )
        by_own_name = {t for t in teachers if name.lower() in world.teachers[t].name.lower()}
        assert by_own_name <= searched <= by_own_name | expected
        listed = client.get("/api/pupils?limit=100&sort=teacher.name", headers=h).json
        assert ids(listed["items"]) == pupils
        filtered = client.get(
            f'/api/pupils?limit=100&filters={{"teacher.name": "{name}"}}', headers=h
        ).json
        assert ids(filtered["items"]) <= pupils
        assert all(
            world.teachers[world.students[s].teacher_id].name == name
            and world.students[s].teacher_id in teachers
            for s in ids(filtered["items"])
        ), "a to-one filter matched a teacher the caller may not reach"

        # included rows: exactly the reachable ones of each row, at every level, also
        # trimmed by ?fields=, on cursor pages and behind a 304
        included = client.get("/api/teachers?limit=100&include=students.grades", headers=h).json[
            "items"
        ]
        assert ids(included) == teachers
        for teacher in included:
            under = {s for s in students if world.students[s].teacher_id == teacher["id"]}
            assert ids(teacher["students"]) == under, "an included list reached a hidden row"
            for student in teacher["students"]:
                of = {x for x in grades if world.grades[x].student_id == student["id"]}
                assert ids(student["grades"]) == of
        trimmed = client.get(
            "/api/teachers?limit=100&include=students&fields=name,students.id", headers=h
        ).json["items"]
        assert {s["id"] for t in trimmed for s in t["students"]} == students
        pupils_with = client.get("/api/pupils?limit=100&include=teacher", headers=h).json
        assert ids(pupils_with["items"]) == pupils
        for pupil in pupils_with["items"]:
            teacher_id = world.students[pupil["id"]].teacher_id
            # A to-one: the row when its resource would show it, else null.
            assert pupil["teacher"] == (
                {**pupil["teacher"], "id": teacher_id} if teacher_id in teachers else None
            )
        for t in teachers:
            item_url = f"/api/teachers/{t}?include=students"
            first = client.get(item_url, headers=h)
            assert ids(first.json["students"]) == {
                s for s in students if world.students[s].teacher_id == t
            }
            tag = {"If-None-Match": first.headers["ETag"]}
            assert client.get(item_url, headers={**h, **tag}).status_code == 304
            paged = walk(client, f"/api/teachers/{t}/students?limit=2&include=teacher", h)
            assert paged == {s for s in students if world.students[s].teacher_id == t}
            first_page = client.get(
                f"/api/teachers/{t}/students?limit=2&include=teacher", headers=h
            )
            assert all(s["teacher"]["id"] == t for s in first_page.json["items"])

        # items and nested paths at depth 2 and 3, cursors included
        for t in world.teachers:
            status = client.get(f"/api/teachers/{t}", headers=h).status_code
            assert (status == 200) == (t in teachers)
            under = (
                walk(client, f"/api/teachers/{t}/students?limit=2", h) if t in teachers else set()
            )
            assert under == {s for s in students if world.students[s].teacher_id == t}
        for s, student in world.students.items():
            url = f"/api/teachers/{student.teacher_id}/students/{s}"
            assert (client.get(url, headers=h).status_code == 200) == (s in students)
            listed_grades = client.get(f"{url}/grades?limit=100", headers=h)
            if s in students:
                assert ids(listed_grades.json["items"]) <= grades
            else:
                assert listed_grades.status_code == 404
        for x, grade in world.grades.items():
            student = world.students[grade.student_id]
            url = f"/api/teachers/{student.teacher_id}/students/{grade.student_id}/grades/{x}"
            assert (client.get(url, headers=h).status_code == 200) == (x in grades)

        # writes: a reference, an action, the row a write leaves behind
        for s in world.students:
            made = client.post("/api/enrolments", json={"student_id": s}, headers=h)
            assert made.status_code == (201 if s in students else 422)
        for t in world.teachers:
            acted = client.post(f"/api/teachers/{t}/rename", headers=h)
            assert acted.status_code == (200 if t in teachers else 404)
        # bulk writes: every item checked, the whole request refused for one unreachable
        everyone = list(world.students)
        if everyone:
            made = client.post(
                "/api/enrolments", json=[{"student_id": s} for s in everyone], headers=h
            )
            refused = {str(i) for i, s in enumerate(everyone) if s not in students}
            assert made.status_code == (422 if refused else 201)
            if refused:
                assert set(made.json["errors"]) == refused
        patched = client.patch(
            "/api/teachers",
            json=[{"id": t, "years_teaching": 1} for t in world.teachers],
            headers=h,
        )
        refused = {str(i) for i, t in enumerate(world.teachers) if t not in teachers}
        assert patched.status_code == (422 if refused else 200)
        if refused:
            assert set(patched.json["errors"]) == refused
        for t in teachers:
            if not everyone:
                break
            moved = client.patch(
                f"/api/teachers/{t}/students",
                json=[{"id": s, "age": 9} for s in everyone],
                headers=h,
            )
            under = {s for s in students if world.students[s].teacher_id == t}
            refused = {str(i) for i, s in enumerate(everyone) if s not in under}
            assert moved.status_code == (422 if refused else 200)
            if refused:
                assert set(moved.json["errors"]) == refused
        many = client.post("/api/teachers", json=[{"name": "Ada"}, {"name": name}], headers=h)
        assert many.status_code == (403 if caller.hide & {"Ada", name} else 201)
        if many.status_code == 201:
            assert {row["school_id"] for row in many.json} == {caller.school}
        created = client.post("/api/teachers", json={"name": name}, headers=h)
        # A name the caller hides would leave the new row outside its own policy.
        assert created.status_code == (403 if name in caller.hide else 201)
        if created.status_code == 201:
            row = db.session.get(Teacher, created.json["id"])
            assert row.school_id == caller.school


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drawn=rows, caller=callers)
def test_every_link_is_inside_the_callers_policy(
    app: Any, database: Any, drawn: dict[str, Any], caller: Caller
) -> None:
    """A many-to-many's paths: the linked list, the ids field, link and unlink. Only rows
    both ends of whose link the caller reaches are shown, linked or unlinked."""
    with running(app) as client:
        reset_database()
        seed(School(id=1, name="One"), School(id=2, name="Two"))
        build_links(drawn)
        h = caller.headers
        books = {b.id: b for b in db.session.scalars(select(Book))}
        tags = {t.id: t for t in db.session.scalars(select(Tag))}
        mine = {
            i
            for i, b in books.items()
            if b.school_id == caller.school and b.title not in caller.hide
        }
        reach = {
            i for i, t in tags.items() if t.school_id == caller.school and t.name not in caller.hide
        }
        pairs = linked_pairs()

        for b in books:
            shown = client.get(f"/api/books/{b}/tags?limit=100", headers=h)
            item = client.get(f"/api/books/{b}", headers=h)
            if b not in mine:
                assert shown.status_code == item.status_code == 404
                continue
            expected = {t for book, t in pairs if book == b} & reach
            assert ids(shown.json["items"]) == expected, "the linked list showed a hidden row"
            assert item.json["tag_ids"] == sorted(expected)
        for b in books:
            for t in tags:
                before = linked_pairs()
                allowed = b in mine and t in reach
                linked = client.put(f"/api/books/{b}/tags/{t}", headers=h)
                assert linked.status_code == (204 if allowed else 404)
                assert linked_pairs() == (before | {(b, t)} if allowed else before)
                unlinked = client.delete(f"/api/books/{b}/tags/{t}", headers=h)
                assert unlinked.status_code == (204 if allowed else 404)
                assert linked_pairs() == (before - {(b, t)} if allowed else before)
                patched = client.patch(f"/api/books/{b}", json={"tag_ids": [t]}, headers=h)
                assert patched.status_code == (200 if allowed else 404 if b not in mine else 422)
                if allowed:
                    others = {(x, y) for x, y in before if x != b or y not in reach}
                    assert linked_pairs() == others | {(b, t)}
                    assert patched.json["tag_ids"] == [t]
                else:
                    assert linked_pairs() == before
                db.session.execute(book_tags.delete())
                if before:
                    rows_ = [{"book_id": x, "tag_id": y} for x, y in before]
                    db.session.execute(book_tags.insert(), rows_)
                db.session.commit()
