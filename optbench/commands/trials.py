"""The commands that run trials, ``run`` and ``tune``, and how a sweep's progress is printed.

Each command builds a plan of trials and hands it to the one sweep engine (:func:`optbench.sweep.engine.run_plan`);
the printers here are the engine's reporters: a progress bar while a trial runs in this process, then one paragraph
(``run``) or one line (``tune``) per trial as it ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from optbench.console import console as _console
from optbench.console import escape
from optbench.errors import UsageError
from optbench.plugins.hparams import parse_assignments
from optbench.store import paths
from optbench.store.records import outcome_text


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
        self.points: list[tuple[int, float]] = []  # (step, timed seconds) where stretches ended: a slow start

    MAX_POINTS = 2000  # stretch ends kept (thinned beyond): enough for the median pace of the later stretches

    def __enter__(self) -> ProgressBar:
        return self  # drawn from started() on: nothing shows for a trial that fails its set-up

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def started(self, *, max_steps: int | None, max_seconds: float | None) -> None:
        self.progress.start()
        self.by_steps = max_steps is not None
        self.progress.update(self.task, total=max_steps if self.by_steps else max_seconds)
        self.points = [(0, 0.0)]

    def stepped(self, *, step: int, loss: float, timed_seconds: float) -> None:
        import time

        self.points.append((step, timed_seconds))
        if len(self.points) > self.MAX_POINTS:  # keep the first stretch; every other later end (cumulative: the
            self.points = self.points[:2] + self.points[3::2]  # paces between the kept ends stay right)
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


def run(*, workload: str, opts: Sequence[str], hparams: Mapping[str, Any], seeds: Sequence[int],
        study: str | None, trial: Any, execution: Any, results_dir: Path | None, quiet: bool) -> int:
    """``optbench run``: one trial per (submission, seed), through the sweep engine (claimed, skipped when already
    recorded, run here, in worker processes or as cluster tasks, on ``--nproc`` ranks each).

    Returns the exit code: 0, or 1 when a trial crashed or a result had to be kept outside the results directory.
    Every trial is prepared (validated) and the results directory proven writable before the first one starts.
    """
    from dataclasses import replace

    from optbench.plugins.hparams import check_prefixes
    from optbench.sweep.engine import Planned, run_plan

    check_prefixes(hparams, opts)  # NAME.key=VALUE: NAME must be one of this command's -s
    base = replace(trial, hparams=dict(hparams), study=study, data_dir=paths.data_dir(trial.data_dir))
    # Each seed is its own study (default seed<N>; with --study and several seeds, <study>-seed<N>), so that
    # `score --ci` and the paired tests see one unit per seed rather than one study's best seed.
    per_seed = study is not None and len(seeds) > 1
    plan = [Planned(workload=workload, submission=s,
                    config=replace(base, seed=seed, study=f"{study}-seed{seed}" if per_seed else study))
            for s in opts for seed in seeds]
    printer = TrialPrinter(quiet=quiet)
    try:
        result = run_plan(plan, results_dir=paths.results_dir(results_dir), execution=execution, reporter=printer)
    except KeyboardInterrupt:
        printer.err.print(escape(interrupted_message(printer.running)), soft_wrap=True)
        return INTERRUPTED_EXIT
    return printer.exit_code(result)


INTERRUPTED_EXIT = 130  # the shell's code for a command stopped by Ctrl-C (SIGINT)


def interrupted_message(prep: Any) -> str:
    """What Ctrl-C left behind and how to go on, for the trial ``prep`` that was running here (None: none was, or
    it ran in another process). The runner records a trial stopped by Ctrl-C as ``interrupted`` (not finished); the
    sweep engine skips every finished trial of a plan, so the same command run again runs only what is left, and
    ``--resume`` continues a trial from its checkpoint under the results directory when it has one."""
    if prep is None:
        return ("interrupted: finished trials are recorded and a trial stopped mid-way is recorded as 'interrupted' "
                "(not finished); run the same command again to run what is left (recorded trials are skipped; add "
                "--resume to continue interrupted trials from their checkpoints, where they have one)")
    head = (f"interrupted: {prep.title} was recorded as 'interrupted' (not finished) under {prep.results_dir}; "
            "run the same command again to run it and what is left (recorded trials are skipped)")
    has_checkpoint = prep.checkpoint is not None and prep.checkpoint.exists()
    if has_checkpoint and prep.resume:
        return head + ": it continues from its checkpoint"
    if has_checkpoint:
        return head + "; add --resume to continue it from its checkpoint (without it, it starts again from step 0)"
    return head + ": it starts again from step 0 (no checkpoint was saved; --checkpoint-every SECONDS saves some)"


class TrialPrinter:
    """Prints a sweep's trials as they end (the engine's reporter): a paragraph per trial, a progress bar while a
    trial runs in this process, warnings for results kept elsewhere and crashed trials; plan notes on stderr.
    ``quiet`` drops the progress bars and the notes, never a trial's result."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.console, self.err = _console(), _console(stderr=True)
        self.bar: ProgressBar | None = None
        self.running: Any = None  # the PreparedTrial training in this process now (what Ctrl-C would stop)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.err.print(f"[dim]{escape(text)}[/dim]")

    def observer(self, prep: Any) -> ProgressBar | None:
        self.running = prep
        if self.quiet:
            return None
        metric = prep.workload.obj.metric
        self.bar = ProgressBar(prep.title, metric.name, target=prep.target, goal=metric.goal.value)
        return self.bar.__enter__()

    def done(self, outcome: Any) -> None:
        self.running = None
        points = self.bar.points if self.bar is not None else []
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None
        if outcome.status == "crashed":
            self.err.print("[red]crashed[/red] " + escape(f"{outcome.prep.title}: {outcome.reason}"))
        elif outcome.path is not None:
            rec, rows = outcome.read()
            was = {"recorded": " (recorded earlier: not run again)", "elsewhere": " (run by another process)"}
            self.console.print(summary(rec, outcome.path) + escape(was.get(outcome.status, "")))
            self._hints(rec, rows, points if outcome.status == "ran" else [], outcome.prep.results_dir)
        elif outcome.status == "elsewhere":
            self.console.print(escape(f"{outcome.prep.title}: claimed by another process"))
        if outcome.note:
            self.err.print(f"[red]warning[/red] {escape(outcome.note)}")

    def _hints(self, rec: Mapping[str, Any], rows: Any, points: list[tuple[int, float]], results_dir: Path) -> None:
        """Under a trial's paragraph: where its whole traceback is (a failed trial), and a slow first stretch
        (compilation) with the ``--warmup-steps`` hint, from its evaluations or else its stretches."""
        from optbench.store.failures import FAILED, show_command, slow_start, spent_seconds

        if rec["outcome"] in FAILED and rec["error"]:
            self.console.print(escape(f"  whole reason: {show_command(rec['run_id'], results_dir)}"), soft_wrap=True)
        spent = spent_seconds(rec)
        slow = slow_start([s for s, _ in points], [t for _, t in points], budget_spent=spent)  # finer than evals
        slow = slow or slow_start(rows["step"], rows["timed_seconds"], budget_spent=spent)
        if slow:
            self.console.print("  [yellow]note:[/yellow] " + escape(slow), soft_wrap=True)

    @staticmethod
    def exit_code(result: Any) -> int:
        """1 when a trial crashed or a result was kept outside the results directory (not a clean run), else 0."""
        return 1 if any(o.status == "crashed" or o.note for o in result.outcomes) else 0


def summary(rec: Mapping[str, Any], path: Path) -> str:
    """The one-paragraph outcome of a trial, from its record (user-derived names escaped)."""
    from optbench.store.failures import reason_line

    colour = {"reached": "green", "missed": "yellow"}.get(rec["outcome"], "red")
    head = escape(f"{rec['workload']}/{rec['size']} {rec['submission']} seed {rec['seed']}: ")
    head = f"[{colour}]{outcome_text(rec['outcome'], rec['stopped_by'])}[/{colour}] {head}"
    target = f"{rec['target']:g}" + (" from --target" if rec["target_kind"] == "user" else "")
    if rec["outcome"] == "reached":
        head += escape(f"{rec['metric_name']} {'<=' if rec['metric_goal'] == 'min' else '>='} {target} "
                       f"after {rec['time_to_target']:.2f} s timed, {rec['steps_to_target']} steps, "
                       f"{rec['examples_to_target']} examples")
    else:
        best = "n/a" if rec["best_metric"] is None else f"{rec['best_metric']:.4g}"
        tail = f"best {rec['metric_name']} {best} (target {target}) in {rec['total_steps']} steps"
        if rec["error"] and rec["error"].strip():
            tail += f"; {reason_line(rec['error'])}"  # the exception's type and message (optbench show: all)
        head += escape(tail)
    return f"{head}\n  -> {escape(path)}"


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


def tune(*, spec: Any, execution: Any, results_dir: Path | None, quiet: bool) -> int:
    """``optbench tune``: every planned trial not yet recorded, through the sweep engine; returns 1 when a trial
    crashed, else 0."""
    from dataclasses import replace

    from optbench.sweep.tuning import tune as run_tune

    spec = replace(spec, trial=replace(spec.trial, data_dir=paths.data_dir(spec.trial.data_dir)))
    out = paths.results_dir(results_dir)
    try:
        result = run_tune(spec, results_dir=out, execution=execution, reporter=TunePrinter(quiet))
    except KeyboardInterrupt:
        _console(stderr=True).print(escape(interrupted_message(None)), soft_wrap=True)
        return INTERRUPTED_EXIT
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
