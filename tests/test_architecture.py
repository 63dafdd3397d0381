"""The house rules the layer contracts (`lint-imports`, pyproject.toml) do not cover: no
import circle between modules, no private name imported across modules, a short top level."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "san_search"


def _module(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports() -> dict[str, set[tuple[str, str]]]:
    """module -> {(imported module, imported name or '')}, function-level imports included."""
    out: dict[str, set[tuple[str, str]]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        mod, found = _module(path), set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    found.add((node.module, a.name))
            elif isinstance(node, ast.Import):
                found.update((a.name, "") for a in node.names)
        out[mod] = {(m, n) for m, n in found if m.startswith("san_search")}
    return out


def test_no_private_name_is_imported_from_another_module() -> None:
    bad = [f"{mod} imports {name} from {src}" for mod, imps in _imports().items()
           for src, name in imps if name.startswith("_") and not name.startswith("__")]
    assert not bad, bad


def _edges() -> dict[str, set[str]]:
    imps = _imports()
    modules = set(imps)
    edges: dict[str, set[str]] = {}
    for mod, pairs in imps.items():
        for src, name in pairs:
            target = f"{src}.{name}" if f"{src}.{name}" in modules else src
            if target in modules and target != mod and not mod.startswith(target + "."):
                edges.setdefault(mod, set()).add(target)
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (found := visit(n)):
                return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_no_import_circle_between_modules() -> None:
    # a package's __init__ importing its own modules is its face, not a circle
    edges = {m: {n for n in ns if not n.startswith(m + ".")} for m, ns in _edges().items()}
    cycle = _cycle(edges)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_circle_finder_finds_a_planted_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


@pytest.mark.parametrize("limit", [13])
def test_the_top_level_keeps_about_a_dozen_modules(limit: int) -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= limit, top


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > 60:
                    long.append(f"{_module(path)}.{node.name}: {lines} lines")
    assert not long, long
