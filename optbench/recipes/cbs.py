"""``optbench cbs`` and ``optbench lr-sweep``: steps to target against batch size and against learning rate.

The critical-batch-size sweep runs one trial per (batch size, learning rate, seed); the learning-rate sweep one per
(submission, learning rate, seed) at one batch size. Both are plans for the sweep engine (:func:`plan_cbs`,
:func:`plan_lr_sweep`) and analyses of the recorded results (:func:`cbs_runs`, :func:`summarize_cbs`,
:func:`sensitivity_markdown`). Steps are the measure, so the trials run without a seconds budget unless one is given.

References:
  Zhang et al., "How Does Critical Batch Size Scale in Pre-training?", arXiv:2410.21676 (2024).
  McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162 (2018).
  Zhao et al., "Deconstructing What Makes a Good Optimizer for Language Models", arXiv:2407.07972 (2024).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.engine.prepared import MAX_BATCH, TrialConfig
from optbench.errors import UsageError
from optbench.options import option
from optbench.recipes.common import median_interval, save_png, write_text
from optbench.report.pages import plain_formatter, plain_text
from optbench.sweep.engine import Planned, SweepResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DEFAULT_OVERHEAD = 0.2  # Zhang et al. 2024: 20% more steps than perfect linear scaling
MAX_SWEEP = 10_000  # trials of one sweep
UNBOUNDED_SECONDS = 10.0**9  # a sweep measured in steps runs without a seconds budget unless --max-seconds is given


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
        _log_ticks(ax, all_b)
    if summary.critical_batch_size is not None:
        ax.axvline(summary.critical_batch_size, color="C3", lw=1.2, label=f"critical batch size {summary.critical_batch_size}")
    ax.set(xlabel="batch size", ylabel="steps to target", title=title)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:  # nothing reached and no critical batch size: an empty axis, no legend
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no batch size reached the target", ha="center", va="center", transform=ax.transAxes)
    return fig


def _log_ticks(ax: Any, xs: Sequence[int]) -> None:
    """Batch sizes as the x ticks and plain-number y labels, with the 2s and 5s of each decade marked."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_xticks(list(xs), [str(x) for x in xs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(plain_formatter())
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))


@dataclass(frozen=True, kw_only=True)
class CbsSpec:
    """A batch-size sweep: every (batch size, learning rate, seed) is one trial; everything else about the trials
    (budget, target, device...) is the sweep's :class:`~optbench.engine.prepared.TrialConfig`."""

    workload: str = option("linreg", "--workload", "Workload.", kind="text", short="-w", show_default=True)
    submission: str = option("sgd", "--opt", "Submission.", kind="text", short="-s", show_default=True)
    batch_sizes: tuple[int, ...] = option((8, 16, 32, 64, 128), "--batch-sizes", "Comma-separated global batch "
                                          "sizes.", kind="ints", low=1, high=MAX_BATCH, show_default=True)
    lrs: tuple[float, ...] = option((0.003, 0.01, 0.03), "--lrs", "Comma-separated learning rates, swept at every "
                                    "batch size.", kind="floats", high=1e6, show_default=True)
    seeds: tuple[int, ...] = option((0,), "--seed", "Seed (repeatable).", kind="int", low=0, high=2**63 - 1,
                                    multiple=True, show_default=True)
    max_overhead: float = option(DEFAULT_OVERHEAD, "--overhead", "Critical batch size: the largest B whose steps "
                                 "exceed linear scaling by at most this fraction.", kind="float", low=0.0,
                                 high=1e6, low_open=False, show_default=True)


def check_cbs(spec: CbsSpec) -> None:
    """One-line errors for a sweep that cannot run, before any trial."""
    if len(spec.batch_sizes) * len(spec.lrs) * max(1, len(spec.seeds)) > MAX_SWEEP:
        raise UsageError(f"a sweep of more than {MAX_SWEEP} trials; use fewer batch sizes, learning rates or seeds")


def _steps_budget(base: TrialConfig) -> TrialConfig:
    """Steps are what a sweep measures: without ``--max-seconds`` its trials have no seconds budget, so that a slow
    or loaded machine cannot turn a reach into a miss."""
    return base if base.max_seconds is not None else replace(base, max_seconds=UNBOUNDED_SECONDS)


def plan_cbs(spec: CbsSpec, base: TrialConfig, *, kind: str = "cbs") -> list[Planned]:
    """One trial per (batch size, learning rate, seed), studies ``cbs-b<B>``, trials ``lr<i>``."""
    check_cbs(spec)
    base = replace(_steps_budget(base), study_kind=kind, varies=("batch_size", "lr") if kind == "cbs" else ("lr",))
    plan = []
    for b in spec.batch_sizes:
        for i, lr in enumerate(spec.lrs):
            for seed in spec.seeds:
                cfg = replace(base, hparams={**base.hparams, "lr": lr}, seed=seed, batch_size=b, study=f"cbs-b{b}",
                              trial=f"lr{i}")
                plan.append(Planned(workload=spec.workload, submission=spec.submission, config=cfg,
                                    tags={"batch_size": b, "lr": lr, "seed": seed}))
    return plan


def cbs_runs(result: SweepResult) -> list[CbsRun]:
    """The sweep's recorded trials (those without a result, crashed or still running elsewhere, are left out)."""
    return [_run_of(o) for o in result.results()]


def _run_of(outcome: Any) -> CbsRun:
    """One recorded trial of a sweep as a :class:`CbsRun`: its planned coordinates and what its record says."""
    rec, _ = outcome.read()
    tags = outcome.planned.tags
    return CbsRun(batch_size=tags["batch_size"], lr=tags["lr"], seed=tags["seed"],
                  steps_to_target=rec["steps_to_target"], examples_to_target=rec["examples_to_target"],
                  outcome=rec["outcome"])


def write_cbs(summary: CbsSummary, runs: Sequence[CbsRun], out: Path, *, title: str) -> tuple[Path, Path, Path]:
    """Write ``cbs.md`` (table, definition, fit), ``cbs.csv`` (every trial) and ``cbs.png`` under ``out``."""
    md = write_text(out / "cbs.md", f"# {title}\n\n" + cbs_markdown(summary))
    lines = ["batch_size,lr,seed,outcome,steps_to_target,examples_to_target"]
    for r in runs:
        lines.append(f"{r.batch_size},{r.lr!r},{r.seed},{r.outcome},"
                     f"{'' if r.steps_to_target is None else r.steps_to_target},"
                     f"{'' if r.examples_to_target is None else r.examples_to_target}")
    csv = write_text(out / "cbs.csv", "\n".join(lines) + "\n")
    with plain_text():
        fig = plot_cbs(summary, title=title)
    return md, csv, save_png(fig, out / "cbs.png")


# ------------------------------------------------------------------------------- learning-rate sensitivity


def plan_lr_sweep(submissions: Sequence[str], spec: CbsSpec, base: TrialConfig) -> list[Planned]:
    """Steps to target of each submission at every learning rate of ``spec`` (its one batch size): a
    :func:`plan_cbs` per submission, tagged with the submission."""
    if len(spec.batch_sizes) != 1:
        raise UsageError("a learning-rate sweep runs at one batch size")
    if not submissions:
        raise UsageError("name at least one submission with --opt")
    return [replace(p, tags={**p.tags, "submission": name})
            for name in dict.fromkeys(submissions)
            for p in plan_cbs(replace(spec, submission=name), base, kind="lr-sweep")]


def lr_sweep_runs(result: SweepResult) -> dict[str, list[CbsRun]]:
    """Submission -> its recorded trials, in the order the submissions were given."""
    out: dict[str, list[CbsRun]] = {o.planned.tags["submission"]: [] for o in result.outcomes}
    for o in result.results():
        out[o.planned.tags["submission"]].append(_run_of(o))
    return out


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
