"""The research recipes behind ``optbench schedules``, ``optbench cbs`` and ``optbench shape-search``.

Each function here does the work of one command and returns plain data (rows, paths); :mod:`optbench.cli.research`
only parses options and prints. Trials are ordinary optbench trials (:func:`optbench.engine.runner.run_trial`), written
to the results store like any other, so ``optbench score`` and ``optbench report`` see them too.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.errors import UsageError
from optbench.store.fsutil import atomic_file
from optbench.report.pages import plain_formatter, plain_text
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


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    with plain_text():
        fig.savefig(buf, format="png", dpi=110)
    try:
        with atomic_file(path) as f:
            f.write(buf.getvalue())
    except OSError as exc:
        raise UsageError(f"could not write {str(path)!r}: {exc.strerror or exc}") from None
    return path


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


class Retargeted:
    """A workload whose sizes have other settings (target, step_hint), per size name: ``cbs --target``, and trials
    that must run their whole budget (a target out of reach) over a schedule of a given length (step_hint)."""

    def __init__(self, inner: Any, changes: Mapping[str, Mapping[str, Any]]) -> None:
        from dataclasses import replace

        self.inner = inner
        self.name, self.metric, self.default_size = inner.name, inner.metric, inner.default_size
        self.description = inner.description
        self.sizes = {k: replace(s, **changes[k]) if k in changes else s for k, s in inner.sizes.items()}
        # Sizes a workload makes on demand (lm's TIER@DATASET) are not listed: take them from it by name.
        self.sizes.update({k: replace(inner.sizes[k], **v) for k, v in changes.items() if k not in self.sizes})

    def setup(self, size: Any, *, device: Any, data_dir: Path | None) -> Any:
        return self.inner.setup(size, device=device, data_dir=data_dir)


def retarget(workload: Any, size: str, target: float, *, step_hint: int | None = None) -> Any:
    """``workload`` (a :class:`optbench.plugins.registry.Loaded`) with ``target`` (and ``step_hint``) at ``size``; same name
    and origin (the record keeps the target it ran with)."""
    from optbench.plugins.registry import Loaded

    if size not in workload.obj.sizes:
        raise UsageError(f"workload {workload.name!r} has no size {size!r}; it has {', '.join(workload.obj.sizes)}")
    change: dict[str, Any] = {"target": float(target)}
    if step_hint is not None:
        change["step_hint"] = int(step_hint)
    return Loaded(name=workload.name, obj=Retargeted(workload.obj, {size: change}), origin=workload.origin)


# ------------------------------------------------------------------------------------------- critical batch size

DEFAULT_OVERHEAD = 0.2  # Zhang et al. 2024: 20% more steps than perfect linear scaling


def median_interval(values: Sequence[float], *, level: float = 0.9, n_boot: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of ``values`` (inf = missed) with a bootstrap percentile interval over them
    (NaN bounds for fewer than 2 values)."""
    import numpy as np

    from optbench.scoring.stats import _bootstrap_medians, _percentile_bounds

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) < 2:
        return float(np.median(x)), math.nan, math.nan
    low, high = _percentile_bounds(_bootstrap_medians(x, n_boot, np.random.default_rng(seed)), level)
    return float(np.median(x)), float(low), float(high)


@dataclass(frozen=True, kw_only=True)
class CbsRun:
    """One finished trial of a batch-size sweep (steps_to_target None when it missed)."""

    batch_size: int
    lr: float
    seed: int
    steps_to_target: int | None
    examples_to_target: int | None
    outcome: str


@dataclass(frozen=True, kw_only=True)
class CbsRow:
    """Steps to target at one batch size, at its best learning rate.

    Attributes:
      steps: median over seeds of the steps to target at ``best_lr`` (inf if it missed), and its interval.
      linear: steps perfect linear scaling from the smallest reaching batch size predicts, S(B0) B0 / B.
      overhead: steps / linear - 1 (0: perfect scaling).
    """

    batch_size: int
    best_lr: float | None
    steps: float
    steps_low: float
    steps_high: float
    examples: float
    linear: float
    overhead: float
    reached: int
    runs: int


@dataclass(frozen=True, kw_only=True)
class CbsSummary:
    """The sweep's table, the critical batch size by the stated definition, and McCandlish's fit."""

    rows: tuple[CbsRow, ...]
    critical_batch_size: int | None
    max_overhead: float
    s_min: float  # fit S(B) = S_min (1 + B_noise / B)
    b_noise: float

    def definition(self) -> str:
        return (f"critical batch size = the largest batch size B of the sweep whose steps to target S(B) are at most "
                f"{1 + self.max_overhead:g} x the perfect linear scaling S(B0) B0 / B from the smallest batch size "
                f"B0 that reached the target, every batch size up to B included (Zhang et al. 2024: "
                f"{self.max_overhead:.0%} overhead); S(B) is the median over seeds at B's best learning rate.")


def summarize_cbs(runs: Sequence[CbsRun], *, max_overhead: float = DEFAULT_OVERHEAD) -> CbsSummary:
    """The steps-to-target table of a batch-size sweep and its critical batch size (see :meth:`CbsSummary.definition`).

    Per batch size, each learning rate's score is the median over seeds of the steps to target (a miss is inf);
    the best learning rate is the one with the fewest.
    """
    import numpy as np

    by_b: dict[int, dict[float, list[CbsRun]]] = {}
    for r in runs:
        by_b.setdefault(r.batch_size, {}).setdefault(r.lr, []).append(r)
    best: list[tuple[int, float | None, list[CbsRun]]] = []
    for b in sorted(by_b):
        scored = [(float(np.median([_steps(r) for r in rs])), lr, rs) for lr, rs in by_b[b].items()]
        score, lr, rs = min(scored, key=lambda x: (x[0], x[1]))
        best.append((b, lr if math.isfinite(score) else None, rs))
    reaching = [(b, rs) for b, lr, rs in best if lr is not None]
    base = (reaching[0][0], float(np.median([_steps(r) for r in reaching[0][1]]))) if reaching else None
    rows, critical, ok = [], None, True
    for b, lr, rs in best:
        med, low, high = median_interval([_steps(r) for r in rs])
        examples = float(np.median([math.inf if r.examples_to_target is None else r.examples_to_target for r in rs]))
        linear = base[1] * base[0] / b if base else math.nan
        over = med / linear - 1.0 if base and math.isfinite(med) else math.inf
        if base and b >= base[0]:
            ok = ok and over <= max_overhead + 1e-12
            critical = b if ok else critical
        rows.append(CbsRow(batch_size=b, best_lr=lr, steps=med, steps_low=low, steps_high=high, examples=examples,
                           linear=linear, overhead=over, reached=sum(r.steps_to_target is not None for r in rs),
                           runs=len(rs)))
    s_min, b_noise = fit_steps_model([(r.batch_size, r.steps) for r in rows])
    return CbsSummary(rows=tuple(rows), critical_batch_size=critical, max_overhead=max_overhead, s_min=s_min,
                      b_noise=b_noise)


def _steps(r: CbsRun) -> float:
    return math.inf if r.steps_to_target is None else float(r.steps_to_target)


def fit_steps_model(points: Sequence[tuple[int, float]]) -> tuple[float, float]:
    """Least-squares fit of McCandlish et al.'s S(B) = S_min (1 + B_noise / B), linear in 1/B, on the finite points;
    returns (S_min, B_noise), NaN when fewer than 2 points or the fit is degenerate."""
    import numpy as np

    pts = [(1.0 / b, s) for b, s in points if math.isfinite(s)]
    if len(pts) < 2:
        return math.nan, math.nan
    x, y = np.array(pts).T
    slope, intercept = np.polyfit(x, y, 1)  # S = S_min + S_min B_noise / B
    if intercept <= 0:
        return float(intercept), math.nan
    return float(intercept), float(slope / intercept)


CBS_HEADERS = ("batch size", "best lr", "steps to target (median)", "90% interval", "examples", "linear scaling",
               "overhead", "reached")


def _num(x: float) -> str:
    return "missed" if x == math.inf else ("" if math.isnan(x) else f"{x:.4g}")


def cbs_cells(r: CbsRow) -> list[str]:
    """One row of the sweep's table as text, in :data:`CBS_HEADERS` order (``cbs`` and ``report`` print the same)."""
    interval = f"{_num(r.steps_low)}-{_num(r.steps_high)}" if math.isfinite(r.steps_high) else ""
    over = "" if math.isnan(r.overhead) else (_num(r.overhead) if r.overhead == math.inf else f"{r.overhead:+.0%}")
    examples = f"{r.examples:,.0f}" if math.isfinite(r.examples) else _num(r.examples)
    return [str(r.batch_size), "" if r.best_lr is None else f"{r.best_lr:.3g}", _num(r.steps), interval, examples,
            _num(r.linear), over, f"{r.reached}/{r.runs}"]


def cbs_markdown(summary: CbsSummary) -> str:
    """The table as Markdown, with the definition and the fit below it."""
    lines = ["| " + " | ".join(CBS_HEADERS) + " |", "|" + "---|" * len(CBS_HEADERS)]
    lines += ["| " + " | ".join(cbs_cells(r)) + " |" for r in summary.rows]
    lines += ["", f"Critical batch size: **{summary.critical_batch_size}**. {summary.definition()}",
              f"Fit S(B) = S_min (1 + B_noise / B) (McCandlish et al. 2018): S_min = {_num(summary.s_min)}, "
              f"B_noise = {_num(summary.b_noise)}."]
    return "\n".join(lines) + "\n"


def plot_cbs(summary: CbsSummary, *, title: str) -> Figure:
    """Steps to target against batch size (log-log), with perfect linear scaling and the critical batch size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    rows = [r for r in summary.rows if math.isfinite(r.steps)]
    if rows:
        bs = [r.batch_size for r in rows]
        ax.plot(bs, [r.steps for r in rows], "o-", lw=2, label="steps to target (best lr, median over seeds)")
        lows = [r.steps - r.steps_low if math.isfinite(r.steps_low) else 0.0 for r in rows]
        highs = [r.steps_high - r.steps if math.isfinite(r.steps_high) else 0.0 for r in rows]
        ax.errorbar(bs, [r.steps for r in rows], yerr=[lows, highs], fmt="none", capsize=3, color="C0")
        all_b = [r.batch_size for r in summary.rows]
        ax.plot(all_b, [r.linear for r in summary.rows], "--", color="gray", label="perfect linear scaling")
        ax.plot(all_b, [r.linear * (1 + summary.max_overhead) for r in summary.rows], ":", color="gray",
                label=f"+{summary.max_overhead:.0%} overhead")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        _plain_log_ticks(ax, all_b)
    if summary.critical_batch_size is not None:
        ax.axvline(summary.critical_batch_size, color="C3", lw=1.2, label=f"critical batch size {summary.critical_batch_size}")
    ax.set(xlabel="batch size", ylabel="steps to target", title=title)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # nothing reached and no critical batch size: an empty axis, no legend
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no batch size reached the target", ha="center", va="center", transform=ax.transAxes)
    return fig


def _plain_log_ticks(ax: Any, xs: Sequence[int]) -> None:
    """Batch sizes as the x ticks and plain-number y labels, with the 2s and 5s of each decade marked."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(plain_formatter())
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


@dataclass(frozen=True, kw_only=True)
class CbsSpec:
    """A batch-size sweep: every (batch size, learning rate, seed) is one trial."""

    workload: str
    submission: str
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    seeds: tuple[int, ...] = (0,)
    size: str | None = None
    target: float | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    max_seconds: float | None = None  # timed seconds per trial: lift it for large batches (steps are the measure)
    eval_every_steps: int | None = None
    device: str = "cpu"
    data_dir: Path | None = None
    max_overhead: float = DEFAULT_OVERHEAD


def check_cbs(spec: CbsSpec) -> None:
    """One-line errors for a sweep that cannot run, before any trial."""
    if not spec.batch_sizes or any(b < 1 for b in spec.batch_sizes):
        raise UsageError("--batch-sizes needs positive integers, e.g. 16,32,64")
    if not spec.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in spec.lrs):
        raise UsageError("--lrs needs positive learning rates, e.g. 0.003,0.01,0.03")
    if not (math.isfinite(spec.max_overhead) and spec.max_overhead >= 0):
        raise UsageError(f"--overhead must be >= 0, got {spec.max_overhead}")
    if len(spec.batch_sizes) * len(spec.lrs) * len(spec.seeds) > 10_000:
        raise UsageError("a sweep of more than 10000 trials; use fewer batch sizes, learning rates or seeds")


def run_cbs(spec: CbsSpec, *, results_dir: Path, progress: Any = None) -> list[CbsRun]:
    """Run the sweep (one trial per batch size, learning rate and seed; written to ``results_dir`` like any trial).

    Args:
      spec: the sweep.
      results_dir: the results store.
      progress: optional callable(CbsRun) called after each trial.
    Raises:
      UsageError: a bad sweep or trial setting, before the first trial.
    """
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, prepare, run_prepared

    check_cbs(spec)
    workload = load_workload(spec.workload)
    size = spec.size or workload.obj.default_size
    if spec.target is not None:
        workload = retarget(workload, size, spec.target)
    submission = load_submission(spec.submission)
    plans = []
    for b in spec.batch_sizes:  # every trial is prepared (validated) before the first one runs
        for i, lr in enumerate(spec.lrs):
            for seed in spec.seeds:
                cfg = TrialConfig(size=size, hparams={**spec.hparams, "lr": lr}, seed=seed, batch_size=b,
                                  study=f"cbs-b{b}", trial=f"lr{i}", max_steps=spec.max_steps,
                                  max_seconds=spec.max_seconds,
                                  eval_every_steps=spec.eval_every_steps, device=spec.device, data_dir=spec.data_dir)
                plans.append((b, lr, seed, prepare(workload, submission, cfg, results_dir=results_dir)))
    runs = []
    for b, lr, seed, prep in plans:
        rec = run_prepared(prep).record
        run = CbsRun(batch_size=b, lr=lr, seed=seed, steps_to_target=rec.steps_to_target,
                     examples_to_target=rec.examples_to_target, outcome=rec.outcome)
        runs.append(run)
        if progress is not None:
            progress(run)
    return runs


def write_cbs(summary: CbsSummary, runs: Sequence[CbsRun], out: Path, *, title: str) -> tuple[Path, Path, Path]:
    """Write ``cbs.md`` (table, definition, fit), ``cbs.csv`` (every trial) and ``cbs.png`` under ``out``."""
    from optbench.store.fsutil import ensure_writable_dir

    ensure_writable_dir(out, what="--out directory")
    md = out / "cbs.md"
    with atomic_file(md, "w") as f:
        f.write(f"# {title}\n\n" + cbs_markdown(summary))
    csv = out / "cbs.csv"
    with atomic_file(csv, "w") as f:
        f.write("batch_size,lr,seed,outcome,steps_to_target,examples_to_target\n")
        for r in runs:
            f.write(f"{r.batch_size},{r.lr!r},{r.seed},{r.outcome},{'' if r.steps_to_target is None else r.steps_to_target},"
                    f"{'' if r.examples_to_target is None else r.examples_to_target}\n")
    with plain_text():
        fig = plot_cbs(summary, title=title)
    return md, csv, save_png(fig, out / "cbs.png")


# ------------------------------------------------------------------------------------------ schedule-shape search

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


@dataclass(frozen=True, kw_only=True)
class ShapeSpec:
    """A schedule-shape search: every (shape, learning rate, seed) is one trial of ``steps`` steps."""

    workload: str
    submission: str
    shapes: int = 8
    lrs: tuple[float, ...] = (0.003, 0.01, 0.03)
    seeds: tuple[int, ...] = (0,)
    size: str | None = None
    steps: int | None = None  # default: the size's step_hint (the length the schedules span)
    references: bool = True
    search_seed: int = 0
    hparams: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    data_dir: Path | None = None


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
        out.append(ShapeScore(shape=shapes[key], by_lr=med, best_lr=best_lr, score=med[best_lr]))
    return sorted(out, key=lambda s: s.score if goal == "min" else -s.score)


def run_shape_search(spec: ShapeSpec, *, results_dir: Path, progress: Any = None) -> tuple[list[ShapeScore], int, str]:
    """Run the search; returns (ranked shapes, steps per trial, metric name). Trials go to ``results_dir``.

    The submission is widened to accept every schedule key (:func:`optbench.plugins.wrapping.with_schedule_keys`) and
    recorded as ``<name>_shapes``; each trial runs the whole ``steps`` (the target is set out of reach; the
    schedules span ``steps``, given to the submission as the step_hint), and its
    score is the metric at the last evaluation, as in Naganuma et al.'s fixed-budget comparison.
    """
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, prepare, run_prepared
    from optbench.plugins.wrapping import derived, with_schedule_keys

    if not spec.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in spec.lrs):
        raise UsageError("--lrs needs positive learning rates, e.g. 0.003,0.01,0.03")
    if not 0 <= spec.shapes <= 1000:
        raise UsageError(f"--shapes must be in 0..1000, got {spec.shapes}")
    workload = load_workload(spec.workload)
    size = spec.size or workload.obj.default_size
    if size not in workload.obj.sizes:
        raise UsageError(f"workload {workload.name!r} has no size {size!r}; it has {', '.join(workload.obj.sizes)}")
    if spec.steps is not None and not 1 <= spec.steps <= 10**9:
        raise UsageError(f"--steps must be in 1..{10**9}, got {spec.steps}")
    goal = workload.obj.metric.goal.value
    steps = spec.steps or workload.obj.sizes[size].step_hint
    workload = retarget(workload, size, -math.inf if goal == "min" else math.inf, step_hint=steps)
    base = load_submission(spec.submission)
    if "schedule" not in base.obj.defaults:
        raise UsageError(f"submission {base.name!r} takes no schedule hyperparameter; it cannot follow a shape")
    wide = derived(base, with_schedule_keys(base.obj, name=f"{base.obj.name}_shapes"), name=f"{base.name}_shapes")
    shapes = sample_shapes(spec.shapes, seed=spec.search_seed) + (list(REFERENCE_SHAPES) if spec.references else [])
    plans = []
    for k, shape in enumerate(shapes):
        for i, lr in enumerate(spec.lrs):
            for seed in spec.seeds:
                cfg = TrialConfig(size=size, hparams={**spec.hparams, **shape, "lr": lr}, seed=seed, max_steps=steps,
                                  study=f"shape{k}", trial=f"lr{i}", device=spec.device, data_dir=spec.data_dir)
                plans.append((shape, lr, prepare(workload, wide, cfg, results_dir=results_dir)))
    results = []
    for shape, lr, prep in plans:
        rows = run_prepared(prep).rows
        value = rows[-1].metric_value if rows else math.nan
        results.append((shape, lr, value))
        if progress is not None:
            progress(shape, lr, value)
    return rank_shapes(results, goal=goal), steps, workload.obj.metric.name


def shapes_markdown(ranked: Sequence[ShapeScore], *, metric: str) -> str:
    """The ranking as Markdown: rank, the shape's keys, its best lr and score, and its score at every lr."""
    lrs = sorted({lr for s in ranked for lr in s.by_lr})
    head = ["rank", "shape", "best lr", f"final {metric}"] + [f"lr {lr:g}" for lr in lrs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, s in enumerate(ranked, 1):
        cells = [str(i), describe(s.shape), f"{s.best_lr:g}", f"{s.score:.4g}"]
        cells += [f"{s.by_lr[lr]:.4g}" if lr in s.by_lr else "" for lr in lrs]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_shapes(ranked: Sequence[ShapeScore], out: Path, *, steps: int, metric: str, title: str,
                 top: int = 5) -> tuple[Path, Path]:
    """Write ``shapes.md`` (the ranking) and ``shapes.png`` (the best ``top`` shapes and the references)."""
    from optbench.store.fsutil import ensure_writable_dir

    ensure_writable_dir(out, what="--out directory")
    md = out / "shapes.md"
    with atomic_file(md, "w") as f:
        f.write(f"# {title}\n\n" + shapes_markdown(ranked, metric=metric))
    shown = [s for s in ranked[:top]] + [s for s in ranked[top:] if s.shape["schedule"] != "poly"]
    stride = max(1, steps // 500)
    at = list(range(1, steps + 1, stride))
    curves = [(f"#{ranked.index(s) + 1} {s.score:.4g} (lr {s.best_lr:g}): {describe(s.shape)}", at,
               [v for _, v in schedule_values(s.shape, total_steps=steps, steps=at)]) for s in shown]
    with plain_text():
        fig = plot_schedules(curves, ylabel="multiplier of the best base lr", title=title)
    return md, save_png(fig, out / "shapes.png")


# ------------------------------------------------------------------------------------------ curvature dynamics


@dataclass(frozen=True, kw_only=True)
class CurvatureSpec:
    """Trials with diagnostics at every evaluation, one per learning rate (edge-of-stability studies)."""

    workload: str = "teacher"
    submission: str = "sgd"
    lrs: tuple[float, ...] = (0.2, 0.5, 1.0)
    seed: int = 0
    size: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    max_steps: int | None = None
    eval_every_steps: int | None = None
    batch_size: int | None = None
    diag_batch_size: int | None = None  # default: the trial's batch size (full batch on the teacher)
    noise_batches: int = 0
    iters: int = 20
    device: str = "cpu"
    data_dir: Path | None = None


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


def run_curvature(spec: CurvatureSpec, *, results_dir: Path) -> list[CurvaturePoint]:
    """Run one trial per learning rate with diagnostics; every evaluation becomes a :class:`CurvaturePoint`.

    Each trial runs its whole step budget (the target is set out of reach): the dynamics, not the time to target,
    are the result."""
    import json

    from optbench.engine.diagnostics import diagnosed
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, prepare, run_prepared

    if not spec.lrs or any(not (math.isfinite(lr) and lr > 0) for lr in spec.lrs):
        raise UsageError("--lrs needs positive learning rates, e.g. 0.2,0.5,1.0")
    if not 1 <= spec.iters <= 10_000 or not 0 <= spec.noise_batches <= 100_000 or spec.noise_batches == 1:
        raise UsageError("--iters must be in 1..10000 and --noise-batches 0 (off) or 2..100000")
    base = load_workload(spec.workload)
    size = spec.size or base.obj.default_size
    base = retarget(base, size, -math.inf if base.obj.metric.goal.value == "min" else math.inf)  # run the budget
    workload = diagnosed(base, batch_size=spec.diag_batch_size or spec.batch_size, noise_batches=spec.noise_batches,
                         iters=spec.iters, seed=spec.seed)
    submission = load_submission(spec.submission)
    preps = [(lr, prepare(workload, submission, TrialConfig(
        size=size, hparams={**spec.hparams, "lr": lr}, seed=spec.seed, study="curvature", trial=f"lr{lr:g}",
        max_steps=spec.max_steps, eval_every_steps=spec.eval_every_steps, batch_size=spec.batch_size,
        device=spec.device, data_dir=spec.data_dir), results_dir=results_dir)) for lr in spec.lrs]
    points = []
    for lr, prep in preps:
        momentum = float(prep.hparams.get("momentum", 0.0) or 0.0)
        for row in run_prepared(prep).rows:
            m = json.loads(row.metrics_json)
            points.append(CurvaturePoint(
                lr=lr, step=row.step, metric=row.metric_value, learning_rate=row.learning_rate,
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
    from optbench.store.fsutil import ensure_writable_dir

    ensure_writable_dir(out, what="--out directory")
    md = out / "curvature.md"
    with atomic_file(md, "w") as f:
        f.write(f"# {title}\n\n" + curvature_markdown(points, metric=metric))
    with plain_text():
        fig = plot_curvature(points, metric=metric, title=title)
    return md, save_png(fig, out / "curvature.png")


# ----------------------------------------------------------------------------------------- Seesaw vs its twin


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one trial of a Seesaw comparison gave: serial steps and examples run, the tail-mean metric (over the
    evaluations in the last ``tail`` of the examples), and steps/examples to the workload's target (None: missed)."""

    steps: int
    examples: int
    tail_metric: float
    final_metric: float
    steps_to_target: int | None
    examples_to_target: int | None


def summarize_rows(rows: Sequence[Any], *, target: float, goal: str, tail: float = 0.1) -> RunSummary:
    """A :class:`RunSummary` of evaluation rows (``EvalRow``)."""
    from optbench.api import reached

    last = rows[-1]
    vals = [r.metric_value for r in rows if r.examples >= (1.0 - tail) * last.examples]
    hit = next((r for r in rows if reached(r.metric_value, target, goal)), None)
    return RunSummary(steps=last.step, examples=last.examples, tail_metric=sum(vals) / len(vals),
                      final_metric=last.metric_value, steps_to_target=hit.step if hit else None,
                      examples_to_target=hit.examples if hit else None)


@dataclass(frozen=True, kw_only=True)
class SeesawSpec:
    """Seesaw against its step-decay twin, at equal examples, one pair of trials per seed."""

    workload: str = "linreg"
    submission: str = "sgd"
    seeds: tuple[int, ...] = (0, 1, 2)
    size: str | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    twin_steps: int | None = None  # default: the size's step_hint (the length of the twin's schedule)
    target: float | None = None  # for steps/examples to target; default: the size's
    eval_every_steps: int | None = None
    device: str = "cpu"
    data_dir: Path | None = None


def run_seesaw(spec: SeesawSpec, *, results_dir: Path) -> tuple[list[tuple[int, RunSummary, RunSummary]], str]:
    """Run the twin (``<submission>_step``) for ``twin_steps`` and Seesaw (``seesaw_<submission>``) for the serial
    steps that see the same examples, per seed; both run their whole budget (the target is checked afterwards).

    Returns:
      ([(seed, twin, seesaw)], metric name).
    """
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import TrialConfig, prepare, run_prepared
    from optbench.plugins.seesaw import SEESAW_DEFAULTS, seesaw_loaded, steps_at_equal_examples

    base_w = load_workload(spec.workload)
    size = spec.size or base_w.obj.default_size
    if size not in base_w.obj.sizes:
        raise UsageError(f"workload {base_w.name!r} has no size {size!r}; it has {', '.join(base_w.obj.sizes)}")
    sz = base_w.obj.sizes[size]
    goal = base_w.obj.metric.goal.value
    workload = retarget(base_w, size, -math.inf if goal == "min" else math.inf)
    try:
        seesaw_l, twin_l = seesaw_loaded(load_submission(spec.submission))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    seesaw = seesaw_l.obj
    twin_steps = spec.twin_steps or sz.step_hint
    if not 1 <= twin_steps <= 10**9:
        raise UsageError(f"--twin-steps must be in 1..{10**9}, got {twin_steps}")
    twin_hp = {k: v for k, v in spec.hparams.items() if k not in SEESAW_DEFAULTS}
    try:
        serial = steps_at_equal_examples({**seesaw.defaults, **spec.hparams}, step_hint=sz.step_hint,
                                         twin_steps=twin_steps)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    plans = []
    for seed in spec.seeds:
        common = dict(size=size, seed=seed, study=f"seesaw-seed{seed}", eval_every_steps=spec.eval_every_steps,
                      device=spec.device, data_dir=spec.data_dir)
        plans.append((seed, prepare(workload, twin_l, TrialConfig(hparams=twin_hp, max_steps=twin_steps, **common),
                                    results_dir=results_dir),
                      prepare(workload, seesaw_l, TrialConfig(hparams=dict(spec.hparams), max_steps=serial, **common),
                              results_dir=results_dir)))
    out, target = [], sz.target if spec.target is None else float(spec.target)
    for seed, p_twin, p_seesaw in plans:
        a = summarize_rows(run_prepared(p_twin).rows, target=target, goal=goal)
        b = summarize_rows(run_prepared(p_seesaw).rows, target=target, goal=goal)
        out.append((seed, a, b))
    return out, base_w.obj.metric.name


def seesaw_markdown(pairs: Sequence[tuple[int, RunSummary, RunSummary]], *, metric: str) -> str:
    """Per seed and summed up: serial steps, examples, tail-mean metric, steps and examples to target, and the
    median paired ratio Seesaw / twin of the tail metric with its bootstrap interval over seeds."""
    def opt(x: int | None) -> str:
        return "missed" if x is None else str(x)

    lines = [f"| seed | run | serial steps | examples | tail-mean {metric} | final {metric} | steps to target | "
             "examples to target |", "|---|---|---|---|---|---|---|---|"]
    for seed, a, b in pairs:
        for name, r in (("twin (step decay)", a), ("seesaw", b)):
            lines.append(f"| {seed} | {name} | {r.steps} | {r.examples} | {r.tail_metric:.4g} | {r.final_metric:.4g} | "
                         f"{opt(r.steps_to_target)} | {opt(r.examples_to_target)} |")
    ratio = median_interval([b.tail_metric / a.tail_metric for _, a, b in pairs])
    steps = median_interval([b.steps_to_target / a.steps_to_target if a.steps_to_target and b.steps_to_target
                             else math.nan for _, a, b in pairs if a.steps_to_target and b.steps_to_target])
    lines += ["", f"Seesaw / twin, tail-mean {metric} at equal examples: median {ratio[0]:.3f} "
              f"(90% bootstrap interval over seeds {ratio[1]:.3f}-{ratio[2]:.3f}); serial steps "
              f"{pairs[0][2].steps} vs {pairs[0][1].steps} ({pairs[0][2].steps / pairs[0][1].steps:.0%})."]
    if not math.isnan(steps[0]):
        n = sum(1 for _, a, b in pairs if a.steps_to_target and b.steps_to_target)
        ci = f"interval {steps[1]:.3f}-{steps[2]:.3f}" if not math.isnan(steps[1]) else "no interval"
        lines.append(f"Seesaw / twin, steps to the target: median {steps[0]:.3f} ({ci}; {n} seed(s) where both reached).")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- learning-rate sensitivity


def lr_sweep(submissions: Sequence[str], spec: CbsSpec, *, results_dir: Path,
             progress: Any = None) -> dict[str, list[CbsRun]]:
    """Steps to target of each submission at every learning rate of ``spec`` (one batch size): a
    :func:`run_cbs` per submission. Every submission is validated before the first trial."""
    from optbench.plugins.registry import load_submission

    if len(spec.batch_sizes) != 1:
        raise UsageError("a learning-rate sweep runs at one batch size")
    for name in submissions:  # fail on a bad name before anything trains
        load_submission(name)
    return {name: run_cbs(CbsSpec(**{**spec.__dict__, "submission": name}), results_dir=results_dir,
                          progress=progress) for name in submissions}


def sensitivity_markdown(sweeps: Mapping[str, Sequence[CbsRun]], *, within: float = 1.5) -> str:
    """Median steps to target per (learning rate, submission), and per submission the best and the number of
    learning rates within ``within`` x the best steps (the width of the good basin, Zhao et al.'s "stability")."""
    import numpy as np

    lrs = sorted({r.lr for runs in sweeps.values() for r in runs})
    med = {s: {lr: float(np.median([_steps(r) for r in runs if r.lr == lr])) for lr in lrs
               if any(r.lr == lr for r in runs)} for s, runs in sweeps.items()}
    lines = ["| lr | " + " | ".join(sweeps) + " |", "|---|" + "---|" * len(sweeps)]
    for lr in lrs:
        cells = [med[s].get(lr, math.nan) for s in sweeps]
        lines.append(f"| {lr:g} | " + " | ".join("missed" if c == math.inf else f"{c:.4g}" for c in cells) + " |")
    best = {s: min(v.values()) for s, v in med.items()}
    lines.append("| best | " + " | ".join("missed" if best[s] == math.inf else f"{best[s]:.4g}" for s in sweeps) + " |")
    good = {s: sum(1 for v in med[s].values() if math.isfinite(v) and v <= within * best[s]) for s in sweeps}
    lines.append(f"| lrs within {within:g}x of best | " + " | ".join(str(good[s]) for s in sweeps) + " |")
    return "\n".join(lines) + "\n"
