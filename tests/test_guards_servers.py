"""Idempotency-Key against a real server (a threaded werkzeug process on a loopback
port), on the test database: 50 concurrent POSTs with one key, a process killed between
its commit and its answer, and a retry while the first still runs. Bounded in time and
count; every process started is stopped."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from resources_kit.idempotency import idempotency_table

from . import models
from .conftest import DB_URL
from .models import db
from .test_guards import redis_or_skip

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def serving(**environ: str) -> Iterator[Callable[..., tuple[int, dict[str, str], bytes]]]:
    """A server process of tests/guards_server.py; yields a request function."""
    port = free_port()
    env = {**os.environ, "GUARDS_DB_URL": DB_URL, "PYTHONPATH": str(ROOT), **environ}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.guards_server", str(port)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(port, process)
        yield lambda *args, **kwargs: call(port, *args, **kwargs)
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("the server did not start in 30 s")


def call(
    port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        data = json.dumps(body) if body is not None else None
        sent = {"Content-Type": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture
def tables(app: Flask, database: Any) -> Iterator[None]:
    table = idempotency_table(db.metadata)
    table.create(db.engine, checkfirst=True)
    db.session.execute(table.delete())
    db.session.add(models.School(id=1, name="One"))
    db.session.commit()
    yield
    db.session.execute(table.delete())
    db.session.commit()


def teachers(name: str) -> int:
    db.session.rollback()  # a fresh snapshot
    query = select(func.count()).select_from(models.Teacher).where(models.Teacher.name == name)
    return int(db.session.execute(query).scalar_one())


HEADERS = {"X-School": "1", "X-User": "ada", "Idempotency-Key": "one-key"}


@pytest.mark.parametrize("keys", ["database", "redis"])
def test_fifty_concurrent_posts_with_one_key_write_one_row_and_answer_alike(
    tables: None, keys: str
) -> None:
    environ = {"GUARDS_KEYS": keys}
    if keys == "redis":
        environ["GUARDS_REDIS_URL"] = redis_or_skip()
    with serving(**environ) as request:
        start = threading.Barrier(50, timeout=30)

        def post(_: int) -> tuple[int, str | None, bytes]:
            start.wait()
            status, headers, body = request("POST", "/api/teachers", {"name": "Once"}, HEADERS)
            return status, headers.get("Location"), body

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(post, range(50)))
    assert teachers("Once") == 1
    assert {status for status, _, _ in answers} == {201}
    assert len(set(answers)) == 1, set(answers)


def test_a_process_killed_after_its_commit_replays_the_stored_answer(tables: None) -> None:
    crash = {**HEADERS, "Idempotency-Key": "crash-key", "X-Crash-After-Commit": "1"}
    with serving() as request, pytest.raises((http.client.HTTPException, OSError)):
        request("POST", "/api/teachers", {"name": "Crash"}, crash)
    assert teachers("Crash") == 1  # committed, never answered
    with serving() as request:
        retry = {**HEADERS, "Idempotency-Key": "crash-key"}
        status, headers, body = request("POST", "/api/teachers", {"name": "Crash"}, retry)
    assert status == 201
    assert headers["Idempotent-Replayed"] == "true"
    assert json.loads(body)["name"] == "Crash"
    assert headers["Location"].endswith(f"/api/teachers/{json.loads(body)['id']}")
    assert teachers("Crash") == 1


def test_a_retry_while_the_first_still_runs_is_a_409_with_retry_after(tables: None) -> None:
    slow = {**HEADERS, "Idempotency-Key": "slow-key"}
    with serving(GUARDS_WAIT="0.5") as request, ThreadPoolExecutor(1) as pool:
        first = pool.submit(
            request, "POST", "/api/teachers", {"name": "Slow"}, {**slow, "X-Slow": "3"}
        )
        time.sleep(1)
        status, headers, body = request("POST", "/api/teachers", {"name": "Slow"}, slow)
        assert first.result()[0] == 201
    assert status == 409, body
    assert headers["Content-Type"] == "application/problem+json"
    assert int(headers["Retry-After"]) >= 1
    assert teachers("Slow") == 1
