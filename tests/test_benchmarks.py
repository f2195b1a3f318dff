"""The side-by-side benchmark in its short mode, so that it cannot rot: both apps must
answer every operation alike, and resources_kit must stay within its statement budget.
Timing ratios are reported by ``python benchmarks/bench.py``, not asserted here: a test
run on a shared machine is too noisy for that."""

from __future__ import annotations

import pytest

from benchmarks import bench

from .conftest import DB


@pytest.fixture(scope="module")
def result() -> dict[str, object]:
    return bench.run(DB if DB in ("sqlite", "postgresql", "mysql") else "sqlite",
                     rounds=2, per_round=3, big_rows=5_000, relay_jobs=100)  # fmt: skip


def test_statements_per_request_meet_the_targets(result: dict[str, object]) -> None:
    statements = result["statements"]
    assert isinstance(statements, dict)
    for operation, (_, budget) in bench.TARGETS.items():
        assert statements[operation]["rk"] <= budget, operation
    assert statements["get"]["rk"] == statements["nested get"]["rk"] == 1
    assert statements["create"]["rk"] == 1
    assert statements["list"]["rk"] == 1  # the total is a scalar subquery of the page


def test_every_operation_was_timed_for_every_app(result: dict[str, object]) -> None:
    timings = result["timings"]
    assert isinstance(timings, dict)
    assert set(timings) == set(bench.TARGETS) == set(bench.FLOOR_TARGETS)
    for by_app in timings.values():
        assert set(by_app) == {"hand", "rk", "floor"}
        assert all(seconds > 0 for seconds in by_app.values())
    text, _ = bench.report(result)
    assert "nested get" in text
    assert "against the floor" in text


def test_the_floor_answers_in_one_statement_where_the_database_allows(
    result: dict[str, object],
) -> None:
    """The floor is what the read-path work measures against: it must stay the least a
    request can cost (its answers are checked against the other apps' by bench.run)."""
    statements = result["statements"]
    assert isinstance(statements, dict)
    one_statement = (
        set(bench.TARGETS) - {"include"} - ({"patch", "update"} if DB == "mysql" else set())
    )
    for operation in one_statement:
        assert statements[operation]["floor"] == 1, operation
    assert statements["include"]["floor"] == 2  # the page, then its students


def test_keyset_pages_were_measured(result: dict[str, object]) -> None:
    first, deep = result["keyset"]  # type: ignore[misc]
    assert first > 0
    assert deep > 0


def test_the_job_overhead_and_the_relay_were_measured(result: dict[str, object]) -> None:
    if result["no_broker"] is not None:
        pytest.skip(f"no broker: {result['no_broker']}")
    assert isinstance(result["job"], float)
    assert result["job"] > 0
    assert isinstance(result["relay"], float)
    assert result["relay"] > 0
    assert isinstance(result["job_floor"], float)
    assert result["job_floor"] > 0
    text, _ = bench.report(result)
    assert "jobs/s" in text
    assert "the job's row alone" in text


def test_the_bulk_create_was_measured(result: dict[str, object]) -> None:
    bulk = result["bulk"]
    assert isinstance(bulk, dict)
    assert bulk["single"] > 0
    assert bulk["bulk"] > 0
    # one bulk of 100 items: far fewer statements than the 100 INSERTs of single POSTs
    # on a backend that batches them; on SQLite one INSERT per row, plus the rest
    assert bulk["statements"] <= bench.BULK_ITEMS + 2
    text, _ = bench.report(result)
    assert "bulk create, 100 items" in text


def test_the_guards_were_measured_with_their_floors_in_memory_and_on_redis(
    result: dict[str, object],
) -> None:
    from benchmarks import guards

    from .test_guards import redis_or_skip

    lines, _ = guards.report(result["guards"])  # type: ignore[arg-type]
    assert any(line.startswith("a bare request to the same app") for line in lines)
    url = bench.database_url(str(result["db"]))
    bench.fill(url)
    on_redis = guards.measure(url, redis_or_skip(), 1, 2)
    assert on_redis["statements_304"] == 0
    assert set(on_redis["ratios"]) == {*guards.TARGETS, (guards.REDIS_KEYS, "create"),
                                       *guards.FLOORS}  # fmt: skip
    text = "\n".join(guards.report(on_redis)[0])
    assert "idempotent create, keys in Redis" in text
    assert "with one Redis round trip" in text
    assert "no miss below" in text
