from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import selectinload

from resources_kit import ImproperlyConfigured

from .conftest import make_app, running, seed, walk_cursor
from .models import CursorTeacherResource, Student, Teacher


@pytest.fixture
def teachers(database: Any) -> list[int]:
    rows = [Teacher(name=f"t{i:02d}", years_teaching=i % 4 or None) for i in range(25)]
    seed(*rows)
    return [row.id for row in rows]


def links(response: Any) -> dict[str, dict[str, list[str]]]:
    found = {}
    for part in response.headers.get("Link", "").split(","):
        if not part.strip():
            continue
        url, rel = part.split(";")
        found[rel.strip().split("=")[1].strip('"')] = parse_qs(urlsplit(url.strip("<> ")).query)
    return found


def test_default_page_and_envelope(client: Any, teachers: list[int]) -> None:
    body = client.get("/api/teachers").json
    assert (body["total"], body["limit"], body["offset"]) == (25, 20, 0)
    assert [t["name"] for t in body["items"]] == [f"t{i:02d}" for i in range(20)]


def test_limit_offset_and_link_header(client: Any, teachers: list[int]) -> None:
    first = client.get("/api/teachers?limit=10")
    assert links(first) == {"next": {"limit": ["10"], "offset": ["10"]}}
    middle = client.get("/api/teachers?limit=10&offset=10")
    assert [t["name"] for t in middle.json["items"]] == [f"t{i:02d}" for i in range(10, 20)]
    assert links(middle) == {
        "next": {"limit": ["10"], "offset": ["20"]},
        "prev": {"limit": ["10"], "offset": ["0"]},
    }
    last = client.get("/api/teachers?limit=10&offset=20")
    assert len(last.json["items"]) == 5
    assert links(last) == {"prev": {"limit": ["10"], "offset": ["10"]}}
    single = client.get("/api/teachers?limit=100")
    assert "Link" not in single.headers


def test_offset_pages_carry_the_links_in_the_body_too(client: Any, teachers: list[int]) -> None:
    for query, rels in [("limit=10", {"next"}), ("limit=10&offset=10", {"next", "prev"}),
                        ("limit=10&offset=20", {"prev"}), ("limit=100", set())]:  # fmt: skip
        response = client.get(f"/api/teachers?{query}")
        header = links(response)
        assert set(header) == rels
        for rel in ("next", "prev"):
            url = response.json["links"][rel]
            if rel not in rels:
                assert url is None
                continue
            assert parse_qs(urlsplit(url).query) == header[rel]
            followed = client.get(url[len("http://localhost") :])
            assert followed.status_code == 200
            assert followed.json["offset"] == int(header[rel]["offset"][0])


def test_link_keeps_other_parameters(client: Any, teachers: list[int]) -> None:
    response = client.get('/api/teachers?limit=5&sort=name__desc&filters={"name__gte":"t"}')
    assert links(response)["next"]["sort"] == ["name__desc"]
    assert links(response)["next"]["filters"] == ['{"name__gte":"t"}']


def test_page_past_the_end_still_has_the_total(
    client: Any, teachers: list[int], statements: list[str]
) -> None:
    body = client.get("/api/teachers?offset=500").json
    assert body == {
        "items": [], "total": 25, "limit": 20, "offset": 500,
        "links": {"next": None, "prev": "http://localhost/api/teachers?offset=480&limit=20"},
    }  # fmt: skip
    assert len(statements) == 2


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=-1", "limit"),
        ("limit=ten", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        (f"offset={2**31}", "offset"),
        ("limit=5&limit=6", "limit"),
        ("page=2", "page"),
        ("cursor=abc", "cursor"),
    ],
)
def test_bad_pagination_parameters_are_400(
    client: Any, teachers: list[int], query: str, parameter: str
) -> None:
    response = client.get(f"/api/teachers?{query}")
    assert response.status_code == 400
    assert response.content_type == "application/problem+json"
    assert parameter in response.json["errors"]
    assert parameter in response.json["detail"]


@pytest.mark.parametrize("path", ["/api/teachers", "/api/cursor-teachers"])
def test_statements_per_page_do_not_grow_with_page_size(
    client: Any, teachers: list[int], statements: list[str], path: str
) -> None:
    counts = []
    for limit in (2, 100):
        statements.clear()
        assert client.get(f"{path}?limit={limit}").status_code == 200
        counts.append(len(statements))
    assert counts[0] == counts[1]
    assert counts[0] <= 2
    assert counts[0] == 1  # the total is a scalar subquery of the same SELECT


def test_nested_list_statements_do_not_grow(
    client: Any, database: Any, statements: list[str]
) -> None:
    teacher = Teacher(name="Ada")
    seed(teacher)
    teacher_id = teacher.id
    seed(*[Student(name=f"s{i}", teacher_id=teacher_id) for i in range(30)])
    counts = []
    for limit in (2, 100):
        statements.clear()
        client.get(f"/api/teachers/{teacher_id}/students?limit={limit}")
        counts.append(len(statements))
    assert counts == [1, 1]  # the parent chain is checked inside the page's statement


def test_an_empty_nested_page_tells_a_missing_parent_from_no_rows(
    client: Any, database: Any, statements: list[str]
) -> None:
    """Only an empty page costs the parent check of its own: a 404 for a parent that is
    missing (or outside the caller's reach), an empty page under one that is there."""
    lone, busy = Teacher(name="Lone"), Teacher(name="Busy")
    seed(lone, busy)
    seed(Student(name="s", teacher_id=busy.id))
    lone_id, busy_id = lone.id, busy.id
    statements.clear()
    empty = client.get(f"/api/teachers/{lone_id}/students")
    assert (empty.status_code, empty.json["items"], empty.json["total"]) == (200, [], 0)
    assert len(statements) == 2  # the page, then the parent check
    statements.clear()
    missing = client.get("/api/teachers/999999/students")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    assert len(statements) == 2
    statements.clear()
    page = client.get(f"/api/teachers/{busy_id}/students?limit=1")
    assert [item["name"] for item in page.json["items"]] == ["s"]
    assert len(statements) == 1


# -- cursor pagination ------------------------------------------------------------------------


def walk(
    client: Any, query: str = "", limit: int = 7, cursor: str | None = None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    url = f"/api/cursor-teachers?limit={limit}{query}"
    if cursor is not None:
        url += f"&cursor={cursor}"
    for _ in range(100):
        body = client.get(url).json
        assert set(body) == {"items", "next"}
        items.extend(body["items"])
        if body["next"] is None:
            return items
        url = f"/api/cursor-teachers?limit={limit}{query}&cursor={body['next']}"
    raise AssertionError("no last page")


def test_cursor_walk_visits_every_row_once(client: Any, teachers: list[int]) -> None:
    assert [t["id"] for t in walk(client)] == sorted(teachers)


@pytest.mark.parametrize(
    "sort", ["years_teaching", "years_teaching__desc", "region,name__desc", "name__desc"]
)
def test_cursor_walk_in_any_sort_matches_offset_order(
    client: Any, teachers: list[int], sort: str
) -> None:
    seed(Teacher(name="t05", years_teaching=None, region="a"))  # a tie on name, nulls
    walked = [t["id"] for t in walk(client, f"&sort={sort}", limit=4)]
    listed = [t["id"] for t in client.get(f"/api/teachers?limit=100&sort={sort}").json["items"]]
    assert walked == listed
    assert len(set(walked)) == len(walked) == 26


def test_cursor_page_has_next_link(client: Any, teachers: list[int]) -> None:
    response = client.get("/api/cursor-teachers?limit=5")
    assert links(response)["next"]["cursor"] == [response.json["next"]]


def test_cursor_walk_while_rows_are_inserted_behind_the_position(
    client: Any, teachers: list[int]
) -> None:
    seen: list[int] = []
    url = "/api/cursor-teachers?limit=5&sort=name"
    inserted = 0
    while True:
        body = client.get(url).json
        seen.extend(t["id"] for t in body["items"])
        # a row that sorts before everything already read: it must not shift the walk
        seed(Teacher(name=f"a{inserted:03d}"))
        inserted += 1
        if body["next"] is None:
            break
        url = f"/api/cursor-teachers?limit=5&sort=name&cursor={body['next']}"
    assert seen == sorted(teachers)  # every original row once, in order, none repeated
    assert inserted == 5


def test_cursor_walk_sees_rows_inserted_ahead(client: Any, teachers: list[int]) -> None:
    first = client.get("/api/cursor-teachers?limit=5&sort=name").json
    seed(Teacher(name="zz-new"))
    rest = walk(client, "&sort=name", limit=5, cursor=first["next"])
    ids = [t["id"] for t in first["items"] + rest]
    assert len(ids) == len(set(ids)) == 26


@pytest.mark.parametrize(
    "cursor",
    ["garbage", "eyJzIjoiaWRfX2FzYyIsInYiOlsxXX0.forged", "", "%00"],
)
def test_forged_or_malformed_cursor_is_400(client: Any, teachers: list[int], cursor: str) -> None:
    response = client.get(f"/api/cursor-teachers?cursor={cursor}x")
    assert response.status_code == 400
    assert "cursor" in response.json["errors"]


def test_cursor_signed_with_another_key_is_400(client: Any, teachers: list[int]) -> None:
    other = make_app(SECRET_KEY="another")
    with other.app_context():
        foreign = other.test_client().get("/api/cursor-teachers?limit=2").json["next"]
    assert client.get(f"/api/cursor-teachers?cursor={foreign}").status_code == 400


def test_cursor_from_another_sort_is_400(client: Any, teachers: list[int]) -> None:
    cursor = client.get("/api/cursor-teachers?limit=2&sort=name").json["next"]
    response = client.get(f"/api/cursor-teachers?cursor={cursor}&sort=region")
    assert response.status_code == 400
    assert "sort order" in response.json["errors"]["cursor"][0]


def test_cursor_resource_refuses_offset(client: Any, teachers: list[int]) -> None:
    response = client.get("/api/cursor-teachers?offset=5")
    assert response.status_code == 400
    assert response.json["errors"] == {"offset": ["Unknown query parameter."]}


def test_cursor_page_is_one_statement(
    client: Any, teachers: list[int], statements: list[str]
) -> None:
    cursor = client.get("/api/cursor-teachers?limit=5").json["next"]
    statements.clear()
    client.get(f"/api/cursor-teachers?limit=5&cursor={cursor}")
    assert len(statements) == 1
    assert "COUNT" not in statements[0].upper()


def test_cursor_pagination_needs_a_secret_key(database: Any) -> None:
    app = make_app(SECRET_KEY=None, PROPAGATE_EXCEPTIONS=True)
    with app.app_context():
        seed(Teacher(name="a"), Teacher(name="b"))
        with pytest.raises(ImproperlyConfigured, match="SECRET_KEY"):
            app.test_client().get("/api/cursor-teachers?limit=1")


def test_cursor_resource_cannot_sort_through_relationships() -> None:
    from .models import Student, StudentSchema

    bad = type(
        "BadCursor",
        (CursorTeacherResource,),
        {
            "model": Student,
            "schema": StudentSchema,
            "sort_fields": ["teacher.name"],
            "filter_fields": [],
            "search_fields": [],
        },
    )
    from resources_kit import Router

    with pytest.raises(ImproperlyConfigured, match="cursor pagination"):
        Router().register(bad)


@pytest.mark.parametrize("sort", ["price", "price__desc", "weight", "weight__desc", "made_on"])
def test_cursor_walk_over_numeric_and_float_columns_visits_each_row_once(
    client: Any, database: Any, sort: str
) -> None:
    from datetime import date

    from .models import Gadget

    seed(
        *(
            Gadget(
                label=f"g{n}",
                price=[1.1, 2.25, None, 2.25, 0.01][n % 5],
                weight=[0.1, 0.3, 0.7, None, 0.1][n % 5],
                made_on=date(2026, 1, 1 + n % 3) if n % 4 else None,
            )
            for n in range(23)
        )
    )
    seen = walk_cursor(client, f"/api/cursor-gadgets?sort={sort}&limit=4")
    assert sorted(seen) == sorted(set(seen))
    assert len(seen) == 23


def test_cursor_reveals_no_sort_value(database: Any) -> None:
    """Sorted by a column the schema never dumps, the cursor still shows nothing of it."""
    import base64

    import marshmallow as ma

    from resources_kit import ListMixin, Resource, Router

    from .conftest import running
    from .models import Teacher

    class Public(ma.Schema):
        id = ma.fields.Integer()

    class Secretive(ListMixin, Resource):
        name, model, schema = "secretive", Teacher, Public
        pagination = "cursor"
        default_sort = "email"

    def register(router: Router) -> None:
        router.register(Secretive)

    with running(make_app(register)) as client:
        seed(*(Teacher(name=f"T{n}", email=f"hidden{n}@secret.example") for n in range(3)))
        cursor = client.get("/api/secretive?limit=1").json["next"]
        padded = cursor + "=" * (-len(cursor) % 4)
        assert b"hidden" not in base64.urlsafe_b64decode(padded)
        assert "hidden" not in cursor
        second = client.get(f"/api/secretive?limit=1&cursor={cursor}").json
        assert len(second["items"]) == 1
        tampered = cursor[:-4] + ("AAAA" if not cursor.endswith("AAAA") else "BBBB")
        assert client.get(f"/api/secretive?limit=1&cursor={tampered}").status_code == 400


@pytest.mark.parametrize("sort", ["kind", "kind__desc"])
def test_enum_columns_sort_as_text_on_every_backend(client: Any, database: Any, sort: str) -> None:
    """MariaDB sorts an ENUM by declaration order but compares it as text: both use text."""
    from .models import Gadget

    seed(*(Gadget(label=f"g{n}", kind=["small", "large", None][n % 3]) for n in range(7)))
    offset = [i["kind"] for i in client.get(f"/api/gadgets?sort={sort}&limit=100").json["items"]]
    kinds = sorted(k for k in offset if k is not None)
    expected = (kinds[::-1] if sort.endswith("desc") else kinds) + [None] * offset.count(None)
    if sort.endswith("desc"):
        expected = [None] * offset.count(None) + kinds[::-1]
    assert offset == expected
    walked = walk_cursor(client, f"/api/cursor-gadgets?sort={sort}&limit=1")
    assert len(walked) == len(set(walked)) == 7


# -- a cursor walk is the offset order, for every sortable column type ----------------------

#: Few values per column, so that rows tie and the tie-breaker matters; each pool holds the
#: values a backend is known to store in another form than Python sent (1/3 in a FLOAT,
#: aware date-times where the zone is dropped, an Enum whose values sort apart from names).
SORTABLE_VALUES: dict[str, list[Any]] = {
    "label": ["a", "B", "b", ""],
    "count": [0, -1, 2**31 - 1],
    "big": [2**62, -(2**62), 7],
    "flag": [True, False],
    "color": ["red", "green", "blue"],
    "amount": ["12.35", "-0.01", "0.00"],
    "ratio": [1 / 3, 0.1, 2 / 3],
    "small": [1 / 3, 0.1, 1e-3],
    "day": ["2026-01-01", "1999-12-31"],
    "moment": ["2026-01-01T10:00:00", "2026-01-01T09:59:59"],
    "stamp": ["2026-01-01T10:00:00+00:00", "2026-06-01T08:30:00+00:00"],
    "at": ["10:00:00", "23:59:59", "00:00:00"],
    "code": [
        "00000000-0000-0000-0000-000000000001",
        "ffffffff-0000-0000-0000-000000000000",
    ],
}


def _sortable_row(values: dict[str, Any]) -> Any:
    from .models import Sortable, SortableSchema

    return Sortable(**SortableSchema().load(values))


@st.composite
def sortable_rows(draw: Any) -> list[dict[str, Any]]:
    column = draw(st.sampled_from(sorted(SORTABLE_VALUES)))
    values = st.sampled_from([None, *SORTABLE_VALUES[column]])
    return [{column: value} for value in draw(st.lists(values, min_size=1, max_size=7))]


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rows=sortable_rows(), descending=st.booleans(), limit=st.integers(1, 3))
@example(rows=[{"flag": True}, {"flag": False}, {"flag": None}], descending=False, limit=1)
@example(rows=[{"color": "red"}, {"color": "blue"}, {"color": None}], descending=True, limit=1)
@example(rows=[{"stamp": "2026-01-01T10:00:00+00:00"}] * 2, descending=False, limit=1)
@example(rows=[{"ratio": 1 / 3}] * 5, descending=False, limit=2)
@example(rows=[{"ratio": 1 / 3}] * 5, descending=True, limit=1)
def test_cursor_walk_equals_offset_order_for_every_column_type(
    sortables: Any, rows: list[dict[str, Any]], descending: bool, limit: int
) -> None:
    from .conftest import reset_database

    reset_database()
    seed(*(_sortable_row(values) for values in rows))
    column = next(iter(rows[0]))
    sort = f"{column}__desc" if descending else column
    listed = sortables.get(f"/api/sortables?sort={sort}&limit=200")
    assert listed.status_code == 200, listed.json
    expected = [item["id"] for item in listed.json["items"]]
    walked: list[int] = []
    url = f"/api/cursor-sortables?sort={sort}&limit={limit}"
    next_url = url
    for _ in range(len(rows) + 1):
        page = sortables.get(next_url)
        assert page.status_code == 200, (next_url, page.json)
        walked.extend(item["id"] for item in page.json["items"])
        if page.json["next"] is None:
            break
        next_url = f"{url}&cursor={page.json['next']}"
    assert walked == expected, (sort, rows)


@pytest.fixture(scope="module")
def sortables(app: Any) -> Any:
    from .conftest import running
    from .models import CursorSortableResource, SortableResource

    def register(router: Any) -> None:
        router.register(SortableResource)
        router.register(CursorSortableResource)

    with running(make_app(register)) as client:
        yield client


def test_cursor_is_bound_to_the_ids_in_the_url_and_the_scope(database: Any) -> None:
    """docs/list-queries.rst: a cursor is valid for the list that gave it out only."""
    from resources_kit import ListMixin, Resource, Router, TenantScopeMixin

    from .conftest import running, seed_two_schools
    from .models import StudentSchema, TeacherSchema, current_school

    class Teachers(TenantScopeMixin, ListMixin, Resource):
        name, model, schema, pagination = "teachers", Teacher, TeacherSchema, "cursor"

        def get_base_query_kwargs(self) -> dict[str, Any]:
            return {"school_id": current_school()}

    class Students(ListMixin, Resource):
        name, model, schema, pagination = "students", Student, StudentSchema, "cursor"

    def register(router: Router) -> None:
        router.register(Teachers)
        router.register(Students, parent=Teachers)

    with running(make_app(register)) as client:
        ids = seed_two_schools()
        seed(
            Teacher(name="Al", school_id=ids["one"]),
            Teacher(name="Bo", school_id=ids["two"]),
            Student(name="Ed", teacher_id=ids["ada"]),
        )
        one, two = {"X-School": str(ids["one"])}, {"X-School": str(ids["two"])}
        cursor = client.get("/api/teachers?limit=1", headers=one).json["next"]
        assert client.get(f"/api/teachers?limit=1&cursor={cursor}", headers=one).status_code == 200
        other = client.get(f"/api/teachers?limit=1&cursor={cursor}", headers=two)
        assert other.status_code == 400
        assert "another list" in other.json["errors"]["cursor"][0]
        ada = f"/api/teachers/{ids['ada']}/students?limit=1"
        cursor = client.get(ada, headers=one).json["next"]
        assert client.get(f"{ada}&cursor={cursor}", headers=one).status_code == 200
        al = database.session.query(Teacher).filter_by(name="Al").one()
        elsewhere = f"/api/teachers/{al.id}/students?limit=1&cursor={cursor}"
        assert client.get(elsewhere, headers=one).status_code == 400


def test_boolean_column_compares_in_filters(sortables: Any) -> None:
    from .conftest import reset_database

    reset_database()
    seed(*(_sortable_row({"flag": flag}) for flag in (True, False, None)))
    response = sortables.get('/api/sortables?filters={"flag__lt": true}')
    assert response.status_code == 200, response.json
    assert [item["flag"] for item in response.json["items"]] == [False]


# -- pages read as rows of columns --------------------------------------------------------


def objects_only(resource: type[Any], name: str) -> type[Any]:
    """``resource`` with a ``serialize`` of its own (which sees objects): its pages are
    read as objects."""

    def serialize(self: Any, obj_or_objs: Any) -> Any:
        assert all(isinstance(obj, Teacher) for obj in obj_or_objs)
        return super(kind, self).serialize(obj_or_objs)

    kind = type(f"Objects{resource.__name__}", (resource,), {"name": name, "serialize": serialize})
    return kind


def pages(client: Any, url: str) -> list[Any]:
    """Every page's body from ``url`` on, following ``next`` (a cursor or a URL)."""
    found = []
    for _ in range(50):
        body = client.get(url).json
        found.append(body)
        following = body.get("next") or (body.get("links") or {}).get("next")
        if following is None:
            return found
        url = (
            following
            if following.startswith("http")
            else f"{url.split('&cursor=')[0]}&cursor={following}"
        )
    raise AssertionError("no last page")


def test_a_plain_list_reads_rows_and_answers_what_objects_give() -> None:
    """A list whose body is plain column fields reads rows of columns, not ORM objects:
    every page, offset or cursor, in any sort and with ``?fields=``, is what the same list
    read as objects answers."""
    from resources_kit.options import options_for

    from .models import ReadOnlyTeacherResource

    resources = {
        "cursor-teachers": CursorTeacherResource,
        "objects-cursor": objects_only(CursorTeacherResource, "objects-cursor"),
        "readonly-teachers": ReadOnlyTeacherResource,
        "objects-offset": objects_only(ReadOnlyTeacherResource, "objects-offset"),
    }
    assert options_for(CursorTeacherResource).list_config.row_columns is not None
    assert options_for(resources["objects-cursor"]).list_config.row_columns is None
    with running(make_app(lambda api: [api.register(r) for r in resources.values()])) as client:
        seed(*[Teacher(name=f"t{i % 7}", years_teaching=i % 3 or None) for i in range(30)])
        compare_pages(client)


def compare_pages(client: Any) -> None:
    for rows, objects, query in [
        ("cursor-teachers", "objects-cursor", "limit=7"),
        ("cursor-teachers", "objects-cursor", "limit=7&sort=years_teaching__desc"),
        ("cursor-teachers", "objects-cursor", "limit=5&fields=id,name"),
        ("readonly-teachers", "objects-offset", "limit=8"),
        ("readonly-teachers", "objects-offset", "limit=8&fields=name"),
    ]:
        got = pages(client, f"/api/{rows}?{query}")
        expected = pages(client, f"/api/{objects}?{query}")
        # The items and the totals; cursors are sealed per resource, links name the URL.
        assert [(page["items"], page.get("total")) for page in got] == [
            (page["items"], page.get("total")) for page in expected
        ]
        assert sum(len(page["items"]) for page in got) == 30


class WithMethod(ma.Schema):
    id = ma.fields.Integer()
    x = ma.fields.Method("x_of")

    def x_of(self, obj: Any) -> int:
        return 1


@pytest.mark.parametrize(
    "change",
    [
        {"query_options": [selectinload(Teacher.students)]},
        {"list_response": lambda self, page: None},
        {"schema": WithMethod},
    ],
    ids=["loader options", "its own list_response", "a Method field"],
)
def test_a_list_that_may_read_more_than_columns_reads_objects(change: dict[str, Any]) -> None:
    from resources_kit.options import options_for

    resource = type("ChangedTeachers", (CursorTeacherResource,), {"name": "changed", **change})
    assert options_for(resource).list_config.row_columns is None
