"""Production guards on one host: Idempotency-Key, rate limits and the response cache, in
memory and on Redis (database 9, flushed; skipped with a message when no Redis answers,
unless ``RESOURCES_KIT_REQUIRE_REDIS`` is set)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, request
from sqlalchemy import func, select

from resources_kit import Callback, Router, action
from resources_kit.guards import WRITES, Guards, Idempotency, RateLimit, ResponseCache
from resources_kit.idempotency import purge_expired

from . import models
from .conftest import make_app, reset_database, running
from .models import db

REDIS_URL = os.environ.get("RESOURCES_KIT_TEST_REDIS", "redis://127.0.0.1:6379/9")


def redis_or_skip() -> str:
    """The test Redis, flushed; a skip (a failure under ``RESOURCES_KIT_REQUIRE_REDIS``)
    when none answers."""
    try:
        import redis

        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.flushdb()
    except Exception as exc:
        if os.environ.get("RESOURCES_KIT_REQUIRE_REDIS"):
            raise AssertionError(f"no Redis at {REDIS_URL} ({exc}), and CI needs it") from exc
        pytest.skip(f"no Redis at {REDIS_URL} ({type(exc).__name__})")
    return REDIS_URL


CALLS: list[str] = []


class Counted(Callback):
    def execute(self) -> None:
        CALLS.append(self.operation)


class UserMixin:
    def get_current_user(self) -> Any:
        return request.headers.get("X-User")


class GuardedTeachers(UserMixin, models.ScopedTeacherResource):
    name = "teachers"
    idempotency = Idempotency()
    rate_limits = [RateLimit("3/minute", per="caller", actions=WRITES)]
    cache = ResponseCache(depends_on=("students",))
    after_commit_create_callbacks = [Counted]
    post_create_callbacks = [Counted]

    @action(detail=True, methods=["POST"])
    def promote(self, teacher: models.Teacher) -> dict[str, Any]:
        teacher.years_teaching = (teacher.years_teaching or 0) + 1
        return {"years_teaching": teacher.years_teaching}


class GuardedStudents(UserMixin, models.ScopedStudentResource):
    name = "students"
    cache = True


class RequiredKeyTeachers(UserMixin, models.ScopedTeacherResource):
    name = "strict-teachers"
    idempotency = Idempotency(required=True)


class BulkTeachers(GuardedTeachers):
    name = "bulk-teachers"
    bulk = ("create", "patch")
    rate_limits = []


def register(router: Router) -> None:
    router.register(GuardedTeachers)
    router.register(GuardedStudents, parent=GuardedTeachers)
    router.register(RequiredKeyTeachers)
    router.register(BulkTeachers)


def guarded_app(**config: Any) -> Flask:
    app = make_app(register, **config)
    Guards(app)
    return app


@pytest.fixture(params=["memory", "redis", "keys-in-redis"])
def client(request: pytest.FixtureRequest, app: Flask) -> Iterator[Any]:
    config: dict[str, Any] = {"RESOURCES_KIT_CACHE_IN_PROCESS": True}
    if request.param != "memory":
        config = {"RESOURCES_KIT_REDIS_URL": redis_or_skip()}
    if request.param == "keys-in-redis":
        config["RESOURCES_KIT_IDEMPOTENCY_STORAGE"] = "redis"
    made = guarded_app(**config)
    with running(made) as test_client:
        reset_database()
        db.session.execute(made.extensions["resources_kit.guards"].idempotency_table.delete())
        db.session.add(models.School(id=1, name="One"))
        db.session.add(models.School(id=2, name="Two"))
        db.session.commit()
        CALLS.clear()
        yield test_client


ONE = {"X-School": "1", "X-User": "ada"}


def teachers() -> int:
    return int(db.session.execute(select(func.count()).select_from(models.Teacher)).scalar_one())


# -- Idempotency-Key ----------------------------------------------------------------------


def test_a_retried_post_answers_the_stored_response_and_writes_once(client: Any) -> None:
    headers = {**ONE, "Idempotency-Key": "k-1"}
    first = client.post("/api/teachers", json={"name": "Ada"}, headers=headers)
    again = client.post("/api/teachers", json={"name": "Ada"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_data() == again.get_data()
    assert first.headers["Location"] == again.headers["Location"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert teachers() == 1
    assert CALLS == ["create", "create"]  # one post and one after-commit callback


def test_on_sqlite_the_claim_restores_the_busy_timeout(client: Any) -> None:
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's busy timeout")

    def busy_timeout() -> int:
        with db.engine.connect() as connection:  # the pool's one connection here
            raw = connection.connection.driver_connection
            return int(raw.execute("PRAGMA busy_timeout").fetchone()[0])

    before = busy_timeout()
    headers = {**ONE, "Idempotency-Key": "k-busy"}
    for _ in range(2):  # a claim, then a replay
        assert client.post("/api/teachers", json={"name": "Ada"}, headers=headers).status_code < 300
    db.session.remove()
    assert busy_timeout() == before != 10_000  # not the claim's own wait


def test_a_retried_bulk_write_answers_the_stored_response_and_writes_once(
    client: Any,
) -> None:
    headers = {**ONE, "Idempotency-Key": "bulk-1"}
    body = [{"name": "Ada"}, {"name": "Bob"}]
    first = client.post("/api/bulk-teachers", json=body, headers=headers)
    again = client.post("/api/bulk-teachers", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.get_data() == again.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert teachers() == 2
    assert CALLS == ["create"] * 4  # a post and an after-commit callback per item, once
    ids = [item["id"] for item in first.json]
    change = [{"id": ids[0], "years_teaching": 4}, {"id": ids[1], "years_teaching": 5}]
    patch_headers = {**ONE, "Idempotency-Key": "bulk-2"}
    patched = client.patch("/api/bulk-teachers", json=change, headers=patch_headers)
    replayed = client.patch("/api/bulk-teachers", json=change, headers=patch_headers)
    assert patched.status_code == replayed.status_code == 200
    assert replayed.headers["Idempotent-Replayed"] == "true"
    other = client.patch("/api/bulk-teachers", json=change[:1], headers=patch_headers)
    assert other.status_code == 422  # another body under the same key


def test_a_bulk_write_invalidates_the_cached_list(client: Any) -> None:
    assert client.get("/api/bulk-teachers", headers=ONE).json["total"] == 0
    assert client.get("/api/bulk-teachers", headers=ONE).json["total"] == 0  # from the cache
    made = client.post("/api/bulk-teachers", json=[{"name": "A"}, {"name": "B"}], headers=ONE)
    assert made.status_code == 201
    assert client.get("/api/bulk-teachers", headers=ONE).json["total"] == 2


def test_another_body_with_the_same_key_is_a_422(client: Any) -> None:
    headers = {**ONE, "Idempotency-Key": "k-2"}
    assert client.post("/api/teachers", json={"name": "Ada"}, headers=headers).status_code == 201
    other = client.post("/api/teachers", json={"name": "Bob"}, headers=headers)
    assert other.status_code == 422
    assert other.mimetype == "application/problem+json"
    assert teachers() == 1


def test_a_key_is_per_caller_and_per_scope(client: Any) -> None:
    body = {"name": "Ada"}
    for headers in (ONE, {**ONE, "X-User": "bob"}, {**ONE, "X-School": "2"}):
        response = client.post(
            "/api/teachers", json=body, headers={**headers, "Idempotency-Key": "k"}
        )
        assert response.status_code == 201
        assert "Idempotent-Replayed" not in response.headers
    assert teachers() == 3


def test_a_failed_write_frees_its_key(client: Any) -> None:
    headers = {**ONE, "Idempotency-Key": "k-3"}
    assert client.post("/api/teachers", json={"nom": "x"}, headers=headers).status_code == 422
    assert client.post("/api/teachers", json={"name": "Ada"}, headers=headers).status_code == 201


def test_patch_and_writing_actions_honour_the_key(client: Any) -> None:
    created = client.post("/api/teachers", json={"name": "Ada", "years_teaching": 1}, headers=ONE)
    url = created.headers["Location"]
    headers = {**ONE, "Idempotency-Key": "promote-1"}
    first = client.post(f"{url}/promote", headers=headers)
    again = client.post(f"{url}/promote", headers=headers)
    assert first.get_json() == again.get_json() == {"years_teaching": 2}
    assert db.session.get(models.Teacher, created.get_json()["id"]).years_teaching == 2
    headers = {**ONE, "Idempotency-Key": "patch-1"}
    client.patch(url, json={"years_teaching": 7}, headers=headers)
    assert client.patch(url, json={"years_teaching": 7}, headers=headers).headers[
        "Idempotent-Replayed"
    ]


def test_a_resource_may_require_the_key(client: Any) -> None:
    refused = client.post("/api/strict-teachers", json={"name": "Ada"}, headers=ONE)
    assert refused.status_code == 400
    assert "Idempotency-Key" in refused.get_json()["detail"]
    headers = {**ONE, "Idempotency-Key": "x"}
    assert (
        client.post("/api/strict-teachers", json={"name": "Ada"}, headers=headers).status_code
        == 201
    )


def test_keys_expire(client: Any) -> None:
    if client.application.config.get("RESOURCES_KIT_IDEMPOTENCY_STORAGE") == "redis":
        pytest.skip("Redis expires keys itself")
    client.application.config["RESOURCES_KIT_IDEMPOTENCY_TTL"] = -1  # expired at once
    headers = {**ONE, "Idempotency-Key": "k-4"}
    assert client.post("/api/teachers", json={"name": "Ada"}, headers=headers).status_code == 201
    assert client.post("/api/teachers", json={"name": "Ada"}, headers=headers).status_code == 201
    assert teachers() == 2
    table = client.application.extensions["resources_kit.guards"].idempotency_table
    assert purge_expired(db.session, table) == 1


# -- rate limits ----------------------------------------------------------------------------


def test_over_the_limit_is_a_429_with_retry_after_before_any_sql(
    client: Any, statements: list[str]
) -> None:
    for n in range(3):
        response = client.post("/api/teachers", json={"name": f"T{n}"}, headers=ONE)
        assert response.status_code == 201
        assert response.headers["RateLimit-Remaining"] == str(2 - n)
        assert response.headers["RateLimit-Limit"] == "3"
    statements.clear()
    refused = client.post("/api/teachers", json={"name": "T4"}, headers=ONE)
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Remaining"] == "0"
    assert statements == []
    # Reads are not counted, and another caller has a budget of its own.
    assert client.get("/api/teachers", headers=ONE).status_code == 200
    other = {**ONE, "X-User": "bob"}
    assert client.post("/api/teachers", json={"name": "T5"}, headers=other).status_code == 201


# -- the response cache -------------------------------------------------------------------


def test_a_cached_item_read_costs_no_statement_and_a_write_invalidates_it(
    client: Any, statements: list[str]
) -> None:
    url = client.post("/api/teachers", json={"name": "Ada"}, headers=ONE).headers["Location"]
    first = client.get(url, headers=ONE)
    statements.clear()
    hit = client.get(url, headers=ONE)
    assert statements == []
    assert hit.get_data() == first.get_data()
    for name in ("Content-Type", "ETag", "Content-Length"):
        assert hit.headers[name] == first.headers[name], name
    assert hit.headers["Cache-Status"].endswith("hit")
    page = client.get("/api/teachers?limit=1", headers=ONE)
    page_hit = client.get("/api/teachers?limit=1", headers=ONE)
    assert page_hit.headers["Cache-Status"].endswith("hit")
    assert page_hit.get_data() == page.get_data()
    assert page_hit.headers.get("Link") == page.headers.get("Link")
    not_modified = client.get(url, headers={**ONE, "If-None-Match": first.headers["ETag"]})
    assert not_modified.status_code == 304
    assert statements == []
    client.patch(url, json={"name": "Ava"}, headers=ONE)
    assert client.get(url, headers=ONE).get_json()["name"] == "Ava"


def test_the_cache_key_covers_tenant_caller_query_and_accept(client: Any) -> None:
    client.post("/api/teachers", json={"name": "Ada"}, headers=ONE)
    client.post("/api/teachers", json={"name": "Bob"}, headers={**ONE, "X-School": "2"})
    names = {
        key: [item["name"] for item in client.get(url, headers=headers).get_json()["items"]]
        for key, url, headers in (
            ("one", "/api/teachers", ONE),
            ("two", "/api/teachers", {**ONE, "X-School": "2"}),
            ("fields", "/api/teachers?fields=name", ONE),
        )
    }
    assert names == {"one": ["Ada"], "two": ["Bob"], "fields": ["Ada"]}
    trimmed = client.get("/api/teachers?fields=name", headers=ONE).get_json()["items"]
    assert trimmed == [{"name": "Ada"}]
    other_caller = client.get("/api/teachers", headers={**ONE, "X-User": "eve"})
    assert other_caller.headers["Cache-Status"].endswith("stored")  # not ada's answer


def test_a_write_to_a_dependency_or_a_parent_invalidates(client: Any) -> None:
    teacher = client.post("/api/teachers", json={"name": "Ada"}, headers=ONE).get_json()
    students = f"/api/teachers/{teacher['id']}/students"
    assert client.get(students, headers=ONE).get_json()["items"] == []
    client.post(students, json={"name": "Cy"}, headers=ONE)
    assert [s["name"] for s in client.get(students, headers=ONE).get_json()["items"]] == ["Cy"]
    client.get("/api/teachers", headers=ONE)
    # A student written: the teachers' answers depend on students.
    client.post(students, json={"name": "Di"}, headers=ONE)
    listed = client.get("/api/teachers", headers=ONE)
    assert listed.headers["Cache-Status"].endswith("stored")
    # The parent written: its children's answers are stale.
    client.get(students, headers=ONE)
    client.patch(f"/api/teachers/{teacher['id']}", json={"name": "Ava"}, headers=ONE)
    assert client.get(students, headers=ONE).headers["Cache-Status"].endswith("stored")


@pytest.mark.parametrize("header", [{"Cache-Control": "no-cache"}, {"Prefer": "read-your-writes"}])
def test_a_request_may_switch_the_cache_off(client: Any, header: dict[str, str]) -> None:
    client.post("/api/teachers", json={"name": "Ada"}, headers=ONE)
    client.get("/api/teachers", headers=ONE)
    fresh = client.get("/api/teachers", headers={**ONE, **header})
    assert not fresh.headers["Cache-Status"].endswith("hit")


def test_the_openapi_document_shows_the_guards(client: Any) -> None:
    from openapi_spec_validator import validate

    document = client.get("/api/openapi.json").get_json()
    validate(document)
    create = document["paths"]["/api/teachers"]["post"]
    key = next(p for p in create["parameters"] if p["name"] == "Idempotency-Key")
    assert key["required"] is False
    assert {"409", "422", "429"} <= set(create["responses"])
    assert "Retry-After" in create["responses"]["429"]["headers"]
    promote = document["paths"]["/api/teachers/{teacher_id}/promote"]["post"]
    assert any(p["name"] == "Idempotency-Key" for p in promote["parameters"])
    assert "429" not in document["paths"]["/api/teachers"]["get"]["responses"]  # reads not limited
    strict = document["paths"]["/api/strict-teachers"]["post"]
    assert next(p for p in strict["parameters"] if p["name"] == "Idempotency-Key")["required"]


def test_without_redis_nothing_is_cached_unless_the_app_is_one_process(app: Flask) -> None:
    with running(guarded_app()) as test_client:
        first = test_client.get("/api/teachers", headers=ONE)
        assert "Cache-Status" not in first.headers


# -- the sample app -----------------------------------------------------------------------


@pytest.fixture
def sample(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from dataclasses import replace

    from sample_app import create_app, seed
    from sample_app.models import db as sample_db
    from sample_app.resources import TeacherResource

    from .conftest import sample_app_config, separate_database_url

    plan = TeacherResource.guard_plan
    assert plan is not None
    tight = [RateLimit("3/minute", per="caller", actions=WRITES)]  # a replay counts too
    monkeypatch.setattr(TeacherResource, "guard_plan", replace(plan, limits=tight))
    url = separate_database_url("resources_kit_sample_guards")
    sample_app = create_app({**sample_app_config(url), "RESOURCES_KIT_CACHE_IN_PROCESS": True})
    with sample_app.app_context():
        sample_db.drop_all()
        sample_db.create_all()
        tokens = seed()
        yield sample_app.test_client(), {"Authorization": f"Bearer {tokens['north-admin']}"}
        sample_db.session.remove()
        sample_db.drop_all()
        for engine in sample_db.engines.values():
            engine.dispose()


def test_the_sample_app_replays_a_retried_create_limits_writes_and_caches_teachers(
    sample: Any,
) -> None:
    client, admin = sample
    body = {"name": "Kay", "email": "kay@northside.example.org", "credential": "LIC-4242"}
    headers = {**admin, "Idempotency-Key": "create-kay"}
    first = client.post("/api/teachers", json=body, headers=headers)
    again = client.post("/api/teachers", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    listed = client.get("/api/teachers", headers=admin)
    assert client.get("/api/teachers", headers=admin).headers["Cache-Status"].endswith("hit")
    assert [t["name"] for t in listed.get_json()["items"]].count("Kay") == 1
    second = {**body, "email": "kim@northside.example.org", "name": "Kim"}
    assert client.post("/api/teachers", json=second, headers=admin).status_code == 201
    third = {**body, "email": "kit@northside.example.org", "name": "Kit"}
    refused = client.post("/api/teachers", json=third, headers=admin)
    assert refused.status_code == 429
    assert "Retry-After" in refused.headers
    names = [t["name"] for t in client.get("/api/teachers", headers=admin).get_json()["items"]]
    assert "Kim" in names
    assert "Kit" not in names


def test_an_app_with_its_own_flask_limiter_shares_its_storage(app: Flask) -> None:
    from flask_limiter import Limiter

    made = make_app(register, RESOURCES_KIT_CACHE_IN_PROCESS=True)
    limiter = Limiter(lambda: "x", app=made, storage_uri="memory://")
    guards = Guards(made)
    assert guards.limits is not None
    assert guards.limits.limiter.storage is limiter.storage
    with running(made) as test_client:
        db.session.add(models.School(id=1, name="One"))
        db.session.commit()
        for n in range(3):
            test_client.post("/api/teachers", json={"name": f"T{n}"}, headers=ONE)
        assert test_client.post("/api/teachers", json={"name": "T"}, headers=ONE).status_code == 429


def test_apps_sharing_one_redis_keep_their_keys_apart() -> None:
    from resources_kit.guards import namespace

    one = namespace({"SQLALCHEMY_DATABASE_URI": "postgresql://app:secret@db/school"})
    assert one == namespace({"SQLALCHEMY_DATABASE_URI": "postgresql://app:other@db/school"})
    assert one != namespace({"SQLALCHEMY_DATABASE_URI": "postgresql://app:secret@db/shop"})
    assert namespace({"RESOURCES_KIT_REDIS_PREFIX": "school:"}) == "school:"


def test_memory_windows_count_per_key_reset_after_their_period_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The in-process limiter's fixed windows (limits' own memory storage starts a timer
    thread every 10 ms of traffic): counted per key, a new window after the period, and
    expired windows dropped rather than kept for ever."""
    from resources_kit import ratelimits

    moment = [1000.0]
    windows = ratelimits.MemoryWindows(clock=lambda: moment[0])
    assert [windows.spend("a", 60)[0] for _ in range(3)] == [1, 2, 3]
    assert windows.spend("b", 60) == (1, 1060.0)
    moment[0] = 1059.9
    assert windows.spend("a", 60) == (4, 1060.0)
    moment[0] = 1060.0  # the window is over: a new one starts
    assert windows.spend("a", 60) == (1, 1120.0)
    monkeypatch.setattr(ratelimits.MemoryWindows, "KEPT", 3)
    windows.spend("c", 1)  # expires at 1061
    moment[0] = 1100.0
    windows.spend("d", 60)  # full: the expired ones ("b", "c") go
    assert set(windows.windows) == {"a", "d"}


# -- leases of a shared window ------------------------------------------------------------


def shared_limits(share: float) -> Any:
    """The library's limiter on the test Redis, as ``Guards`` makes it for a host."""
    from resources_kit.ratelimits import limits_for

    app = Flask(__name__)
    app.config["RESOURCES_KIT_RATELIMIT_LEASE"] = share
    return limits_for(app, redis_or_skip(), "rk:test-leases:")


@pytest.mark.parametrize("share", [0.01, 0.0])
def test_hosts_leasing_one_window_never_allow_more_than_the_limit(share: float) -> None:
    import redis
    from limits import parse

    hosts = [shared_limits(share), shared_limits(share)]
    redis.Redis.from_url(REDIS_URL).flushdb()
    round_trips = 0
    for limits in hosts:
        script = limits.script

        def counted(*args: Any, script: Any = script, **kwargs: Any) -> Any:
            nonlocal round_trips
            round_trips += 1
            return script(*args, **kwargs)

        limits.script = counted
    item = parse("1000/hour")
    allowed: list[bool] = []
    remaining: list[int] = []
    for n in range(1100):  # the two hosts in turn
        ok, left, reset = hosts[n % 2].spend(item, "rk:test-leases:teachers", "school-1")
        allowed.append(ok)
        if ok:
            remaining.append(left)
        assert reset > time.time()
    assert sum(allowed) == 1000  # one limit across both hosts, to the request
    assert allowed[:1000] == [True] * 1000
    assert not any(allowed[1000:])
    assert remaining[-1] == 0
    assert all(left >= 0 for left in remaining)
    if share:
        # Leases of 10 requests: a round trip per ten, and per refusal after the end.
        assert round_trips == 100 + 100
    else:
        assert round_trips == 1100


def test_a_lease_is_the_reserving_process_own() -> None:
    import redis
    from limits import parse

    limits = shared_limits(0.01)
    redis.Redis.from_url(REDIS_URL).flushdb()
    item = parse("500/hour")  # leases of 5
    assert limits.spend(item, "ns", "who")[0]
    key = limits.limiter.storage.prefixed_key(item.key_for("ns", "who"))
    assert limits.leases.take(key) is not None  # this process holds four more
    limits.leases.pid = -1  # as a forked worker sees its parent's leases
    assert limits.leases.take(key) is None
    # A window that has ended takes its lease with it.
    limits.leases.keep(key, 3, time.time() - 1, 0)
    assert limits.leases.take(key) is None


# -- the cache's connection to Redis ------------------------------------------------------


def cached_client(**config: Any) -> Flask:
    """The guarded app with its limits in memory: only the cache reaches for Redis."""
    return guarded_app(RESOURCES_KIT_RATELIMIT_STORAGE_URI="memory://", **config)


def test_a_cache_whose_redis_cut_its_connections_still_serves(app: Flask) -> None:
    import redis

    url = redis_or_skip()
    made = cached_client(RESOURCES_KIT_REDIS_URL=url)
    with running(made) as test_client:
        reset_database()
        db.session.add(models.School(id=1, name="One"))
        db.session.commit()
        where = test_client.post("/api/teachers", json={"name": "Ada"}, headers=ONE)
        path = where.headers["Location"]
        first = test_client.get(path, headers=ONE)
        assert first.status_code == 200
        admin = redis.Redis.from_url(url)
        kept = test_client.get(path, headers=ONE)
        assert kept.get_data() == first.get_data()
        assert kept.headers["Cache-Status"].endswith("hit")
        for client_info in admin.client_list():  # every connection but this one cut
            if int(client_info["id"]) != admin.client_id():
                admin.client_kill_filter(_id=client_info["id"])
        again = test_client.get(path, headers=ONE)  # a new connection, at once
        assert again.get_data() == first.get_data()
        assert again.headers["Cache-Status"].endswith("hit")


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_an_answer_is_served_only_at_the_counters_it_was_read_at(kind: str) -> None:
    """Any interleaving of reads (a lookup, later the answer kept) and writes (a bump of
    the counters): a lookup finds only an answer whose read began at the current counters
    of every resource it depends on, never one a write overtook."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from resources_kit.caching import MemoryStore, RedisStore

    generations = ["gen:teachers:s1", "gen:students:*"]
    # ("start", i): read i looks up; ("keep", i): it keeps its answer; ("bump", j): a
    # write bumps counter j.
    step = st.one_of(
        st.tuples(st.just("start"), st.integers(0, 3)),
        st.tuples(st.just("keep"), st.integers(0, 3)),
        st.tuples(st.just("bump"), st.integers(0, 1)),
    )
    url = redis_or_skip() if kind == "redis" else None

    @settings(max_examples=60, deadline=None)
    @given(st.lists(step, max_size=14))
    def check(steps: list[tuple[str, int]]) -> None:
        if url is not None:
            import redis

            redis.Redis.from_url(url).flushdb()
        store = RedisStore(url, "rk:test:") if url is not None else MemoryStore()
        counters = [0, 0]
        started: dict[int, tuple[str, tuple[int, ...]]] = {}
        kept: dict[bytes, tuple[int, ...]] = {}  # an answer -> the counters it was read at
        for number, (what, which) in enumerate(steps):
            if what == "bump":
                store.bump([generations[which]])
                counters[which] += 1
            elif what == "start":
                full, found = store.lookup(generations, "k")
                if found is not None:
                    assert kept[found] == tuple(counters), (found, kept[found], counters)
                started[which] = (full, tuple(counters))
            elif which in started:
                full, read_at = started.pop(which)
                answer = f"answer {number}".encode()
                kept[answer] = read_at
                store.keep(full, answer, 60)
        full, found = store.lookup(generations, "k")
        if found is not None:
            assert kept[found] == tuple(counters)

    check()


def test_a_cache_out_of_reach_answers_uncached(app: Flask, caplog: Any) -> None:
    made = cached_client(RESOURCES_KIT_REDIS_URL="redis://127.0.0.1:1/0")
    with running(made) as test_client:
        reset_database()
        db.session.add(models.School(id=1, name="One"))
        db.session.commit()
        teacher = models.Teacher(name="Ada", school_id=1)
        db.session.add(teacher)
        db.session.commit()
        answer = test_client.get(f"/api/teachers/{teacher.id}", headers=ONE)
        assert answer.status_code == 200
        assert answer.json["name"] == "Ada"
        assert "Cache-Status" not in answer.headers
        assert "unreachable" in caplog.text


def test_a_command_sent_without_waiting_has_its_reply_read_and_its_error_logged(
    caplog: Any,
) -> None:
    import redis

    from resources_kit.caching import Channel

    client = redis.Redis.from_url(redis_or_skip())
    client.set("rk:test:text", "not a number")
    channel = Channel(client)
    channel.send("SET", "rk:test:kept", "1")
    channel.send("INCR", "rk:test:text")  # refused by Redis: read and logged later
    assert channel.call("GET", "rk:test:kept") == b"1"  # its own reply, not a stale one
    assert "sent without waiting failed" in caplog.text
    assert channel.call("GET", "rk:test:text") == b"not a number"
