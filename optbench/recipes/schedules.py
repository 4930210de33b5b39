"""``optbench schedules``: learning-rate schedules printed and plotted for given hyperparameters (no trials).

The schedules themselves live in :mod:`optbench.schedules`; this is the recipe that shows them, and the schedule
plot the shape search draws too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.errors import UsageError
from optbench.recipes.common import save_png
from optbench.report.pages import plain_text
from optbench.schedules import from_hparams, given, values

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MAX_SCHEDULE_STEPS = 10**9


def default_steps(total_steps: int, n: int = 11) -> list[int]:
    """``n`` steps spread over 1..total_steps (both ends included), for printing a schedule."""
    if total_steps <= n:
        return list(range(1, total_steps + 1))
    return sorted({max(1, round(i * total_steps / (n - 1))) for i in range(n)})


def schedule_values(hparams: Mapping[str, Any], *, total_steps: int, steps: Sequence[int] | None = None,
                    base_lr: float | None = None) -> list[tuple[int, float]]:
    """(step, multiplier or learning rate) of the schedule named by ``hparams`` over ``total_steps``.

    Args:
      hparams: schedule hyperparameters (see :data:`optbench.schedules.TABLE`); other keys are ignored.
      total_steps: the schedule's length (a submission uses the workload's step_hint).
      steps: 1-based steps to evaluate (default: 11 spread over the length).
      base_lr: if given, values are learning rates (``base_lr`` times the multiplier).
    Raises:
      UsageError: a bad schedule hyperparameter, a step or length out of range.
    """
    if not 1 <= total_steps <= MAX_SCHEDULE_STEPS:
        raise UsageError(f"--total-steps must be in 1..{MAX_SCHEDULE_STEPS}, got {total_steps}")
    steps = default_steps(total_steps) if not steps else list(steps)
    if any(not 1 <= t <= MAX_SCHEDULE_STEPS for t in steps):
        raise UsageError(f"--steps must be in 1..{MAX_SCHEDULE_STEPS} (steps count from 1)")
    schedule = from_hparams(hparams, total_steps=total_steps)
    scale = 1.0 if base_lr is None else float(base_lr)
    return [(t, scale * v) for t, v in zip(steps, values(schedule, steps))]


def describe(hparams: Mapping[str, Any]) -> str:
    """A short label of a schedule: its name and the keys it reads, with their values."""
    from optbench.schedules import TABLE

    name = str(given(hparams, "schedule"))
    kind = next((k for k in TABLE if k.name == name), None)
    keys = kind.keys if kind else ()
    return name + "".join(f" {k}={given(hparams, k)}" for k in keys)


def plot_schedules(curves: Sequence[tuple[str, Sequence[int], Sequence[float]]], *, ylabel: str,
                   title: str) -> Figure:
    """One line per (label, steps, values)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.2, 3.6 + 0.16 * len(curves)), layout="constrained")
    ax = fig.add_subplot()
    for label, steps, vals in curves:
        ax.plot(steps, vals, lw=1.8, label=label)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=7)  # below the axes: long labels never hide the curves
    return fig


def schedules_plot(configs: Sequence[Mapping[str, Any]], *, total_steps: int, out: Path,
                   base_lr: float | None = None) -> Path:
    """A PNG of each schedule in ``configs`` over every step 1..total_steps (at most 2000 points)."""
    stride = max(1, total_steps // 2000)
    steps = list(range(1, total_steps + 1, stride)) + ([total_steps] if (total_steps - 1) % stride else [])
    curves = [(describe(c), steps, [v for _, v in schedule_values(c, total_steps=total_steps, steps=steps,
                                                                  base_lr=base_lr)]) for c in configs]
    ylabel = "learning rate" if base_lr is not None else "multiplier of the base learning rate"
    with plain_text():
        fig = plot_schedules(curves, ylabel=ylabel, title=f"schedules over {total_steps} steps")
    return save_png(fig, out)

