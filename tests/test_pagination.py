from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from resources_kit import ImproperlyConfigured

from .conftest import make_app, seed
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


def test_link_keeps_other_parameters(client: Any, teachers: list[int]) -> None:
    response = client.get('/api/teachers?limit=5&sort=name__desc&filters={"name__gte":"t"}')
    assert links(response)["next"]["sort"] == ["name__desc"]
    assert links(response)["next"]["filters"] == ['{"name__gte":"t"}']


def test_page_past_the_end_still_has_the_total(
    client: Any, teachers: list[int], statements: list[str]
) -> None:
    body = client.get("/api/teachers?offset=500").json
    assert body == {"items": [], "total": 25, "limit": 20, "offset": 500}
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
    assert counts == [2, 2]


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
        {"model": Student, "schema": StudentSchema, "sort_fields": ["teacher.name"]},
    )
    from resources_kit import Router

    with pytest.raises(ImproperlyConfigured, match="cursor pagination"):
        Router().register(bad)
