"""No import cycles in the package: every ``import`` of ``focuskern/**/*.py`` -- at module level *and*
inside functions (an import moved into a function still closes a cycle, it only hides it) -- read
statically with ``ast``, as a graph of modules; the test fails on any strongly connected component of
more than one module, or a module that imports itself.  ``if TYPE_CHECKING:`` blocks are left out."""
from __future__ import annotations

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "focuskern")


def module_files(root: str = PACKAGE) -> dict[str, str]:
    """``{dotted module name: path}`` of every ``.py`` file under ``root`` (packages by their ``__init__``)."""
    base = os.path.dirname(root)
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, base)[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING"
                                         or getattr(test, "attr", None) == "TYPE_CHECKING")


def _imports(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if _type_checking_only(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def extension_modules(root: str = PACKAGE) -> set[str]:
    """Dotted names of the compiled modules under ``root`` (``focuskern._C``): leaves, they import nothing."""
    base = os.path.dirname(root)
    return {".".join(os.path.relpath(os.path.join(folder, name), base).split(".")[0].split(os.sep))
            for folder, _, files in os.walk(root) for name in files if name.endswith((".so", ".pyd"))}


def import_graph(files: dict[str, str], leaves: frozenset[str] = frozenset()) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``; ``from A import b`` points at ``A.b`` when that is
    a module of the package, at nothing when it is one of the compiled ``leaves``, else at ``A``."""
    graph = {}
    for module, path in files.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        edges = set()
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    parts = package.split(".")
                    source = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in files else source
                           for a in node.names if f"{source}.{a.name}" not in leaves]
            edges |= {t for t in targets if t in files}
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with a cycle (Tarjan), each sorted; self-imports included."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycle():
    graph = import_graph(module_files(), frozenset(extension_modules()))
    assert "focuskern.experiments.coverage" in graph and graph["focuskern.experiments.coverage"]
    assert cycles(graph) == [], "import cycles (move the shared code into a lower module)"


@pytest.mark.parametrize("graph, want", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}, [["a", "b", "c"]]),
    ({"a": {"a"}, "b": set()}, [["a"]]),
    ({"a": {"b"}, "b": set()}, []),
])
def test_the_cycle_finder_finds_cycles(graph, want):
    assert cycles(graph) == want


def test_imports_inside_functions_count(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n    return a\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import f\n"
                              "from . import _ext\n")
    (pkg / "_ext.so").write_bytes(b"")
    graph = import_graph(module_files(str(pkg)), frozenset(extension_modules(str(pkg))))
    assert graph["pkg.c"] == set()
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
