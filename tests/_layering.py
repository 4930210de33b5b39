"""The import-layering checker behind tests/test_layering.py: pure functions over any directory of Python files.

``check(roots)`` reads every module under ``roots`` (a mapping of folder -> the package name it installs as) with
``ast``, builds the graph of imports between those modules, and returns the import cycles and the imports that break
the layering in ``LAYERS``. Nothing is imported or executed, so it runs as well over a tmp_path tree as over the
checkout.

What counts as an import of module M by module A (every one of them, wherever it sits in A):
  * ``import M`` / ``import M as x`` and ``from M import name`` at module level, inside functions, classes, ``try``
    blocks and ``if TYPE_CHECKING:`` blocks alike. Typing-only imports count: they are few, all of them already obey
    the layering, and a type that a lower layer needs from a higher one is a sign that the type lives in the wrong
    layer, not a reason to bend the rule;
  * ``from P import name`` where ``P.name`` is itself a module counts as importing ``P.name`` (``from optbench
    import commands``), otherwise as importing ``P``;
  * relative imports (``from . import x``, ``from ..store import paths``), resolved against A's package;
  * ``importlib.import_module("literal.name")`` with a literal string.
Only imports of modules under the scanned roots make edges (torch, numpy, ... are ignored). An imported name that
is not a scanned module (a module being written, a typo) resolves to its longest scanned prefix. The implicit import
of parent packages (importing ``a.b.c`` runs ``a/__init__`` and ``a/b/__init__``) makes no edge, and a module that
imports itself (``from optbench import data`` inside optbench/data/__init__.py) makes none either.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Layer:
    """One layer: its name, its rank (lowest first) and the modules it holds.

    ``modules`` are module names: ``"optbench.api"`` is that module only, ``"optbench.store.*"`` is the package and
    everything below it. A ranked layer may import its own layer and every layer of a LOWER rank; two layers of the
    same rank are peers and may not import each other. A layer with ``rank=None`` stands outside the ladder (the
    plugin packages): it may import exactly its own layer and the layers named in ``may_import``, and no ranked
    layer may import it.
    """

    name: str
    rank: int | None
    modules: tuple[str, ...]
    may_import: tuple[str, ...] = ()

    def holds(self, module: str) -> bool:
        for pattern in self.modules:
            if pattern.endswith(".*"):
                package = pattern[:-2]
                if module == package or module.startswith(package + "."):
                    return True
            elif module == pattern:
                return True
        return False


# The layers of optbench, lowest first (docs/ARCHITECTURE.md). Keep this list and the
# docstrings of optbench/*/__init__.py in step.
LAYERS: tuple[Layer, ...] = (
    # optbench.options (config fields that carry their command-line flag and bounds) is core like the other
    # top-level modules: it imports only optbench.errors, and both the engine and the cli read it.
    Layer("core", 0, ("optbench", "optbench.api", "optbench.errors", "optbench.schedules", "optbench.console",
                      "optbench.options")),
    Layer("store", 1, ("optbench.store.*",)),
    Layer("plugins", 2, ("optbench.plugins.*", "optbench.data.*")),
    Layer("parallel", 3, ("optbench.parallel.*",)),
    Layer("engine", 4, ("optbench.engine.*",)),
    Layer("sweep", 5, ("optbench.sweep.*",)),
    Layer("scoring", 5, ("optbench.scoring.*",)),
    Layer("report", 6, ("optbench.report.*",)),
    Layer("recipes", 7, ("optbench.recipes.*",)),
    Layer("commands", 8, ("optbench.commands.*",)),
    Layer("cli", 9, ("optbench.cli.*", "optbench.__main__")),
    # The built-in plugins install beside the engine (workloads/ as optbench_workloads, submissions/ as
    # optbench_submissions) and see only what a third-party plugin sees: the core (api, errors, schedules),
    # the plugin helpers (optbench.plugins: seesaw, averaging, wrapping, registry.entry_points; optbench.data)
    # and the store. They never import each other, and the engine finds them through entry points only.
    Layer("workloads", None, ("optbench_workloads.*",), may_import=("core", "store", "plugins")),
    Layer("submissions", None, ("optbench_submissions.*",), may_import=("core", "store", "plugins")),
)


@dataclass(frozen=True)
class Edge:
    importer: str
    imported: str
    path: Path
    line: int


@dataclass
class Report:
    modules: dict[str, Path] = field(default_factory=dict)
    edges: list[Edge] = field(default_factory=list)
    cycles: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.cycles and not self.violations


def collect_modules(roots: Mapping[Path, str]) -> dict[str, tuple[Path, bool]]:
    """Every ``*.py`` under each root, as ``{module name: (file, is_package)}``."""
    modules: dict[str, tuple[Path, bool]] = {}
    for root, package in roots.items():
        root = Path(root)
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root)
            if any(part == "__pycache__" or part.startswith(".") for part in rel.parts):
                continue
            parts = [package, *rel.with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            if is_package:
                parts.pop()
            modules[".".join(parts)] = (path, is_package)
    return modules


def _resolve(name: str, known: set[str], tops: set[str]) -> str | None:
    """``name`` if it is a scanned module, else its longest scanned prefix; None outside the scanned packages."""
    if name.split(".")[0] not in tops:
        return None
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, is_package: bool, source: str, known: Iterable[str]) -> list[tuple[str, int]]:
    """The scanned modules that ``module`` imports, with the line of each import (see the module docstring)."""
    known = set(known)
    tops = {name.split(".")[0] for name in known}
    package = module if is_package else module.rpartition(".")[0]
    found: list[tuple[str, int]] = []

    def add(name: str | None, line: int) -> None:
        target = _resolve(name, known, tops) if name else None
        if target is not None and target != module:
            found.append((target, line))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                add(sub if alias.name != "*" and sub in known else base, node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            first = node.args[0]
            if called == "import_module" and isinstance(first, ast.Constant) and isinstance(first.value, str):
                add(first.value, node.lineno)
    return sorted(found, key=lambda hit: hit[1])  # ast.walk is breadth first: report each pair's first line


def layer_of(module: str, layers: Iterable[Layer] = LAYERS) -> Layer | None:
    for layer in layers:
        if layer.holds(module):
            return layer
    return None


def may_import(importer: Layer, imported: Layer) -> bool:
    if imported.name == importer.name:
        return True
    if importer.rank is None:
        return imported.name in importer.may_import
    return imported.rank is not None and imported.rank < importer.rank


def _label(layer: Layer) -> str:
    return f"layer {layer.rank} {layer.name}" if layer.rank is not None else f"plugin package {layer.name}"


def find_cycles(graph: Mapping[str, Iterable[str]]) -> list[tuple[list[str], list[str]]]:
    """For each strongly connected component of more than one module: one shortest cycle through its first module
    in sorted order (``[a, b, ..., a]``) and the component's modules, sorted (fixing that one cycle may leave
    another inside the same component)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0

    nodes = sorted(set(graph) | {t for targets in graph.values() for t in targets})
    for start in nodes:  # Tarjan, iteratively (no recursion limit to worry about)
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)

    cycles = []
    for component in sorted(components, key=min):
        first = min(component)
        previous: dict[str, str | None] = {first: None}
        queue = deque([first])
        while queue:  # breadth first from `first` back to `first`, inside the component: a shortest cycle
            node = queue.popleft()
            children = sorted(graph.get(node, ()))
            if first in children:
                path = [node]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                cycles.append((list(reversed(path)) + [first], sorted(component)))
                break
            for child in children:
                if child in component and child not in previous:
                    previous[child] = node
                    queue.append(child)
    return cycles


def check(
    roots: Mapping[Path, str],
    layers: tuple[Layer, ...] = LAYERS,
    allowed: Iterable[tuple[str, str]] = (),
) -> Report:
    """Scan ``roots`` and report cycles and layering violations (``allowed``: (importer, imported) pairs let pass)."""
    allowed = set(allowed)
    found = collect_modules(roots)
    report = Report(modules={name: path for name, (path, _) in found.items()})
    shown = {}  # each file as its root's folder name and the path below it: optbench/report/html.py
    for root in roots:
        for name, (path, _) in found.items():
            if Path(path).is_relative_to(Path(root)):
                shown[name] = Path(path).relative_to(Path(root).parent)
    graph: dict[str, set[str]] = {name: set() for name in found}
    for name, (path, is_package) in sorted(found.items()):
        for target, line in imports_of(name, is_package, path.read_text(encoding="utf-8"), found):
            report.edges.append(Edge(name, target, path, line))
            graph[name].add(target)

    for name in sorted(found):
        if layer_of(name, layers) is None:
            report.violations.append(f"{name} ({shown[name]}) is in no layer: add it to LAYERS")

    seen: set[tuple[str, str]] = set()
    for edge in report.edges:
        pair = (edge.importer, edge.imported)
        if pair in seen or pair in allowed:
            continue
        seen.add(pair)
        a, b = layer_of(edge.importer, layers), layer_of(edge.imported, layers)
        if a is None or b is None or may_import(a, b):
            continue
        peer = "its peer " if a.rank is not None and a.rank == b.rank else ""
        report.violations.append(
            f"{edge.importer} -> {edge.imported} ({_label(a)} imports {peer}{_label(b)})"
            f"  [{shown[edge.importer]}:{edge.line}]"
        )

    for cycle, component in find_cycles(graph):
        text = " -> ".join(cycle)
        if len(component) > len(cycle) - 1:
            text += f"  (one of the cycles among {len(component)} modules: {', '.join(component)})"
        report.cycles.append(text)
    return report
