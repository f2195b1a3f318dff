"""The package's shape: the layering the architecture docs describe, checked from the
source (every import counts: type-only and function-local ones too)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import resources_kit

PACKAGE = Path(resources_kit.__file__).resolve().parent
MAX_FUNCTION_LINES = 60
#: Known to be longer; to be split (the contract's state machine is built inside it).
LONG_FUNCTIONS: set[str] = set()


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def imported(name: str, tree: ast.Module, known: set[str]) -> Iterator[str]:
    package = (
        name if name in ("resources_kit", "resources_kit.testing") else name.rpartition(".")[0]
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                target = f"{base}.{alias.name}"
                yield target if target in known else base
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def test_no_import_cycle() -> None:
    trees = modules()
    known = set(trees)
    graph = {
        name: {t for t in imported(name, tree, known) if t in known and t != name}
        for name, tree in trees.items()
    }
    # __init__ modules re-export: nothing below them may import them.
    for name, targets in graph.items():
        assert "resources_kit" not in targets, f"{name} imports the package itself"
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph[node]):
            assert state.get(target) != "open", " -> ".join([*path, node, target])
            if target not in state:
                visit(target, [*path, node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_no_module_uses_another_modules_underscore_names() -> None:
    trees = modules()
    private: dict[str, set[str]] = {}
    for name, tree in trees.items():
        private[name] = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.ClassDef)
            and node.name.startswith("_")
            and not node.name.startswith("__")
        }
    for name, tree in trees.items():
        foreign = set().union(*(names for other, names in private.items() if other != name))
        foreign -= private[name]
        for node in ast.walk(tree):
            used = None
            if isinstance(node, ast.Attribute):
                used = node.attr
            elif isinstance(node, ast.ImportFrom):
                used = next((a.name for a in node.names if a.name in foreign), None)
            assert used not in foreign, f"{name}:{node.lineno} uses {used}"


def test_no_library_function_is_long() -> None:
    for name, tree in modules().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if f"{name}.{node.name}" not in LONG_FUNCTIONS:
                    assert length <= MAX_FUNCTION_LINES, f"{name}.{node.name}: {length} lines"


def test_public_names() -> None:
    assert set(resources_kit.__all__) == {
        name for name in vars(resources_kit) if not name.startswith("_")
    } - {
        "actions",
        "apidocs",
        "bulk",
        "callbacks",
        "cli",
        "conditional",
        "policy",
        "writing",
        "database",
        "errors",
        "extension",
        "including",
        "mixins",
        "nesting",
        "options",
        "pagination",
        "parsing",
        "permissions",
        "querying",
        "representation",
        "resource",
        "routing",
        "tenancy",
        "columns",
        "components",
        "links",
        "linking",
        "linkroutes",
        "openapi",
        "testing",
        "jobs",
        "jobstatus",
        "outbox",
        "migrations",
        "workers",
        "guards",
        "caching",
        "idempotency",
        "ratelimits",
    }
    for name in ("HTTPError", "action", "Pagination", "Filtering", "Sorting"):
        assert name in resources_kit.__all__
