"""No module of quart_chat imports another in a loop, at run time.

Function-level imports count (a lazy import that exists to dodge a cycle is still a
cycle); imports under ``if TYPE_CHECKING:`` do not, since they never run.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "quart_chat"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


class _Imports(ast.NodeVisitor):
    """The quart_chat modules one module imports when it runs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.found: set[str] = set()

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if getattr(test, "id", getattr(test, "attr", None)) == "TYPE_CHECKING":
            for child in node.orelse:
                self.visit(child)
            return
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.found.update(alias.name for alias in node.names if alias.name in MODULES)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level:
            here = self.name.split(".")
            if MODULES[self.name].name != "__init__.py":
                here = here[:-1]
            base = here[: len(here) - node.level + 1]
            module = ".".join(base + ([module] if module else []))
        if module not in MODULES:
            return
        for alias in node.names:
            submodule = f"{module}.{alias.name}"
            # ``from . import metrics`` imports the submodule, not the package's own code
            self.found.add(submodule if submodule in MODULES else module)


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        visitor = _Imports(name)
        visitor.visit(ast.parse(path.read_text()))
        graph[name] = visitor.found - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_of_the_package_imports_another_in_a_loop():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_loop_through_a_function_level_import():
    """The check can fail: two modules importing each other, one of them lazily."""
    graph = {"a": {"b"}, "b": set(), "c": set()}
    assert cycles(graph) == []
    graph["b"].add("a")
    assert cycles(graph) == [["a", "b"]]
    visitor = _Imports("quart_chat.session")
    visitor.visit(ast.parse("def f():\n    from . import app\n"))
    assert visitor.found == {"quart_chat.app"}
