"""The package's layering, enforced: no import cycle between modules, and no import against the layers.

Layers, lowest first (docs/ARCHITECTURE.md; the table is ``LAYERS`` in tests/_layering.py): 0 core (``optbench``,
``optbench.api``, ``.errors``, ``.schedules``, ``.console``, ``.options``), 1 store, 2 plugins (``optbench.plugins``
and ``optbench.data``), 3 parallel, 4 engine, 5 sweep and 5 scoring (peers: neither imports the other), 6 report,
7 recipes, 8 commands, 9 cli (with ``optbench.__main__``). A module imports its own layer and lower layers only.
The built-in plugins (workloads/ as ``optbench_workloads``, submissions/ as ``optbench_submissions``) import only
the core, the store and the plugins layer, never each other, and nothing in ``optbench`` imports them.

Every import counts: module level and inside functions (a lazy import is still a dependency, only a later one),
``from P import m`` of a submodule, relative imports, literal ``importlib.import_module`` calls, and typing-only
imports under ``if TYPE_CHECKING:`` (they are few and all legal today; a type a lower layer needs from a higher one
belongs in the lower one). The checker reads files with ``ast`` and imports nothing; the last tests plant an upward
import and a circle in a throwaway tree to show that it sees them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._layering import LAYERS, check, find_cycles, layer_of

REPO = Path(__file__).resolve().parent.parent
ROOTS = {REPO / "optbench": "optbench", REPO / "workloads": "optbench_workloads",
         REPO / "submissions": "optbench_submissions"}

# Imports let through despite the rule, as (importer, imported) module pairs, each with the reason it is tolerated
# and what would remove it. Keep it empty: fix the code instead (move the shared piece down a layer, or pass a
# function in from above).
ALLOWED: tuple[tuple[str, str], ...] = ()


@pytest.fixture(scope="module")
def report():
    return check(ROOTS, allowed=ALLOWED)


def test_the_scan_sees_the_package(report):
    """Guard against a checker that passes because it read nothing: known modules and known edges are there."""
    assert {"optbench", "optbench.engine.runner", "optbench.cli", "optbench_workloads.lm",
            "optbench_submissions.adamw"} <= set(report.modules)
    pairs = {(e.importer, e.imported) for e in report.edges}
    assert ("optbench.engine.runner", "optbench.engine.prepared") in pairs  # module level
    assert ("optbench_submissions.adamw", "optbench.api") in pairs
    assert any(a.startswith("optbench.cli") and b.startswith("optbench.commands") for a, b in pairs)  # lazy


def test_no_import_cycles(report):
    if report.cycles:
        pytest.fail("import cycles between modules:\n  " + "\n  ".join(report.cycles), pytrace=False)


def test_imports_follow_the_layers(report):
    if report.violations:
        pytest.fail("imports against the layering (a module may import its own layer and lower ones; see "
                    "docs/ARCHITECTURE.md):\n  " + "\n  ".join(report.violations), pytrace=False)


def test_allowed_exceptions_are_still_needed(report):
    """An exception the code no longer needs is removed from ALLOWED, so the list never grows stale."""
    pairs = {(e.importer, e.imported) for e in report.edges}
    assert not [p for p in ALLOWED if p not in pairs], "ALLOWED holds imports that no longer exist"


def test_every_layer_holds_a_module(report):
    """A layer whose patterns match nothing is a typo in LAYERS (a renamed package), not an empty layer."""
    empty = [layer.name for layer in LAYERS if not any(layer.holds(m) for m in report.modules)]
    assert not empty, f"layers matching no module: {empty}"


# ------------------------------------------------------------------------------------- the checker, on planted trees


def _tree(root: Path, files: dict[str, str]) -> dict[Path, str]:
    """Write ``files`` (relative path -> source) under ``root``; every folder gets an ``__init__.py``."""
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    for folder in [p for p in root.rglob("*") if p.is_dir()]:
        (folder / "__init__.py").touch()
    roots = {root / "optbench": "optbench"}
    for folder, package in (("workloads", "optbench_workloads"), ("submissions", "optbench_submissions")):
        if (root / folder).is_dir():
            roots[root / folder] = package
    return roots


def test_a_planted_upward_import_is_reported(tmp_path):
    roots = _tree(tmp_path, {
        "optbench/store/x.py": "import os\nimport optbench.cli\n",
        "optbench/cli/__init__.py": "from optbench.store import x\n",
    })
    found = check(roots)
    assert any(v.startswith("optbench.store.x -> optbench.cli (layer 1 store imports layer 9 cli)")
               for v in found.violations), found.violations
    assert "optbench/store/x.py:2" in "\n".join(found.violations)  # where to look
    assert not any(v.startswith("optbench.cli -> ") for v in found.violations)  # downward is fine
    assert found.cycles == ["optbench.cli -> optbench.store.x -> optbench.cli"]


def test_a_planted_circle_is_reported_through_lazy_and_relative_imports(tmp_path):
    roots = _tree(tmp_path, {
        "optbench/engine/a.py": "from optbench.engine.b import f\n",
        "optbench/engine/b.py": "def f():\n    from . import c\n",
        "optbench/engine/c.py": "def g():\n    from .a import h\n",
        "optbench/engine/d.py": "from optbench.engine import a\n",  # into the circle, not part of it
    })
    found = check(roots)
    assert found.cycles == ["optbench.engine.a -> optbench.engine.b -> optbench.engine.c -> optbench.engine.a"]
    assert not found.violations


def test_every_kind_of_import_is_seen(tmp_path):
    roots = _tree(tmp_path, {
        "optbench/api.py": "",
        "optbench/store/s1.py": "from optbench import engine\n",  # a subpackage through `from optbench import`
        "optbench/store/s2.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                "    from optbench.report.r import Thing\n",
        "optbench/store/s3.py": "import importlib\nM = importlib.import_module('optbench.sweep.w')\n",
        "optbench/store/s4.py": "from ..recipes import *\n",  # relative, two levels, star
        "optbench/store/s5.py": "class C:\n    def m(self):\n        import optbench.commands.k as k\n",
        "optbench/store/s6.py": "from optbench.parallel.gone import x\n",  # no such module: its package
        "optbench/store/fine.py": "from optbench import api\nimport optbench\nfrom optbench.store import s1\n",
        "optbench/engine/__init__.py": "", "optbench/report/r.py": "", "optbench/sweep/w.py": "",
        "optbench/recipes/__init__.py": "", "optbench/commands/k.py": "", "optbench/parallel/__init__.py": "",
    })
    found = "\n".join(check(roots).violations)
    for importer, imported in (("s1", "optbench.engine"), ("s2", "optbench.report.r"), ("s3", "optbench.sweep.w"),
                               ("s4", "optbench.recipes"), ("s5", "optbench.commands.k"),
                               ("s6", "optbench.parallel")):
        assert f"optbench.store.{importer} -> {imported} (" in found, found
    assert "optbench.store.fine" not in found


def test_peers_and_plugin_packages(tmp_path):
    roots = _tree(tmp_path, {
        "optbench/sweep/plan.py": "from optbench.scoring import stats\n",
        "optbench/scoring/stats.py": "",
        "optbench/engine/runner.py": "import optbench_workloads.w\n",
        "optbench/plugins/seesaw.py": "", "optbench/data/x.py": "", "optbench/errors.py": "",
        "workloads/w.py": "from optbench.plugins import seesaw\nfrom optbench import data, errors\n"
                          "from optbench.engine import runner\nfrom optbench_submissions import s\n",
        "submissions/s.py": "from optbench.data import x\n",
    })
    found = check(roots).violations
    text = "\n".join(found)
    assert "optbench.sweep.plan -> optbench.scoring.stats (layer 5 sweep imports its peer layer 5 scoring)" in text
    assert "optbench.engine.runner -> optbench_workloads.w (layer 4 engine imports plugin package workloads)" in text
    assert "optbench_workloads.w -> optbench.engine.runner (plugin package workloads imports layer 4 engine)" in text
    assert ("optbench_workloads.w -> optbench_submissions.s (plugin package workloads imports plugin package "
            "submissions)") in text
    assert len(found) == 4, found  # plugins, data, errors and the store are fine for a plugin package


def test_a_module_in_no_layer_and_the_allowed_list(tmp_path):
    roots = _tree(tmp_path, {"optbench/stray.py": "", "optbench/store/x.py": "import optbench.cli\n",
                             "optbench/cli/__init__.py": ""})
    found = check(roots, allowed=[("optbench.store.x", "optbench.cli")])
    assert [v.split(" (")[0] for v in found.violations] == ["optbench.stray"]
    assert "is in no layer" in found.violations[0]


def test_layer_table():
    assert layer_of("optbench").name == "core" and layer_of("optbench.api").name == "core"
    assert layer_of("optbench.data.text").name == "plugins" and layer_of("optbench.__main__").name == "cli"
    assert layer_of("optbench.apis") is None and layer_of("optbench.storex") is None  # exact names, whole segments
    assert find_cycles({"a": {"b"}, "b": {"a", "c"}, "c": {"b"}, "d": {"a"}}) == [(["a", "b", "a"], ["a", "b", "c"])]
