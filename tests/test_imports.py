"""The import graph of anomaly, service and alignment has no cycle, and every module imports.

The graph is read from the source with :mod:`ast`: every ``import`` and ``from ... import``
statement, at module level and inside functions alike (an import moved into a function to
dodge a loop is still a loop), plus the modules a registry names as ``"package.module:Class"``
strings and imports by name. Imports under ``if TYPE_CHECKING:`` never run and are left
out. Then every module is imported in a fresh interpreter, dependencies first.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("anomaly", "service", "alignment")
#: ``"anomaly.detectors.patchcore:PatchCore"``: a class a registry imports by name.
_NAMED_TARGET = re.compile(r"^((?:%s)(?:\.\w+)+):\w+$" % "|".join(PACKAGES))


def _modules() -> dict[str, Path]:
    """Module name -> source file of every module of :data:`PACKAGES` (``__main__`` left out: it runs)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names a module's source imports (any depth), relative imports resolved."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            match = _NAMED_TARGET.match(node.value)
            if match:
                names.append(match.group(1))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of :data:`PACKAGES` it imports."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        targets = set()
        for dotted in _imported_names(tree, name, path.name == "__init__.py"):
            # The deepest module the name reaches: "pkg.mod.func" -> "pkg.mod".
            parts = dotted.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or ``None`` when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def leaf_first(graph: dict[str, set[str]]) -> list[str]:
    """Modules ordered so that each comes after every module it imports (the graph is acyclic)."""
    order: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> None:
        done.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in done:
                visit(nxt)
        order.append(node)

    for node in sorted(graph):
        if node not in done:
            visit(node)
    return order


def test_the_graph_sees_function_level_and_named_imports():
    source = (
        "import os\n"
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from anomaly.store import ModelStore\n"
        "from . import errors\n"
        "def f():\n"
        "    from anomaly.folds import assign_folds\n"
        "TABLE = {'x': 'anomaly.detectors.patchcore:PatchCore', 'doc': 'see anomaly.bundle'}\n"
    )
    names = _imported_names(ast.parse(source), "anomaly.crossfit", False)
    assert names == ["os", "typing.TYPE_CHECKING", "anomaly.errors", "anomaly.folds.assign_folds",
                     "anomaly.detectors.patchcore"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert {"anomaly.bundle", "anomaly.detectors.registry", "alignment.aligned", "service.api"} <= set(graph)
    # The registry's by-name table counts: a detector importing the bundle code is a loop.
    assert "anomaly.detectors.patchcore" in graph["anomaly.detectors.registry"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_every_module_imports_in_a_fresh_interpreter_leaves_first():
    graph = import_graph()
    if find_cycle(graph):
        pytest.skip("the graph has a cycle (test_no_import_cycle fails)")
    order = leaf_first(graph)
    script = (
        "import importlib, sys\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
        "        raise SystemExit(1)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, *order], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
