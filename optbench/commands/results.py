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
          with_ci: bool, hparam: str | None = None, effort: bool = False) -> None:
    """``optbench score``: read the results store, score, print the leaderboard in the chosen format."""
    from optbench.report import render

    loaded = _read_results(paths.results_dir(results_dir), hint="run e.g. 'optbench run --workload linreg --opt "
                                                                 "adamw'")
    if by == "time":
        _warn_conditions(loaded)
    if effort:
        from optbench.report.intervals import print_effort

        print_effort(render.ranked_trials(loaded), fmt=fmt)
        return
    elif hparam is not None:
        render.print_sensitivity(loaded, hparam=hparam, by=by, fmt=fmt)
    else:
        render.print_leaderboard(loaded, by=by, fmt=fmt, reference=reference, r_max=r_max, algoperf=algoperf,
                                 with_ci=with_ci)
    _note_failures(loaded.trials, results_dir)


def _note_failures(trials: Any, results_dir: Path | None) -> None:
    """How many trials failed and how to see why, as one ``note:`` line on stderr (stdout may be CSV or JSON)."""
    from optbench.store.failures import failure_note

    note = failure_note(trials.to_dict("records"), results_dir)
    if note:
        _console(stderr=True).print("note: " + escape(note), soft_wrap=True)


def _warn_conditions(loaded: Any) -> None:
    """One line on stderr when the trials ranked by time ran on different devices or under very different loads
    (:func:`optbench.scoring.conditions.time_warning`); stdout stays the table, CSV or JSON."""
    from optbench.scoring.conditions import time_warning

    trials = loaded.units().trials
    note = time_warning(trials.to_dict("records")) if not trials.empty else None
    if note:
        _console(stderr=True).print(escape(note), soft_wrap=True)


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
    _note_failures(loaded.trials, results_dir)


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


def show(run_id: str, *, results_dir: Path | None) -> None:
    """``optbench show RUN_ID``: one trial's record, readable: what ran, how it ended and why (the whole stored
    reason or traceback), its budget and progress, where it ran, and a slow first stretch if it had one.

    Raises:
      UsageError: no trial's run id starts with ``run_id``, or several do (they are named).
    """
    from optbench.store.failures import slow_start, spent_seconds

    root = paths.results_dir(results_dir)
    loaded = _read_results(root, hint="run e.g. 'optbench run --workload linreg --opt adamw'")
    rec, path = _one_trial(loaded, run_id, root)
    evals = loaded.evals_of([rec["run_id"]])
    console = _console()
    console.print(f"[bold]run {escape(rec['run_id'])}[/bold]  " + escape(str(path)), soft_wrap=True)
    for key, value in _record_lines(rec, evaluations=len(evals)):
        console.print(f"  {key:<12}" + escape(value), soft_wrap=True)
    slow = slow_start(evals["step"], evals["timed_seconds"], budget_spent=spent_seconds(rec))
    if slow:
        console.print("[yellow]note:[/yellow] " + escape(slow), soft_wrap=True)
    error = rec.get("error")
    if isinstance(error, str) and error.strip():
        console.print("[bold]reason[/bold] (stored in the record's 'error' field):")
        console.print(escape(error.rstrip()), soft_wrap=True, highlight=False)


def _one_trial(loaded: Any, run_id: str, root: Path) -> tuple[dict[str, Any], Path]:
    """The record and file of the one trial whose run id starts with ``run_id``."""
    ids = loaded.trials["run_id"].tolist()
    hits = [i for i, r in enumerate(ids) if r == run_id] or [i for i, r in enumerate(ids) if r.startswith(run_id)]
    if not hits:
        raise UsageError(f"no trial with run id {run_id!r} under {str(root)!r} ({len(ids)} trial(s) there; "
                         "run ids are in 'optbench run' output, in each file's name and in the report)")
    if len(hits) > 1:
        shown = ", ".join(ids[i] for i in hits[:5]) + (", ..." if len(hits) > 5 else "")
        raise UsageError(f"run id {run_id!r} is ambiguous: {len(hits)} trials match ({shown}); give more of it")
    i = hits[0]
    return loaded.trials.iloc[i].to_dict(), loaded.paths[i]


def _number(value: Any, fmt: str = "g") -> str:
    """A recorded number as text; ``-`` for a missing one (None or NaN, as pandas reads a null)."""
    import math

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def _record_lines(rec: dict[str, Any], *, evaluations: int) -> list[tuple[str, str]]:
    """The useful fields of a record as (label, text) lines, in the order a reader asks about them."""
    from optbench.store.failures import reason_line

    goal = "<=" if rec["metric_goal"] == "min" else ">="
    limits = [(_number(rec["max_steps"]), "steps"), (_number(rec["max_seconds"]), "s timed")]
    budget = " / ".join(f"{v} {unit}" for v, unit in limits if v != "-") or "none"
    resumed = f"; resumed {rec['resumes']} times" if rec["resumes"] else ""
    reason = reason_line(rec["error"])
    outcome = rec["outcome"] + (f": {reason}" if reason else "")
    return [
        ("trial", f"{rec['workload']}/{rec['size']}  {rec['submission']}  seed {rec['seed']}  study {rec['study']} "
                  f"trial {rec['trial']}  ({rec['study_kind']})"),
        ("outcome", outcome),
        ("target", f"{rec['metric_name']} {goal} {rec['target']:g}; best {_number(rec['best_metric'], '.4g')}"),
        ("to target", "not reached" if _number(rec["steps_to_target"]) == "-" else
                      f"{rec['time_to_target']:.3f} s timed, {_number(rec['steps_to_target'])} steps, "
                      f"{_number(rec['examples_to_target'])} examples"),
        ("progress", f"{rec['total_steps']} steps, {rec['total_timed_seconds']:.3f} s timed, {evaluations} "
                     f"evaluations; budget {budget}{resumed}"),
        ("hparams", str(rec["hparams"])),
        ("device", f"{rec['device']} ({rec['device_name']}), {rec['world_size']} process(es), compiled "
                   f"{'yes' if rec['compiled'] else 'no'}, deterministic {'yes' if rec['deterministic'] else 'no'}"),
        ("origins", f"workload {rec['workload_origin']}; submission {rec['submission_origin']}"),
        ("software", f"optbench {rec['optbench_version']} (code {rec['code_hash']}, git {rec['git_commit'] or '-'}), "
                     f"torch {rec['torch_version']}, python {rec['python_version']}"),
        ("created", str(rec["created_at"])),
    ]
