"""The engine's imports run one way: no module of stsr_core imports one that imports it back,
directly or through others. Read from the source with ``ast`` (nothing is imported), counting
every import: at module level and inside functions (a lazy import that only dodges a circle
is still a circle), relative and absolute."""
from __future__ import annotations

import ast
import os
from typing import Dict, List, Optional, Set

import stsr_core

PACKAGE_DIR = os.path.dirname(os.path.abspath(stsr_core.__file__))

def engine_modules() -> Dict[str, str]:
    """Module name -> file of every .py file under stsr_core (a package by its __init__)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE_DIR):
        for f in files:
            if not f.endswith(".py"):
                continue
            rel = os.path.relpath(os.path.join(folder, f), os.path.dirname(PACKAGE_DIR))
            parts = rel[:-3].split(os.sep)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = os.path.join(folder, f)
    return modules


def imported_modules(name: str, path: str, modules: Set[str]) -> Set[str]:
    """The engine's modules that module ``name`` (file ``path``) imports anywhere in it."""
    is_package = os.path.basename(path) == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out: Set[str] = set()

    def known(target: str) -> Optional[str]:
        """``target`` or the nearest enclosing module of the engine (a.b.c -> a.b)."""
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    tree = ast.parse(open(path, encoding="utf-8").read(), filename=path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [known(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` mod
            targets = [known(f"{base_name}.{a.name}") if f"{base_name}.{a.name}" in modules
                       else known(base_name) for a in node.names]
        else:
            continue
        out.update(t for t in targets if t is not None and t != name)
    return out


def import_graph() -> Dict[str, Set[str]]:
    modules = engine_modules()
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def circles(graph: Dict[str, Set[str]]) -> List[Set[str]]:
    """The groups of modules that reach each other through imports (Tarjan's strongly
    connected components of more than one module)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(group)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def cycle_in(graph: Dict[str, Set[str]], group: Set[str]) -> List[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start = min(group)
    paths = {start: [start]}
    todo = [start]
    while todo:
        v = todo.pop(0)
        for w in sorted(graph[v] & group):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                todo.append(w)
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover


def package_graph(graph: Dict[str, Set[str]]) -> Dict[str, Set[str]]:
    """The graph with each sub-package of the engine (model/, learned/, io/) as one node."""
    def node(m: str) -> str:
        return ".".join(m.split(".")[:2])
    out: Dict[str, Set[str]] = {}
    for m, targets in graph.items():
        out.setdefault(node(m), set()).update(node(t) for t in targets if node(t) != node(m))
    return out


def test_the_import_graph_sees_lazy_and_relative_imports_of_the_engine():
    graph = import_graph()
    assert "stsr_core.api" in graph["stsr_core.cli"]                  # lazy, relative
    assert "stsr_core.model.spline_base" in graph["stsr_core.learned.correction"]
    assert "stsr_core.distributed" in graph["stsr_core.model.spline_base"]  # from .. import x
    toy = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert circles(toy) == [{"a", "b", "c"}]
    assert cycle_in(toy, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_no_module_of_the_engine_imports_one_that_imports_it_back():
    graph = import_graph()
    found = circles(graph)
    assert not found, "import circles in stsr_core:\n" + "\n".join(
        "  " + " -> ".join(cycle_in(graph, g)) + f"  (group: {sorted(g)})" for g in found)


def test_the_engine_s_packages_sit_one_above_another():
    """learned/ builds on model/'s spline base, so model/ must not import learned/ (kinds.py,
    above both, wires the correction into the fast model); likewise for every package."""
    graph = package_graph(import_graph())
    assert "stsr_core.model" in graph["stsr_core.learned"]
    found = circles(graph)
    assert not found, "import circles between stsr_core's packages:\n" + "\n".join(
        "  " + " -> ".join(cycle_in(graph, g)) for g in found)
