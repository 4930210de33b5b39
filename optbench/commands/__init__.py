"""Layer 8, commands: what each CLI command does, as plain functions; the one command layer.

The click layer (:mod:`optbench.cli`) only parses options and calls these. Each takes the parsed values, does the
work through the library (a plan for the sweep engine, scoring and report over the store, a recipe) and prints
through :mod:`optbench.console`; bad input raises :class:`optbench.errors.UsageError`, which the CLI turns into
one line and exit code 2.

May import: every layer below (core up to recipes).
Must never import: :mod:`optbench.cli`, nor click. Enforced by tests/test_layering.py (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optbench.store import paths
from optbench.console import console as _console
from optbench.console import escape
from optbench.errors import UsageError
from optbench.plugins.hparams import parse_assignments


class ProgressBar:
    """A rich progress bar for one trial: step, loss, metric against its target, elapsed and remaining time.

    The runner reports steps only where a stretch of steps ends (every step on a CPU, every ``--sync-every`` on a
    GPU), so the bar never makes the device wait; redraws are limited to ten a second.
    """

    def __init__(self, title: str, metric: str, *, target: float | None = None, goal: str = "min") -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.metric = escape(metric)
        self.goal = f" (target {'<=' if goal == 'min' else '>='} {target:g})" if target is not None else ""
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
            TextColumn("elapsed"), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn(),
            console=_console(stderr=True), transient=False,
        )
        self.task = self.progress.add_task(escape(title), total=None, info="")
        self.by_steps = True
        self.last = f"  {self.metric} -{self.goal}"
        self.drawn = 0.0

    def __enter__(self) -> ProgressBar:
        return self  # drawn from started() on: nothing shows for a trial that fails its set-up

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None:
        self.progress.start()
        self.by_steps = max_steps is not None
        self.progress.update(self.task, total=max_steps if self.by_steps else max_seconds)

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None:
        import time

        now = time.monotonic()
        if now - self.drawn < 0.1:  # formatting every step of a fast CPU trial would cost more than the step
            return
        self.drawn = now
        done = step if self.by_steps else timed_seconds
        self.progress.update(self.task, completed=done, info=f"step {step}  loss {loss:.4g}{self.last}")

    def evaluated(self, row: Any, *, reached: bool) -> None:
        mark = " [green]reached[/green]" if reached else ""
        self.last = f"  {self.metric} {row.metric_value:.4g}{self.goal}{mark}"
        self.progress.update(self.task, info=f"step {row.step}  loss {row.train_loss:.4g}{self.last}")


def given_hparams(opt_args: Sequence[str], hparams_file: Path | None) -> dict[str, Any]:
    """The hyperparameters a user gave: the ``--hparams`` JSON file, overridden by ``--opt-arg`` values."""
    from optbench.plugins.hparams import load_file

    given: Any = {} if hparams_file is None else load_file(hparams_file, what="hyperparameters file")
    if not isinstance(given, dict):
        raise UsageError(f"{str(hparams_file)!r} must hold a JSON object of hyperparameters")
    return {**given, **parse_assignments(opt_args)}


def run(*, workload: str, opts: Sequence[str], size: str | None, opt_args: Sequence[str],
        hparams_file: Path | None, seeds: Sequence[int], device: str, results_dir: Path | None,
        data_dir: Path | None, quiet: bool, overrides: Mapping[str, Any]) -> int:
    """``optbench run``: every (submission, seed) trial in turn; a failed trial is recorded and the next runs.

    Returns the exit code: 0, or 1 when a result had to be kept outside the results directory.

    Every trial is prepared (loaded, merged, bounded, validated) and the results directory proven writable before
    the first one starts, so a typo costs nothing; the runner then consumes the prepared trials as they are.
    """
    from dataclasses import replace

    from optbench.engine.prepared import TrialConfig, check_data, check_destination, prepare
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import run_prepared

    from optbench.plugins.hparams import check_prefixes

    given = given_hparams(opt_args, hparams_file)
    check_prefixes(given, opts)  # NAME.key=VALUE: NAME must be one of this command's -s
    w = load_workload(workload)
    subs = [load_submission(o) for o in opts]
    base = TrialConfig(size=size, hparams=given, device=device,
                       data_dir=paths.data_dir(data_dir), **{k: v for k, v in overrides.items() if v is not None})
    out = paths.results_dir(results_dir)
    trials = [prepare(w, s, replace(base, seed=seed), results_dir=out) for s in subs for seed in seeds]
    check_data(trials[0].size, base.data_dir)  # a missing dataset stops us before any trial
    check_destination(out, trials)
    console, rescued = _console(), 0
    for prep in trials:
        if quiet:
            result = run_prepared(prep)
        else:
            with ProgressBar(prep.title, w.obj.metric.name, target=prep.target, goal=w.obj.metric.goal.value) as bar:
                result = run_prepared(prep, observer=bar)
        console.print(_summary(result.record, result.path))
        if result.note:
            rescued += 1
            _console(stderr=True).print(f"[red]warning[/red] {escape(result.note)}")
    return 1 if rescued else 0  # a result kept outside the results directory is not a clean run


def _summary(rec: Any, path: Path) -> str:
    """The one-paragraph outcome of a trial (user-derived names escaped)."""
    colour = {"reached": "green", "missed": "yellow"}.get(rec.outcome, "red")
    head = escape(f"{rec.workload}/{rec.size} {rec.submission} seed {rec.seed}: ")
    head = f"[{colour}]{rec.outcome}[/{colour}] {head}"
    if rec.outcome == "reached":
        head += escape(f"{rec.metric_name} {'<=' if rec.metric_goal == 'min' else '>='} {rec.target:g} after "
                       f"{rec.time_to_target:.2f} s timed, {rec.steps_to_target} steps, "
                       f"{rec.examples_to_target} examples")
    else:
        best = "n/a" if rec.best_metric is None else f"{rec.best_metric:.4g}"
        tail = f"best {rec.metric_name} {best} (target {rec.target:g}) in {rec.total_steps} steps"
        if rec.error and rec.error.strip():
            tail += f"; {rec.error.strip().splitlines()[-1]}"
        head += escape(tail)
    return f"{head}\n  -> {escape(path)}"


def list_plugins(what: str = "all") -> None:
    """``optbench list``: a compact table of workloads and submissions (``what``: all, workloads, submissions), or
    the details of one plugin (``what``: its name or spec): a workload's sizes with targets, budgets, evaluation
    period and how each target was chosen; a submission's defaults, capabilities, paper and search space."""
    from optbench.plugins.registry import entry_points, load_submission, load_workload

    if what in ("all", "workloads", "submissions"):
        if what in ("all", "workloads"):
            _list_workloads()
        if what in ("all", "submissions"):
            _list_submissions()
        return
    if what in entry_points("workloads") or (":" in what and what not in entry_points("submissions")
                                             and _is_workload(what)):
        _workload_details(load_workload(what))
    else:
        _submission_details(load_submission(what))


def _is_workload(spec: str) -> bool:
    from optbench.errors import UsageError
    from optbench.plugins.registry import load_workload

    try:
        load_workload(spec)
    except UsageError:
        return False
    return True


def _origin(item: Any) -> str:
    return "" if item.origin.distribution == "optbench" else f" [dim]({escape(item.origin.distribution)})[/dim]"


def _list_workloads() -> None:
    from rich.table import Table

    from optbench.plugins.registry import load_all

    table = Table(title="Workloads", caption="* default size; details: optbench list NAME")
    for col in ("name", "metric", "sizes", "data"):
        table.add_column(col)
    for item in load_all("workloads"):
        if isinstance(item, tuple):
            table.add_row(escape(item[0]), f"[red]broken: {escape(item[1])}[/red]", "", "")
            continue
        w = item.obj
        sizes = ", ".join(n + ("*" if n == w.default_size else "") for n in w.sizes)
        data = ", ".join(sorted({sz.dataset for sz in w.sizes.values() if sz.dataset})) or "-"
        table.add_row(escape(w.name) + _origin(item), escape(f"{w.metric.name} ({w.metric.goal.value})"),
                      escape(sizes), escape(data))
    _console().print(table)


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _list_submissions() -> None:
    from rich.table import Table

    from optbench.plugins.registry import load_all

    table = Table(title="Submissions", caption="details: optbench list NAME")
    for col in ("name", "method", "needs"):
        table.add_column(col)
    for item in load_all("submissions"):
        if isinstance(item, tuple):
            table.add_row(escape(item[0]), f"[red]broken: {escape(_short(str(item[1])))}[/red]", "")
            continue
        s = item.obj
        caps = ", ".join(sorted(c.value for c in s.capabilities)) or "-"
        table.add_row(escape(item.name) + _origin(item), escape(_short(getattr(s, "paper", "") or "-")),
                      escape(caps))
    console = _console()
    console.print(table)
    console.print("Any torch.optim.Optimizer subclass also works: --opt torch.optim:Adagrad -o lr=0.01\n"
                  "(at a constant lr unless given one: -o schedule=cosine -o warmup_frac=0.05)")


def _budget(b: Any) -> str:
    return " / ".join(x for x in (f"{b.max_steps} steps" if b.max_steps else "",
                                   f"{b.max_seconds:g} s" if b.max_seconds else "") if x)


def _workload_details(item: Any) -> None:
    from rich.table import Table

    w, console = item.obj, _console()
    console.print(escape(f"{w.name}: {w.description}"), width=min(100, console.width))
    console.print(escape(f"metric {w.metric.name} ({'lower' if w.metric.goal.value == 'min' else 'higher'} is "
                         f"better); from {item.origin.distribution} {item.origin.version}"))
    table = Table(title=escape(f"{w.name} sizes"))
    table.caption = "batch (micro-batch); hint: the schedule's step_hint"
    for col in ("size", "target", "budget", "batch", "hint", "eval", "data"):
        table.add_column(col)
    for name, sz in w.sizes.items():
        period = sz.eval_every
        every = " / ".join(x for x in (f"{period.steps} steps" if period.steps else "",
                                        f"{period.seconds:g} s" if period.seconds else "") if x)
        batch = f"{sz.batch_size}" + (f" ({sz.micro_batch_size})" if sz.micro_batch_size else "")
        table.add_row(*map(escape, (name + (" (default)" if name == w.default_size else ""), f"{sz.target:g}",
                                    _budget(sz.budget), batch, sz.step_hint, every, sz.dataset or "-")))
    console.print(table)
    console.print("How each target was chosen:")
    for name, sz in w.sizes.items():
        console.print(escape(f"  {name}: {sz.note or 'not stated'}"), width=min(100, console.width))


def _submission_details(item: Any) -> None:
    from rich.table import Table

    s, console = item.obj, _console()
    console.print(escape(f"{item.name}: {getattr(s, 'paper', '') or 'no paper named'}"))
    caps = ", ".join(sorted(c.value for c in s.capabilities)) or "none"
    console.print(escape(f"needs from the harness: {caps}; from {item.origin.distribution} {item.origin.version}"))
    table = Table(title="defaults (-o KEY=VALUE)")
    table.add_column("hyperparameter")
    table.add_column("default", overflow="fold")
    for key, value in s.defaults.items():
        table.add_row(escape(key), escape(json_text(value)))
    console.print(table)
    space = s.search_space()
    if space:
        table = Table(title="search space (tune)")
        for col in ("hyperparameter", "range"):
            table.add_column(col, overflow="fold")
        for key, spec in (space.items() if isinstance(space, dict) else []):
            rng = (f"{spec.get('min')} .. {spec.get('max')} ({spec.get('scaling', 'linear')})" if "min" in spec
                   else f"one of {spec.get('feasible_points')}")
            table.add_row(escape(key), escape(rng))
        console.print(table)
    else:
        console.print("no search space: tune needs --search-space FILE")


def json_text(value: Any) -> str:
    """A default as it would be typed after ``-o KEY=``."""
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


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


class TunePrinter:
    """Prints a tune's progress, one line per trial (the reporter :func:`optbench.sweep.tuning.tune` calls)."""

    def __init__(self, quiet: bool) -> None:
        self.console, self.quiet = _console(), quiet

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{escape(text)}[/dim]")

    def finished(self, trial: Any, done: Any) -> None:
        if self.quiet:
            return
        colour = {"reached": "green", "missed": "yellow"}.get(done.outcome, "red")
        lr = trial.hparams.get("lr")
        where = f"{trial.submission} {trial.study} trial {trial.trial}" + (f" lr={lr:.3g}" if isinstance(
            lr, (int, float)) else "")
        what = (f"{done.time_to_target:.3g} s, {done.steps_to_target} steps" if done.outcome == "reached" else
                f"best {done.metric_name} " + ("n/a" if done.best_metric is None else f"{done.best_metric:.4g}"))
        self.console.print(f"[{colour}]{done.outcome}[/{colour}] {escape(where)}: {escape(what)}")

    def crashed(self, trial: Any, reason: str) -> None:
        self.console.print("[red]crashed[/red] "
                           + escape(f"{trial.submission} {trial.study} trial {trial.trial}: {reason}"))


def tune(*, workload: str, opts: Sequence[str], size: str | None, search_space: Path | None, trials: int | None,
         studies: int, jobs: int, seed: int, ruleset: str, budget_multiplier: float, device: str,
         results_dir: Path | None, data_dir: Path | None, quiet: bool, overrides: Mapping[str, Any],
         cluster: Any = None) -> int:
    """``optbench tune``: every planned trial not yet recorded (here, or as submitit tasks with ``cluster``);
    returns 1 when a trial crashed, else 0."""
    from optbench.sweep.tuning import TuneSpec
    from optbench.sweep.tuning import tune as run_tune

    spec = TuneSpec(workload=workload, submissions=tuple(opts), size=size, search_space=search_space,
                    trials=trials, studies=studies, jobs=jobs, seed=seed, ruleset=ruleset,
                    budget_multiplier=budget_multiplier, device=device, data_dir=paths.data_dir(data_dir),
                    overrides=dict(overrides), cluster=cluster)
    out = paths.results_dir(results_dir)
    result = run_tune(spec, results_dir=out, reporter=TunePrinter(quiet))
    console = _console()
    console.print(escape(f"{len(result.finished)} trials run, {len(result.skipped)} skipped (already recorded or "
                         f"claimed by another process), {len(result.crashed)} crashed -> {out}"))
    if result.submitted:
        console.print(escape(f"{len(result.submitted)} trials submitted; 'optbench status --results-dir {out}' "
                             "shows where they stand"))
    if result.crashed:
        console.print("[red]crashed trials were not recorded; run the same command again to retry them[/red]")
        return 1
    return 0


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


def check_plugin(spec: str, *, skip: Sequence[str] = (), opt_args: Sequence[str] = ()) -> int:
    """``optbench check-plugin``: the conformance suite as a pass/fail table; returns the exit code.

    ``opt_args`` (``-o KEY=VALUE``) set hyperparameters for the checks that train; a plain optimizer class without
    a given lr is tried over a small lr grid (see :mod:`optbench.engine.conformance`)."""
    from rich.table import Table

    from optbench.engine.conformance import ALL_CHECKS, run_check
    from optbench.plugins.registry import load_submission

    unknown = sorted(set(skip) - set(ALL_CHECKS))
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; checks: {', '.join(ALL_CHECKS)}")
    from optbench.plugins.hparams import merge

    loaded = load_submission(spec)
    given = parse_assignments(opt_args)
    hparams = merge(loaded.obj.defaults, given, submission=spec) if given else None
    table = Table(title=escape(f"conformance of {spec} ({loaded.origin.distribution} {loaded.origin.version})"))
    for col in ("check", "result", "detail"):
        table.add_column(col)
    failed = 0
    for name in ALL_CHECKS:
        if name in skip:
            table.add_row(name, "[dim]skipped[/dim]", "")
            continue
        res = run_check(loaded, name, hparams=hparams)
        failed += not res.passed
        table.add_row(name, "[green]pass[/green]" if res.passed else "[red]FAIL[/red]", escape(res.detail))
    console = _console()
    console.print(table)
    console.print(f"{len(ALL_CHECKS) - len(skip) - failed} passed, {failed} failed")
    return 1 if failed else 0


def finite_or_none(x: float | None) -> float | None:
    """JSON-friendly number: NaN and inf become None."""
    return None if x is None or not math.isfinite(x) else x
