"""No import cycles among the core's modules, counting imports inside functions too.

A function-level import only hides a cycle from the interpreter: the two modules still
depend on each other, and the order they load in decides whether a change breaks them.
The graph is read from the source with :mod:`ast`, so nothing here imports torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "mpqcore"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _resolve(name: str, known: set[str]) -> str | None:
    """The longest known module that ``name`` is, or lies in (``a.b.func`` -> ``a.b``)."""
    while name:
        if name in known:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every core module that ``module`` imports, anywhere in its source.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module,
    else of ``pkg``. Imports under ``if TYPE_CHECKING:`` are skipped: they never run.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [f"{prefix}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, known)
            if target is not None and target != module:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {m: _imports(m, p, known) for m, p in modules.items()}
    # A package's __init__ runs before any of its submodules: importing mpqcore.x.y
    # imports mpqcore.x first. That edge is the interpreter's, not a design choice,
    # so only imports written in the source count.
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _path(graph: dict[str, set[str]], component: list[str]) -> str:
    """One cycle through the component, for the failure message."""
    members = set(component)
    start = component[0]
    seen = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & members):
            if w == start:
                return " -> ".join([*seen[v], start])
            if w not in seen:
                seen[w] = [*seen[v], w]
                queue.append(w)
    return " -> ".join(component)


def test_the_graph_sees_function_level_imports(tmp_path):
    # The checker itself: a cycle made only by an import inside a function is found.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import g\n")
    (pkg / "b.py").write_text("def g():\n    from pkg import a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n")
    known = {"pkg", "pkg.a", "pkg.b", "pkg.c"}
    graph = {m: _imports(m, pkg / (m.split(".")[-1] + ".py"), known) for m in ("pkg.a", "pkg.b", "pkg.c")}
    assert graph == {"pkg.a": {"pkg.b"}, "pkg.b": {"pkg.a"}, "pkg.c": set()}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_no_import_cycles_in_the_core():
    graph = import_graph()
    assert "mpqcore.types" in graph and "mpqcore.errors" in graph
    found = cycles(graph)
    if found:
        pytest.fail("import cycles among mpqcore modules:\n" + "\n".join(_path(graph, c) for c in found))
