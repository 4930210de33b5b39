"""``optbench shape-search``: learning-rate schedule shapes searched apart from the base learning rate.

Each shape of the ``poly`` family (warm-up fraction, decay start, decay power, final fraction; scrambled-Halton
points of :data:`SHAPE_SPACE`) and each reference shape runs at every learning rate and seed for a fixed number of
steps (the whole budget: the schedule spans it), and is scored by its final metric at its best learning rate, as in
Naganuma et al.'s fixed-budget comparison. The submission is widened to accept every schedule key (variant
``shapes``, recorded as ``<name>_shapes``).

References:
  Naganuma et al., "Learning-rate schedules: shape and base rate, searched apart" (see docs/RESEARCH.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optbench.engine.prepared import MAX_STEPS, TrialConfig
from optbench.errors import UsageError
from optbench.options import option
from optbench.recipes.budgets import steps_budget
from optbench.recipes.common import grid_edge, save_png, write_text
from optbench.recipes.schedules import describe, plot_schedules, schedule_values
from optbench.report.pages import markdown_table, plain_text
from optbench.sweep.engine import Planned, SweepResult

# The searched family (schedule "poly"): each key's range and scaling, as in an AlgoPerf search space.
SHAPE_SPACE: Mapping[str, tuple[float, float, str]] = {
    "warmup_frac": (0.0, 0.2, "linear"),
    "decay_start_frac": (0.0, 0.9, "linear"),
    "decay_power": (0.25, 4.0, "log"),
    "decay_floor": (0.0, 0.3, "linear"),
}
# Shapes scored beside the sampled ones: the built-in default and the families the papers compare.
REFERENCE_SHAPES: tuple[Mapping[str, Any], ...] = (
    {"schedule": "cosine", "warmup_frac": 0.05, "decay_floor": 0.1},
    {"schedule": "constant", "warmup_frac": 0.05},
    {"schedule": "wsd", "warmup_frac": 0.05, "cooldown_frac": 0.2, "decay_floor": 0.0},
)


def sample_shapes(n: int, *, seed: int) -> list[dict[str, Any]]:
    """``n`` shapes of the ``poly`` family at scrambled-Halton points of :data:`SHAPE_SPACE` (rounded to 3 digits)."""
    from optbench.sweep.tuning import halton_points

    if n == 0:
        return []
    shapes = []
    for u in halton_points(n, len(SHAPE_SPACE), seed=seed):
        shape: dict[str, Any] = {"schedule": "poly"}
        for x, (key, (low, high, scaling)) in zip(u, SHAPE_SPACE.items()):
            value = low * (high / low) ** x if scaling == "log" else low + (high - low) * x
            shape[key] = float(f"{value:.3g}")
        shapes.append(shape)
    return shapes


@dataclass(frozen=True, kw_only=True)
class ShapeScore:
    """One shape's result: the final metric at each learning rate (median over seeds) and the best of them."""

    shape: Mapping[str, Any]
    by_lr: Mapping[float, float]
    best_lr: float
    score: float
    lr_edge: str | None = None  # "low"/"high": the best lr sits at that end of the grid (a bound, not an optimum)


@dataclass(frozen=True, kw_only=True)
class ShapeSpec:
    """A schedule-shape search: every (shape, learning rate, seed) is one trial of ``steps`` steps."""

    workload: str = option("linreg", "--workload", "Workload.", kind="text", short="-w", show_default=True)
    submission: str = option("adamw", "--opt", "A scheduled submission.", kind="text", short="-s",
                             show_default=True)
    shapes: int = option(8, "--shapes", "Shapes sampled from the poly family.", kind="int", low=0, high=1000,
                         show_default=True)
    lrs: tuple[float, ...] = option((0.003, 0.01, 0.03), "--lrs", "Comma-separated base learning rates, swept for "
                                    "every shape (searched apart from the shape).", kind="floats", high=1e6,
                                    show_default=True)
    seeds: tuple[int, ...] = option((0,), "--seed", "Seed (repeatable).", kind="int", low=0, high=2**63 - 1,
                                    multiple=True, show_default=True)
    search_seed: int = option(0, "--search-seed", "Seed of the Halton points.", kind="int", low=0, high=2**63 - 1,
                              show_default=True)
    steps: int | None = option(None, "--steps", "Steps per trial and schedule length [default: step_hint].",
                               kind="int", low=1, high=MAX_STEPS)
    no_references: bool = option(False, "--no-references", "Skip the reference shapes (cosine, constant, WSD).",
                                 kind="flag")


def plan_shapes(spec: ShapeSpec, base: TrialConfig) -> list[Planned]:
    """One trial per (shape, learning rate, seed): studies ``shape<k>-seed<N>`` (each seed its own study),
    trials ``lr<i>``, each running its whole
    ``steps`` (full budget) over a schedule of that length."""
    from optbench.engine.prepared import resolve_size
    from optbench.plugins.registry import load_workload

    steps = spec.steps or resolve_size(load_workload(spec.workload).obj, base.size).step_hint
    shapes = sample_shapes(spec.shapes, seed=spec.search_seed) + ([] if spec.no_references else
                                                                   [dict(s) for s in REFERENCE_SHAPES])
    if not shapes:
        raise UsageError("no shape to search: --shapes 0 with --no-references")
    base = replace(steps_budget(base), max_steps=steps, step_hint=steps, full_budget=True, variant="shapes",
                   study_kind="shape-search", varies=("schedule", "lr"))
    plan = []
    for k, shape in enumerate(shapes):
        for i, lr in enumerate(spec.lrs):
            for seed in spec.seeds:
                cfg = replace(base, hparams={**base.hparams, **shape, "lr": lr}, seed=seed,
                              study=f"shape{k}-seed{seed}", trial=f"lr{i}")
                plan.append(Planned(workload=spec.workload, submission=spec.submission, config=cfg,
                                    tags={"shape": shape, "lr": lr}))
    return plan


def shape_results(result: SweepResult) -> list[tuple[Mapping[str, Any], float, float]]:
    """(shape, lr, final metric) of every recorded trial: the metric at its last evaluation (NaN without one)."""
    out = []
    for o in result.results():
        _, rows = o.read()
        value = float(rows["metric_value"].iloc[-1]) if len(rows) else math.nan
        out.append((o.planned.tags["shape"], o.planned.tags["lr"], value))
    return out


def rank_shapes(results: Sequence[tuple[Mapping[str, Any], float, float]], *, goal: str) -> list[ShapeScore]:
    """Scores from (shape, lr, final metric) triples: per shape and lr the median over seeds, per shape the best
    lr; best shape first. A NaN/inf metric (diverged) counts as the worst."""
    import json

    import numpy as np

    worst = math.inf if goal == "min" else -math.inf
    cells: dict[str, dict[float, list[float]]] = {}
    shapes: dict[str, Mapping[str, Any]] = {}
    for shape, lr, value in results:
        key = json.dumps(dict(shape), sort_keys=True)
        shapes[key] = shape
        cells.setdefault(key, {}).setdefault(lr, []).append(value if math.isfinite(value) else worst)
    out = []
    for key, by_lr in cells.items():
        med = {lr: float(np.median(v)) for lr, v in sorted(by_lr.items())}
        pick = min if goal == "min" else max
        best_lr = pick(med, key=lambda lr: med[lr])
        edge = grid_edge(list(med), {lr: v if goal == "min" else -v for lr, v in med.items()})
        out.append(ShapeScore(shape=shapes[key], by_lr=med, best_lr=best_lr, score=med[best_lr], lr_edge=edge))
    return sorted(out, key=lambda s: s.score if goal == "min" else -s.score)


def shapes_markdown(ranked: Sequence[ShapeScore], *, metric: str) -> str:
    """The ranking as Markdown: rank, the shape's keys, its best lr and score, and its score at every lr."""
    lrs = sorted({lr for s in ranked for lr in s.by_lr})
    head = ["rank", "shape", "best lr", f"final {metric}"] + [f"lr {lr:g}" for lr in lrs]
    rows = [[str(i), describe(s.shape), f"{s.best_lr:g}" + (f" ({s.lr_edge} edge)" if s.lr_edge else ""),
             f"{s.score:.4g}", *(f"{s.by_lr[lr]:.4g}" if lr in s.by_lr else "" for lr in lrs)]
            for i, s in enumerate(ranked, 1)]
    return "\n".join(markdown_table(head, rows)) + "\n"


def write_shapes(ranked: Sequence[ShapeScore], out: Path, *, steps: int, metric: str, title: str,
                 top: int = 5) -> tuple[Path, Path]:
    """Write ``shapes.md`` (the ranking) and ``shapes.png`` (the best ``top`` shapes and the references)."""
    md = write_text(out / "shapes.md", f"# {title}\n\n" + shapes_markdown(ranked, metric=metric))
    shown = [s for s in ranked[:top]] + [s for s in ranked[top:] if s.shape["schedule"] != "poly"]
    stride = max(1, steps // 500)
    at = list(range(1, steps + 1, stride))
    curves = [(f"#{ranked.index(s) + 1} {s.score:.4g} (lr {s.best_lr:g}): {describe(s.shape)}", at,
               [v for _, v in schedule_values(s.shape, total_steps=steps, steps=at)]) for s in shown]
    with plain_text():
        fig = plot_schedules(curves, ylabel="multiplier of the best base lr", title=title)
    return md, save_png(fig, out / "shapes.png")


