"""How long the CRUD contract takes: 40 examples on the quickstart's small resource, SQLite.

    python benchmarks/contract_speed.py          # median of 3 runs; exits 1 over the target

The time of a passing run is what a user's CI pays on every build; the target is under
10 seconds. It also reports where the time goes: the Flask requests the contract makes,
and the rest (Hypothesis generating data, the state machine, emptying the table).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "docs" / "examples"))
sys.path.insert(0, str(ROOT))

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis.stateful import run_state_machine_as_test  # noqa: E402
from quickstart import Teacher, TeacherResource, create_app, db  # noqa: E402

from resources_kit.testing import crud_contract  # noqa: E402

EXAMPLES = 40
TARGET_SECONDS = 10.0


class TimedClient:
    """The app's test client, timing every request it makes."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.seconds = 0.0
        self.requests = 0

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.client, method)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started
                self.requests += 1

        return timed


def one_run() -> tuple[float, float, int]:
    app = create_app()
    with app.app_context():

        def empty_table() -> None:
            db.session.query(Teacher).delete()
            db.session.commit()

        client = TimedClient(app.test_client())
        machine = crud_contract(
            client, "/api/teachers", resource=TeacherResource, setup=empty_table
        )
        started = time.perf_counter()
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
        return time.perf_counter() - started, client.seconds, client.requests


def main() -> int:
    runs = [one_run() for _ in range(3)]
    total = statistics.median(run[0] for run in runs)
    requests_time = statistics.median(run[1] for run in runs)
    count = int(statistics.median(run[2] for run in runs))
    print(f"CRUD contract, {EXAMPLES} examples, SQLite: median of 3 runs {total:.1f} s")
    print(
        f"  {count} requests taking {requests_time:.1f} s; the rest {total - requests_time:.1f} s"
    )
    print(f"  target {TARGET_SECONDS:.0f} s{'' if total <= TARGET_SECONDS else '  MISSED'}")
    return 0 if total <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
