"""``optbench curvature``: sharpness (top Hessian eigenvalue) against 2/lr during training, one trial per learning
rate, with diagnostics at every evaluation and the whole budget run (the dynamics, not the time to target, are the
result): progressive sharpening and the edge of stability.

References:
  Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability", ICLR 2021.
  McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162 (2018) (noise scale).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from optbench.engine.prepared import TrialConfig
from optbench.options import option
from optbench.recipes.budgets import steps_budget
from optbench.recipes.common import save_png, write_text
from optbench.report.pages import plain_formatter, plain_text
from optbench.sweep.engine import Planned, SweepResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DIAGNOSTICS_DEFAULTS = {"noise_batches": 0, "iters": 20}  # curvature's own defaults of the diagnostics options


@dataclass(frozen=True, kw_only=True)
class CurvatureSpec:
    """Trials with diagnostics at every evaluation, one per learning rate (edge-of-stability studies); the
    diagnostics' batch, noise batches and power iterations are trial options (``--hvp-batch`` ...)."""

    workload: str = option("teacher", "--workload", "Workload (the default: full-batch regression of a tanh "
                           "teacher, the edge-of-stability setting).", kind="text", short="-w", show_default=True)
    submission: str = option("sgd", "--opt", "Submission.", kind="text", short="-s", show_default=True)
    lrs: tuple[float, ...] = option((0.2, 0.5, 1.0), "--lrs", "Comma-separated learning rates: one trial each.",
                                    kind="floats", high=1e6, show_default=True)
    seed: int = option(0, "--seed", "Seed of every trial.", kind="int", low=0, high=2**63 - 1, show_default=True)


@dataclass(frozen=True, kw_only=True)
class CurvaturePoint:
    """One evaluation: step, metric, learning rate, sharpness, its stability threshold, noise scale (NaN if off)."""

    lr: float
    step: int
    metric: float
    learning_rate: float
    sharpness: float
    threshold: float
    noise_scale: float


def stability_threshold(learning_rate: float, momentum: float = 0.0) -> float:
    """The largest sharpness at which (heavy-ball) gradient descent is stable on a quadratic: 2 (1 + beta) / lr."""
    return 2.0 * (1.0 + momentum) / learning_rate if learning_rate > 0 else math.inf


def plan_curvature(spec: CurvatureSpec, base: TrialConfig) -> list[Planned]:
    """One full-budget trial per learning rate, with diagnostics (study ``curvature``, trial ``lr<value>``)."""
    base = replace(steps_budget(base), diagnostics=True, full_budget=True, study_kind="curvature", varies=("lr",),
                   noise_batches=DIAGNOSTICS_DEFAULTS["noise_batches"] if base.noise_batches is None
                   else base.noise_batches, iters=DIAGNOSTICS_DEFAULTS["iters"] if base.iters is None else base.iters)
    return [Planned(workload=spec.workload, submission=spec.submission,
                    config=replace(base, hparams={**base.hparams, "lr": lr}, seed=spec.seed, study="curvature",
                                   trial=f"lr{lr:g}"), tags={"lr": lr}) for lr in dict.fromkeys(spec.lrs)]


def curvature_points(result: SweepResult) -> list[CurvaturePoint]:
    """Every evaluation of every recorded trial as a :class:`CurvaturePoint` (the threshold uses the trial's
    momentum; at step 0, before any schedule, its base learning rate)."""
    points = []
    for o in result.results():
        rec, rows = o.read()
        lr = o.planned.tags["lr"]
        momentum = float(json.loads(rec["hparams"]).get("momentum", 0.0) or 0.0)
        for row in rows.itertuples():
            m = json.loads(row.metrics_json)
            points.append(CurvaturePoint(
                lr=lr, step=int(row.step), metric=float(row.metric_value), learning_rate=float(row.learning_rate),
                sharpness=float(m.get("sharpness", math.nan)),
                threshold=stability_threshold(row.learning_rate, momentum) if row.step else
                stability_threshold(lr, momentum), noise_scale=float(m.get("noise_scale", math.nan))))
    return points


def curvature_markdown(points: Sequence[CurvaturePoint], *, metric: str) -> str:
    """One row per evaluation: sharpness against the stability threshold 2 (1 + momentum) / lr."""
    lines = [f"| base lr | step | {metric} | lr | sharpness | 2(1+momentum)/lr | sharpness / threshold | noise scale |",
             "|---|---|---|---|---|---|---|---|"]
    for p in points:
        ratio = p.sharpness / p.threshold if math.isfinite(p.threshold) else math.nan
        lines.append(f"| {p.lr:g} | {p.step} | {p.metric:.4g} | {p.learning_rate:.4g} | {p.sharpness:.4g} | "
                     f"{p.threshold:.4g} | {ratio:.3f} | {'' if math.isnan(p.noise_scale) else f'{p.noise_scale:.4g}'} |")
    return "\n".join(lines) + "\n"


def plot_curvature(points: Sequence[CurvaturePoint], *, metric: str, title: str) -> Figure:
    """Sharpness (solid) and its threshold 2/lr (dashed) against step per learning rate, and the metric beside."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    left, right = fig.subplots(1, 2)
    for i, lr in enumerate(sorted({p.lr for p in points})):
        ps = [p for p in points if p.lr == lr]
        steps = [p.step for p in ps]
        left.plot(steps, [p.sharpness for p in ps], "-", color=f"C{i}", lw=1.8, label=f"sharpness, lr {lr:g}")
        left.plot(steps, [p.threshold for p in ps], "--", color=f"C{i}", lw=1.0, label=f"2(1+momentum)/lr, lr {lr:g}")
        right.plot(steps, [p.metric for p in ps], "-", color=f"C{i}", lw=1.5, label=f"lr {lr:g}")
    left.set(xlabel="step", ylabel="top Hessian eigenvalue", title=title)
    right.set(xlabel="step", ylabel=metric, yscale="log", title=metric)
    right.yaxis.set_major_formatter(plain_formatter())
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def write_curvature(points: Sequence[CurvaturePoint], out: Path, *, metric: str, title: str) -> tuple[Path, Path]:
    """Write ``curvature.md`` and ``curvature.png`` under ``out``."""
    md = write_text(out / "curvature.md", f"# {title}\n\n" + curvature_markdown(points, metric=metric))
    with plain_text():
        fig = plot_curvature(points, metric=metric, title=title)
    return md, save_png(fig, out / "curvature.png")

