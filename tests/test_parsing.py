"""Request bodies: strict JSON, whatever the bytes hold."""

from __future__ import annotations

from typing import Any

import pytest

from .test_errors import assert_problem, snapshot


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ('{"name": "\\ud800"}', "surrogate"),  # a lone surrogate escape: not text
        ('{"name": "ok", "region": "\\udfff"}', "surrogate"),
        ('{"name": "ok", "years_teaching": 1e400}', "too large"),
        ('{"name": "ok", "years_teaching": -1e400}', "too large"),
        ('{"name": "ok", "years_teaching": NaN}', "NaN"),
        ('{"name": "ok", "years_teaching": ' + "9" * 5000 + "}", "digits"),
    ],
)
def test_bodies_that_are_not_valid_data_are_400(client: Any, raw: str, says: str) -> None:
    response = client.post("/api/teachers", data=raw, content_type="application/json")
    problem = assert_problem(response, 400)
    assert says in problem["detail"]
    assert "set_int_max_str_digits" not in problem["detail"]
    assert snapshot()["teachers"] == []


def test_surrogate_pairs_are_text(client: Any) -> None:
    raw = '{"name": "\\ud83d\\ude00"}'  # one emoji, written as a pair
    response = client.post("/api/teachers", data=raw, content_type="application/json")
    assert response.status_code == 201
    assert response.json["name"] == "\U0001f600"
