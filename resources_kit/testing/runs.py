"""Settings for running the CRUD contract in a test suite, chosen so that a contract that
finds a bug reports it, shrunk, within about half a minute (see the Testing page for what
each setting costs)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.internal.conjecture import engine
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

#: Generated runs per test: a passing contract costs about this many times one run.
MAX_EXAMPLES = 50
#: Steps (rules) per run: each costs a few requests; fewer make runs and shrinking cheaper.
STEPS = 10
#: Seconds Hypothesis may spend shrinking a failure before it reports what it has.
SHRINK_SECONDS = 10


def contract_settings(**changes: Any) -> settings:
    """The Hypothesis settings ``run_contract()`` uses, with ``changes`` on top (any
    ``hypothesis.settings`` argument: ``contract_settings(max_examples=200)``).

    ``max_examples=50`` runs of ``stateful_step_count=10`` steps; no per-example
    ``deadline`` (a run of ten steps makes dozens of requests, which a loaded CI machine
    can slow at will); ``report_multiple_bugs=False`` (the first failure found is shrunk
    and reported; by default Hypothesis looks for more for up to ten seconds); the phases
    ``explicit``, ``reuse`` (a failure saved in the example database is tried first, so a
    re-run fails at once), ``generate`` and ``shrink``, not ``explain`` (which re-runs the
    shrunk failure many times more to comment on it); the health checks that a slow,
    filtered generator trips are off."""
    base = settings(
        max_examples=MAX_EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        report_multiple_bugs=False,
        phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    return settings(base, **changes)


@contextlib.contextmanager
def shrinking_for(seconds: float) -> Iterator[None]:
    """Let Hypothesis shrink a failure for at most ``seconds`` (its own limit is five
    minutes, a module constant it documents as the one to change); restored after."""
    before = getattr(engine, "MAX_SHRINKING_SECONDS", None)
    if before is None:  # a Hypothesis without the limit: shrink as it does
        yield
        return
    engine.MAX_SHRINKING_SECONDS = seconds  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = before


def run_contract(
    contract: type[RuleBasedStateMachine],
    settings: settings | None = None,
    *,
    shrink_seconds: float = SHRINK_SECONDS,
) -> None:
    """Run ``contract`` (what ``crud_contract()`` built) as a test: with
    ``contract_settings()`` unless ``settings`` are given, shrinking a failure for at most
    ``shrink_seconds`` before it is reported (the sentence naming the request and the rule,
    then the requests of the shrunk run)."""
    with shrinking_for(shrink_seconds):
        run_state_machine_as_test(
            contract, settings=settings if settings is not None else contract_settings()
        )
