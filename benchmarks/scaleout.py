"""Scale-out load test: the sample app on one app host, then on two, each a gunicorn of 2
workers on its own port, through PgBouncer (transaction mode) to PostgreSQL, with list
and item reads on a streaming replica and row-level security on.

    python benchmarks/scaleout.py [--requests 300] [--clients 4] [--seconds 60]

Needs what ``.ci/services`` starts: PostgreSQL on 5432, PgBouncer on 6432, the replica on
5433. Each client process acts for one school at a time and spreads its requests over
the hosts: a create on one host is read back on the other at once (``Prefer:
read-your-writes``), and a students page's cursor signed on one host is followed on the
other. It reports, for 1 host and for 2 side by side: requests/s, p50/p99 latency, 5xx,
lost writes (acknowledged but not read back, or missing from the database at the end),
cross-tenant rows seen (any row of another school in any answer) and cursors carried
across hosts. It exits non-zero on any 5xx, unexpected status, lost write or leaked row.
Traffic goes to 127.0.0.1 only, bounded in requests and in time.
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing
import random
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from loadtest import (  # noqa: E402
    SERVER,
    free_port,
    fresh_database,
    missing_from_database,
    request_json,
    start_gunicorn,
    summarize,
)

DATABASE = "resources_kit_scale"
#: The role the hosts connect as: subject to row-level security.
APP_ROLE = "resources_kit_app"
POOLER = f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:6432/{DATABASE}"
REPLICA = f"postgresql+psycopg://{APP_ROLE}@127.0.0.1:5433/{DATABASE}"
LOGINS = ["north-admin", "south-admin"]
#: (weight, operation) of one client request.
MIX = [(40, "list"), (15, "get"), (10, "create"), (10, "patch"), (25, "students")]
EXPECTED = {
    "list": {200},
    "get": {200},
    "create": {201},
    "read-back": {200},
    "patch": {200, 409},
    "students": {200},
    "next-page": {200},
}
#: The same signing keys on every host: cursors and tokens made on one work on all.
HOST_ENV = {
    "SAMPLE_APP_DATABASE_URL": POOLER,
    "SAMPLE_APP_POOLED": "1",
    "SAMPLE_APP_READ_REPLICA_URL": REPLICA,
    "SAMPLE_APP_ROW_LEVEL_SECURITY": "1",
    "SAMPLE_APP_SECRET_KEY": "scale-out-secret",
}


def prepare_database() -> tuple[list[str], dict[str, int]]:
    """A fresh, seeded database with the policy and the app role; waits until the
    replica has it. Returns the admins' tokens and their schools."""
    from sqlalchemy import create_engine, text

    url = fresh_database(DATABASE)
    admin = create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        if not connection.execute(
            text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": APP_ROLE}
        ).first():
            connection.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
    admin.dispose()
    from sample_app import create_app, policies, seed
    from sample_app.models import User, db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    with app.app_context():
        tokens = seed()
        schools = {user.login: user.school_id for user in db.session.query(User)}
        for sql in policies():
            db.session.execute(text(sql))
        db.session.execute(text(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {APP_ROLE}"))
        db.session.execute(text(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}"))
        db.session.commit()
        lsn = db.session.execute(text("SELECT pg_current_wal_lsn()::text")).scalar()
        db.session.remove()
        db.engine.dispose()
    wait_for_replica(str(lsn))
    return [tokens[login] for login in LOGINS], {tokens[k]: schools[k] for k in LOGINS}


def wait_for_replica(lsn: str, timeout: float = 60) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5433/postgres")
    deadline = time.monotonic() + timeout
    with engine.connect() as connection:
        while True:
            behind = connection.execute(
                text("SELECT pg_wal_lsn_diff(CAST(:lsn AS pg_lsn), pg_last_wal_replay_lsn())"),
                {"lsn": lsn},
            ).scalar()
            connection.rollback()
            if behind is not None and behind <= 0:
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the replica is still {behind} bytes behind")
            time.sleep(0.05)
    engine.dispose()


def client(
    ports: list[int], requests: int, seconds: float, seed: int, schools: dict[str, int]
) -> dict[str, Any]:
    rng = random.Random(seed)
    connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for port in ports]
    result: dict[str, Any] = {
        "latencies": [],
        "statuses": {},
        "unexpected": [],
        "created": [],
        "lost": 0,
        "leaked": 0,
        "carried": 0,
    }
    teachers: dict[str, list[int]] = {}
    weights, operations = zip(*MIX, strict=True)
    turn = [0]

    def call(
        method: str, path: str, token: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        connection = connections[turn[0] % len(connections)]  # the next host, round robin
        turn[0] += 1
        return request_json(connection, result["latencies"], method, path, token, body, headers)

    def record(operation: str, status: int) -> None:
        key = f"{operation} {status}"
        result["statuses"][key] = result["statuses"].get(key, 0) + 1
        if status not in EXPECTED[operation]:
            result["unexpected"].append(key)

    def check_school(token: str, items: list[dict[str, Any]]) -> None:
        result["leaked"] += sum(1 for item in items if item.get("school_id") != schools[token])

    deadline = time.monotonic() + seconds
    while len(result["latencies"]) < requests and time.monotonic() < deadline:
        token = rng.choice(list(schools))
        if token not in teachers:
            status, body = call("GET", "/api/teachers?limit=100", token)
            check_school(token, body["items"])
            teachers[token] = [item["id"] for item in body["items"]]
        operation = rng.choices(operations, weights)[0]
        teacher = rng.choice(teachers[token])
        if operation == "list":
            status, body = call("GET", f"/api/teachers?limit=20&offset={rng.randrange(3)}", token)
            if status == 200:
                check_school(token, body["items"])
        elif operation == "get":
            status, body = call("GET", f"/api/teachers/{teacher}", token)
            if status == 200:
                check_school(token, [body])
        elif operation == "create":
            tag = uuid.uuid4().hex[:12]
            new = {"name": f"Load {tag}", "email": f"{tag}@load.example.org"}
            status, body = call("POST", "/api/teachers", token, {**new, "credential": "LIC-0001"})
            if status == 201:
                result["created"].append(body["id"])
                teachers[token].append(body["id"])
                # Read it back on the other host at once, from the primary.
                fresh = {"Prefer": "read-your-writes"}
                again, _ = call("GET", f"/api/teachers/{body['id']}", token, headers=fresh)
                record("read-back", again)
                result["lost"] += again != 200
        elif operation == "patch":
            status, _ = call(
                "PATCH", f"/api/teachers/{teacher}", token, {"years_teaching": rng.randrange(40)}
            )
        else:
            url = f"/api/teachers/{teacher}/students?limit=2"
            status, body = call("GET", url, token)
            if status == 200 and body["next"]:
                # The cursor was signed by this host; the next request goes to the other.
                again, _ = call("GET", f"{url}&cursor={body['next']}", token)
                record("next-page", again)
                result["carried"] += again == 200
        record(operation, status)
    for connection in connections:
        connection.close()
    return result


def replica_transactions() -> int:
    """Transactions the replica has served on the test database so far."""
    from sqlalchemy import create_engine, text

    engine = create_engine("postgresql+psycopg://postgres@127.0.0.1:5433/postgres")
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_stat_clear_snapshot()"))
        count = connection.execute(
            text("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = :name"),
            {"name": DATABASE},
        ).scalar()
    engine.dispose()
    return int(count or 0)


def run(hosts: int, args: argparse.Namespace, schools: dict[str, int]) -> dict[str, Any]:
    ports = [free_port() for _ in range(hosts)]
    replica_before = replica_transactions()
    servers = [start_gunicorn(POOLER, port, 2, HOST_ENV) for port in ports]
    try:
        started = time.perf_counter()
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            results = pool.starmap(
                client,
                [
                    (ports, args.requests, args.seconds, seed, schools)
                    for seed in range(args.clients)
                ],
            )
        elapsed = time.perf_counter() - started
    finally:
        for server in servers:
            server.send_signal(signal.SIGTERM)
        for server in servers:
            server.wait(timeout=30)
    time.sleep(0.6)  # the statistics collector reports every 500 ms
    replica_reads = replica_transactions() - replica_before
    return {
        **summarize(results, elapsed),
        "lost": sum(r["lost"] for r in results),
        "leaked": sum(r["leaked"] for r in results),
        "carried": sum(r["carried"] for r in results) if hosts > 1 else "n/a",
        "replica": replica_reads,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per client")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=60, help="time limit per client")
    args = parser.parse_args()

    _, schools = prepare_database()
    figures = {hosts: run(hosts, args, schools) for hosts in (1, 2)}
    for each in figures.values():
        each["lost"] += len(missing_from_database(f"{SERVER}/{DATABASE}", each["created"]))
    rows = [
        ("requests", "{requests}"),
        ("requests/s", "{rate:.0f}"),
        ("latency p50", "{p50:.1f} ms"),
        ("latency p99", "{p99:.1f} ms"),
        ("5xx", "{5xx}"),
        ("unexpected statuses", "{unexpected}"),
        ("lost writes", "{lost}"),
        ("cross-tenant rows seen", "{leaked}"),
        ("cursors across hosts", "{carried}"),
        ("replica transactions", "{replica}"),
    ]
    print(
        f"scale-out load test: sample app, {args.clients} client processes, PgBouncer "
        "(transaction mode), reads on a streaming replica, row-level security on"
    )
    print(f"  {'':<24}{'1 host (2 workers)':>22}{'2 hosts (2 workers each)':>28}")
    for label, form in rows:
        one, two = form.format(**figures[1]), form.format(**figures[2])
        print(f"  {label:<24}{one:>22}{two:>28}")
    bad = any(f["5xx"] or f["unexpected"] or f["lost"] or f["leaked"] for f in figures.values())
    if bad:
        for hosts, each in figures.items():
            print(f"  statuses, {hosts} host(s): {each['statuses']}")
    # Reads must have gone to the replica, and cursors must have crossed hosts.
    return 1 if bad or not figures[2]["carried"] or not figures[2]["replica"] else 0


if __name__ == "__main__":
    sys.exit(main())
