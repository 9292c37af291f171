"""The house has no import cycle: every import in agent/ (those for types only too) runs
down, so a module can be read, and tested, with what is below it alone (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "agent"


def _module(path: Path) -> str:
    parts = path.relative_to(AGENT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in known)
    return found


def graph() -> dict[str, set[str]]:
    files = {_module(p): p for p in AGENT.rglob("*.py")}
    known = set(files)
    return {name: _imports(path, known) - {name} for name, path in files.items()}


def cycle_in(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_a_cycle_is_found() -> None:
    assert cycle_in({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle_in({"a": {"b"}, "b": set()}) is None


def test_agent_has_no_import_cycle() -> None:
    edges = graph()
    assert "agent.collectors.docker" in edges["agent.collectors.manager"]  # it reads imports
    # A package's __init__ that re-exports its modules is not a cycle of theirs.
    for name in [n for n in edges if n.count(".") >= 1]:
        package = name.rsplit(".", 1)[0]
        edges[name].discard(package)
    assert cycle_in(edges) is None, " -> ".join(cycle_in(edges) or [])
