from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import pytest
from flask import Flask, abort, got_request_exception
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import HTTPException

from resources_kit import ResourcesKitError, Router
from resources_kit.errors import HTTPError, conflict_kind

from .conftest import make_app, reset_database, running, seed, walk_cursor
from .models import (
    Counter,
    GadgetResource,
    Grade,
    LoneTeacherResource,
    Student,
    Teacher,
    db,
)

FORBIDDEN_IN_BODIES = (
    "SELECT",
    "INSERT",
    "UPDATE ",
    "DELETE ",
    "Traceback",
    "sqlite3",
    "psycopg",
    "pymysql",
    "teachers.",
    "grades.",
    "counters.",
    "[SQL",
    "IntegrityError",
    "[parameters",
)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.content_type == "application/problem+json"
    body = response.json
    assert body["status"] == status
    assert set(body) <= {"type", "title", "status", "detail", "errors"}
    assert {"type", "title", "status", "detail"} <= set(body)
    text = response.get_data(as_text=True)
    for word in FORBIDDEN_IN_BODIES:
        assert word not in text
    return body  # type: ignore[no-any-return]


def snapshot() -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table the tests write, to compare before and after a request."""
    db.session.rollback()
    result = {}
    for model in (Teacher, Student, Grade, Counter):
        columns = list(model.__table__.columns)
        rows = db.session.execute(db.select(*columns).order_by(columns[0])).all()
        result[model.__tablename__] = [tuple(row) for row in rows]
    return result


@pytest.fixture
def teacher(database: Any) -> int:
    t = Teacher(name="Ada", email="ada@example.org", years_teaching=3)
    seed(t)
    return t.id


WRITES = [("post", "/api/teachers"), ("put", "/api/teachers/{id}"), ("patch", "/api/teachers/{id}")]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        ("{", "not valid JSON"),
        ('{"name": "Ada",}', "not valid JSON"),
        ("", "not valid JSON"),
        ('{"name": NaN}', "NaN is not valid JSON"),
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"Ada"', "must be a JSON object, not a string"),
        ("null", "must be a JSON object, not null"),
        ("3", "must be a JSON object, not a number"),
        ("[" * 100_000 + "]" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_body_is_400(
    client: Any, teacher: int, method: str, path: str, raw: str, detail: str
) -> None:
    before = snapshot()
    response = getattr(client, method)(
        path.format(id=teacher), data=raw, content_type="application/json"
    )
    if len(raw) > 64 * 1024:  # over MAX_CONTENT_LENGTH: refused before parsing
        assert_problem(response, 413)
    else:
        assert detail in assert_problem(response, 400)["detail"]
    assert snapshot() == before


def test_deeply_nested_json_within_size_is_400(client: Any, database: Any) -> None:
    raw = "[" * 30_000 + "]" * 30_000
    response = client.post("/api/teachers", data=raw, content_type="application/json")
    assert "not valid JSON" in assert_problem(response, 400)["detail"]


def test_invalid_utf8_is_400(client: Any, database: Any) -> None:
    response = client.post(
        "/api/teachers", data=b'{"name": "\xff"}', content_type="application/json"
    )
    assert "UTF-8" in assert_problem(response, 400)["detail"]


@pytest.mark.parametrize(("method", "path"), WRITES)
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"],
)
def test_write_without_json_content_type_is_415(
    client: Any, teacher: int, method: str, path: str, content_type: str | None
) -> None:
    before = snapshot()
    kwargs = {"content_type": content_type} if content_type else {}
    response = getattr(client, method)(path.format(id=teacher), data='{"name": "Eve"}', **kwargs)
    assert "application/json" in assert_problem(response, 415)["detail"]
    assert snapshot() == before


def test_json_suffix_content_types_are_accepted(client: Any, database: Any) -> None:
    response = client.post(
        "/api/teachers", data='{"name": "Eve"}', content_type="application/merge-patch+json"
    )
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("method", "body", "field", "message"),
    [
        ("post", {}, "name", "Missing data for required field."),
        ("put", {"email": "a@b.org"}, "name", "Missing data for required field."),
        ("post", {"name": 5}, "name", "Not a valid string."),
        ("patch", {"years_teaching": "many"}, "years_teaching", "Not a valid integer."),
        ("post", {"name": "Eve", "salary": 5}, "salary", "Unknown field."),
        ("patch", {"nickname": "E"}, "nickname", "Unknown field."),
        ("post", {"name": "Eve", "id": 77}, "id", "Unknown field."),
        ("patch", {"id": 77}, "id", "Unknown field."),
        ("post", {"name": "Eve", "email": "not-an-email"}, "email", "Not a valid email address."),
    ],
)
def test_validation_failure_is_422_naming_the_field(
    client: Any, teacher: int, method: str, body: dict[str, Any], field: str, message: str
) -> None:
    before = snapshot()
    path = "/api/teachers" if method == "post" else f"/api/teachers/{teacher}"
    problem = assert_problem(getattr(client, method)(path, json=body), 422)
    assert problem["errors"][field] == [message]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/teachers", {"name": "x" * 51}, "name"),
        ("/api/teachers", {"name": "Eve", "years_teaching": 2**31}, "years_teaching"),
        ("/api/teachers", {"name": "Eve", "years_teaching": -(2**31) - 1}, "years_teaching"),
        ("/api/teachers", {"name": "E\x00ve"}, "name"),
        ("/api/counters", {"label": "ok", "value": 2**63}, "value"),
        ("/api/counters", {"label": "x" * 11}, "label"),
    ],
)
def test_values_the_database_would_refuse_are_422(
    client: Any, database: Any, path: str, body: dict[str, Any], field: str
) -> None:
    before = snapshot()
    problem = assert_problem(client.post(path, json=body), 422)
    assert field in problem["errors"]
    assert snapshot() == before


def test_largest_in_range_values_are_stored(client: Any, database: Any) -> None:
    response = client.post("/api/counters", json={"label": "x" * 10, "value": 2**63 - 1})
    assert response.status_code == 201
    assert db.session.get(Counter, response.json["id"]).value == 2**63 - 1


def test_unique_conflict_on_create_is_409_and_session_stays_usable(client: Any) -> None:
    assert client.post("/api/counters", json={"label": "taken"}).status_code == 201
    before = snapshot()
    problem = assert_problem(client.post("/api/counters", json={"label": "taken"}), 409)
    assert problem["detail"] == "A row with the same unique value already exists: label."
    assert problem["errors"] == {"label": ["A row with this value already exists."]}
    assert "taken" not in json.dumps(problem)  # never another row's value
    assert snapshot() == before
    assert client.post("/api/counters", json={"label": "free"}).status_code == 201


def test_unique_conflict_on_update_is_409(client: Any, teacher: int) -> None:
    first = client.post("/api/counters", json={"label": "one"}).json["id"]
    assert client.post("/api/counters", json={"label": "two"}).status_code == 201
    student = Student(name="Cy", teacher_id=teacher)
    seed(student)
    grades = f"/api/teachers/{teacher}/students/{student.id}/grades"
    assert client.post(grades, json={"subject": "math", "score": 1}).status_code == 201
    art = client.post(grades, json={"subject": "art", "score": 2}).json["id"]
    before = snapshot()
    problem = assert_problem(client.patch(f"/api/counters/{first}", json={"label": "two"}), 409)
    assert problem["errors"] == {"label": ["A row with this value already exists."]}
    assert "two" not in json.dumps(problem)
    assert_problem(client.put(f"{grades}/{art}", json={"subject": "math", "score": 2}), 409)
    assert snapshot() == before


def test_nested_unique_conflict_is_409(client: Any, teacher: int) -> None:
    student = Student(name="Cy", teacher_id=teacher)
    seed(student)
    base = f"/api/teachers/{teacher}/students/{student.id}/grades"
    assert client.post(base, json={"subject": "math", "score": 1}).status_code == 201
    art = client.post(base, json={"subject": "art", "score": 2}).json["id"]
    before = snapshot()
    for response in (
        client.post(base, json={"subject": "math", "score": 3}),
        client.patch(f"{base}/{art}", json={"subject": "math"}),
    ):
        problem = assert_problem(response, 409)
        # Unique per student: the student is the URL's, the field the client sent is named.
        assert problem["errors"] == {"subject": ["A row with this value already exists."]}
    assert snapshot() == before


def test_foreign_key_conflict_on_delete_is_409(client: Any, teacher: int) -> None:
    seed(Student(name="Cy", teacher_id=teacher))
    before = snapshot()
    problem = assert_problem(client.delete(f"/api/teachers/{teacher}"), 409)
    assert "refers to a row" in problem["detail"]
    assert snapshot() == before


def test_not_null_conflict_is_409(client: Any, database: Any) -> None:
    problem = assert_problem(client.post("/api/counters", json={"label": None}), 409)
    assert problem["detail"] == "A required value is missing."
    assert snapshot()["counters"] == []


def test_body_over_max_content_length_is_413(client: Any, database: Any) -> None:
    body = json.dumps({"name": "x" * (70 * 1024)})
    assert_problem(client.post("/api/teachers", data=body, content_type="application/json"), 413)
    assert snapshot()["teachers"] == []


def test_missing_item_is_404_on_every_verb(client: Any, database: Any) -> None:
    for method in ("get", "put", "patch", "delete"):
        assert_problem(getattr(client, method)("/api/teachers/12345", json={"name": "x"}), 404)


@pytest.mark.parametrize("path", ["/api/teachers?bogus=1", "/api/teachers/1?bogus=1"])
def test_unknown_query_parameter_is_400(client: Any, teacher: int, path: str) -> None:
    problem = assert_problem(client.get(path), 400)
    assert problem["errors"] == {"bogus": ["Unknown query parameter."]}


def test_write_with_query_parameters_is_400(client: Any, database: Any) -> None:
    assert_problem(client.post("/api/teachers?x=1", json={"name": "Eve"}), 400)
    assert snapshot()["teachers"] == []


def test_unexpected_exception_is_500_without_internals(database: Any) -> None:
    class Exploding(LoneTeacherResource):
        name = "exploding"

        def perform_create(self, data: dict[str, Any]) -> Any:
            super().perform_create(data)
            raise RuntimeError("secret internals: SELECT * FROM teachers")

    def register(router: Router) -> None:
        router.register(Exploding)

    app = make_app(register, PROPAGATE_EXCEPTIONS=False)
    seen: list[BaseException] = []

    def record(sender: Flask, exception: BaseException, **extra: Any) -> None:
        seen.append(exception)

    with running(app) as client, got_request_exception.connected_to(record, app):
        response = client.post("/api/exploding", json={"name": "Eve"})
        body = assert_problem(response, 500)
        assert "secret" not in response.get_data(as_text=True)
        assert body["title"] == "Internal Server Error"
        assert snapshot()["teachers"] == []
    assert [type(e) for e in seen] == [RuntimeError]


def test_errors_from_view_decorators_are_problems(database: Any) -> None:
    def needs_token(view: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            abort(401, www_authenticate=WWWAuthenticate("Bearer"))

        return wrapped

    class Guarded(LoneTeacherResource):
        name = "guarded"
        decorators = [needs_token]

    with running(make_app(lambda r: r.register(Guarded))) as client:
        response = client.get("/api/guarded")
        assert_problem(response, 401)
        assert response.headers["WWW-Authenticate"].strip() == "Bearer"


def test_app_http_error_handler_still_serves_other_paths() -> None:
    app = Flask(__name__)

    @app.errorhandler(HTTPException)
    def mine(exc: HTTPException) -> tuple[str, int]:
        return "mine", exc.code or 500

    Router(app, url_prefix="/api").register(LoneTeacherResource)
    client = app.test_client()
    assert client.get("/other").get_data(as_text=True) == "mine"
    assert client.get("/api/zzz").content_type == "application/problem+json"


def test_http_error_is_a_werkzeug_exception_and_ours() -> None:
    error = HTTPError(409, "taken", errors={"email": ["taken"]})
    assert isinstance(error, HTTPException)
    assert isinstance(error, ResourcesKitError)
    assert (error.code, error.detail, error.name) == (409, "taken", "Conflict")


def test_conflict_kind_reads_each_driver() -> None:
    class Orig(Exception):
        sqlstate = "23505"

    class Wrapped:
        def __init__(self, orig: BaseException) -> None:
            self.orig = orig

    assert conflict_kind(Wrapped(Orig())) == "unique"
    assert conflict_kind(Wrapped(Exception(1452, "Cannot add"))) == "foreign_key"
    assert conflict_kind(Wrapped(Exception("NOT NULL constraint failed: x.y"))) == "not_null"
    assert conflict_kind(Wrapped(Exception("something else"))) is None


@pytest.mark.parametrize("code", [420, 499, 509])
def test_unknown_http_status_from_a_callback_is_kept(database: Any, code: int) -> None:
    from werkzeug.exceptions import HTTPException

    from resources_kit import Callback

    class Unusual(HTTPException):
        pass

    Unusual.code = code

    class Refuse(Callback):
        def execute(self) -> None:
            raise Unusual(description="Calm down.")

    class Refusing(LoneTeacherResource):
        name = "refusing"
        pre_create_callbacks = [Refuse]

    with running(make_app(lambda r: r.register(Refusing))) as client:
        body = assert_problem(client.post("/api/refusing", json={"name": "Eve"}), code)
        assert body["detail"] == "Calm down."
        assert snapshot()["teachers"] == []


def test_check_constraint_violation_is_409_on_every_backend(client: Any, database: Any) -> None:
    from .models import Gadget

    response = client.post("/api/gadgets", json={"label": "x", "rating": -1})
    body = assert_problem(response, 409)
    assert "rule" in body["detail"]
    db.session.rollback()
    assert db.session.query(Gadget).count() == 0


def test_every_column_type_round_trips_or_is_refused_without_500(
    client: Any, database: Any
) -> None:
    from .models import Gadget

    body = {
        "label": "g",
        "kind": "small",
        "price": "12.34",
        "weight": 0.5,
        "made_on": "2026-02-03",
        "seen_at": "2026-02-03T04:05:06+00:00",
        "extra": {"a": [1, 2]},
        "token": "12345678-1234-5678-1234-567812345678",
        "rating": 4,
    }
    created = client.post("/api/gadgets", json=body)
    assert created.status_code == 201, created.json
    fetched = client.get(created.headers["Location"])
    assert created.json == fetched.json  # what the write answered is what was stored
    assert created.headers["ETag"] == fetched.headers["ETag"]
    exact = {key: value for key, value in body.items() if key != "seen_at"}
    assert {key: fetched.json[key] for key in exact} == exact
    assert fetched.json["seen_at"].startswith("2026-02-03T04:05:06")  # SQLite drops the zone
    for bad in ({"kind": "medium"}, {"made_on": "2026-02-30"}, {"token": "x"}):
        assert_problem(client.post("/api/gadgets", json={"label": "h", **bad}), 422)
    far = client.post("/api/gadgets", json={"label": "h", "seen_at": "0001-01-01T00:00:00+00:00"})
    assert far.status_code in (201, 422)  # MariaDB's DATETIME starts at year 1000
    db.session.rollback()
    assert db.session.query(Gadget).count() == (2 if far.status_code == 201 else 1)


# -- properties over every column type ---------------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["\ud800", "a\x00b", "\udfff x", "", " ", "1e400", "NaN", "2026-02-30"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_TEXT = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00", exclude_categories=("Cs",)),
    max_size=20,
)
_VALID = {
    "label": _TEXT.filter(bool),
    "kind": st.sampled_from(["small", "large", None]),
    "price": st.decimals(-(10**7), 10**7, places=3, allow_nan=False).map(str),
    "weight": st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32)),
    "made_on": st.dates().map(lambda d: d.isoformat()),
    "seen_at": st.datetimes(
        min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.timezones()
    ).map(lambda d: d.isoformat()),
    "extra": st.one_of(st.none(), st.dictionaries(_TEXT, st.integers(-100, 100), max_size=2)),
    "token": st.uuids().map(str),
    "rating": st.integers(-3, 10**6),
}
_BODIES = st.fixed_dictionaries(
    {}, optional={key: st.one_of(valid, valid, _JUNK) for key, valid in _VALID.items()}
)
_GADGET_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _gadget_rows() -> list[tuple[Any, ...]]:
    from .models import Gadget

    db.session.rollback()
    columns = list(Gadget.__table__.columns)
    return [tuple(r) for r in db.session.execute(db.select(*columns).order_by(columns[0]))]


@_GADGET_PROPERTY
@given(body=_BODIES, patch=_BODIES)
def test_property_writes_never_500_and_answer_what_a_get_returns(
    client: Any, database: Any, body: dict[str, Any], patch: dict[str, Any]
) -> None:
    reset_database()
    for method, path, sent in (("post", "/api/gadgets", body), ("patch", None, patch)):
        if path is None:
            listed = client.get("/api/gadgets").json["items"]
            if not listed:
                return
            path = f"/api/gadgets/{listed[0]['id']}"
        before = _gadget_rows()
        raw = json.dumps(sent, allow_nan=True)
        response = getattr(client, method)(path, data=raw, content_type="application/json")
        assert response.status_code < 500, (method, sent, response.get_data(as_text=True))
        if response.status_code >= 400:
            assert_problem(response, response.status_code)
            assert _gadget_rows() == before, (method, sent)
            continue
        item = response.headers.get("Location", path)
        fetched = client.get(item)
        assert response.json == fetched.json, (method, sent)
        assert response.headers["ETag"] == fetched.headers["ETag"]


_FILTER_KEYS = [
    f"{field}{op}"
    for field in GadgetResource.filter_fields
    for op in ("", "__ne", "__lt", "__gte", "__in", "__contains", "__isnull")
]


@_GADGET_PROPERTY
@given(
    filters=st.dictionaries(st.sampled_from(_FILTER_KEYS), _JUNK, max_size=3),
    sort=st.lists(st.sampled_from(GadgetResource.sort_fields), unique=True, max_size=3),
    descending=st.lists(st.booleans(), min_size=3, max_size=3),
    search=st.one_of(st.none(), _JUNK.filter(lambda v: isinstance(v, str))),
)
def test_property_list_queries_never_500(
    client: Any,
    database: Any,
    filters: dict[str, Any],
    sort: list[str],
    descending: list[bool],
    search: str | None,
) -> None:
    terms = [f"{key}__desc" if down else key for key, down in zip(sort, descending, strict=False)]
    params = {"filters": json.dumps(filters, allow_nan=True)}
    if terms:
        params["sort"] = ",".join(terms)
    if search is not None:
        params["search"] = search
    query = urlencode({k: v.encode("utf-8", "surrogatepass") for k, v in params.items()})
    for resource in ("gadgets", "cursor-gadgets"):
        response = client.get(f"/api/{resource}?{query}")
        assert response.status_code in (200, 400), (params, response.get_data(as_text=True))
        if response.status_code == 400:
            assert_problem(response, 400)


@_GADGET_PROPERTY
@given(
    rows=st.lists(
        st.fixed_dictionaries(
            {k: _VALID[k] for k in ("price", "weight", "made_on", "kind", "rating")}
        ),
        max_size=12,
    ),
    key=st.sampled_from(GadgetResource.sort_fields),
    down=st.booleans(),
    limit=st.integers(1, 5),
)
def test_property_cursor_walks_visit_every_row_once(
    client: Any, database: Any, rows: list[dict[str, Any]], key: str, down: bool, limit: int
) -> None:
    reset_database()
    for n, row in enumerate(rows):
        created = client.post("/api/gadgets", json={"label": f"g{n}", **row})
        assert created.status_code in (201, 409, 422), created.get_data(as_text=True)
    expected = {item["id"] for item in client.get("/api/gadgets?limit=100").json["items"]}
    sort = f"{key}__desc" if down else key
    seen = walk_cursor(client, f"/api/cursor-gadgets?sort={sort}&limit={limit}")
    assert sorted(seen) == sorted(expected)
