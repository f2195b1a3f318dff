"""The list action's steps: custom arguments, replaced pieces, loader options."""

from __future__ import annotations

from typing import Any

import marshmallow as ma
import pytest
from sqlalchemy import Select, select
from sqlalchemy.orm import joinedload, selectinload

from resources_kit import (
    Filtering,
    ImproperlyConfigured,
    ListMixin,
    Page,
    Pagination,
    Resource,
    Router,
)

from .conftest import make_app, running, seed
from .models import LoneTeacherResource, Student, Teacher, TeacherResource, TeacherSchema
from .test_errors import assert_problem


class Experienced(LoneTeacherResource):
    name = "experienced"
    list_args = {"min_years": ma.fields.Integer(validate=ma.validate.Range(min=0))}

    def filter_list_query(self, query: Select[Any], args: Any) -> Select[Any]:
        query = super().filter_list_query(query, args)
        if "min_years" in args:
            query = query.where(Teacher.years_teaching >= args["min_years"])
        return query


def _seed_teachers() -> None:
    seed(
        Teacher(name="Ada", years_teaching=1),
        Teacher(name="Bob", years_teaching=5),
        Teacher(name="Cy", years_teaching=9),
    )


def test_custom_list_argument_is_parsed_and_passed_to_the_steps(database: Any) -> None:
    with running(make_app(lambda r: r.register(Experienced))) as client:
        _seed_teachers()
        page = client.get("/api/experienced?min_years=5&sort=name__desc").json
        assert [t["name"] for t in page["items"]] == ["Cy", "Bob"]
        assert page["total"] == 2
        combined = client.get('/api/experienced?min_years=2&filters={"name": "Bob"}').json
        assert [t["name"] for t in combined["items"]] == ["Bob"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("min_years=abc", "min_years"), ("min_years=-1", "min_years"), ("max_years=3", "max_years")],
)
def test_invalid_custom_list_argument_is_400(database: Any, query: str, parameter: str) -> None:
    with running(make_app(lambda r: r.register(Experienced))) as client:
        problem = assert_problem(client.get(f"/api/experienced?{query}"), 400)
        assert list(problem["errors"]) == [parameter]


def test_custom_list_argument_is_documented(database: Any) -> None:
    with running(make_app(lambda r: r.register(Experienced))) as client:
        operation = client.get("/api/openapi.json").json["paths"]["/api/experienced"]["get"]
        by_name = {p["name"]: p for p in operation["parameters"]}
        assert by_name["min_years"]["schema"] == {"type": "integer", "minimum": 0}
        assert {"limit", "offset", "filters", "sort", "search", "fields"} <= set(by_name)
        assert by_name["limit"]["schema"]["maximum"] == Experienced.max_page_size


def test_list_argument_clashing_with_a_built_in_is_refused() -> None:
    clash = type(
        "Clash", (TeacherResource,), {"name": "clash", "list_args": {"limit": ma.fields.Integer()}}
    )
    with pytest.raises(ImproperlyConfigured, match="'limit'"):
        Router().register(clash)


class EvenOnly(Filtering):
    """A replaced filtering piece: its own parameter, its own narrowing."""

    def get_args(self) -> dict[str, Any]:
        return {**super().get_args(), "even": ma.fields.Boolean()}

    def filter(self, view: Any, query: Select[Any], args: Any) -> Select[Any]:
        query = super().filter(view, query, args)
        if args.get("even"):
            query = query.where(Teacher.years_teaching % 2 == 0)
        return query


class Numbered(Pagination):
    """``?page=`` numbered pages of ``page_size`` items."""

    envelope = {"page": {"type": "integer"}}

    def get_args(self) -> dict[str, ma.fields.Field[Any]]:
        return {"page": ma.fields.Integer(load_default=1, validate=ma.validate.Range(min=1))}

    def paginate(self, view: Any, query: Select[Any], args: Any) -> Page:
        size = view.page_size
        query = query.limit(size).offset((args["page"] - 1) * size)
        return Page(list(view.get_session().execute(query).scalars()), {"page": args["page"]})


def test_filtering_and_pagination_can_be_replaced(database: Any) -> None:
    class Custom(LoneTeacherResource):
        name = "custom"
        filtering = EvenOnly
        pagination = Numbered
        page_size = 2

    with running(make_app(lambda r: r.register(Custom))) as client:
        seed(*(Teacher(name=f"T{n}", years_teaching=n) for n in range(6)))
        first = client.get("/api/custom?even=true&sort=years_teaching").json
        assert first == {"items": first["items"], "page": 1}
        assert [t["years_teaching"] for t in first["items"]] == [0, 2]
        second = client.get("/api/custom?even=true&sort=years_teaching&page=2").json
        assert [t["years_teaching"] for t in second["items"]] == [4]
        assert_problem(client.get("/api/custom?offset=2"), 400)
        assert_problem(client.get("/api/custom?page=0"), 400)


def test_replaced_pieces_still_cannot_widen_the_scope(database: Any) -> None:
    from .models import ScopedTeacherResource

    class Leaky(Filtering):
        def filter(self, view: Any, query: Select[Any], args: Any) -> Select[Any]:
            return select(Teacher)  # drops everything it was given

    class Scoped(ScopedTeacherResource):
        name = "scoped"
        filtering = Leaky

    with running(make_app(lambda r: r.register(Scoped))) as client:
        from .models import School

        one, two = School(name="One"), School(name="Two")
        seed(one, two)
        seed(Teacher(name="Ada", school_id=one.id), Teacher(name="Bob", school_id=two.id))
        page = client.get("/api/scoped", headers={"X-School": str(one.id)}).json
        assert [t["name"] for t in page["items"]] == ["Ada"]
        assert page["total"] == 1


@pytest.mark.parametrize("loader", [selectinload, joinedload])
def test_loader_options_keep_page_and_total_right(database: Any, loader: Any) -> None:
    class StudentSchema(ma.Schema):
        name = ma.fields.String()

    class WithStudents(TeacherSchema):
        students = ma.fields.List(ma.fields.Nested(StudentSchema))

    class Loaded(ListMixin, Resource):
        name = "loaded"
        model = Teacher
        schema = WithStudents
        default_sort = "name"
        query_options = (loader(Teacher.students),)

    with running(make_app(lambda r: r.register(Loaded))) as client:
        ada, bob = Teacher(name="Ada"), Teacher(name="Bob")
        seed(ada, bob, Teacher(name="Cy"))
        seed(*(Student(name=f"S{n}", teacher_id=ada.id) for n in range(3)))
        seed(Student(name="T", teacher_id=bob.id))
        page = client.get("/api/loaded?limit=2").json
        assert page["total"] == 3
        assert [len(t["students"]) for t in page["items"]] == [3, 1]


class OwnBase(Resource):
    """A project's own base resource, placed before the mixins: Resource then comes
    before ListMixin in the MRO."""

    model = Teacher
    schema = TeacherSchema


@pytest.mark.parametrize("own_base_first", [True, False])
def test_a_list_mistake_is_refused_at_registration_whatever_the_base_order(
    own_base_first: bool,
) -> None:
    bases = (OwnBase, ListMixin) if own_base_first else (ListMixin, OwnBase)
    # Only the list's own check knows pagination; before it was cooperative, this one
    # surfaced at the first request instead.
    broken = type("Broken", bases, {"name": "broken", "pagination": "pages"})
    with pytest.raises(ImproperlyConfigured, match="pagination must be"):
        Router().register(broken)


class Picked(LoneTeacherResource):
    name = "picked"
    list_args = {"ids": ma.fields.List(ma.fields.Integer())}

    def filter_list_query(self, query: Select[Any], args: Any) -> Select[Any]:
        query = super().filter_list_query(query, args)
        return query.where(Teacher.id.in_(args["ids"])) if "ids" in args else query


def test_list_argument_that_is_a_list_takes_repeated_values(database: Any) -> None:
    with running(make_app(lambda r: r.register(Picked))) as client:
        _seed_teachers()
        ids = [t.id for t in database.session.query(Teacher).order_by(Teacher.name)]
        page = client.get(f"/api/picked?ids={ids[0]}&ids={ids[2]}").json
        assert [t["name"] for t in page["items"]] == ["Ada", "Cy"]
        assert [t["name"] for t in client.get(f"/api/picked?ids={ids[1]}").json["items"]] == ["Bob"]
        problem = assert_problem(client.get("/api/picked?ids=1&ids=x"), 400)
        assert list(problem["errors"]) == ["ids"]
        problem = assert_problem(client.get("/api/picked?limit=1&limit=2"), 400)
        assert problem["errors"] == {"limit": ["Given more than once."]}
