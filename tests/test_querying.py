from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import marshmallow as ma
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resources_kit import ImproperlyConfigured, ListMixin, Resource, RetrieveMixin, Router

from .conftest import make_app, reset_database, running, seed, walk_cursor
from .models import Student, Teacher, TeacherSchema


def q(**params: Any) -> str:
    parts = []
    for key, value in params.items():
        text = json.dumps(value) if key == "filters" else str(value)
        parts.append(f"{key}={quote(text)}")
    return "&".join(parts)


@pytest.fixture
def staff(database: Any) -> dict[str, int]:
    rows = {
        "ada": Teacher(name="Ada", email="ada@x.org", years_teaching=10, region="north"),
        "bob": Teacher(name="Bob", email="bob@y.org", years_teaching=2, region="south"),
        "cy": Teacher(name="Cy", email=None, years_teaching=None, region="north"),
        "di": Teacher(name="Di_1", email="100%@x.org", years_teaching=5, region=None),
    }
    seed(*rows.values())
    ids = {key: row.id for key, row in rows.items()}
    seed(
        Student(name="Sam", teacher_id=ids["ada"], age=8),
        Student(name="Tia", teacher_id=ids["bob"], age=9),
        Student(name="Uma", teacher_id=ids["bob"], age=None),
    )
    return ids


def names(client: Any, query: str, path: str = "/api/teachers") -> list[str]:
    response = client.get(f"{path}?limit=100&{query}")
    assert response.status_code == 200, response.json
    return [item["name"] for item in response.json["items"]]


FILTER_CASES = [
    ({"name": "Ada"}, ["Ada"]),
    ({"years_teaching": 10}, ["Ada"]),
    ({"years_teaching": "10"}, ["Ada"]),  # converted with the schema field's type
    ({"years_teaching__ne": 10}, ["Bob", "Di_1"]),  # SQL: NULL is neither
    ({"years_teaching__lt": 5}, ["Bob"]),
    ({"years_teaching__lte": 5}, ["Bob", "Di_1"]),
    ({"years_teaching__gt": 5}, ["Ada"]),
    ({"years_teaching__gte": 5}, ["Ada", "Di_1"]),
    ({"years_teaching__in": [2, 10]}, ["Ada", "Bob"]),
    ({"years_teaching__not_in": [2, 10]}, ["Di_1"]),
    ({"years_teaching__in": []}, []),
    ({"years_teaching__not_in": []}, ["Ada", "Bob", "Cy", "Di_1"]),
    ({"email__contains": "@x"}, ["Ada", "Di_1"]),
    ({"email__contains": "%"}, ["Di_1"]),  # wildcards match literally
    ({"name__contains": "_"}, ["Di_1"]),
    ({"name__icontains": "A"}, ["Ada"]),
    ({"name__startswith": "B"}, ["Bob"]),
    ({"email__isnull": True}, ["Cy"]),
    ({"years_teaching__isnull": False}, ["Ada", "Bob", "Di_1"]),
    ({"region": None}, ["Di_1"]),
    ({"region__ne": None}, ["Ada", "Bob", "Cy"]),
    ({"region": "north", "years_teaching__gte": 1}, ["Ada"]),
    ({"students.name": "Tia"}, ["Bob"]),  # to-many: any related row
    ({"students.name__startswith": "S"}, ["Ada"]),
]


@pytest.mark.parametrize(("filters", "expected"), FILTER_CASES)
def test_filters(client: Any, staff: dict[str, int], filters: Any, expected: list[str]) -> None:
    assert names(client, q(filters=filters)) == expected


def flat(filters: dict[str, Any]) -> str:
    """The flat parameters of a ``filters`` object: a list repeats its key."""
    parts = []
    for key, value in filters.items():
        for item in value if isinstance(value, list) else [value]:
            text = json.dumps(item) if isinstance(item, bool) else str(item)
            parts.append(f"{quote(key)}={quote(text)}")
    return "&".join(parts)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [case for case in FILTER_CASES if None not in case[0].values() and [] not in case[0].values()],
)
def test_flat_filter_parameters_match_the_json_ones(
    client: Any, staff: dict[str, int], filters: Any, expected: list[str]
) -> None:
    """``?region=north&years_teaching__gte=1``: the same allow-list, operators, answers."""
    assert names(client, flat(filters)) == expected


def test_flat_filters_combine_with_json_filters_and_are_checked(
    client: Any, staff: dict[str, int]
) -> None:
    both = f"region=north&{q(filters={'years_teaching__gte': 1})}"
    assert names(client, both) == ["Ada"]
    for query, key in [
        ("years_teaching__gte=many", "years_teaching__gte"),
        ("years_teaching__contains=1", "years_teaching__contains"),  # text operators only
        ("email__isnull=perhaps", "email__isnull"),
        ("name=Ada&name=Bob", "name"),
        ("age=3", "age"),  # not in filter_fields
        ("years_teaching=99999999999", "years_teaching"),
    ]:
        response = client.get(f"/api/teachers?{query}")
        assert response.status_code == 400, query
        assert list(response.json["errors"]) == [key], query


def test_flat_filters_never_take_a_list_parameter_name(database: Any) -> None:
    """A filter field named like a built-in or a ``list_args`` parameter is left to
    ``filters=``: the parameter keeps its meaning."""

    class Odd(ListMixin, Resource):
        name, model, schema = "odd", Teacher, TeacherSchema
        filter_fields = ["name", "region"]
        list_args = {"region": ma.fields.String()}

    with running(make_app(lambda r: r.register(Odd))) as client:
        seed(Teacher(name="Ada", region="n"), Teacher(name="Bob", region="s"))
        assert names(client, "region=n", "/api/odd") == ["Ada", "Bob"]  # list_args'
        assert names(client, q(filters={"region": "n"}), "/api/odd") == ["Ada"]
        assert names(client, "name=Bob", "/api/odd") == ["Bob"]


def test_filter_through_many_to_one(client: Any, staff: dict[str, int]) -> None:
    response = client.get(f"/api/teachers/{staff['bob']}/students?{q(filters={'age': 9})}")
    assert [s["name"] for s in response.json["items"]] == ["Tia"]
    path = f"/api/teachers/{staff['bob']}/students"
    assert names(client, q(filters={"teacher.name": "Bob"}), path) == ["Tia", "Uma"]
    assert names(client, q(filters={"teacher.name": "Ada"}), path) == []


@pytest.mark.parametrize(
    ("sort", "expected"),
    [
        ("name", ["Ada", "Bob", "Cy", "Di_1"]),
        ("name__desc", ["Di_1", "Cy", "Bob", "Ada"]),
        ("years_teaching", ["Bob", "Di_1", "Ada", "Cy"]),  # NULL last ascending
        ("years_teaching__desc", ["Cy", "Ada", "Di_1", "Bob"]),  # NULL first descending
        ("region,name__desc", ["Cy", "Ada", "Bob", "Di_1"]),
        ("region__desc,years_teaching__asc", ["Di_1", "Bob", "Ada", "Cy"]),
    ],
)
def test_sort(client: Any, staff: dict[str, int], sort: str, expected: list[str]) -> None:
    assert names(client, q(sort=sort)) == expected


def test_sort_and_fields_may_be_repeated_parameters(client: Any, staff: dict[str, int]) -> None:
    """How generated clients send a list: ``sort=a&sort=b`` is ``sort=a,b``."""
    repeated = client.get("/api/teachers?sort=region&sort=name__desc&fields=name&fields=id")
    joined = client.get("/api/teachers?sort=region,name__desc&fields=name,id")
    assert repeated.json == joined.json
    assert [t["name"] for t in repeated.json["items"]] == ["Cy", "Ada", "Bob", "Di_1"]
    assert set(repeated.json["items"][0]) == {"id", "name"}
    item = client.get(f"/api/teachers/{staff['ada']}?fields=name&fields=email")
    assert item.json == {"name": "Ada", "email": "ada@x.org"}
    paged = client.get("/api/teachers?sort=region&sort=name__desc&limit=1")
    assert "sort=region&sort=name__desc" in paged.json["links"]["next"]  # both kept
    assert client.get(paged.json["links"]["next"]).json["items"][0]["name"] == "Ada"
    twice = client.get("/api/teachers?sort=name&sort=name__desc")
    assert twice.status_code == 400  # still one key per field


def test_sort_through_many_to_one(client: Any, staff: dict[str, int]) -> None:
    path = f"/api/teachers/{staff['bob']}/students"
    assert names(client, q(sort="age__desc"), path) == ["Uma", "Tia"]
    assert names(client, q(sort="teacher.name,name__desc"), path) == ["Uma", "Tia"]


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("a", ["Ada"]),  # name or email, case-insensitive
        ("ADA", ["Ada"]),
        ("x.org", ["Ada", "Di_1"]),
        ("%", ["Di_1"]),
        ("_", ["Di_1"]),
        ("i_", ["Di_1"]),
        ("\\", []),
        ("zzz", []),
    ],
)
def test_search(client: Any, staff: dict[str, int], term: str, expected: list[str]) -> None:
    found = names(client, q(search=term))
    reference = sorted(
        name
        for name, email in [
            ("Ada", "ada@x.org"),
            ("Bob", "bob@y.org"),
            ("Cy", None),
            ("Di_1", "100%@x.org"),
        ]
        if term.lower() in name.lower() or (email and term.lower() in email.lower())
    )
    assert found == expected == reference


def test_filters_sort_and_search_combine_with_pagination(
    client: Any, staff: dict[str, int]
) -> None:
    query = q(filters={"years_teaching__gte": 1}, sort="name__desc", search="@", limit=1, offset=1)
    body = client.get(f"/api/teachers?{query}").json
    assert body["total"] == 3  # Di_1, Bob, Ada (Cy has no email and no years)
    assert [t["name"] for t in body["items"]] == ["Bob"]


def test_sparse_fields_on_list_and_item(client: Any, staff: dict[str, int]) -> None:
    listed = client.get("/api/teachers?fields=id,name&limit=1").json["items"]
    assert listed == [{"id": staff["ada"], "name": "Ada"}]
    item = client.get(f"/api/teachers/{staff['ada']}?fields=name")
    assert item.json == {"name": "Ada"}
    full = client.get(f"/api/teachers/{staff['ada']}")
    assert item.headers["ETag"] != full.headers["ETag"]


def test_sparse_fields_use_data_keys(database: Any) -> None:
    class KeyedSchema(TeacherSchema):
        years_teaching = ma.fields.Integer(data_key="years")

    class Keyed(ListMixin, RetrieveMixin, Resource):
        name = "keyed"
        model = Teacher
        schema = KeyedSchema

    with running(make_app(lambda r: r.register(Keyed))) as client:
        seed(Teacher(name="Ada", years_teaching=3))
        assert client.get("/api/keyed?fields=years").json["items"] == [{"years": 3}]
        assert client.get("/api/keyed?fields=years_teaching").status_code == 400


BAD_QUERIES = [
    (q(filters={"salary": 5}), "filters", "salary"),
    (q(filters={"school_id": 5}), "filters", "school_id"),  # a column, not allow-listed
    (q(filters={"name__like": "A"}), "filters", "name__like"),
    (q(filters={"years_teaching": "many"}), "filters", "years_teaching"),
    (q(filters={"years_teaching": [1, 2]}), "filters", "years_teaching"),
    (q(filters={"years_teaching": {"a": 1}}), "filters", "years_teaching"),
    (q(filters={"years_teaching__in": 3}), "filters", "years_teaching__in"),
    (q(filters={"years_teaching__in": ["x"]}), "filters", "years_teaching__in"),
    (q(filters={"years_teaching__in": list(range(501))}), "filters", "years_teaching__in"),
    (q(filters={"years_teaching__contains": "1"}), "filters", "years_teaching__contains"),
    (q(filters={"name__contains": 5}), "filters", "name__contains"),
    (q(filters={"name__isnull": "yes"}), "filters", "name__isnull"),
    (q(filters={"years_teaching__lt": None}), "filters", "years_teaching__lt"),
    (q(filters={"students.age": 3}), "filters", "students.age"),
    ("filters=" + quote("{bad json"), "filters", None),
    ("filters=" + quote("[1,2]"), "filters", None),
    ("filters=" + quote('{"name": NaN}'), "filters", None),
    ("filters=" + quote("[" * 5000 + "]" * 5000), "filters", None),
    (q(filters={f"name{i}": 1 for i in range(21)}), "filters", None),
    (q(sort="salary"), "sort", None),
    (q(sort="email"), "sort", None),  # a column, not sortable
    (q(sort="name__up"), "sort", None),
    (q(sort="name,,region"), "sort", None),
    (q(sort="name,name__desc"), "sort", None),
    (q(search="x" * 201), "search", None),
    (q(search="a\x00b"), "search", None),
    (q(fields="id,salary"), "fields", None),
    (q(fields=","), "fields", None),
    ("search=a&search=b", "search", None),
]


@pytest.mark.parametrize(("query", "parameter", "key"), BAD_QUERIES)
def test_malformed_list_queries_are_400(
    client: Any, staff: dict[str, int], query: str, parameter: str, key: str | None
) -> None:
    response = client.get(f"/api/teachers?{query}")
    assert response.status_code == 400, response.json
    assert response.content_type == "application/problem+json"
    assert parameter in response.json["detail"]
    errors = response.json["errors"][parameter]
    if key is not None:
        assert key in errors


@pytest.mark.parametrize("query", [q(filters={"name": "x"}), q(sort="name"), q(search="x")])
def test_resource_without_allow_lists_refuses(
    client: Any, staff: dict[str, int], query: str
) -> None:
    response = client.get(f"/api/readonly-teachers?{query}")
    assert response.status_code == 400
    assert "not enabled" in json.dumps(response.json["errors"])


@pytest.mark.parametrize(
    ("attrs", "message"),
    [
        ({"filter_fields": ["salary"]}, "not a column"),
        ({"filter_fields": "name"}, "list of names"),
        ({"sort_fields": ["nope.name"]}, "no relationship"),
        ({"sort_fields": ["students.name"]}, "to-many"),
        ({"search_fields": ["students.nope"]}, "not a column"),
        ({"filter_fields": ["students.teacher.name"]}, "one level"),
        ({"pagination": "pages"}, "pagination"),
    ],
)
def test_bad_allow_lists_are_improperly_configured(attrs: dict[str, Any], message: str) -> None:
    resource = type(
        "BadLists", (ListMixin, Resource),
        {"name": "x", "model": Teacher, "schema": TeacherSchema, **attrs},
    )  # fmt: skip
    with pytest.raises(ImproperlyConfigured, match=message):
        Router().register(resource)


# -- the property: the API agrees with a plain-Python reference ---------------------------

LETTERS = "abcd"
rows_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.text(LETTERS, min_size=1, max_size=3),
            "years_teaching": st.one_of(st.none(), st.integers(0, 5)),
            "region": st.one_of(st.none(), st.sampled_from(["n", "s", "e"])),
        }
    ),
    max_size=12,
)
FIELDS = {
    "name": st.text(LETTERS, min_size=1, max_size=2),
    "years_teaching": st.integers(0, 5),
    "region": st.sampled_from(["n", "s", "e"]),
}


@st.composite
def filter_specs(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    for _ in range(draw(st.integers(0, 3))):
        field = draw(st.sampled_from(list(FIELDS)))
        ops = ["", "ne", "lt", "lte", "gt", "gte", "in", "not_in", "isnull"]
        if field == "name":
            ops += ["contains", "icontains", "startswith"]
        op = draw(st.sampled_from(ops))
        key = f"{field}__{op}" if op else field
        if op == "isnull":
            spec[key] = draw(st.booleans())
        elif op in ("in", "not_in"):
            spec[key] = draw(st.lists(FIELDS[field], max_size=3))
        else:
            spec[key] = draw(FIELDS[field])
    return spec


def matches(row: dict[str, Any], key: str, value: Any) -> bool:
    field, _, op = key.partition("__")
    have = row[field]
    if op == "isnull":
        return (have is None) == value
    if op == "not_in" and value == []:  # excludes nothing, NULL rows included
        return True
    if have is None:  # SQL: a comparison with NULL is never true
        return False
    return {
        "": lambda: have == value, "ne": lambda: have != value, "lt": lambda: have < value,
        "lte": lambda: have <= value, "gt": lambda: have > value,
        "gte": lambda: have >= value, "in": lambda: have in value,
        "not_in": lambda: have not in value, "contains": lambda: value in have,
        "icontains": lambda: value.lower() in have.lower(),
        "startswith": lambda: have.startswith(value),
    }[op]()  # fmt: skip


def sort_key(row: dict[str, Any], keys: list[tuple[str, bool]]) -> tuple[Any, ...]:
    parts: list[Any] = []
    for field, descending in keys:
        value = row[field]
        # NULL sorts after every value ascending (and so before them descending)
        rank = (1, 0) if value is None else (0, value)
        if descending:
            rank = (-rank[0], _Reversed(rank[1]))
        parts.append(rank)
    parts.append(row["id"])
    return tuple(parts)


class _Reversed:
    def __init__(self, value: Any) -> None:
        self.value = value

    def __lt__(self, other: _Reversed) -> bool:
        return bool(other.value < self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Reversed) and self.value == other.value


@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=rows_strategy,
    filters=filter_specs(),
    sort=st.lists(
        st.tuples(st.sampled_from(["name", "years_teaching", "region"]), st.booleans()),
        max_size=3, unique_by=lambda key: key[0],
    ),
    search=st.one_of(st.none(), st.text(LETTERS, min_size=1, max_size=2)),
    limit=st.integers(1, 5),
    offset=st.integers(0, 6),
)  # fmt: skip
def test_list_queries_agree_with_a_reference(
    client: Any,
    rows: list[dict[str, Any]],
    filters: dict[str, Any],
    sort: list[tuple[str, bool]],
    search: str | None,
    limit: int,
    offset: int,
) -> None:
    reset_database()
    teachers = [Teacher(**row) for row in rows]
    seed(*teachers)
    data = [{**row, "id": teacher.id} for row, teacher in zip(rows, teachers, strict=True)]

    expected = [r for r in data if all(matches(r, k, v) for k, v in filters.items())]
    if search is not None:
        expected = [r for r in expected if search.lower() in r["name"].lower()]
    expected.sort(key=lambda r: sort_key(r, sort or [("name", False)]))

    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if filters:
        params["filters"] = filters
    if sort:
        params["sort"] = ",".join(f"{f}__desc" if d else f for f, d in sort)
    if search is not None:
        params["search"] = search
    response = client.get(f"/api/teachers?{q(**params)}")
    assert response.status_code == 200, response.json
    assert response.json["total"] == len(expected)
    got = [item["id"] for item in response.json["items"]]
    assert got == [r["id"] for r in expected][offset : offset + limit]

    if offset == 0:  # the same query walked with cursors gives the same order
        cursor_params = {k: v for k, v in params.items() if k != "offset"}
        walked = walk_cursor(client, f"/api/cursor-teachers?{q(**cursor_params)}")
        assert walked == [r["id"] for r in expected]


# -- every column type: refusals are 400s, never 500s ----------------------------------------


@pytest.fixture
def gadgets(database: Any) -> None:
    from datetime import date

    from .models import Gadget

    seed(
        Gadget(label="Alpha", kind="small", price=1.5, weight=0.1, made_on=date(2026, 1, 2)),
        Gadget(label="Beta", kind="large", price=2.25, weight=0.2, rating=3),
    )


@pytest.mark.parametrize(
    ("filters", "key"),
    [
        ({"label": "a\x00b"}, "label"),
        ({"label__contains": "\x00"}, "label__contains"),
        ({"rating": 2**40}, "rating"),
        ({"rating__gt": 2**63}, "rating__gt"),
        ({"rating__in": [1, -(2**31) - 1]}, "rating__in"),
        ({"kind": "medium"}, "kind"),
        ({"kind__contains": "sm"}, "kind__contains"),
        ({"kind__icontains": "SM"}, "kind__icontains"),
        ({"made_on": "2026-13-01"}, "made_on"),
        ({"token": "not-a-uuid"}, "token"),
        ({"price": "NaN"}, "price"),
    ],
)
def test_bad_filter_values_on_every_type_are_400(
    client: Any, gadgets: None, filters: dict[str, Any], key: str
) -> None:
    from .test_errors import assert_problem

    problem = assert_problem(client.get("/api/gadgets?" + q(filters=filters)), 400)
    assert list(problem["errors"]["filters"]) == [key]


def test_surrogate_in_a_filter_is_400(client: Any, gadgets: None) -> None:
    from .test_errors import assert_problem

    raw = quote('{"label": "\\ud800"}')
    problem = assert_problem(client.get(f"/api/gadgets?filters={raw}"), 400)
    assert "surrogate" in json.dumps(problem)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"kind": "large"}, ["Beta"]),
        ({"kind__in": ["small", "large"]}, ["Alpha", "Beta"]),
        ({"kind__ne": "small"}, ["Beta"]),
        ({"price__gte": "2"}, ["Beta"]),
        ({"made_on": "2026-01-02"}, ["Alpha"]),
        ({"rating__isnull": True}, ["Alpha"]),
    ],
)
def test_filters_on_every_type(
    client: Any, gadgets: None, filters: dict[str, Any], expected: list[str]
) -> None:
    body = client.get("/api/gadgets?" + q(filters=filters, sort="label")).json
    assert [item["label"] for item in body["items"]] == expected


@pytest.mark.parametrize(
    ("attribute", "names", "says"),
    [
        ("search_fields", ["rating"], "holds none"),
        ("search_fields", ["kind"], "holds none"),
        ("search_fields", ["made_on"], "holds none"),
        ("filter_fields", ["extra"], "JSON"),
        ("sort_fields", ["extra"], "JSON"),
    ],
)
def test_allow_lists_naming_unusable_columns_are_refused(
    attribute: str, names: list[str], says: str
) -> None:
    from .models import GadgetResource

    bad = type("Bad", (GadgetResource,), {"name": "bad", attribute: names})
    with pytest.raises(ImproperlyConfigured, match=says):
        Router().register(bad)
