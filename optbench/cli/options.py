"""Click options shared by several commands (kept in one place so `run` and `tune` cannot drift apart)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def results_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--results-dir``."""
    return click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Results directory [default: ./results or $OPTBENCH_RESULTS].")(f)


def trial_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--data-dir`` and the per-trial overrides a :class:`optbench.engine.prepared.TrialConfig` takes: budget, evaluation
    period, batch size, wall-clock limit, warm-up steps. Options are only parsed here; their bounds live in
    :mod:`optbench.engine.prepared`, which checks them once for ``run`` and ``tune`` alike."""
    options = [
        click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Prepared datasets [default: ~/.cache/optbench or $OPTBENCH_DATA]."),
        click.option("--max-steps", type=int, default=None, help="Override the step budget."),
        click.option("--max-seconds", type=float, default=None,
                     help="Override the budget of timed seconds."),
        click.option("--step-hint", type=int, default=None,
                     help="Steps the learning-rate schedule spans [default: the size's step_hint; with a short "
                          "--max-steps give the same value, or the run is mostly warm-up]; recorded on the result."),
        click.option("--eval-every", "eval_every_steps", type=int, default=None,
                     help="Evaluate every N steps (overrides the workload's period)."),
        click.option("--batch-size", type=int, default=None,
                     help="Override the global batch size (over all processes, accumulation included)."),
        click.option("--micro-batch-size", type=int, default=None,
                     help="Examples per forward/backward pass on one process; the batch is accumulated over "
                          "several passes with the same gradient [default: the size's, else one pass]."),
        click.option("--sync-every", type=int, default=None,
                     help="Read the training losses every N steps, the only device synchronisation between "
                          "evaluations [default: 1 on CPU, 20 on GPU]; a seconds budget may overshoot by N steps."),
        click.option("--checkpoint-every", type=float, default=None, metavar="SECONDS",
                     help="Save the trial's whole state every SECONDS of timed work, untimed, under "
                          "results/.checkpoints [default: every 600 s for budgets of an hour or more, else never]."),
        click.option("--timeout", type=float, default=None,
                     help="Wall-clock limit per trial in seconds (set-up, warm-up and evaluation included; it "
                          "interrupts a step that never returns); outcome 'timeout'."),
        click.option("--warmup-steps", type=int, default=0, show_default=True,
                     help="Untimed steps run and undone before the clock starts (warms caches / compilation)."),
        click.option("--diagnostics", is_flag=True,
                     help="At every evaluation (untimed): top Hessian eigenvalue beside 2/lr, preconditioned "
                          "sharpness, gradient noise scale, into metrics_json."),
        click.option("--compile", "compile_model", is_flag=True,
                     help="Run the model under torch.compile (compilation is timed unless --warmup-steps)."),
    ]
    for option in reversed(options):
        f = option(f)
    return f
