"""Two app hosts (gunicorn, 2 workers each, as in benchmarks/scaleout.py) sharing one Redis:
one rate limit holds across them, and a Hypothesis property over interleaved writes and
reads on both never sees an answer older than a write the client already had an answer
for, nor one kept for another tenant or another caller.

Runs once per CI run, in the PostgreSQL run (``RESOURCES_KIT_TEST_DB=postgresql``); elsewhere
it skips with a message. Traffic goes to 127.0.0.1 only, bounded in examples and time, and
every process started is stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

from resources_kit.idempotency import idempotency_table

from . import models
from .conftest import DB_URL, reset_database
from .models import db
from .test_guards import redis_or_skip
from .test_guards_servers import ROOT, call, free_port, wait_for

URL = make_url(DB_URL)
pytestmark = pytest.mark.skipif(
    URL.get_backend_name() != "postgresql" or URL.port == 6432,
    reason="the two-host run is made once, with RESOURCES_KIT_TEST_DB=postgresql",
)

#: Each caller sees the teachers of its own region only.
CALLERS = {"ada": "n", "bob": "s"}


def start_host(redis_url: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **os.environ,
        "GUARDS_DB_URL": DB_URL,
        "GUARDS_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{port}"]
    command += ["--log-level", "warning", "tests.guards_server:create()"]
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    wait_for(port, process)
    return process, port


@pytest.fixture(scope="module")
def hosts(app: Flask) -> Iterator[list[int]]:
    redis_url = redis_or_skip()
    if os.environ.get("RESOURCES_KIT_REQUIRE_REDIS"):
        import gunicorn  # noqa: F401 (CI installs it: the load extra)
    pytest.importorskip("gunicorn")
    with app.app_context():
        table = idempotency_table(db.metadata)
        table.create(db.engine, checkfirst=True)
        reset_database()
        db.session.execute(table.delete())
        db.session.add_all([models.School(id=1, name="One"), models.School(id=2, name="Two")])
        db.session.commit()
    started: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        for _ in range(2):
            started.append(start_host(redis_url))
        yield [port for _, port in started]
    finally:
        for process, _ in started:
            process.terminate()
        for process, _ in started:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        with app.app_context():
            reset_database()
            db.session.execute(idempotency_table(db.metadata).delete())
            db.session.commit()


def headers(school: int, caller: str) -> dict[str, str]:
    return {"X-School": str(school), "X-User": caller, "X-Region": CALLERS[caller]}


def test_one_rate_limit_holds_across_both_hosts(hosts: list[int]) -> None:
    who = headers(1, "ada")
    statuses = [call(hosts[n % 2], "GET", "/api/limited-teachers", None, who)[0] for n in range(4)]
    assert statuses == [200] * 4
    status, answer, _ = call(hosts[0], "GET", "/api/limited-teachers", None, who)
    assert status == 429
    assert int(answer["Retry-After"]) >= 1
    assert call(hosts[1], "GET", "/api/limited-teachers", None, who)[0] == 429
    assert call(hosts[1], "GET", "/api/limited-teachers", None, headers(1, "bob"))[0] == 200


#: What the database holds, as the client learnt it from the answers to its writes:
#: id -> the teacher's body. Kept across examples (rows are never reset between them).
MODEL: dict[int, dict[str, Any]] = {}

operations = st.lists(
    st.tuples(
        st.sampled_from(["create", "patch", "list", "get", "get-if-none-match"]),
        st.integers(0, 1),  # host
        st.sampled_from([1, 2]),  # school
        st.sampled_from(sorted(CALLERS)),
        st.integers(0, 10**6),  # which row, which name
    ),
    min_size=1,
    max_size=12,
)


def expected_list(school: int, caller: str) -> list[dict[str, Any]]:
    rows = [row for row in MODEL.values() if row["school_id"] == school]
    return sorted((r for r in rows if r["region"] == CALLERS[caller]), key=lambda r: r["id"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=operations)
def test_no_answer_is_stale_or_someone_elses(hosts: list[int], steps: list[Any]) -> None:
    etags: dict[tuple[int, int, str], tuple[str, bytes]] = {}
    for kind, host, school, caller, n in steps:
        port, who = hosts[host], headers(school, caller)
        if kind == "create":
            body = {"name": f"t{n}", "region": CALLERS[caller]}
            key = {**who, "Idempotency-Key": str(uuid.uuid4())}
            status, _, data = call(port, "POST", "/api/teachers", body, key)
            assert status == 201
            # The same key on the other host: the same answer, no second row.
            assert call(hosts[1 - host], "POST", "/api/teachers", body, key)[2] == data
            row = json.loads(data)
            MODEL[row["id"]] = row
        elif kind == "patch" and MODEL:
            target = sorted(MODEL)[n % len(MODEL)]
            status, _, data = call(port, "PATCH", f"/api/teachers/{target}", {"name": f"p{n}"}, who)
            row = MODEL[target]
            if row["school_id"] == school and row["region"] == CALLERS[caller]:
                assert status == 200
                MODEL[target] = json.loads(data)
            else:
                assert status == 404
        elif kind == "list":
            status, _, data = call(port, "GET", "/api/teachers?limit=100", None, who)
            assert status == 200
            page = json.loads(data)
            expected = expected_list(school, caller)
            assert page["total"] == len(expected)
            assert page["items"] == expected[:100]
        elif MODEL:
            target = sorted(MODEL)[n % len(MODEL)]
            row = MODEL[target]
            sent = dict(who)
            held = etags.get((target, school, caller))
            if kind == "get-if-none-match" and held is not None:
                sent["If-None-Match"] = held[0]
            status, answer, data = call(port, "GET", f"/api/teachers/{target}", None, sent)
            if row["school_id"] != school or row["region"] != CALLERS[caller]:
                assert status == 404
                continue
            if status == 304:
                assert held is not None
                assert json.loads(held[1]) == row  # what the client holds is current
                continue
            assert status == 200
            assert json.loads(data) == row
            etags[(target, school, caller)] = (answer["ETag"], data)
