"""Load test: the sample app under gunicorn (4 workers) on PostgreSQL, driven by several
client processes over loopback with a mix of reads and writes.

    python benchmarks/loadtest.py [--requests 400] [--clients 4] [--seconds 60]
    python benchmarks/loadtest.py --compare [--requests 400] [--clients 4]

It reports requests/s, p50/p99 latency and the status counts, then checks that every
create the API acknowledged (201) is in the database. It exits non-zero on any 5xx, any
unexpected status or any lost create. Traffic goes to 127.0.0.1 only, bounded in requests
and in time.

``--compare`` serves the benchmark's API (``benchmarks/apps.py``) four ways under the same
gunicorn setup, one after the other on one PostgreSQL database: resources_kit, the
hand-written ORM app, the floor (``benchmarks/floor.py``) and flask-smorest
(``benchmarks/peers.py``); it drives each with list reads, then item reads, and reports
requests/s and p99 side by side, with resources_kit's requests/s over each other's.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"
DATABASE = "resources_kit_load"
#: The demo logins the clients act as: each school's admin (filled in by the seed).
LOGINS = ["north-admin", "south-admin"]
#: (weight, operation): what one client request is.
MIX = [(55, "list"), (15, "get"), (10, "create"), (10, "patch"), (10, "students")]
#: Teachers carry a version column: a PATCH racing another on the same row is a 409
#: ("changed by a concurrent request"), never a silently lost update.
EXPECTED = {
    "list": {200},
    "get": {200},
    "create": {201},
    "patch": {200, 409},
    "students": {200},
}


def fresh_database(name: str) -> str:
    """Drop and create database ``name`` on the local server; its superuser URL."""
    from sqlalchemy import create_engine, text

    engine = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{SERVER}/{name}"


def prepare_database() -> tuple[str, list[str]]:
    url = fresh_database(DATABASE)
    from sample_app import create_app, seed
    from sample_app.models import db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        tokens = seed()
        db.session.remove()
        db.engine.dispose()
    return url, [tokens[login] for login in LOGINS]


def missing_from_database(url: str, created: list[int]) -> list[int]:
    """The acknowledged creates whose teacher is not in the database at ``url``."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        found = {row[0] for row in connection.execute(text("SELECT id FROM teachers"))}
    engine.dispose()
    return [teacher for teacher in created if teacher not in found]


def request_json(
    connection: http.client.HTTPConnection,
    latencies: list[float],
    method: str,
    path: str,
    token: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """One request as the bearer of ``token``, its time added to ``latencies``; the
    status and the JSON body."""
    sent = {"Authorization": f"Bearer {token}", **(headers or {})}
    payload = None
    if body is not None:
        payload = json.dumps(body)
        sent["Content-Type"] = "application/json"
    start = time.perf_counter()
    connection.request(method, path, body=payload, headers=sent)
    response = connection.getresponse()
    data = response.read()
    latencies.append(time.perf_counter() - start)
    if response.will_close:
        connection.close()
    return response.status, json.loads(data) if data else None


def summarize(results: list[dict[str, Any]], elapsed: float) -> dict[str, Any]:
    """The clients' results together: request count and rate, p50/p99 in ms, statuses,
    5xx, unexpected statuses and the acknowledged creates."""
    latencies = sorted(x for r in results for x in r["latencies"])
    statuses: dict[str, int] = {}
    for r in results:
        for key, count in r["statuses"].items():
            statuses[key] = statuses.get(key, 0) + count
    return {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
        "p50": statistics.median(latencies) * 1000,
        "p99": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
        "5xx": sum(n for key, n in statuses.items() if key.split()[1][0] == "5"),
        "unexpected": sum(len(r["unexpected"]) for r in results),
        "created": [teacher for r in results for teacher in r["created"]],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_gunicorn(
    url: str,
    port: int,
    workers: int,
    environ: dict[str, str] | None = None,
    app: str = "sample_app:create_app()",
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SAMPLE_APP_DATABASE_URL": url, "PYTHONPATH": str(ROOT), **(environ or {})}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            app,
        ],
        env=env,
        cwd=ROOT,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gunicorn did not start")


def client(
    port: int, requests: int, seconds: float, seed: int, tokens: list[str]
) -> dict[str, Any]:
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    unexpected: list[str] = []
    created: list[int] = []
    teachers: dict[str, list[int]] = {}
    weights, operations = zip(*MIX, strict=True)
    deadline = time.monotonic() + seconds

    def call(method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return request_json(connection, latencies, method, path, token, body)

    for _ in range(requests):
        if time.monotonic() > deadline:
            break
        token = rng.choice(tokens)
        if token not in teachers:
            status, body = call("GET", "/api/teachers?limit=100", token)
            teachers[token] = [item["id"] for item in body["items"]]
        operation = rng.choices(operations, weights)[0]
        teacher = rng.choice(teachers[token])
        if operation == "list":
            status, _ = call(
                "GET", f"/api/teachers?limit=20&sort=name__desc&offset={rng.randrange(3)}", token
            )
        elif operation == "get":
            status, _ = call("GET", f"/api/teachers/{teacher}", token)
        elif operation == "create":
            tag = uuid.uuid4().hex[:12]
            status, body = call(
                "POST",
                "/api/teachers",
                token,
                {
                    "name": f"Load {tag}",
                    "email": f"{tag}@load.example.org",
                    "credential": "LIC-0001",
                    "years_teaching": rng.randrange(40),
                },
            )
            if status == 201:
                created.append(body["id"])
                teachers[token].append(body["id"])
        elif operation == "patch":
            status, _ = call(
                "PATCH", f"/api/teachers/{teacher}", token, {"years_teaching": rng.randrange(40)}
            )
        else:
            status, _ = call("GET", f"/api/teachers/{teacher}/students", token)
        key = f"{operation} {status}"
        statuses[key] = statuses.get(key, 0) + 1
        if status not in EXPECTED[operation]:
            unexpected.append(key)
    connection.close()
    return {
        "latencies": latencies,
        "statuses": statuses,
        "unexpected": unexpected,
        "created": created,
    }


#: The reads ``--compare`` drives: operation -> path (``{}``: a teacher of school 1).
READS = {"list": "/api/teachers?limit=20&offset=40", "item": "/api/teachers/{}"}


def read_client(port: int, path: str, requests: int, seconds: float, seed: int) -> dict[str, Any]:
    """``requests`` GETs of ``path`` (after a tenth as many unmeasured, to warm the
    workers): latencies and statuses."""
    rng = random.Random(seed)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    began = 0.0
    for number in range(requests + requests // 10):
        if time.monotonic() > deadline:
            break
        if number == requests // 10:
            began = time.time()  # the measured window: across processes, wall clock
        start = time.perf_counter()
        connection.request("GET", path.format(rng.randrange(1, 151)), headers={"X-School": "1"})
        response = connection.getresponse()
        response.read()
        if number >= requests // 10:
            latencies.append(time.perf_counter() - start)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
        if response.will_close:
            connection.close()
    connection.close()
    return {"latencies": latencies, "statuses": statuses, "window": (began, time.time())}


def compare(args: argparse.Namespace) -> int:
    """The benchmark's reads served by each app in turn; requests/s and p99 side by side."""
    from benchmarks import bench
    from benchmarks.peers import APPS

    url = fresh_database("resources_kit_compare")
    bench.fill(url)
    figures: dict[str, dict[str, tuple[float, float]]] = {}
    bad = 0
    for name in APPS:
        port = free_port()
        environ = {"BENCH_DATABASE_URL": url}
        entry = f"benchmarks.peers:wsgi({name!r})"
        server = start_gunicorn(url, port, args.workers, environ, entry)
        try:
            for operation, path in READS.items():
                with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
                    results = pool.starmap(
                        read_client,
                        [(port, path, args.requests, args.seconds, n) for n in range(args.clients)],
                    )
                # From the first measured request of any client to the last one's end.
                elapsed = max(r["window"][1] for r in results) - min(
                    r["window"][0] for r in results
                )
                latencies = sorted(x for r in results for x in r["latencies"])
                bad += sum(n for r in results for k, n in r["statuses"].items() if k != "200")
                p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
                figures.setdefault(operation, {})[name] = (len(latencies) / elapsed, p99)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    print(
        f"reads under load: gunicorn {args.workers} workers, PostgreSQL, {args.clients} client "
        f"processes x {args.requests} requests"
    )
    print(f"  {'':<6} " + " ".join(f"{name:>22}" for name in APPS))
    for operation, by_app in figures.items():
        row = " ".join(
            f"{rate:>9.0f}/s p99 {p99:>5.1f} ms" for rate, p99 in (by_app[n] for n in APPS)
        )
        print(f"  {operation:<6} {row}")
        mine = by_app["resources_kit"][0]
        others = ", ".join(f"{mine / by_app[n][0]:.2f}x {n}" for n in APPS if n != "resources_kit")
        print(f"  {'':<6} resources_kit serves {others}")
    print(f"  non-200 answers: {bad}")
    return 1 if bad else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per client")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--seconds", type=float, default=60, help="time limit per client")
    parser.add_argument("--compare", action="store_true", help="reads of four apps side by side")
    args = parser.parse_args()
    if args.compare:
        return compare(args)

    url, tokens = prepare_database()
    port = free_port()
    server = start_gunicorn(url, port, args.workers)
    try:
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            results = pool.starmap(
                client,
                [(port, args.requests, args.seconds, seed, tokens) for seed in range(args.clients)],
            )
        elapsed = time.perf_counter() - started
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)

    figures = summarize(results, elapsed)
    lost = missing_from_database(url, figures["created"])
    print(
        f"load test: sample app, gunicorn {args.workers} workers, PostgreSQL, "
        f"{args.clients} client processes"
    )
    print(f"  requests     {figures['requests']} in {elapsed:.1f} s = {figures['rate']:.0f}/s")
    print(f"  latency      p50 {figures['p50']:.1f} ms, p99 {figures['p99']:.1f} ms")
    statuses = figures["statuses"]
    print(f"  statuses     {', '.join(f'{k}: {v}' for k, v in sorted(statuses.items()))}")
    print(f"  5xx          {figures['5xx']}")
    print(f"  unexpected   {figures['unexpected']}")
    created = figures["created"]
    print(f"  creates      {len(created)} acknowledged, {len(lost)} missing from the database")
    return 1 if figures["5xx"] or figures["unexpected"] or lost else 0


if __name__ == "__main__":
    sys.exit(main())
