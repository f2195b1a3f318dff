"""The three traced requests cross from one module of the library into another at no more
call sites than their budgets (``benchmarks/callsites.py`` prints them, ``-v`` lists each):
about two thirds of what they crossed before the write path left ``Resource``."""

from __future__ import annotations

import pytest

from benchmarks.callsites import BUDGETS, measure


@pytest.fixture(scope="module")
def crossings() -> dict[str, set[tuple[str, int, str]]]:
    return measure()


@pytest.mark.parametrize("request_name", sorted(BUDGETS))
def test_a_traced_request_stays_within_its_budget(
    crossings: dict[str, set[tuple[str, int, str]]], request_name: str
) -> None:
    sites = crossings[request_name]
    listed = "\n".join(f"{caller}:{line} -> {callee}" for caller, line, callee in sorted(sites))
    assert len(sites) <= BUDGETS[request_name], listed
    assert sites, "the tracer saw no call at all: it measures nothing"
