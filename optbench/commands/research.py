"""What the research-recipe commands do: plan, run through the one sweep engine, analyse, write, print.

Every recipe goes the same way (:func:`_sweep`): its planner (:mod:`optbench.recipes`) turns the options into a
plan of trials; the sweep engine prepares them all, skips what is recorded, claims and runs the rest where the
execution options say; the recipe's analysis reads the results back from the store and writes its tables and plots
under ``--out`` (default ``<results>/recipes/<recipe>/``). Running a finished recipe again trains nothing and
writes the same outputs; trials without a result (crashed, or still running in another process) are named and
left out of the tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from optbench.commands.trials import TrialPrinter
from optbench.console import console as _console
from optbench.console import escape
from optbench.store import paths
from optbench.store.records import outcome_text


class SweepPrinter(TrialPrinter):
    """A recipe's progress: one line per trial as it ends (its coordinates, and steps to target or the outcome)."""

    def observer(self, prep: Any) -> None:
        return None  # many short trials: a line each, no progress bar

    def done(self, outcome: Any) -> None:
        if outcome.status == "crashed" or outcome.note or outcome.path is None:
            super().done(outcome)
            return
        if self.quiet:
            return
        rec, _ = outcome.read()
        what = (f"{rec['steps_to_target']} steps" if rec["outcome"] == "reached" else
                outcome_text(rec["outcome"], rec["stopped_by"]))
        where = " ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in outcome.planned.tags.items()
                         if not isinstance(v, dict))
        seed = "" if "seed" in outcome.planned.tags else f" seed {rec['seed']}"
        was = " (recorded earlier)" if outcome.status == "recorded" else ""
        self.console.print(escape(f"{rec['submission']} {where}{seed}: {what}{was}"))


def _sweep(plan: Sequence[Any], recipe: str, *, execution: Any, results_dir: Path | None, out: Path | None,
           quiet: bool) -> tuple[Any, Path]:
    """Run ``plan`` through the sweep engine, waiting for trials another process runs: (its result, the folder the
    recipe writes to, proven writable before any trial trains). Trials that still have no result (crashed) are
    said in one line (the tables leave them out)."""
    from optbench.recipes.common import output_dir
    from optbench.sweep.engine import run_plan

    root = paths.results_dir(results_dir)
    folder = output_dir(root, recipe, out)
    result = run_plan(plan, results_dir=root, execution=execution, reporter=SweepPrinter(quiet=quiet), wait=True,
                      outputs=[folder])
    missing = [o for o in result.outcomes if o.path is None]
    if missing:
        _console(stderr=True).print(escape(f"{len(missing)} of {len(plan)} trials have no result "
                                           f"({', '.join(sorted({o.status for o in missing}))}); the tables leave "
                                           "them out: run the same command again to retry them"))
    _note_seconds_budget(result)
    return result, folder


def _note_seconds_budget(result: Any) -> None:
    """One line when trials of the recipe ended on their seconds budget (``--max-seconds``): what they measured
    depends on the machine's speed and load, unlike the steps the tables count (read from the footers alone)."""
    from optbench.store.checks import summarize

    metas = [summarize(o.path)[1] for o in result.results()]
    n = sum(1 for m in metas if isinstance(m, dict) and m["stopped_by"] == "seconds")
    if n:
        _console(stderr=True).print(escape(
            f"note: {n} of {len(metas)} trials ran out of their seconds budget (--max-seconds), not of steps: their "
            "misses and final values depend on this machine's speed and load; drop --max-seconds to measure steps "
            "alone"), soft_wrap=True)


def _base(trial: Any, hparams: Any) -> Any:
    """The trial options every trial of a recipe shares, with the recipe's ``-o`` hyperparameters."""
    return replace(trial, hparams=dict(hparams), data_dir=paths.data_dir(trial.data_dir))


def _wrote(*files: Path) -> None:
    _console().print(escape("wrote " + ", ".join(str(f) for f in files)))


def cbs(*, spec: Any, hparams: Any, trial: Any, execution: Any, results_dir: Path | None, out: Path | None,
        quiet: bool) -> None:
    """``optbench cbs``: the batch-size sweep, its table (with the critical batch size), every trial and the plot."""
    from optbench.recipes import cbs as recipe

    from optbench.recipes.common import extend_until_interior

    base = _base(trial, hparams)
    state: dict[str, Any] = {}

    def run_round(grids: Any) -> Any:  # one round of the sweep; a grid extension calls it again with more lrs
        plan = recipe.plan_cbs(spec, base, grids=grids)
        state["result"], state["folder"] = _sweep(plan, "cbs", execution=execution, results_dir=results_dir,
                                                  out=out, quiet=quiet)
        return recipe.lr_scores(recipe.cbs_runs(state["result"]))

    extension = extend_until_interior({b: spec.lrs for b in spec.batch_sizes}, run_round,
                                      max_extensions=spec.max_extensions, enabled=spec.extend_grid)
    runs = recipe.cbs_runs(state["result"])
    summary = recipe.summarize_cbs(runs, max_overhead=spec.max_overhead)
    title = f"critical batch size: {spec.submission} on {spec.workload}" + (f"/{trial.size}" if trial.size else "")
    files = recipe.write_cbs(summary, runs, state["folder"], title=title, extension=extension)
    _console().print(escape(recipe.cbs_markdown(summary)))
    for note in extension.notes():
        _console(stderr=True).print(escape(f"note: {note}"), soft_wrap=True)
    _wrote(*files)


def lr_sweep(*, spec: Any, opts: Sequence[str], hparams: Any, trial: Any, execution: Any,
             results_dir: Path | None, out: Path | None, quiet: bool) -> None:
    """``optbench lr-sweep``: steps to target of each submission at every learning rate, at one batch size."""
    from optbench.engine.prepared import resolve_size
    from optbench.plugins.registry import load_workload
    from optbench.recipes import cbs as recipe
    from optbench.recipes.common import write_text

    import json

    from optbench.recipes.common import extend_until_interior

    b = trial.batch_size or resolve_size(load_workload(spec.workload).obj, trial.size).batch_size
    spec, base, state = replace(spec, batch_sizes=(b,)), _base(trial, hparams), {}

    def run_round(grids: Any) -> Any:  # one round of the sweep; a grid extension calls it again with more lrs
        plan = recipe.plan_lr_sweep(opts, spec, base, grids=grids)
        state["result"], state["folder"] = _sweep(plan, "lr-sweep", execution=execution, results_dir=results_dir,
                                                  out=out, quiet=quiet)
        return {s: recipe.lr_scores(runs, key=lambda r: 0).get(0, {})
                for s, runs in recipe.lr_sweep_runs(state["result"]).items()}

    extension = extend_until_interior({s: spec.lrs for s in dict.fromkeys(opts)}, run_round,
                                      max_extensions=spec.max_extensions, enabled=spec.extend_grid)
    text = recipe.sensitivity_markdown(recipe.lr_sweep_runs(state["result"]))
    text += "".join(f"\nNote: {n}.\n" for n in extension.notes())
    folder = state["folder"]
    md = write_text(folder / "lr-sweep.md",
                    f"# Steps to target against learning rate on {spec.workload} (batch {b})\n\n{text}")
    js = write_text(folder / "lr-sweep.json", json.dumps({"batch_size": b, "seeds": list(spec.seeds),
                                                          "grid_extension": extension.to_json()}, indent=2) + "\n")
    _console().print(escape(text))
    _wrote(md, js)


def shape_search(*, spec: Any, hparams: Any, trial: Any, execution: Any, results_dir: Path | None,
                 out: Path | None, quiet: bool) -> None:
    """``optbench shape-search``: the ranking of schedule shapes (each at its best learning rate) and their plot."""
    from optbench.plugins.registry import load_workload
    from optbench.recipes import shapes as recipe

    plan = recipe.plan_shapes(spec, _base(trial, hparams))
    result, folder = _sweep(plan, "shape-search", execution=execution, results_dir=results_dir, out=out, quiet=quiet)
    metric = load_workload(spec.workload).obj.metric
    ranked = recipe.rank_shapes(recipe.shape_results(result), goal=metric.goal.value)
    steps = plan[0].config.max_steps
    title = f"schedule shapes: {spec.submission} on {spec.workload}, {steps} steps"
    files = recipe.write_shapes(ranked, folder, steps=steps, metric=metric.name, title=title)
    _console().print(escape(recipe.shapes_markdown(ranked[:10], metric=metric.name)))
    _wrote(*files)


def curvature(*, spec: Any, hparams: Any, trial: Any, execution: Any, results_dir: Path | None,
              out: Path | None, quiet: bool) -> None:
    """``optbench curvature``: every evaluation's sharpness against its stability threshold, table and plot."""
    from optbench.plugins.registry import load_workload
    from optbench.recipes import curvature as recipe

    plan = recipe.plan_curvature(spec, _base(trial, hparams))
    result, folder = _sweep(plan, "curvature", execution=execution, results_dir=results_dir, out=out, quiet=quiet)
    points = recipe.curvature_points(result)
    metric = load_workload(spec.workload).obj.metric.name
    files = recipe.write_curvature(points, folder, metric=metric,
                                   title=f"sharpness of {spec.submission} on {spec.workload}")
    _console().print(escape(recipe.curvature_markdown(points, metric=metric)))
    _wrote(*files)


def seesaw(*, spec: Any, hparams: Any, trial: Any, execution: Any, results_dir: Path | None, out: Path | None,
           quiet: bool) -> None:
    """``optbench seesaw``: Seesaw against its step-decay twin per seed, and the paired ratios."""
    from optbench.errors import UsageError
    from optbench.plugins.registry import load_workload
    from optbench.recipes import seesaw as recipe
    from optbench.recipes.common import write_text

    plan = recipe.plan_seesaw(spec, _base(trial, hparams))
    result, folder = _sweep(plan, "seesaw", execution=execution, results_dir=results_dir, out=out, quiet=quiet)
    pairs = recipe.seesaw_pairs(result)
    if not pairs:
        raise UsageError("no seed has both of its trials recorded yet; run the same command again")
    text = recipe.seesaw_markdown(pairs, metric=load_workload(spec.workload).obj.metric.name)
    md = write_text(folder / "seesaw.md",
                    f"# Seesaw vs step decay: {spec.submission} on {spec.workload}\n\n{text}")
    _console().print(escape(text))
    _wrote(md)


def scaling(*, spec: Any, hparams: Any, trial: Any, execution: Any, results_dir: Path | None, out: Path | None,
            quiet: bool) -> None:
    """``optbench scaling``: every model size x submission x learning rate x seed at the token budget (each
    (size, submission)'s grid extended while its best lr sits at an edge), then the table (best lr, final loss,
    FLOPs, speedup over the reference with intervals), the fits, JSON and plots."""
    from optbench.plugins.registry import load_submission
    from optbench.recipes import scaling as recipe
    from optbench.recipes import scaling_tables as tables
    from optbench.recipes.common import extend_until_interior

    models = recipe.model_names(spec, recipe.TINY_LADDER)
    default_lrs = {s: load_submission(s).obj.defaults.get("lr") for s in recipe.submissions_of(spec)}
    base, state = _base(trial, hparams), {}

    def run_round(grids: Any) -> Any:  # one round of the ladder; a grid extension calls it again with more lrs
        plan = recipe.plan_scaling(spec, base, grids)
        state["result"], state["folder"] = _sweep(plan, "scaling", execution=execution, results_dir=results_dir,
                                                  out=out, quiet=quiet)
        return recipe.lr_scores(recipe.scaling_runs(state["result"]))

    extension = extend_until_interior(recipe.initial_grids(spec, models, default_lrs), run_round,
                                      max_extensions=spec.max_extensions, enabled=spec.extend_grid)
    runs = recipe.scaling_runs(state["result"])
    summary = recipe.summarize_scaling(runs, reference=spec.reference, floor=spec.loss_floor, models=models)
    title = f"scaling: {', '.join(recipe.submissions_of(spec))} on {spec.workload} ({', '.join(models)})"
    files = tables.write_scaling(summary, runs, state["folder"], title=title, extension=extension.to_json())
    _console().print(escape(tables.scaling_markdown(summary)))
    for note in extension.notes():  # an optimum at an edge is a bound: the table marks it, this says why
        _console(stderr=True).print(escape(f"note: {note}"), soft_wrap=True)
    _wrote(*files)
