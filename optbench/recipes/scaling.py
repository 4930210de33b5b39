"""``optbench scaling``: loss against compute over a ladder of model sizes, per submission, with power-law fits and
each submission's effective compute speedup over a reference.

For every (model size, submission, learning rate, seed) one trial runs its whole token budget (``full_budget``):
its final validation loss, model FLOPs, tokens, and tokens/FLOPs to the target are what the analysis reads. Each
seed is its own study (``scaling-<model>-seed<seed>``), the learning rates its trials. Per submission the analysis
picks the best learning rate at every size (lowest mean final loss over seeds), fits ``L(C) = E + a C^-b`` through
those points and ``lr*(N) = c N^-d`` through the best learning rates, and gives every size the submission's
effective compute speedup over the reference's fitted curve (:mod:`optbench.scoring.fits`: what is fitted, the
bootstrap over seeds, what the speedup means, when it is an extrapolation).

Compute is *model* FLOPs (``model_flops_per_example`` x examples: PaLM's formula for the LMs, ~6 N per token), the
same for every submission at one size and budget, so that a speedup is in data, not in optimizer arithmetic.

References:
  Wen et al., "Fantastic Pretraining Optimizers and Where to Find Them", 2025 (1-8x Chinchilla, speedups over AdamW).
  Semenov, Pagliardini, Jaggi, "Benchmarking Optimizers for Large Language Model Pretraining", arXiv 2509.01440.
  Hoffmann et al., "Training Compute-Optimal Large Language Models", arXiv 2203.15556 (2022).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from optbench.engine.prepared import TrialConfig
from optbench.errors import UsageError
from optbench.options import option
from optbench.recipes.common import MAX_EXTENSIONS
from optbench.sweep.engine import Planned, SweepResult

if TYPE_CHECKING:  # the fits import numpy: loaded where a ladder is analysed, not when the CLI starts
    from optbench.scoring.fits import Fit, Interval, Point, Speedup

KIND = "scaling"  # the study kind of its trials (optbench.store.records.RESEARCH_KINDS)
MAX_SWEEP = 10_000  # trials of one ladder
TINY_LADDER = ("t1", "t2", "t3", "t4")  # the default sizes: the tiny CPU ladder (optbench_workloads.ladder)
DEFAULT_FACTORS = (0.25, 1.0, 4.0)  # the learning-rate grid, as multiples of each submission's default lr
STUDY = re.compile(r"^scaling-(?P<model>.+)-seed\d+$")  # the study of a trial: its model size and seed


@dataclass(frozen=True, kw_only=True)
class ScalingSpec:
    """A ladder: every (model size, submission, learning rate, seed) is one trial; everything else about the trials
    (token budget, target, device...) is the ladder's :class:`~optbench.engine.prepared.TrialConfig`."""

    workload: str = option("wikitext", "--workload", "Workload (an LM: wikitext, c4 or lm).", kind="text",
                           short="-w", show_default=True)
    models: str | None = option(None, "--models", "Comma-separated model sizes of the ladder [default: the tiny CPU "
                                "ladder].", kind="text")
    submissions: tuple[str, ...] = option(("adamw",), "--opt", "Submission (repeatable); the reference is run too.",
                                          kind="text", short="-s", multiple=True, show_default=True)
    reference: str = option("adamw", "--reference", "The submission speedups are measured against.", kind="text",
                            show_default=True)
    lrs: tuple[float, ...] | None = option(None, "--lrs", "Comma-separated learning rates for every submission "
                                           "[default: --lr-factors x each submission's default lr].", kind="floats",
                                           high=1e6)
    lr_factors: tuple[float, ...] = option(DEFAULT_FACTORS, "--lr-factors", "Comma-separated multiples of each "
                                           "submission's default learning rate (without --lrs).", kind="floats",
                                           high=1e6, show_default=True)
    seeds: tuple[int, ...] = option((0, 1), "--seed", "Seed (repeatable); each seed is its own study; the intervals "
                                    "resample seeds, so they need two or more.", kind="int", low=0, high=2**63 - 1,
                                    multiple=True, show_default=True)
    extend_grid: bool = option(True, "--extend-grid", "Where a (size, submission)'s best learning rate sits at an "
                               "edge of its grid, add one more at the grid's spacing on that side and run again "
                               "(at most --max-extensions rounds); recorded in scaling.json.", kind="switch",
                               show_default=True)
    max_extensions: int = option(MAX_EXTENSIONS, "--max-extensions", "Rounds of grid extension at most.", kind="int",
                                 low=0, high=20, show_default=True)
    loss_floor: float = option(0.0, "--loss-floor", "Irreducible loss E of the fit L = E + a C^-b (default 0: a pure "
                               "power law; give a corpus's entropy when it is known).", kind="float", low=0.0,
                               high=1e6, low_open=False, show_default=True)


# ------------------------------------------------------------------------------------------------ the plan


def model_names(spec: ScalingSpec, default: Sequence[str]) -> tuple[str, ...]:
    """The ladder's model sizes, in the order given (``default`` without ``--models``); at least two to fit."""
    if spec.models is None:
        names = tuple(default)
    else:  # given, even as "" or ",": the sizes typed, never the default in their place
        names = tuple(dict.fromkeys(n for n in spec.models.replace(" ", "").split(",") if n))
    if len(names) < 2:
        raise UsageError("a scaling ladder needs at least two model sizes (--models a,b)")
    return names


def submissions_of(spec: ScalingSpec) -> tuple[str, ...]:
    """The reference first, then every other submission once."""
    return tuple(dict.fromkeys((spec.reference, *spec.submissions)))


def lr_grid(spec: ScalingSpec, default_lr: float | None) -> tuple[float, ...]:
    """``--lrs``, else ``--lr-factors`` x the submission's default learning rate (sorted, each once)."""
    if spec.lrs:
        return tuple(sorted(set(spec.lrs)))
    if default_lr is None or not default_lr > 0:
        raise UsageError("a submission without a default learning rate needs --lrs")
    return tuple(sorted({float(f"{default_lr * f:.6g}") for f in spec.lr_factors}))


Grids = Mapping[tuple[str, str], Sequence[float]]  # (model size, submission) -> its learning rates


def initial_grids(spec: ScalingSpec, models: Sequence[str], default_lrs: Mapping[str, float | None]) -> dict[
        tuple[str, str], tuple[float, ...]]:
    """Every (model size, submission)'s first grid (:func:`lr_grid`); a grid extension may grow each on its own."""
    return {(m, s): lr_grid(spec, default_lrs.get(s)) for m in models for s in submissions_of(spec)}


def plan_scaling(spec: ScalingSpec, base: TrialConfig, grids: Grids) -> list[Planned]:
    """One full-budget trial per (model size, submission) of ``grids``, learning rate of its grid and seed: study
    ``scaling-<model>-seed<s>``, trial ``lr<lr>`` (named by the value, so that a grown grid keeps every trial's
    name); tagged with the model, learning rate and seed."""
    seeds = tuple(dict.fromkeys(spec.seeds)) or (0,)
    if sum(map(len, grids.values())) * len(seeds) > MAX_SWEEP:
        raise UsageError(f"a ladder of more than {MAX_SWEEP} trials; use fewer sizes, learning rates or seeds")
    base = replace(base, full_budget=True, study_kind=KIND, varies=("model", "lr"))
    plan = []
    for (model, sub), lrs in grids.items():
        for lr in sorted(lrs):
            for seed in seeds:
                cfg = replace(sized(base, model), hparams={**base.hparams, "lr": lr}, seed=seed,
                              study=f"scaling-{model}-seed{seed}", trial=f"lr{lr:g}")
                plan.append(Planned(workload=spec.workload, submission=sub, config=cfg,
                                    tags={"model": model, "lr": lr, "seed": seed}))
    return plan


def lr_scores(runs: Sequence[ScalingRun]) -> dict[tuple[str, str], dict[float, float]]:
    """(model size, submission) -> learning rate -> mean final loss over seeds (inf: a seed diverged; trials without
    an answer left out): what a grid extension reads after each round."""
    import numpy as np

    found: dict[tuple[str, str], dict[float, list[float]]] = {}
    for r in runs:
        if not math.isnan(r.final_loss):
            found.setdefault((r.model, r.submission), {}).setdefault(r.lr, []).append(r.final_loss)
    return {k: {lr: float(np.mean(v)) for lr, v in by_lr.items()} for k, by_lr in found.items()}


def sized(cfg: TrialConfig, model: str) -> TrialConfig:
    """``cfg`` training the ladder's ``model`` size (TrialConfig.model, ``--model``)."""
    return replace(cfg, model=model)


# ------------------------------------------------------------------------------------------------ the trials


@dataclass(frozen=True, kw_only=True)
class ScalingRun:
    """One finished trial of a ladder: what the analysis reads from its record and its last evaluation.

    Attributes:
      final_loss: the metric at the budget's end (inf: diverged; NaN: no answer, an error or timeout).
      compute: model FLOPs spent (per-example model FLOPs x examples; NaN when not counted).
      params: the model's non-embedding parameter count (NaN when the record does not say).
    """

    model: str
    submission: str
    lr: float
    seed: int
    final_loss: float
    compute: float
    tokens: float
    params: float
    tokens_to_target: float
    flops_to_target: float
    outcome: str
    budget: int = 0  # the trial's step budget: one size run at two token budgets is two points of the ladder


def run_of(rec: Mapping[str, Any], last: Mapping[str, Any] | None) -> ScalingRun:
    """A trial as a :class:`ScalingRun`: ``rec`` its record (a dict or a results-table row), ``last`` its last
    evaluation row (None: it has none)."""
    outcome = str(rec["outcome"])
    loss = _num(last["metric_value"]) if last is not None else math.nan
    if outcome == "diverged":
        loss = math.inf
    elif outcome not in ("reached", "missed"):
        loss = math.nan
    per_example = _num(rec.get("model_flops_per_example"))
    examples = _num(last["examples"]) if last is not None else math.nan
    return ScalingRun(model=model_of(rec), submission=str(rec["submission"]), lr=_lr(rec), seed=int(rec["seed"]),
                      final_loss=loss, compute=per_example * examples,
                      tokens=_num(last["tokens"]) if last is not None else math.nan, params=_params(rec),
                      tokens_to_target=_to_target(rec.get("tokens_to_target")),
                      flops_to_target=_to_target(rec.get("flops_to_target")), outcome=outcome,
                      budget=int(_num(rec.get("max_steps"))) if math.isfinite(_num(rec.get("max_steps"))) else 0)


def model_of(rec: Mapping[str, Any]) -> str:
    """The model size a trial trained: its recorded ``model_config``'s, else the one its study names."""
    model = _model_config(rec).get("model")
    if isinstance(model, str) and model:
        return model
    found = STUDY.match(str(rec.get("study", "")))
    return found["model"] if found else str(rec.get("size", ""))


def _model_config(rec: Mapping[str, Any]) -> dict[str, Any]:
    """The record's ``model_config`` JSON (the ladder's shape and parameter counts), {} when it has none."""
    import json

    text = rec.get("model_config")
    try:
        found = json.loads(text) if isinstance(text, str) and text else {}
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _params(rec: Mapping[str, Any]) -> float:
    """Non-embedding parameters (Kaplan et al.'s N: at the tiny rungs the 8192-token embedding is most of the
    total, and it costs no FLOPs), NaN when the record does not say."""
    return _num(_model_config(rec).get("params_non_embedding"))


def _lr(rec: Mapping[str, Any]) -> float:
    import json

    hp = rec.get("hparams")
    try:
        value = (json.loads(hp) if isinstance(hp, str) else dict(hp or {})).get("lr")
    except (TypeError, ValueError):
        return math.nan
    return _num(value)


def _num(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _to_target(value: Any) -> float:
    """A count to the target, inf when missed (None or NaN in the record)."""
    x = _num(value)
    return x if math.isfinite(x) else math.inf


def scaling_runs(result: SweepResult) -> list[ScalingRun]:
    """The ladder's recorded trials (those without a result are left out)."""
    out = []
    for o in result.results():
        rec, rows = o.read()
        out.append(run_of(rec, rows.iloc[-1].to_dict() if len(rows) else None))
    return out


# ------------------------------------------------------------------------------------------------ the analysis


@dataclass(frozen=True, kw_only=True)
class ScalingRow:
    """One (model size, submission) of the ladder at its best learning rate.

    Attributes:
      best_lr: the learning rate with the lowest mean final loss over seeds (None: none finished finite);
        lr_edge: ``low``/``high`` when it is the grid's end (the optimum may lie beyond: widen the grid).
      loss: that mean, with its bootstrap interval over seeds (the best learning rate chosen again per draw).
      compute, tokens: model FLOPs and tokens of one trial at this size (the median over its trials).
      tokens_to_target, flops_to_target: the median over seeds at the best learning rate (inf: missed).
      speedup: the effective compute speedup over the reference (None for the reference itself, or without a
        reference fit).
    """

    model: str
    params: float
    submission: str
    best_lr: float | None
    lr_edge: str | None
    loss: Interval
    compute: float
    tokens: float
    tokens_to_target: float
    flops_to_target: float
    speedup: Speedup | None
    runs: int


@dataclass(frozen=True, kw_only=True)
class ScalingSummary:
    """The ladder's table and each submission's fits (None where fewer than two sizes have a finite loss, or
    for the learning-rate fit, parameter counts)."""

    rows: tuple[ScalingRow, ...]
    loss_fits: Mapping[str, Fit | None]
    lr_fits: Mapping[str, Fit | None]
    reference: str
    floor: float


Key = tuple[str, int]  # a point of the ladder: (model size, step budget)


def _points(runs: Sequence[ScalingRun]) -> dict[str, dict[Key, tuple[Point, list[ScalingRun]]]]:
    """submission -> (model, budget) -> (its :class:`~optbench.scoring.fits.Point` at compute x, its runs): losses
    as (learning rates, seeds), NaN where a trial has no answer; x the compute of the trials that ran their whole
    budget (a diverged one stopped early)."""
    import numpy as np

    from optbench.scoring.fits import Point

    grouped: dict[str, dict[Key, list[ScalingRun]]] = {}
    for r in runs:
        grouped.setdefault(r.submission, {}).setdefault((r.model, r.budget), []).append(r)
    out: dict[str, dict[Key, tuple[Point, list[ScalingRun]]]] = {}
    for sub, by_model in grouped.items():
        for model, rs in by_model.items():
            lrs = sorted({r.lr for r in rs})
            seeds = sorted({r.seed for r in rs})
            losses = np.full((len(lrs), len(seeds)), np.nan)
            for r in rs:
                losses[lrs.index(r.lr), seeds.index(r.seed)] = r.final_loss
            x = _full_median(rs, "compute")
            out.setdefault(sub, {})[model] = (Point(x=x, losses=losses, candidates=tuple(lrs)), rs)
    return out


def summarize_scaling(runs: Sequence[ScalingRun], *, reference: str, floor: float = 0.0, n_boot: int | None = None,
                      models: Sequence[str] = ()) -> ScalingSummary:
    """The ladder's rows (sizes in ``models`` order, then any others by compute; the reference first at each) and
    the fits (see the module docstring); ``n_boot`` bootstrap draws (None: :data:`optbench.scoring.fits.N_BOOT`)."""
    from optbench.scoring.fits import N_BOOT, fit_best_lr, fit_loss

    n_boot = N_BOOT if n_boot is None else n_boot
    points = _points(runs)
    loss_fits = {s: _fit_or_none(fit_loss, [p for p, _ in ms.values() if p.x > 0], floor=floor, n_boot=n_boot)
                 for s, ms in points.items()}
    lr_fits = {s: _fit_or_none(fit_best_lr, [replace(p, x=_size(rs)) for p, rs in ms.values()
                                             if _size(rs) > 0], n_boot=n_boot)
               for s, ms in points.items()}
    order = _model_order(points, models)
    subs = sorted(points, key=lambda s: (s != reference, s))
    rows = [_row(points[s][k], s, k[0], ref=loss_fits.get(reference) if s != reference else None, n_boot=n_boot)
            for k in order for s in subs if k in points[s]]
    return ScalingSummary(rows=tuple(rows), loss_fits=loss_fits, lr_fits=lr_fits, reference=reference, floor=floor)


def _fit_or_none(fit: Any, points: list[Point], **kw: Any) -> Fit | None:
    """``fit`` of ``points`` when two or more distinct x have a finite best, else None."""
    from optbench.scoring.fits import best_mean

    finite = {p.x for p in points if math.isfinite(p.x) and math.isfinite(best_mean(p.losses)[0])}
    return fit(points, **kw) if len(finite) >= 2 else None


def _size(rs: Sequence[ScalingRun]) -> float:
    finite = [r.params for r in rs if math.isfinite(r.params)]
    return finite[0] if finite else math.nan


def _model_order(points: Mapping[str, Mapping[Key, tuple[Point, list[ScalingRun]]]],
                 models: Sequence[str]) -> list[Key]:
    """The points' keys: sizes in ``models`` order, then any other by compute; each size's budgets ascending."""
    compute: dict[Key, float] = {}
    for ms in points.values():
        for k, (p, _) in ms.items():
            compute.setdefault(k, p.x)
    rank = {m: i for i, m in enumerate(models)}
    return sorted(compute, key=lambda k: (rank.get(k[0], len(rank)), compute[k] if k[0] not in rank else 0.0,
                                          k[0], k[1]))


def _full_median(rs: Sequence[ScalingRun], field: str) -> float:
    """The median of ``field`` over the trials that ran their whole budget (all of them when none did)."""
    import numpy as np

    full = [r for r in rs if r.outcome in ("reached", "missed")] or list(rs)
    values = [getattr(r, field) for r in full if math.isfinite(getattr(r, field))]
    return float(np.median(values)) if values else math.nan


def _row(found: tuple[Point, list[ScalingRun]], sub: str, model: str, *, ref: Fit | None, n_boot: int) -> ScalingRow:
    import numpy as np

    from optbench.scoring.fits import best_mean, interval, resampled_best, speedup

    point, rs = found
    loss, i = best_mean(point.losses)
    draws, _ = resampled_best(point.losses, n_boot, np.random.default_rng(0))
    best_lr = None if i is None else point.candidates[i]
    at_best = [r for r in rs if r.lr == best_lr]
    edge = None if i is None or len(point.candidates) < 2 else \
        "low" if i == 0 else "high" if i == len(point.candidates) - 1 else None
    return ScalingRow(
        model=model, params=_size(rs), submission=sub, best_lr=best_lr, lr_edge=edge,
        loss=interval(np.where(np.isfinite(draws), draws, np.nan), loss), compute=point.x,
        tokens=_full_median(rs, "tokens"),
        tokens_to_target=_median([r.tokens_to_target for r in at_best]),
        flops_to_target=_median([r.flops_to_target for r in at_best]),
        speedup=speedup(ref, point) if ref is not None and math.isfinite(point.x) and i is not None else None,
        runs=len(rs))


def _median(values: Sequence[float]) -> float:
    import numpy as np

    return float(np.median(values)) if values else math.nan
