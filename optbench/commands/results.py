"""``optbench score``, ``optbench report`` and ``optbench import algoperf``: what is recorded, read and scored."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from optbench.console import console as _console
from optbench.console import escape
from optbench.errors import UsageError
from optbench.store import paths


def score(*, results_dir: Path | None, by: str, fmt: str, reference: str | None, r_max: float, algoperf: bool,
          with_ci: bool, hparam: str | None = None) -> None:
    """``optbench score``: read the results store, score, print the leaderboard in the chosen format."""
    from optbench.report import render

    loaded = _read_results(paths.results_dir(results_dir), hint="run e.g. 'optbench run --workload linreg --opt "
                                                                 "adamw'")
    if hparam is not None:
        render.print_sensitivity(loaded, hparam=hparam, by=by, fmt=fmt)
        return
    render.print_leaderboard(loaded, by=by, fmt=fmt, reference=reference, r_max=r_max, algoperf=algoperf,
                             with_ci=with_ci)


def _read_results(root: Path, *, hint: str) -> Any:
    """The results under ``root`` (:func:`optbench.store.reader.read_results`), each skipped file named on stderr.

    Raises:
      UsageError: no trial at all (``hint`` says how to make some).
    """
    from optbench.store.reader import read_results

    loaded = read_results(root)
    err = _console(stderr=True)
    for problem in loaded.problems:
        err.print(f"[yellow]skipped[/yellow] {escape(problem.splitlines()[0])}")
    if loaded.trials.empty:
        raise UsageError(f"no results under {str(root)!r}; {hint}")
    return loaded


def report(*, results_dir: Path | None, out: Path, by: str, r_max: float, hparam: str) -> None:
    """``optbench report``: the HTML report and its PNG/SVG plots of the results directory, with the research
    sections the results support (batch-size sweeps, curvature) made here from every trial and handed in: the
    report layer ranks only comparable trials and imports no recipe."""
    from optbench.recipes.sections import research_sections
    from optbench.report.html import build_report
    from optbench.store.reader import CACHE_DIR

    root = paths.results_dir(results_dir)
    loaded = _read_results(root, hint="run e.g. 'optbench tune' first")
    made = build_report(loaded, out=out, by=by, r_max=r_max, hparam=hparam, source=str(root),
                        plot_cache=root / CACHE_DIR / "plots", sections=research_sections(loaded, loaded.all_trials()))
    _console().print(escape(f"report: {made.index} ({len(made.images)} image files)"))


def import_algoperf(directory: Path, *, results_dir: Path | None, rules: str, targets: Sequence[str],
                    submission: str | None) -> None:
    """``optbench import algoperf``: AlgoPerf's trial logs under ``directory`` into the results directory."""
    from optbench.scoring.algoperf_import import import_algoperf as run_import

    out = paths.results_dir(results_dir)
    result = run_import(directory, results_dir=out, rules=rules, targets=targets, submission=submission)
    err = _console(stderr=True)
    for problem in result.skipped:
        err.print(f"[yellow]skipped[/yellow] {escape(problem)}")
    _console().print(escape(f"imported {len(result.written)} AlgoPerf trials into {out} (targets: rules {rules}); "
                            f"score them with 'optbench score --results-dir {out} --algoperf'"))
