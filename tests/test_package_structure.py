"""The shape of the package a student reads: modules of one concern, no import circles, no private reach-ins.

Checked on the source with ``ast`` (imports inside functions count too), so a circle hidden behind a lazy import
is still found.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "labutils"
MAX_LINES = 720  # "about 700": a module longer than this mixes concerns and should be split


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> list[tuple[int, str, str]]:
    """``(line, module, imported name)`` for every ``labutils`` import in module ``name``, resolved to modules."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                found.append((node.lineno, base, alias.name))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name, "") for alias in node.names)
    return [(line, mod, what) for line, mod, what in found if mod.split(".")[0] == "labutils"]


def import_graph() -> dict[str, set[str]]:
    """Module -> the labutils modules it imports (``from pkg import submodule`` counts as the submodule)."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name in MODULES:
        for _, mod, what in imports_of(name):
            target = f"{mod}.{what}" if f"{mod}.{what}" in MODULES else mod
            # The package root only offers seeding, devices and profiles; it imports no submodule back.
            if target in MODULES and target not in (name, "labutils"):
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_checks_find_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    assert "labutils.train" in MODULES and "labutils.util" in import_graph()["labutils.train"]


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_private_name_imported_from_another_module():
    reach_ins = [
        f"{MODULES[name].relative_to(PACKAGE.parent)}:{line}: from {mod} import {what}"
        for name in MODULES
        for line, mod, what in imports_of(name)
        if what.startswith("_") and not what.startswith("__")
    ]
    assert reach_ins == []


def test_no_private_attribute_of_another_module():
    """``from labutils import corruptions as C`` then ``C._helper(...)`` is a reach-in too."""
    reach_ins = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("labutils")
            for alias in node.names
            if f"{node.module}.{alias.name}" in MODULES
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                reach_ins.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.value.id}.{node.attr}")
    assert reach_ins == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short_enough_to_read(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concern (limit {MAX_LINES})."
