"""The production guards' costs, for ``benchmarks/bench.py``: a cache hit, a 304 from the
cache and a miss against the same item read uncached, a rate limit against none, and an
Idempotency-Key on a create against none. Same app, same process, interleaved round by
round; the shared state in Redis when ``--redis`` names one, else in memory."""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

from flask import Flask

from benchmarks.apps import StudentResource, TeacherResource, db, make_app
from resources_kit import Router
from resources_kit.guards import Guards, Idempotency, RateLimit, ResponseCache

HEADERS = {"X-School": "1"}
#: The same create with ``RESOURCES_KIT_IDEMPOTENCY_STORAGE = "redis"`` (with ``--redis``).
REDIS_KEYS = "idempotent create, keys in Redis"
#: (the guarded request's name, the plain one it is compared with) -> the most the
#: ratio guarded / plain may be.
TARGETS = {
    ("cache hit", "get"): 0.33,
    ("cache miss", "get"): 1.05,
    ("rate limited get", "get"): 1.05,
    ("idempotent create", "create"): 1.15,
    # measured with --redis only
    (REDIS_KEYS, "create"): 1.15,
}

#: The floors under the targets, from the same rounds: a bare request to the same app, and
#: one that makes one Redis round trip on the cache's connection.
FLOORS = (("bare request", "get"), ("bare + round trip", "get"))
IDEMPOTENT = "/api/idempotent-teachers"


class CachedTeacherResource(TeacherResource):
    name = "cached-teachers"
    cache = ResponseCache(per_caller=False)


class LimitedTeacherResource(TeacherResource):
    name = "limited-teachers"
    rate_limits = [RateLimit("100000000/hour", per="tenant")]


class IdempotentTeacherResource(TeacherResource):
    name = "idempotent-teachers"
    idempotency = Idempotency()


def guarded_app(url: str, redis_url: str | None, idempotency_storage: str = "database") -> Flask:
    app = make_app(url)
    app.config["RESOURCES_KIT_REDIS_URL"] = redis_url
    app.config["RESOURCES_KIT_IDEMPOTENCY_STORAGE"] = idempotency_storage
    app.config["RESOURCES_KIT_CACHE_IN_PROCESS"] = True  # one process: the benchmark
    api = Router(url_prefix="/api")
    for resource in (
        TeacherResource,
        CachedTeacherResource,
        LimitedTeacherResource,
        IdempotentTeacherResource,
    ):
        api.register(resource)
    api.register(StudentResource, parent=TeacherResource)  # what ?include=students serves
    api.init_app(app)
    guards = Guards(app)

    @app.get("/bare")
    def bare() -> Any:
        """The same app's cheapest answer: what every request costs before any guard."""
        return {}

    @app.get("/bare-redis")
    def bare_redis() -> Any:
        """The same, with one round trip to Redis on the cache's connection (none without
        Redis): the least a hit, or the lookup before a miss, can cost."""
        channel = getattr(guards.cache, "channel", None)
        if channel is not None:
            channel.call("PING")
        return {}

    with app.app_context():
        db.metadata.create_all(db.engine)  # the idempotency table
    return app


def creates(client: Any, path: str, key: bool) -> Callable[[int], Any]:
    run = uuid.uuid4().hex[:8]  # keys kept in Redis by an earlier run are not replayed

    def send(n: int) -> Any:
        body = {"name": f"g{n}", "email": f"g{n}@x.org", "years_teaching": 1}
        headers = {**HEADERS, "Idempotency-Key": f"bench-{run}-{n}"} if key else HEADERS
        return client.post(path, json=body, headers=headers)

    return send


def requests(client: Any) -> dict[str, Callable[[int], Any]]:
    etag = client.get("/api/cached-teachers/7", headers=HEADERS).headers["ETag"]
    return {
        "get": lambda n: client.get("/api/teachers/7", headers=HEADERS),
        "bare request": lambda n: client.get("/bare", headers=HEADERS),
        "bare + round trip": lambda n: client.get("/bare-redis", headers=HEADERS),
        "cache hit": lambda n: client.get("/api/cached-teachers/7", headers=HEADERS),
        "cache 304": lambda n: client.get(
            "/api/cached-teachers/7", headers={**HEADERS, "If-None-Match": etag}
        ),
        # no-cache: the lookup, the read and the answer kept, as a miss does
        "cache miss": lambda n: client.get(
            "/api/cached-teachers/7", headers={**HEADERS, "Cache-Control": "no-cache"}
        ),
        "rate limited get": lambda n: client.get("/api/limited-teachers/7", headers=HEADERS),
        "create": creates(client, "/api/teachers", key=False),
        "idempotent create": creates(client, IDEMPOTENT, key=True),
    }


def measure(url: str, redis_url: str | None, rounds: int, per_round: int) -> dict[str, Any]:
    """Median time per request of each, and the statements of a 304 from the cache."""
    from benchmarks.bench import counting

    app = guarded_app(url, redis_url)
    client = app.test_client()
    sends = requests(client)
    extra_apps = []
    if redis_url:  # the keys in Redis instead: no statement, two round trips
        keyed_in_redis = guarded_app(url, redis_url, idempotency_storage="redis")
        extra_apps.append(keyed_in_redis)
        sends[REDIS_KEYS] = creates(keyed_in_redis.test_client(), IDEMPOTENT, key=True)
    samples: dict[str, list[float]] = {name: [] for name in sends}
    counter = 10_000_000
    for round_number in range(rounds):
        names = list(sends) if round_number % 2 == 0 else list(sends)[::-1]
        for name in names:
            started = time.perf_counter()
            for _ in range(per_round):
                counter += 1
                response = sends[name](counter)
                if response.status_code >= 400:
                    raise AssertionError((name, response.status_code, response.get_data()))
            samples[name].append((time.perf_counter() - started) / per_round)
    with app.app_context():
        engine = db.engine
    with counting(engine) as seen:
        not_modified = sends["cache 304"](0)
    assert not_modified.status_code == 304, not_modified.status_code
    medians = {name: statistics.median(times) for name, times in samples.items()}
    # Each ratio from the same round (adjacent in time), then the median over rounds: a
    # shared machine's load drifts within a run, and this pairs what it hit alike.
    ratios = {
        pair: statistics.median(
            guarded / plain
            for guarded, plain in zip(samples[pair[0]], samples[pair[1]], strict=True)
        )
        for pair in (*TARGETS, *FLOORS)
        if pair[0] in samples
    }
    for made in (app, *extra_apps):
        with made.app_context():
            db.session.remove()
            db.engine.dispose()
    return {
        "medians": medians,
        "ratios": ratios,
        "statements_304": len(seen),
        "redis": redis_url,
    }


def report(result: dict[str, Any]) -> tuple[list[str], bool]:
    medians, ratios = result["medians"], result["ratios"]
    where = f"Redis ({result['redis']})" if result["redis"] else "memory"
    lines = ["", f"production guards, shared state in {where}:"]
    ok = True
    for (guarded, plain), target in TARGETS.items():
        if guarded == REDIS_KEYS and guarded not in medians:  # measured with --redis only
            continue
        ratio = ratios[(guarded, plain)]
        meets = ratio <= target
        ok = ok and meets
        lines.append(
            f"{guarded:<18} {medians[guarded] * 1e6:>7.0f} µs, {ratio:.2f}x {plain} "
            f"{medians[plain] * 1e6:.0f} µs (target {target:.2f}){'' if meets else '  MISSED'}"
        )
    bare, trip = ratios[FLOORS[0]], ratios[FLOORS[1]]
    floor = f"{medians['bare request'] * 1e6:.0f} µs, {bare:.2f}x get"
    if result["redis"]:
        floor += (
            f"; with one Redis round trip {medians['bare + round trip'] * 1e6:.0f} µs, "
            f"{trip:.2f}x get: no hit below {trip:.2f}x, no miss below "
            f"{1 + trip - bare:.2f}x"
        )
    lines.append(f"a bare request to the same app (the floor of every guard): {floor}")
    statements = result["statements_304"]
    ok = ok and statements == 0
    lines.append(
        f"a 304 from the cache: {statements} SQL statements, "
        f"{medians['cache 304'] * 1e6:.0f} µs{'' if statements == 0 else '  MISSED'}"
    )
    return lines, ok
