"""The house's floors (README, "Architecture"): each package imports only those below it, only flows/ and cli/
touch Prefect, and flows/ stays a table of contents."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: each package, and the project packages (and outside packages) it must never import, however deep
NEVER: dict[str, set[str]] = {
    "frigade": {"transforms", "lifecycle", "flows", "cli", "emulator", "polars", "prefect"},
    "transforms": {"lifecycle", "flows", "cli", "emulator", "prefect", "httpx", "aiohttp"},
    "emulator": {"transforms", "lifecycle", "flows", "cli", "polars", "prefect"},
    "lifecycle": {"flows", "cli", "prefect"},
    "flows": {"cli"},
}
#: the longest a function in flows/ may be: its flows and tasks read like a table of contents
FLOWS_FUNCTION_LINES = 40


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every module imported anywhere in the file (inside functions too), with its line."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


@pytest.mark.parametrize("package", sorted(NEVER))
def test_a_package_imports_only_the_floors_below_it(package: str) -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in _modules(package)
        for line, name in _imports(path)
        if name.split(".")[0] in NEVER[package]
    ]
    assert found == []


def test_no_function_in_flows_is_longer_than_a_table_of_contents() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {node.end_lineno - node.lineno + 1} lines"
        for path in _modules("flows")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > FLOWS_FUNCTION_LINES
    ]
    assert long == []


def test_the_layout_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The check itself: an import inside a function is found too."""
    f = tmp_path / "m.py"
    f.write_text("def f() -> None:\n    from prefect import flow\n")
    assert list(_imports(f)) == [(2, "prefect")]
