"""Side-by-side benchmark: resources_kit against the same API written by hand.

    python benchmarks/bench.py                 # SQLite, full run
    python benchmarks/bench.py --db postgresql # the local PostgreSQL
    python benchmarks/bench.py --short         # a quick run (the test suite uses it)

Both apps run in this process and are called through WSGI, interleaved round by round (the
order alternates each round), so machine noise hits both alike. For each operation it
reports the median time per request, the ratio resources_kit / hand-written (the median of
each round's ratio: the apps of a round run one after another), and the SQL statements
per request. Before timing, it checks that both apps give the same status and
the same JSON for every operation.

It also measures a bulk create (one ``POST`` of 100 items against 100 single ``POST``s)
and keyset pagination: the first page and a page deep in a table of
1,000,000 rows (``--big-rows``) on SQLite; and, with a Redis broker
(``RESOURCES_KIT_BENCH_BROKER``, default ``redis://127.0.0.1:6379/7``, flushed), a create
with one job against the same create without, and the relay's throughput in jobs per
second (``--relay-jobs`` due jobs republished in one run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event, insert, make_url, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import guards
from benchmarks.apps import (
    School,
    Student,
    Teacher,
    db,
    hand_written_app,
    resources_kit_app,
)
from benchmarks.floor import floor_app

SCHOOLS, TEACHERS_PER_SCHOOL, STUDENTS_PER_TEACHER = 2, 150, 12
#: Per process, so that two runs at once (a developer's and CI's) never share a database.
DATABASE = f"resources_kit_bench_{os.getpid()}"
HEADERS = {"X-School": "1"}
#: Targets from the performance contract: ratio and statements per request.
TARGETS = {
    "list": (1.00, 2),
    "get": (1.10, 1),
    "create": (1.10, 1),
    "update": (1.10, 2),
    "patch": (1.10, 2),
    "delete": (1.10, 2),
    "nested list": (1.00, 1),
    "nested get": (1.10, 1),
    "include": (1.00, 2),
}
#: Against the floor (benchmarks/floor.py, the fastest hand-written code): ratio, and
#: statements beyond the floor's. Reported beside the targets above.
FLOOR_TARGETS = {
    "list": 1.25,
    "include": 1.25,
    "get": 1.25,
    "nested list": 1.25,
    "nested get": 1.25,
    "create": 1.5,
    "update": 1.5,
    "patch": 1.5,
    "delete": 1.5,
}


def database_url(kind: str) -> str:
    if kind == "sqlite":
        return f"sqlite:///{os.path.join(tempfile.gettempdir(), f'{DATABASE}.sqlite3')}"
    if kind == "postgresql":
        server = "postgresql+psycopg://postgres@127.0.0.1:5432"
        engine = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
            connection.execute(text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()
        return f"{server}/{DATABASE}"
    if kind == "mysql":
        server = "mysql+pymysql://root@127.0.0.1:3306"
        engine = create_engine(f"{server}/test")
        with engine.connect() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
            connection.execute(text(f"CREATE DATABASE {DATABASE}"))
        engine.dispose()
        return f"{server}/{DATABASE}?charset=utf8mb4"
    return kind


def drop_database(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and os.path.exists(parsed.database):
            os.remove(parsed.database)
        return
    admin = parsed.set(database="postgres" if parsed.get_backend_name() == "postgresql" else "test")
    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        force = " WITH (FORCE)" if parsed.get_backend_name() == "postgresql" else ""
        connection.execute(text(f"DROP DATABASE IF EXISTS {parsed.database}{force}"))
    engine.dispose()


def fill(url: str) -> None:
    engine = create_engine(url)
    db.metadata.drop_all(engine)
    db.metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(insert(School), [{"id": i, "name": f"s{i}"} for i in range(1, 3)])
        teachers = [
            {
                "school_id": school,
                "name": f"teacher {n:04d}",
                "email": f"t{school}-{n}@x.org",
                "years_teaching": n % 40,
            }
            for school in range(1, SCHOOLS + 1)
            for n in range(TEACHERS_PER_SCHOOL)
        ]
        connection.execute(insert(Teacher), teachers)
        students = [
            {"teacher_id": teacher, "name": f"student {n}", "grade_level": 1 + n % 12}
            for teacher in range(1, SCHOOLS * TEACHERS_PER_SCHOOL + 1)
            for n in range(STUDENTS_PER_TEACHER)
        ]
        connection.execute(insert(Student), students)
    # The planner's statistics, as a database in service has them: without, PostgreSQL
    # guesses, and may find a teacher by the school's index rather than the key.
    backend = engine.dialect.name
    analyze = {"mysql": "ANALYZE TABLE bench_schools, bench_teachers, bench_students"}
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text(analyze.get(backend, "ANALYZE")))
    engine.dispose()


@dataclass
class Operation:
    name: str
    #: (client, round-unique number) -> response; prepares its own rows outside timing
    prepare: Callable[[Any, int], Callable[[], Any]]
    expect: int


def _new_teacher_row(app: Any, n: int) -> int:
    with app.app_context():
        teacher = Teacher(school_id=1, name=f"gone {n}", email=f"g{n}@x.org", years_teaching=1)
        db.session.add(teacher)
        db.session.commit()
        return int(teacher.id)


def operations(app: Any) -> list[Operation]:
    def fixed(method: str, path: str, body: Any = None) -> Callable[[Any, int], Callable[[], Any]]:
        def prepare(client: Any, n: int) -> Callable[[], Any]:
            kwargs = {"json": body} if body is not None else {}
            return lambda: getattr(client, method)(path, headers=HEADERS, **kwargs)

        return prepare

    def create(client: Any, n: int) -> Callable[[], Any]:
        body = {"name": f"new {n}", "email": f"n{n}@x.org", "years_teaching": 3}
        return lambda: client.post("/api/teachers", json=body, headers=HEADERS)

    def delete(client: Any, n: int) -> Callable[[], Any]:
        teacher = _new_teacher_row(app, n)
        return lambda: client.delete(f"/api/teachers/{teacher}", headers=HEADERS)

    def update(client: Any, n: int) -> Callable[[], Any]:
        body = {"name": "teacher 0006", "email": "t1-6@x.org", "years_teaching": n % 50}
        return lambda: client.put("/api/teachers/7", json=body, headers=HEADERS)

    def patch(client: Any, n: int) -> Callable[[], Any]:
        body = {"years_teaching": n % 50}
        return lambda: client.patch("/api/teachers/7", json=body, headers=HEADERS)

    return [
        Operation("list", fixed("get", "/api/teachers?limit=20&offset=40"), 200),
        Operation("get", fixed("get", "/api/teachers/7"), 200),
        Operation("create", create, 201),
        Operation("update", update, 200),
        Operation("patch", patch, 200),
        Operation("delete", delete, 204),
        Operation("nested list", fixed("get", "/api/teachers/7/students?limit=20"), 200),
        Operation("nested get", fixed("get", "/api/teachers/7/students/80"), 200),
        Operation("include", fixed("get", "/api/teachers?limit=20&include=students"), 200),
    ]


@contextmanager
def counting(engine: Any) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def check_parity(apps: dict[str, Any], counter: int) -> dict[str, dict[str, int]]:
    """Both apps answer each operation with the same status and JSON; count statements."""
    statements: dict[str, dict[str, int]] = {}
    for index, op in enumerate(operations(apps["hand"])):
        bodies = {}
        for position, (name, app) in enumerate(apps.items()):
            client = app.test_client()
            request = op.prepare(client, counter + index * len(apps) + position)
            with app.app_context():
                engine = db.engine
            with counting(engine) as seen:
                response = request()
            assert response.status_code == op.expect, (name, op.name, response.get_data())
            body = response.get_json(silent=True)
            if isinstance(body, dict):
                body.pop("id", None)
                body.pop("name", None)
                body.pop("email", None)
                body.pop("years_teaching", None)
            bodies[name] = body
            statements.setdefault(op.name, {})[name] = len(seen)
        for name, body in bodies.items():
            assert body == bodies["hand"], (op.name, name, bodies)
    return statements


def timed_rounds(
    apps: dict[str, Any], rounds: int, per_round: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Each app's median time per request of every operation, and the median over the
    rounds of resources_kit's time over each other app's in the same round (the three
    run one after another in a round, so a slow spell of a shared machine falls on all
    of a round's apps rather than on one app's median)."""
    samples: dict[str, dict[str, list[float]]] = {}
    counter = 1000
    clients = {name: app.test_client() for name, app in apps.items()}
    for round_number in range(rounds):
        order = list(apps) if round_number % 2 == 0 else list(apps)[::-1]
        for op in operations(apps["hand"]):
            for name in order:
                requests = []
                for _ in range(per_round):
                    counter += 1
                    requests.append(op.prepare(clients[name], counter))
                started = time.perf_counter()
                for request in requests:
                    response = request()
                    if response.status_code != op.expect:
                        raise AssertionError((name, op.name, response.status_code))
                elapsed = (time.perf_counter() - started) / per_round
                samples.setdefault(op.name, {}).setdefault(name, []).append(elapsed)
    timings = {
        op: {name: statistics.median(v) for name, v in by_app.items()}
        for op, by_app in samples.items()
    }
    ratios = {
        op: {
            name: statistics.median(a / b for a, b in zip(by_app["rk"], times, strict=True))
            for name, times in by_app.items()
            if name != "rk"
        }
        for op, by_app in samples.items()
    }
    return timings, ratios


def keyset(big_rows: int, repeats: int) -> tuple[float, float]:
    """Median time of the first cursor page and of a page at the end of ``big_rows``."""
    from resources_kit.pagination import cursor_binding, seal

    path = os.path.join(tempfile.gettempdir(), f"{DATABASE}_keyset_{big_rows}.sqlite3")
    url = f"sqlite:///{path}"
    engine = create_engine(url)
    with engine.connect() as connection:
        present = (
            engine.dialect.has_table(connection, "bench_teachers")
            and connection.execute(text("SELECT count(*) FROM bench_teachers")).scalar_one()
            == big_rows
        )
    if not present:
        db.metadata.drop_all(engine)
        db.metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(insert(School), [{"id": 1, "name": "s"}])
            batch = 100_000
            for start in range(0, big_rows, batch):
                connection.execute(
                    insert(Teacher),
                    [
                        {
                            "school_id": 1,
                            "name": f"t{n}",
                            "email": f"{n}@x.org",
                            "years_teaching": 1,
                        }
                        for n in range(start, min(start + batch, big_rows))
                    ],
                )
    engine.dispose()
    app = resources_kit_app(url)
    client = app.test_client()
    # A cursor positioned just before the last page, sealed as the library seals them.
    bound = cursor_binding({}, [{}])  # a top-level list, no scope
    deep = seal("bench", "cursor-teachers", {"s": "id__asc", "b": bound, "v": [big_rows - 50]})
    first_times, deep_times = [], []
    for _ in range(repeats):
        for cursor, times in ((None, first_times), (deep, deep_times)):
            query = "/api/cursor-teachers?limit=20" + (f"&cursor={cursor}" if cursor else "")
            started = time.perf_counter()
            response = client.get(query)
            times.append(time.perf_counter() - started)
            assert response.status_code == 200
            assert len(response.get_json()["items"]) == 20
    with app.app_context():
        db.engine.dispose()
    os.remove(path)
    return statistics.median(first_times), statistics.median(deep_times)


#: Most a create may slow down with one job in its transaction (published to Celery).
JOB_TARGET = 1.10
#: The broker of the job measurements (a Redis database of its own; flushed).
BROKER = os.environ.get("RESOURCES_KIT_BENCH_BROKER", "redis://127.0.0.1:6379/7")


def broker_problem(broker: str) -> str | None:
    try:
        import redis

        redis.Redis.from_url(broker, socket_connect_timeout=1).ping()
    except Exception as exc:  # no Celery, no redis-py, no server: no job measurement
        return f"{type(exc).__name__}: {exc}"
    return None


def flush_broker(broker: str) -> None:
    import redis

    client = redis.Redis.from_url(broker)
    client.flushdb()
    client.close()


def job_overhead(url: str, broker: str, rounds: int, per_round: int) -> float:
    """Median time of a create with one job (inserted in its transaction, published to
    Celery after the commit) over the same create without: interleaved round by round."""
    app = resources_kit_app(url, broker)
    client = app.test_client()
    samples: dict[str, list[float]] = {}
    counter = 0
    for round_number in range(rounds + 1):  # round 0 warms the broker connection up
        names = ["teachers", "job-teachers"]
        for name in names if round_number % 2 == 0 else names[::-1]:
            bodies = []
            for _ in range(per_round):
                counter += 1
                body = {"name": f"job {counter}", "email": f"j{counter}@x.org", "years_teaching": 1}
                bodies.append(body)
            started = time.perf_counter()
            for body in bodies:
                response = client.post(f"/api/{name}", json=body, headers=HEADERS)
                if response.status_code != 201:
                    raise AssertionError((name, response.status_code, response.get_data()))
            if round_number:
                samples.setdefault(name, []).append((time.perf_counter() - started) / per_round)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()
    flush_broker(broker)
    return statistics.median(samples["job-teachers"]) / statistics.median(samples["teachers"])


def job_row_floor(url: str, rounds: int, per_round: int) -> float:
    """The job's row alone, without Flask or the library's steps: a teacher's ``INSERT``
    and ``COMMIT`` by Core with the outbox ``INSERT`` in the same transaction, over the
    same without it. What no create with a job can beat on this machine and database."""
    from benchmarks.apps import Teacher, jobs
    from resources_kit.outbox import job_values

    app = resources_kit_app(url)
    table, job_table = Teacher.__table__, jobs.model.__table__
    create = insert(table).returning(*table.c)
    scope = {"levels": [], "url_kwargs": {}, "settings": {}, "tenant": {"school_id": 1}}
    samples: dict[str, list[float]] = {"plain": [], "with job": []}
    counter = 0
    with app.app_context():
        session = db.session
        for round_number in range(rounds + 1):
            names = list(samples) if round_number % 2 == 0 else list(samples)[::-1]
            for name in names:
                started = time.perf_counter()
                for _ in range(per_round):
                    counter += 1
                    values = {"school_id": 1, "name": f"f{counter}", "email": "f@x.org"}
                    connection = session.connection()
                    connection.execute(create, {**values, "years_teaching": 1}).one()
                    if name == "with job":
                        job = job_values(
                            task="bench.welcome",
                            arguments={"name": values["name"]},
                            scope=scope,
                            identity=None,
                            max_attempts=5,
                            ack_timeout=60.0,
                        )
                        connection.execute(job_table.insert(), [job])
                    session.commit()
                if round_number:  # round 0 warms up
                    samples[name].append((time.perf_counter() - started) / per_round)
        session.execute(job_table.delete())
        session.commit()
        session.remove()
        db.engine.dispose()
    return statistics.median(
        job / plain for job, plain in zip(samples["with job"], samples["plain"], strict=True)
    )


def relay_throughput(url: str, broker: str, count: int) -> float:
    """Jobs per second the relay republishes: ``count`` jobs left behind by a crash
    (committed, never published), all due, relayed in one run."""
    from benchmarks.apps import jobs
    from resources_kit.outbox import now

    app = resources_kit_app(url, broker)
    model = jobs.model
    rows = [
        {
            "id": f"00000000-0000-0000-0000-{n:012d}",
            "task": "bench.welcome",
            "arguments": {"name": f"n{n}"},
            "scope": {"levels": [], "url_kwargs": {}, "settings": {}, "tenant": {}},
            "tenant": "{}",
            "status": "queued",
            "attempts": 0,
            "max_attempts": 5,
            "due_at": now(),
            "created_at": now(),
        }
        for n in range(count)
    ]
    with app.app_context():
        db.session.execute(model.__table__.delete())
        db.session.execute(insert(model), rows)
        db.session.commit()
        started = time.perf_counter()
        relayed = jobs.relay()
        elapsed = time.perf_counter() - started
        assert relayed == count, relayed
        db.session.execute(model.__table__.delete())
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    flush_broker(broker)
    return count / elapsed


#: Most one bulk create of BULK_ITEMS items may take, as a share of as many single POSTs.
BULK_TARGET = 0.25
BULK_ITEMS = 100


def bulk_create(app: Any, rounds: int, counter: int = 0) -> dict[str, float]:
    """Median time of one ``POST`` of ``BULK_ITEMS`` items against ``BULK_ITEMS`` single
    ``POST``s of the same items, to the same resource, interleaved round by round; and
    the statements of one bulk create."""
    client = app.test_client()
    samples: dict[str, list[float]] = {"single": [], "bulk": []}

    def items(tag: str) -> list[dict[str, Any]]:
        return [
            {"name": f"bulk {tag} {n}", "email": f"b{tag}-{n}@x.org", "years_teaching": 2}
            for n in range(BULK_ITEMS)
        ]

    def single(tag: str) -> None:
        for body in items(tag):
            response = client.post("/api/bulk-teachers", json=body, headers=HEADERS)
            if response.status_code != 201:
                raise AssertionError(("single", response.status_code))

    def bulk(tag: str) -> None:
        response = client.post("/api/bulk-teachers", json=items(tag), headers=HEADERS)
        if response.status_code != 201 or len(response.get_json()) != BULK_ITEMS:
            raise AssertionError(("bulk", response.status_code))

    runs = {"single": single, "bulk": bulk}
    for round_number in range(rounds):
        order = ["single", "bulk"] if round_number % 2 == 0 else ["bulk", "single"]
        for name in order:
            counter += 1
            started = time.perf_counter()
            runs[name](f"{name}{counter}")
            samples[name].append(time.perf_counter() - started)
    with app.app_context():
        engine = db.engine
    with counting(engine) as seen:
        bulk("counted")
    return {
        "single": statistics.median(samples["single"]),
        "bulk": statistics.median(samples["bulk"]),
        "statements": len(seen),
    }


#: Most a resource may slow down behind one simple permission (IsAuthenticated).
PERMISSION_TARGET = 1.05


def permission_overhead(app: Any, rounds: int, per_round: int) -> dict[str, float]:
    """Median time of the same read with and without one simple permission, interleaved
    round by round like the main run: op -> ratio permitted / plain."""
    client = app.test_client()
    headers = {**HEADERS, "X-User": "bench"}
    paths = {"get": "/api/{}/7", "list": "/api/{}?limit=20&offset=40"}
    samples: dict[str, dict[str, list[float]]] = {}
    for round_number in range(rounds):
        names = ["teachers", "permitted-teachers"]
        for op, path in paths.items():
            for name in names if round_number % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                for _ in range(per_round):
                    response = client.get(path.format(name), headers=headers)
                    if response.status_code != 200:
                        raise AssertionError((name, op, response.status_code))
                elapsed = (time.perf_counter() - started) / per_round
                samples.setdefault(op, {}).setdefault(name, []).append(elapsed)
    return {
        op: statistics.median(times["permitted-teachers"]) / statistics.median(times["teachers"])
        for op, times in samples.items()
    }


def run(
    db_kind: str,
    rounds: int,
    per_round: int,
    big_rows: int,
    relay_jobs: int = 2000,
    redis_url: str | None = None,
) -> dict[str, Any]:
    url = database_url(db_kind)
    fill(url)
    apps = {"hand": hand_written_app(url), "rk": resources_kit_app(url), "floor": floor_app(url)}
    statements = check_parity(apps, 1)
    timings, ratios = timed_rounds(apps, rounds, per_round)
    permission = permission_overhead(apps["rk"], rounds, per_round)
    bulk = bulk_create(apps["rk"], max(rounds, 3))
    no_broker = broker_problem(BROKER)
    job, relay, job_floor = None, None, None
    if no_broker is None:
        job = job_overhead(url, BROKER, rounds, per_round)
        job_floor = job_row_floor(url, rounds, per_round)
        relay = relay_throughput(url, BROKER, relay_jobs)
    guard_costs = guards.measure(url, redis_url, rounds, per_round)
    for app in apps.values():
        with app.app_context():
            db.session.remove()
            db.engine.dispose()
    drop_database(url)
    first, deep = keyset(big_rows, repeats=max(rounds, 5)) if big_rows else (0.0, 0.0)
    return {
        "statements": statements,
        "timings": timings,
        "ratios": ratios,
        "permission": permission,
        "bulk": bulk,
        "job": job,
        "job_floor": job_floor,
        "relay": relay,
        "no_broker": no_broker,
        "relay_jobs": relay_jobs,
        "guards": guard_costs,
        "keyset": (first, deep),
        "db": db_kind,
        "rounds": rounds,
        "per_round": per_round,
        "big_rows": big_rows,
    }


def report(result: dict[str, Any]) -> tuple[str, bool]:
    lines = [
        f"resources_kit vs hand-written, {result['db']}: median of {result['rounds']} rounds "
        f"x {result['per_round']} requests",
        "",
        f"{'operation':<12} {'hand µs':>9} {'rk µs':>9} {'ratio':>6} {'target':>7} "
        f"{'SQL hand':>9} {'SQL rk':>7} {'max':>4}",
    ]
    ok = True
    for op, (target_ratio, target_sql) in TARGETS.items():
        hand, rk = result["timings"][op]["hand"], result["timings"][op]["rk"]
        ratio = result["ratios"][op]["hand"]
        sql = result["statements"][op]
        meets = ratio <= target_ratio and sql["rk"] <= target_sql
        ok = ok and meets
        lines.append(
            f"{op:<12} {hand * 1e6:>9.0f} {rk * 1e6:>9.0f} {ratio:>6.2f} {target_ratio:>7.2f} "
            f"{sql['hand']:>9} {sql['rk']:>7} {target_sql:>4}{'' if meets else '  MISSED'}"
        )
    lines += [
        "",
        "against the floor (benchmarks/floor.py: Core statements built once, one statement",
        "where the database allows, rows straight to JSON; the read-path issue's targets):",
        f"{'operation':<12} {'floor µs':>9} {'rk µs':>9} {'ratio':>6} {'target':>7} "
        f"{'SQL floor':>10} {'SQL rk':>7}",
    ]
    for op, target_ratio in FLOOR_TARGETS.items():
        floor, rk = result["timings"][op]["floor"], result["timings"][op]["rk"]
        ratio = result["ratios"][op]["floor"]
        sql = result["statements"][op]
        meets = ratio <= target_ratio and sql["rk"] <= sql["floor"] + 1
        lines.append(
            f"{op:<12} {floor * 1e6:>9.0f} {rk * 1e6:>9.0f} {ratio:>6.2f} {target_ratio:>7.2f} "
            f"{sql['floor']:>10} {sql['rk']:>7}{'' if meets else '  not yet'}"
        )
    lines.append("")
    for op, ratio in result["permission"].items():
        meets = ratio <= PERMISSION_TARGET
        ok = ok and meets
        lines.append(
            f"one permission (IsAuthenticated), {op}: {ratio:.3f} of the same resource "
            f"without (target {PERMISSION_TARGET:.2f}){'' if meets else '  MISSED'}"
        )
    bulk = result["bulk"]
    ratio = bulk["bulk"] / bulk["single"]
    meets = ratio <= BULK_TARGET
    ok = ok and meets
    lines.append(
        f"bulk create, {BULK_ITEMS} items in one POST: {bulk['bulk'] * 1e3:.1f} ms, "
        f"{ratio:.3f} of {BULK_ITEMS} single POSTs ({bulk['single'] * 1e3:.1f} ms; target "
        f"{BULK_TARGET:.2f}), {bulk['statements']} SQL statements{'' if meets else '  MISSED'}"
    )
    if result["job"] is None:
        lines.append(f"jobs: not measured, no broker at {BROKER} ({result['no_broker']})")
    else:
        meets = result["job"] <= JOB_TARGET
        ok = ok and meets
        lines += [
            f"a create with one job (Celery, Redis): {result['job']:.3f} of the same create "
            f"without (target {JOB_TARGET:.2f}){'' if meets else '  MISSED'}",
            f"  the job's row alone (Core INSERT + COMMIT, no Flask): {result['job_floor']:.3f} "
            "of the same without",
            f"relay: {result['relay']:,.0f} jobs/s ({result['relay_jobs']:,} due jobs "
            f"republished to Redis, {result['db']})",
        ]
    guard_lines, guards_ok = guards.report(result["guards"])
    lines += guard_lines
    ok = ok and guards_ok
    first, deep = result["keyset"]
    if result["big_rows"]:
        ratio = deep / first
        ok = ok and ratio <= 1.5
        lines += [
            "",
            f"keyset pagination, {result['big_rows']:,} rows (SQLite): first page "
            f"{first * 1e6:.0f} µs, last page {deep * 1e6:.0f} µs, ratio {ratio:.2f} "
            f"(target 1.50){'' if ratio <= 1.5 else '  MISSED'}",
        ]
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, mysql or a URL")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=40)
    parser.add_argument("--big-rows", type=int, default=1_000_000)
    parser.add_argument("--relay-jobs", type=int, default=2000)
    parser.add_argument("--short", action="store_true", help="a quick run: 3 x 10, 20k rows")
    parser.add_argument("--redis", help="the guards' shared state: a Redis URL (default memory)")
    args = parser.parse_args()
    if args.short:
        args.rounds, args.per_round, args.big_rows, args.relay_jobs = 3, 10, 20_000, 200
    result = run(args.db, args.rounds, args.per_round, args.big_rows, args.relay_jobs, args.redis)
    text_report, ok = report(result)
    print(text_report)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
