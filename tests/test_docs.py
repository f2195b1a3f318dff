"""The code examples of the documentation run, and do what the docs say they do."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import hypothesis.stateful  # noqa: F401 - loaded once here, not inside an example's run
import pytest

import resources_kit.testing  # noqa: F401

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


RUN = [
    ("quickstart", "tour"),
    ("callbacks", "tour"),
    ("jobs", "tour"),
    ("tenancy", "tour"),
    ("errors", "check"),
    ("contract", "test_teachers_contract"),
    ("extending_lookup", "tour"),
    ("extending_soft_delete", "tour"),
    ("extending_list_argument", "tour"),
    ("extending_paginator", "tour"),
    ("extending_paginator", "tour_with_a_replica"),
    ("extending_action", "tour"),
    ("extending_write_step", "tour"),
    ("permissions_login", "tour"),
    ("permissions_jwt", "tour"),
    ("guards", "tour"),
    ("bulk", "tour"),
    ("many_to_many", "tour"),
    ("related_rows", "tour"),
]


@pytest.mark.parametrize(("name", "entry"), RUN)
def test_example_runs(name: str, entry: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))  # examples import each other, as scripts do
    monkeypatch.setattr(sys, "modules", dict(sys.modules))  # and leave no module behind
    namespace = runpy.run_path(str(EXAMPLES / f"{name}.py"), run_name=f"docs_example_{name}")
    namespace[entry]()


def test_every_example_is_included_in_a_page() -> None:
    pages = "".join(path.read_text() for path in EXAMPLES.parent.glob("*.rst"))
    for example in EXAMPLES.glob("*.py"):
        assert f"examples/{example.name}" in pages, example.name


def test_every_recipe_is_run() -> None:
    run = {name for name, _ in RUN}
    assert {path.stem for path in EXAMPLES.glob("extending_*.py")} <= run


def test_every_public_name_is_in_the_api_reference_with_a_docstring() -> None:
    import inspect

    import resources_kit
    from resources_kit import testing

    reference = (EXAMPLES.parent / "api.rst").read_text()
    for module in (resources_kit, testing):
        for name in module.__all__:
            obj = getattr(module, name)
            assert inspect.getdoc(obj), name
            if module is testing:
                assert name in reference, name
            else:
                assert f"resources_kit.{name}\n" in reference, name
            members = vars(obj).items() if inspect.isclass(obj) else ()
            for attr, value in members:
                function = getattr(value, "__func__", value)
                if not attr.startswith("_") and inspect.isfunction(function):
                    assert inspect.getdoc(getattr(obj, attr)), f"{name}.{attr}"
