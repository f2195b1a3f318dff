"""The row policy on every path: where two features meet, no row that a resource's own
routes hide is reachable through another (references, relationship filters, overridden
lookups, writes, aliased queries, collection actions, custom totals), on every database."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from flask import g, request
from sqlalchemy import Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, aliased, mapped_column

from resources_kit import (
    ImproperlyConfigured,
    ListMixin,
    ModelResource,
    Page,
    Pagination,
    Permission,
    Resource,
    Router,
    TenantScopeMixin,
    action,
)
from resources_kit.errors import ResourcesKitWarning

from .conftest import make_app, running, seed, seed_two_schools
from .models import (
    Enrolment,
    School,
    ScopedTeacherResource,
    Student,
    StudentSchema,
    Teacher,
    TeacherSchema,
    db,
)
from .test_errors import snapshot


def school(number: int) -> dict[str, str]:
    return {"X-School": str(number)}


class Scoped(TenantScopeMixin, ModelResource):
    """Teachers of the caller's school."""

    name = "teachers"
    model = Teacher
    schema = TeacherSchema

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


class HidesNamedHidden(Permission):
    """Students called "Hidden" are invisible to everyone."""

    def visible(self, view: Any) -> Any:
        return Student.name != "Hidden"


class BuddySchema(StudentSchema):
    buddy_id = ma.fields.Integer(allow_none=True)


class Pupils(ModelResource):
    """Students: mounted only under the scoped teachers, so scoped through the parent."""

    name = "students"
    model = Student
    schema = BuddySchema
    permissions = [HidesNamedHidden]
    references = {"buddy_id": "self"}


class EnrolmentSchema(ma.Schema):
    id = ma.fields.Integer(dump_only=True)
    school_id = ma.fields.Integer(dump_only=True)
    student_id = ma.fields.Integer(allow_none=True)
    note = ma.fields.String(allow_none=True)


class Enrolments(TenantScopeMixin, ModelResource):
    name = "enrolments"
    model = Enrolment
    schema = EnrolmentSchema
    references = {"student_id": Pupils}

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"school_id": g.get("school_id")}


class TeachersByPupil(Scoped):
    name = "by-pupil"
    filter_fields = ["name", "students.name"]
    search_fields = ["students.name"]


def register(router: Router) -> None:
    router.register(Scoped)
    router.register(Pupils, parent=Scoped)
    router.register(Enrolments)
    router.register(TeachersByPupil)


@pytest.fixture
def client(database: Any) -> Any:
    with running(make_app(register)) as client:
        yield client


@pytest.fixture
def ids(client: Any) -> dict[str, int]:
    found = seed_two_schools()
    hidden = Student(name="Hidden", teacher_id=found["ada"])
    seed(hidden)
    return {**found, "hidden": hidden.id}


# -- references ---------------------------------------------------------------------------


def test_a_reference_to_a_row_mounted_only_under_a_parent_obeys_the_parents_scope(
    client: Any, ids: dict[str, int]
) -> None:
    before = snapshot()
    refused = client.post(
        "/api/enrolments", json={"student_id": ids["di"]}, headers=school(ids["one"])
    )
    assert refused.status_code == 422, refused.json
    assert refused.json["errors"] == {"student_id": ["No such item."]}
    assert snapshot() == before
    made = client.post(
        "/api/enrolments", json={"student_id": ids["cy"]}, headers=school(ids["one"])
    )
    assert made.status_code == 201
    moved = client.patch(
        f"/api/enrolments/{made.json['id']}",
        json={"student_id": ids["di"]},
        headers=school(ids["one"]),
    )
    assert moved.status_code == 422
    assert db.session.get(Enrolment, made.json["id"]).student_id == ids["cy"]


def test_a_self_reference_on_a_nested_resource_obeys_the_chain(
    client: Any, ids: dict[str, int]
) -> None:
    url = f"/api/teachers/{ids['ada']}/students/{ids['cy']}"
    refused = client.patch(url, json={"buddy_id": ids["di"]}, headers=school(ids["one"]))
    assert refused.status_code == 422
    assert db.session.get(Student, ids["cy"]).buddy_id is None


def test_a_reference_obeys_the_targets_visible(client: Any, ids: dict[str, int]) -> None:
    # Hidden is school one's own student, but its item route answers 404.
    item = f"/api/teachers/{ids['ada']}/students/{ids['hidden']}"
    assert client.get(item, headers=school(ids["one"])).status_code == 404
    refused = client.post(
        "/api/enrolments", json={"student_id": ids["hidden"]}, headers=school(ids["one"])
    )
    assert refused.status_code == 422
    url = f"/api/teachers/{ids['ada']}/students/{ids['cy']}"
    assert (
        client.patch(url, json={"buddy_id": ids["hidden"]}, headers=school(ids["one"])).status_code
        == 422
    )


# -- relationship filters, search, sort -------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        'filters={"students.name__startswith": "Hid"}',
        'filters={"students.name": "Hidden"}',
        'filters={"students.name": "Di"}',  # another school's student
        "search=Hidden",
        "search=Di",
    ],
)
def test_a_relationship_condition_matches_only_related_rows_the_caller_may_reach(
    client: Any, ids: dict[str, int], query: str
) -> None:
    schools = [ids["one"]] if "Di" in query else [ids["one"], ids["two"]]  # Di is two's
    for number in schools:
        page = client.get(f"/api/by-pupil?{query}", headers=school(number)).json
        assert page["items"] == [], (query, number)
        assert page["total"] == 0


def test_a_relationship_condition_still_matches_reachable_rows(
    client: Any, ids: dict[str, int]
) -> None:
    page = client.get(
        '/api/by-pupil?filters={"students.name": "Cy"}', headers=school(ids["one"])
    ).json
    assert [t["name"] for t in page["items"]] == ["Ada"]
    assert [
        t["name"]
        for t in client.get("/api/by-pupil?search=C", headers=school(ids["one"])).json["items"]
    ] == ["Ada"]


def test_sorting_by_a_related_column_ignores_rows_the_caller_may_not_reach(
    database: Any,
) -> None:
    class ByTeacher(ListMixin, Resource):
        name = "pupils"
        model = Student
        schema = StudentSchema
        sort_fields = ["teacher.name"]

    class NoSecrets(Permission):
        def visible(self, view: Any) -> Any:
            return Teacher.name != "Zoe"

    class VisibleTeachers(ModelResource):
        name = "teachers"
        model = Teacher
        schema = TeacherSchema
        permissions = [NoSecrets]

    def both(router: Router) -> None:
        router.register(VisibleTeachers)
        router.register(ByTeacher)

    with running(make_app(both)) as client:
        ann, zoe, bea = Teacher(name="Ann"), Teacher(name="Zoe"), Teacher(name="Bea")
        seed(ann, zoe, bea)
        seed(
            *(Student(name=n, teacher_id=t.id) for n, t in (("s1", ann), ("s2", zoe), ("s3", bea)))
        )
        names = [s["name"] for s in client.get("/api/pupils?sort=teacher.name__desc").json["items"]]
        # Zoe is hidden: her student sorts as if it had no teacher (first, descending).
        assert names == ["s2", "s3", "s1"]


def test_a_relationship_no_resource_serves_is_refused_at_registration() -> None:
    class Lonely(ModelResource):
        name = "lonely"
        model = Teacher
        schema = TeacherSchema
        filter_fields = ["students.name"]

    app_router = Router(url_prefix="/api")
    app_router.register(Lonely)
    from flask import Flask

    with pytest.raises(ImproperlyConfigured, match="public_relationships"):
        app_router.init_app(Flask(__name__))

    class Public(Lonely):
        name = "public"
        public_relationships = ["students"]

    Router(Flask(__name__), url_prefix="/api").register(Public)  # declared: accepted


def test_a_reference_target_that_is_not_registered_is_refused() -> None:
    from flask import Flask

    router = Router(url_prefix="/api")
    router.register(Enrolments)
    with pytest.raises(ImproperlyConfigured, match="not registered"):
        router.init_app(Flask(__name__))


# -- overridden lookups and the narrowing of get_query() --------------------------------------


class RegionN(ModelResource):
    """Tenancy (and soft delete) done in get_query(), with a get_object() of its own."""

    name = "narrowed"
    model = Teacher
    schema = TeacherSchema

    def get_query(self) -> Any:
        return super().get_query().where(Teacher.school_id == g.school_id, Teacher.region == "n")

    def get_object(self) -> Any:
        obj = db.session.get(Teacher, int(self.url_kwargs["teacher_id"]))
        if obj is None:
            from resources_kit import HTTPError

            raise HTTPError(404)
        return obj


@pytest.mark.parametrize(
    ("method", "body"),
    [("get", None), ("patch", {"name": "Zed"}), ("put", {"name": "Zed"}), ("delete", None)],
)
def test_an_overridden_get_object_is_checked_against_the_narrowing(
    database: Any, method: str, body: Any
) -> None:
    with running(make_app(lambda r: r.register(RegionN))) as client:
        ids = seed_two_schools()
        archived = Teacher(name="Old", school_id=ids["one"], region="archived")
        free = Teacher(name="Free", school_id=ids["one"], region="n")  # no students to keep
        seed(archived, free)
        before = snapshot()
        for target in (ids["bob"], archived.id):  # another school's; narrowed away
            response = getattr(client, method)(
                f"/api/narrowed/{target}", json=body, headers=school(ids["one"])
            )
            assert response.status_code == 404, (target, response.json)
        assert snapshot() == before
        own = getattr(client, method)(
            f"/api/narrowed/{free.id}", json=body, headers=school(ids["one"])
        )
        assert own.status_code in (200, 204)


# -- exact scope values -----------------------------------------------------------------------


class ByRegion(TenantScopeMixin, ModelResource):
    name = "regional"
    model = Teacher
    schema = TeacherSchema

    def get_base_query_kwargs(self) -> dict[str, Any]:
        return {"region": request.headers.get("X-Region")}


# Emails are unique per school, not per region: the warning is this test's business elsewhere.
@pytest.mark.filterwarnings("ignore::resources_kit.errors.ResourcesKitWarning")
@pytest.mark.parametrize("region", ["N", "n ", "N "])
def test_a_text_scope_compares_exactly_on_every_database(database: Any, region: str) -> None:
    with running(make_app(lambda r: r.register(ByRegion))) as client:
        ada = Teacher(name="Ada", region="n")
        seed(ada)
        headers = {"X-Region": region}
        assert client.get("/api/regional", headers=headers).json["items"] == []
        assert client.get(f"/api/regional/{ada.id}", headers=headers).status_code == 404
        patched = client.patch(f"/api/regional/{ada.id}", json={"name": "Zed"}, headers=headers)
        assert patched.status_code == 404
        assert db.session.get(Teacher, ada.id).name == "Ada"
        own = client.get("/api/regional", headers={"X-Region": "n"}).json["items"]
        assert [t["name"] for t in own] == ["Ada"]


# -- the row a write leaves behind ------------------------------------------------------------


class OwnStudents(Permission):
    """The docs' rule: a teacher sees only their own students."""

    def visible(self, view: Any) -> Any:
        return Student.teacher_id == int(request.headers["X-Teacher"])


class TeacherIdSchema(StudentSchema):
    teacher_id = ma.fields.Integer(required=True)


class MyStudents(ModelResource):
    name = "my-students"
    model = Student
    schema = TeacherIdSchema
    permissions = [OwnStudents]


def test_a_write_cannot_leave_its_row_outside_the_callers_policy(database: Any) -> None:
    with running(make_app(lambda r: r.register(MyStudents))) as client:
        ids = seed_two_schools()
        mine = {"X-Teacher": str(ids["ada"])}
        before = snapshot()
        created = client.post(
            "/api/my-students", json={"name": "Eve", "teacher_id": ids["bob"]}, headers=mine
        )
        assert created.status_code == 403, created.json
        handed = client.patch(
            f"/api/my-students/{ids['cy']}", json={"teacher_id": ids["bob"]}, headers=mine
        )
        assert handed.status_code == 403
        replaced = client.put(
            f"/api/my-students/{ids['cy']}",
            json={"name": "Cy", "teacher_id": ids["bob"]},
            headers=mine,
        )
        assert replaced.status_code == 403
        assert snapshot() == before
        ok = client.post(
            "/api/my-students", json={"name": "Eve", "teacher_id": ids["ada"]}, headers=mine
        )
        assert ok.status_code == 201


# -- aliased entities, custom totals, collection actions --------------------------------------


@pytest.mark.parametrize("entity", ["aliased", "other"])
def test_a_list_step_returning_another_entity_is_refused(database: Any, entity: str) -> None:
    class Elsewhere(Scoped):
        name = "elsewhere"

        def get_list_query(self, args: Any) -> Any:
            return select(aliased(Teacher) if entity == "aliased" else School)

    app = make_app(lambda r: r.register(Elsewhere))
    app.config["TESTING"] = False  # the error is answered, not raised into the test
    with running(app) as client:
        ids = seed_two_schools()
        response = client.get("/api/elsewhere", headers=school(ids["one"]))
        assert response.status_code == 500  # a configuration error, never unscoped rows
        assert "Bob" not in response.get_data(as_text=True)


class Totalled(Pagination):
    """The docs' recipe: numbered pages with a count of pages."""

    def get_args(self) -> dict[str, Any]:
        return {"page": ma.fields.Integer(load_default=1)}

    def paginate(self, view: Any, query: Any, args: Any) -> Page:
        rows = list(view.execute_read(query.limit(1)).scalars())
        # Counted from a query it builds itself: the helper keeps it under the policy.
        total = self.count(view, select(Teacher))
        return Page(rows, {"total": total})


def test_a_custom_paginators_total_goes_through_the_policy(database: Any) -> None:
    class Counted(Scoped):
        name = "counted"
        pagination = Totalled

    with running(make_app(lambda r: r.register(Counted))) as client:
        ids = seed_two_schools()
        seed(Teacher(name="Cid", school_id=ids["two"]))
        assert client.get("/api/counted", headers=school(ids["one"])).json["total"] == 1
        assert client.get("/api/counted", headers=school(ids["two"])).json["total"] == 2


class MentorSchema(ma.Schema):
    mentor_id = ma.fields.Integer(allow_none=True)


class Importing(Scoped):
    name = "importing"
    references = {"mentor_id": "self"}

    @action(detail=False, schema=MentorSchema)
    def spawn(self, data: dict[str, Any]) -> Any:
        db.session.add(Teacher(name="New", school_id=999, mentor_id=data.get("mentor_id")))


def test_a_collection_action_that_creates_rows_is_stamped_and_checked(database: Any) -> None:
    with running(make_app(lambda r: r.register(Importing))) as client:
        ids = seed_two_schools()
        spawn = "/api/importing/spawn"
        assert client.post(spawn, json={}, headers=school(ids["one"])).status_code == 204
        made = db.session.execute(select(Teacher).where(Teacher.name == "New")).scalar_one()
        assert made.school_id == ids["one"]  # stamped, whatever the action set
        before = snapshot()
        refused = client.post(spawn, json={"mentor_id": ids["bob"]}, headers=school(ids["one"]))
        assert refused.status_code == 422  # another school's teacher as mentor
        assert snapshot() == before


# -- unique values across tenants -------------------------------------------------------------


def test_a_unique_value_across_tenants_is_reported_at_registration() -> None:
    class Base(DeclarativeBase):
        pass

    class Member(Base):
        __tablename__ = "members"
        id: Mapped[int] = mapped_column(Integer, primary_key=True)
        tenant: Mapped[str] = mapped_column(String(20))
        email: Mapped[str] = mapped_column(String(50), unique=True)

    class MemberSchema(ma.Schema):
        id = ma.fields.Integer(dump_only=True)
        email = ma.fields.String()

    class Members(TenantScopeMixin, ModelResource):
        name = "members"
        model = Member
        schema = MemberSchema
        scope_columns = ["tenant"]

        def get_base_query_kwargs(self) -> dict[str, Any]:
            return {"tenant": "a"}

    with pytest.warns(ResourcesKitWarning, match=r"unique on \(email\) across tenants"):
        Router().register(Members)

    class Guarded(Members):  # the scope columns named by row-level security instead
        name = "guarded-members"
        scope_columns = None

    with pytest.warns(ResourcesKitWarning, match=r"unique on \(email\) across tenants"):
        Router(row_level_security=["tenant"]).register(Guarded)

    from flask import Flask

    app = Flask(__name__)
    Router(app, url_prefix="/api").register(Members)
    output = app.test_cli_runner().invoke(args=["resources"]).output
    assert "unique across tenants: email" in output


def test_the_conflict_of_a_per_tenant_unique_names_no_value(database: Any) -> None:
    def scoped(router: Router) -> None:
        router.register(ScopedTeacherResource)

    with running(make_app(scoped)) as client:
        ids = seed_two_schools()
        body = {"name": "Eve", "email": "eve@example.org"}
        assert (
            client.post("/api/teachers", json=body, headers=school(ids["one"])).status_code == 201
        )
        # The same email in the other school is another tenant's business: no conflict.
        assert (
            client.post("/api/teachers", json=body, headers=school(ids["two"])).status_code == 201
        )
        again = client.post("/api/teachers", json=body, headers=school(ids["one"]))
        assert again.status_code == 409
        assert "eve@example.org" not in again.get_data(as_text=True)
