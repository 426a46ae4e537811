"""The import-layer checker: which first-party modules import which, and the imports that break the layers.

Layers run from the bottom (pure decision logic) to the top (the command line). A module may import its own
layer and the layers below it, never one above, and no chain of imports may lead back to where it started.
Imports inside functions and under `TYPE_CHECKING` count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

# Bottom first. A module belongs to the layer of the longest prefix that names it; a prefix ending in "$" names
# that one module only, so `cluster` (its docstring) has a layer while a new `cluster/x.py` has none until placed.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("policies",),
    ("cluster$", "cluster.config", "cluster.telemetry", "cluster.store", "cluster.evaluation"),
    ("cluster.adaptation",),
    ("deployments",),
    ("cluster.operations",),
    ("bench",),
    ("cluster.cli",),
)
ROOTS = ("policies", "cluster", "deployments", "bench")


@dataclass(frozen=True)
class Violation:
    importer: str
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.importer} -> {self.imported}: {self.why}"


def module_files(root: Path, packages: Iterable[str] = ROOTS) -> dict[str, Path]:
    """Every module under the given top-level packages, by dotted name."""
    modules: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported_names(module: str, path: Path, tree: ast.AST) -> Iterable[str]:
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the first-party modules it imports (a name imported from a package counts as the package
    unless it is a submodule)."""
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in _imported_names(module, path, ast.parse(path.read_text(), str(path))):
            if name in modules and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def layer_of(module: str, layers: Sequence[Sequence[str]] = LAYERS) -> int:
    best, best_length = -1, -1
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            exact = prefix.endswith("$")
            names = module == prefix.removesuffix("$") or (not exact and module.startswith(prefix + "."))
            if names and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    if best < 0:
        raise ValueError(f"{module} is in no layer: add its package to LAYERS")
    return best


def upward_imports(graph: dict[str, set[str]], layers: Sequence[Sequence[str]] = LAYERS) -> list[Violation]:
    return [
        Violation(importer, imported, f"layer {layer_of(importer, layers)} imports layer {layer_of(imported, layers)}")
        for importer, targets in sorted(graph.items()) for imported in sorted(targets)
        if layer_of(imported, layers) > layer_of(importer, layers)
    ]


def _is_ancestor_package(module: str, other: str) -> bool:
    return other.startswith(module + ".")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each strongly connected set of two or more modules (Tarjan). A package importing its own submodule
    (an `__init__` re-export) is not a cycle by itself, so those edges are left out."""
    edges = {module: {t for t in targets if not _is_ancestor_package(module, t)} for module, targets in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in sorted(edges.get(module, ())):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles
