"""The package's import layers: no module-level import cycle, and no layer imports one above it.

Read from the source with `ast` (module-level imports only, those under
`if TYPE_CHECKING:` excluded), so the test needs no optional library and sees
imports that a lucky import order would hide.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

import structlin

SRC = pathlib.Path(structlin.__file__).parent

# Bottom to top. A module may import modules of its own layer and of the layers below.
LAYERS = {
    "foundations": (
        "structlin.errors",
        "structlin._checks",
        "structlin._dispatch",
        "structlin.backends",
        "structlin.component",
        "structlin.kernels",
    ),
    "core": (
        "structlin.operator",
        "structlin.pytree",
        "structlin.rules",
        "structlin._protocol",
        "structlin._convert",
        "structlin._krylov",
        "structlin.expressions",
        "structlin.structure",
        "structlin.algorithms",
        "structlin.functions",
    ),
    "structures": ("structlin.operators", "structlin.transforms"),
    "applications": (
        "structlin.mup",
        "structlin.sharding",
        "structlin.testing",
        "structlin.nn",
        "structlin.interop",
        "structlin",
    ),
}


def _modules() -> dict[str, pathlib.Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        parts = ["structlin", *path.relative_to(SRC).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _module_level_imports(body: list[ast.stmt]):
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if "TYPE_CHECKING" not in ast.unparse(node.test):
                yield from _module_level_imports(node.body)
                yield from _module_level_imports(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody):
                yield from _module_level_imports(block)


def _import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _module_level_imports(ast.parse(path.read_text()).body):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from package import submodule` imports the submodule.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def _layer(module: str) -> int:
    best, index = -1, None
    for i, prefixes in enumerate(LAYERS.values()):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, index = len(prefix), i
    assert index is not None, f"{module} is in no layer; add it to LAYERS in {__file__}"
    return index


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

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
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    assert _cycles(_import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    graph = _import_graph()
    graph["structlin.operator"].add("structlin.functions")  # the cycle this layout removed
    assert any("structlin.operator" in c for c in _cycles(graph))


@pytest.mark.parametrize("module", sorted(_modules()))
def test_no_module_imports_a_layer_above_its_own(module):
    above = {
        target: list(LAYERS)[_layer(target)]
        for target in _import_graph()[module]
        if _layer(target) > _layer(module)
    }
    assert not above, f"{module} ({list(LAYERS)[_layer(module)]}) imports {above}"


def test_every_expression_module_is_registered_by_its_package():
    """A module of `structlin/expressions/` that its `__init__` does not import would
    register its rules only if someone happened to import it."""
    init = ast.parse((SRC / "expressions" / "__init__.py").read_text())
    imported = {n.module for n in _module_level_imports(init.body) if isinstance(n, ast.ImportFrom)}
    for path in (SRC / "expressions").glob("*.py"):
        if path.stem != "__init__":
            assert f"structlin.expressions.{path.stem}" in imported, path.name
