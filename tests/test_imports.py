"""The project's own modules import one way: no module imports one that imports it back, directly or
through a chain. Imports are read from the source with ``ast``, wherever they are written (module
level, inside functions, under ``TYPE_CHECKING``): a cycle hidden in a function is still a cycle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("frigade", "transforms", "emulator", "lifecycle", "flows", "cli", "samples")

#: Cycles allowed, each as the set of modules that import one another: none. The list stays so that a
#: cycle someone must live with for a while is named here, not hidden; one listed that is gone fails.
KNOWN_CYCLES: list[frozenset[str]] = []


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported(name: str, path: Path, modules: dict[str, Path]) -> Iterator[str]:
    """The project modules ``name`` imports: for ``from a import b`` the module ``a.b`` when there is
    one, else ``a``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        yield from (t for t in targets if t in modules and t != name)


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: set(imported(name, path, modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan), in a stable order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found, key=sorted)


def a_cycle(graph: dict[str, set[str]], members: frozenset[str]) -> list[str]:
    """One import chain inside ``members`` from its first module back to itself, for the message."""
    start = min(members)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return [*paths[v], start]
            if w not in paths:
                paths[w] = [*paths[v], w]
                queue.append(w)
    raise AssertionError(f"{sorted(members)} is not a cycle")


def test_the_finder_sees_cycles_through_functions_and_chains() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]
    assert a_cycle(graph, frozenset({"a", "b", "c"})) == ["a", "b", "c", "a"]


def test_imports_are_read_wherever_they_are_written(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "import transforms.schema\n"
        "from transforms import state\n"
        "from . import codes\n"
        "from .spec import SourceMapping\n"
        "if TYPE_CHECKING:\n    from transforms.wide import WideRule\n"
        "def f() -> None:\n    from transforms.derive import derive\n"
    )
    path = tmp_path / "x.py"
    path.write_text(source, encoding="utf-8")
    modules = {m: path for m in ("transforms.x", "transforms.schema", "transforms.state", "transforms.codes")}
    modules |= {m: path for m in ("transforms.spec", "transforms.wide", "transforms.derive", "transforms")}
    assert sorted(imported("transforms.x", path, modules)) == [
        "transforms.codes",
        "transforms.derive",
        "transforms.schema",
        "transforms.spec",
        "transforms.state",
        "transforms.wide",
    ]


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = import_graph()
    assert "transforms.mapping" in graph
    assert "frigade.rules" in graph
    new = [c for c in cycles(graph) if c not in KNOWN_CYCLES]
    assert not new, "import cycles: " + "; ".join(" -> ".join(a_cycle(graph, c)) for c in new)


def test_the_known_cycles_are_still_there() -> None:
    """A known cycle that has been broken comes off the list, so that it cannot come back unseen."""
    found = cycles(import_graph())
    gone = [sorted(c) for c in KNOWN_CYCLES if c not in found]
    assert not gone, f"no longer cycles, remove them from KNOWN_CYCLES: {gone}"


def test_transforms_has_no_cycle_and_mapping_is_its_top() -> None:
    graph = import_graph()
    assert not [c for c in cycles(graph) if any(m.startswith("transforms.") for m in c)]
    importers = sorted(m for m, deps in graph.items() if "transforms.mapping" in deps and m.startswith("transforms."))
    assert importers == ["transforms.analysis", "transforms.inspect"]
