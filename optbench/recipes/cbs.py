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
from optbench.recipes.budgets import steps_budget
from optbench.recipes.common import MAX_EXTENSIONS, grid_edge, median_interval, save_png, write_text
from optbench.report.pages import markdown_table, plain_formatter, plain_text
from optbench.sweep.engine import Planned, SweepResult

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

DEFAULT_OVERHEAD = 0.2  # Zhang et al. 2024: 20% more steps than perfect linear scaling
MAX_SWEEP = 10_000  # trials of one sweep
LR_SWEEP_SEEDS = 6  # stats.min_seeds_for(0.05, two_sided=True): the paired tests of lr-sweep can reach p < 0.05
CBS_SEEDS = 5  # default seeds of a batch-size sweep: the median's order-statistic interval then covers 94% (4: 88%)


@dataclass(frozen=True, kw_only=True)
class CbsRun:
    """One finished trial of a batch-size sweep (steps_to_target None when it missed)."""

    batch_size: int
    lr: float
    seed: int
    steps_to_target: int | None
    examples_to_target: int | None
    outcome: str
    stopped_by: str = ""  # "seconds": it missed on a seconds budget (a slower machine's miss, not the optimizer's)


@dataclass(frozen=True, kw_only=True)
class CbsRow:
    """Steps to target at one batch size, at its best learning rate.

    Attributes:
      steps: median over seeds of the steps to target at ``best_lr`` (inf if it missed), and its order-statistic
        interval over seeds, whose coverage is ``steps_level`` (below 90% with fewer than 5 seeds).
      lr_edge: ``"low"``/``"high"`` when ``best_lr`` sits at that end of the batch size's grid (a bound on the
        optimum, not the optimum), else None.
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
    out_of_seconds: int = 0  # of the runs that missed, those a seconds budget stopped
    steps_level: float = math.nan
    seeds: int = 0
    lr_edge: str | None = None


@dataclass(frozen=True, kw_only=True)
class CbsSummary:
    """The sweep's table, the critical batch size by the stated definition, and McCandlish's fit."""

    rows: tuple[CbsRow, ...]
    critical_batch_size: int | None
    max_overhead: float
    s_min: float  # fit S(B) = S_min (1 + B_noise / B)
    b_noise: float

    @property
    def bound(self) -> str:
        """``"upper"`` when the critical batch size is the smallest batch size that reached (the sweep cannot tell
        whether a smaller one already scales worse: the true value is at most it), ``"lower"`` when it is the
        largest batch size tried (every one scaled: the true value is at least it), ``"value"`` between, ``"none"``
        when there is none."""
        if self.critical_batch_size is None:
            return "none"
        reaching = [r.batch_size for r in self.rows if math.isfinite(r.steps)]
        if self.critical_batch_size == reaching[0]:
            return "upper"
        return "lower" if self.critical_batch_size == self.rows[-1].batch_size else "value"

    def critical_text(self) -> str:
        """The critical batch size as the sweep supports it: ``<= 8``, ``>= 128``, ``32`` or ``none``."""
        prefix = {"upper": "<= ", "lower": ">= "}.get(self.bound, "")
        return "none" if self.critical_batch_size is None else f"{prefix}{self.critical_batch_size}"

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

    by_b = _by_batch(runs)
    best: list[tuple[int, float | None, list[CbsRun]]] = []
    edges = {}
    for b in sorted(by_b):
        scored = [(float(np.median([_steps(r) for r in rs])), lr, rs) for lr, rs in by_b[b].items()]
        score, lr, rs = min(scored, key=lambda x: (x[0], x[1]))
        best.append((b, lr if math.isfinite(score) else None, rs))
        edges[b] = grid_edge(list(by_b[b]), {lr: sc for sc, lr, _ in scored})
    reaching = [(b, rs) for b, lr, rs in best if lr is not None]
    base = (reaching[0][0], float(np.median([_steps(r) for r in reaching[0][1]]))) if reaching else None
    rows, critical, ok = [], None, True
    for b, lr, rs in best:
        ci = median_interval([_steps(r) for r in rs])
        med, low, high = ci.estimate, ci.low, ci.high
        examples = float(np.median([math.inf if r.examples_to_target is None else r.examples_to_target for r in rs]))
        linear = base[1] * base[0] / b if base else math.nan
        over = med / linear - 1.0 if base and math.isfinite(med) else math.inf
        if base and b >= base[0]:
            ok = ok and over <= max_overhead + 1e-12
            critical = b if ok else critical
        rows.append(CbsRow(batch_size=b, best_lr=lr, steps=med, steps_low=low, steps_high=high, examples=examples,
                           linear=linear, overhead=over, reached=sum(r.steps_to_target is not None for r in rs),
                           runs=len(rs), out_of_seconds=_out_of_seconds(rs), steps_level=ci.level, seeds=ci.n_units, lr_edge=edges[b]))
    s_min, b_noise = fit_steps_model([(r.batch_size, r.steps) for r in rows])
    return CbsSummary(rows=tuple(rows), critical_batch_size=critical, max_overhead=max_overhead, s_min=s_min,
                      b_noise=b_noise)


def _by_batch(runs: Sequence[CbsRun]) -> dict[int, dict[float, list[CbsRun]]]:
    """Batch size -> learning rate -> its runs (one per seed)."""
    by_b: dict[int, dict[float, list[CbsRun]]] = {}
    for r in runs:
        by_b.setdefault(r.batch_size, {}).setdefault(r.lr, []).append(r)
    return by_b


def lr_scores(runs: Sequence[CbsRun], key: Any = None) -> dict[Any, dict[float, float]]:
    """Key (the batch size, or ``key(run)``) -> learning rate -> median steps to target over seeds (inf = missed):
    what a grid extension (:func:`optbench.recipes.common.extend_until_interior`) reads after each round."""
    import numpy as np

    groups: dict[Any, dict[float, list[float]]] = {}
    for r in runs:
        groups.setdefault(r.batch_size if key is None else key(r), {}).setdefault(r.lr, []).append(_steps(r))
    return {k: {lr: float(np.median(v)) for lr, v in per.items()} for k, per in groups.items()}


def _out_of_seconds(runs: Sequence[CbsRun]) -> int:
    """How many of ``runs`` missed because a seconds budget stopped them (``stopped_by``)."""
    return sum(r.steps_to_target is None and r.stopped_by == "seconds" for r in runs)


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


CBS_HEADERS = ("batch size", "best lr", "steps to target (median)", "interval (coverage, seeds)", "examples",
               "linear scaling", "overhead", "reached")


def _num(x: float) -> str:
    return "missed" if x == math.inf else ("" if math.isnan(x) else f"{x:.4g}")


def cbs_cells(r: CbsRow) -> list[str]:
    """One row of the sweep's table as text, in :data:`CBS_HEADERS` order (``cbs`` and ``report`` print the same)."""
    interval = f"none (n={r.seeds})"
    if not math.isnan(r.steps_low):  # an upper bound "missed": the seeds are consistent with not reaching
        interval = f"{_num(r.steps_low)}-{_num(r.steps_high)} ({r.steps_level:.0%}, n={r.seeds})"
    lr = "" if r.best_lr is None else f"{r.best_lr:.3g}" + (f" ({r.lr_edge} edge)" if r.lr_edge else "")
    over = "" if math.isnan(r.overhead) else (_num(r.overhead) if r.overhead == math.inf else f"{r.overhead:+.0%}")
    examples = f"{r.examples:,.0f}" if math.isfinite(r.examples) else _num(r.examples)
    return [str(r.batch_size), lr, _num(r.steps), interval, examples,
            _num(r.linear), over, f"{r.reached}/{r.runs}" + (f" ({r.out_of_seconds} out of seconds)"
                                                             if r.out_of_seconds else "")]


def cbs_markdown(summary: CbsSummary) -> str:
    """The table as Markdown, with the definition and the fit below it."""
    lines = markdown_table(CBS_HEADERS, (cbs_cells(r) for r in summary.rows))
    lines += ["", f"Critical batch size: **{summary.critical_text()}**{_bound_note(summary)}. {summary.definition()}",
              "Intervals: distribution-free order-statistic intervals of the median over seeds; the coverage "
              "column is the level each achieves with its n (2 seeds: 50%, 3: 75%, 5: 94%).",
              f"Fit S(B) = S_min (1 + B_noise / B) (McCandlish et al. 2018): S_min = {_num(summary.s_min)}, "
              f"B_noise = {_num(summary.b_noise)}."]
    return "\n".join(lines) + "\n"


def _bound_note(summary: CbsSummary) -> str:
    """Why a critical batch size is only a bound, in a parenthesis after it."""
    if summary.bound == "upper":
        return (" (an upper bound: the smallest batch size that reached already qualifies; add smaller batch sizes "
                "to find where scaling stops being linear)")
    if summary.bound == "lower":
        return " (a lower bound: every batch size tried qualifies; add larger ones)"
    return ""


def cbs_json(summary: CbsSummary, *, extension: Any = None) -> dict[str, Any]:
    """The sweep's result for machines: the critical batch size with its ``bound`` (upper/lower/value/none), each
    row with its interval's coverage and n, and the grid extension (when one ran)."""
    def num(x: float) -> float | None:
        return x if math.isfinite(x) else None

    rows = [{"batch_size": r.batch_size, "best_lr": r.best_lr, "lr_edge": r.lr_edge, "steps": num(r.steps),
             "steps_low": num(r.steps_low), "steps_high": num(r.steps_high), "interval_level": r.steps_level,
             "interval_method": "order-statistic", "seeds": r.seeds, "reached": r.reached, "runs": r.runs,
             "out_of_seconds": r.out_of_seconds}
            for r in summary.rows]
    return {"critical_batch_size": summary.critical_batch_size, "bound": summary.bound,
            "critical_text": summary.critical_text(), "max_overhead": summary.max_overhead, "rows": rows,
            "s_min": num(summary.s_min), "b_noise": num(summary.b_noise),
            "grid_extension": None if extension is None else extension.to_json()}


def plot_cbs(summary: CbsSummary, *, title: str) -> Figure:
    """Steps to target against batch size (log-log), with perfect linear scaling and the critical batch size."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    rows = [r for r in summary.rows if math.isfinite(r.steps)]
    if rows:
        bs = [r.batch_size for r in rows]
        levels = [r.steps_level for r in rows if r.seeds >= 2]
        bars = (f"bars: order-statistic interval, coverage >= {min(levels):.0%}, n={min(r.seeds for r in rows)}"
                if levels else "one seed: no interval")
        ax.plot(bs, [r.steps for r in rows], "o-", lw=2, label=f"steps to target (best lr, median over seeds; {bars})")
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
        ax.axvline(summary.critical_batch_size, color="C3", lw=1.2, label=f"critical batch size {summary.critical_text()}")
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
    seeds: tuple[int, ...] = option(tuple(range(CBS_SEEDS)), "--seed", "Seed (repeatable); each seed is its own "
                                    "study. Defaults: cbs 5 (the median's order-statistic interval then covers 94%), "
                                    "lr-sweep 6 (the fewest with which its two-sided paired tests can give p <= "
                                    "0.05).",
                                    kind="int", low=0, high=2**63 - 1, multiple=True, show_default=True)
    extend_grid: bool = option(True, "--extend-grid", "Where the best learning rate sits at an "
                               "edge of its grid, add one more at the grid's spacing on that side and run again, "
                               "until it is interior (at most --max-extensions rounds); recorded in the JSON.",
                               kind="switch", show_default=True)
    max_extensions: int = option(MAX_EXTENSIONS, "--max-extensions", "Rounds of grid extension at most.", kind="int",
                                 low=0, high=20, show_default=True)
    max_overhead: float = option(DEFAULT_OVERHEAD, "--overhead", "Critical batch size: the largest B whose steps "
                                 "exceed linear scaling by at most this fraction.", kind="float", low=0.0,
                                 high=1e6, low_open=False, show_default=True)


def check_cbs(spec: CbsSpec) -> None:
    """One-line errors for a sweep that cannot run, before any trial."""
    if len(spec.batch_sizes) * len(spec.lrs) * max(1, len(spec.seeds)) > MAX_SWEEP:
        raise UsageError(f"a sweep of more than {MAX_SWEEP} trials; use fewer batch sizes, learning rates or seeds")


def plan_cbs(spec: CbsSpec, base: TrialConfig, *, kind: str = "cbs",
             grids: Mapping[int, Sequence[float]] | None = None) -> list[Planned]:
    """One trial per (batch size, learning rate, seed): each seed its own study ``cbs-b<B>-seed<N>`` (so scoring and
    paired tests see one unit per seed), trials ``lr<value>`` (a grid extended later keeps every name). ``grids``:
    a learning-rate grid per batch size, when a grid extension has grown some (default: ``spec.lrs`` at each)."""
    check_cbs(spec)
    base = replace(steps_budget(base), study_kind=kind, varies=("batch_size", "lr") if kind == "cbs" else ("lr",))
    plan = []
    for b in spec.batch_sizes:
        for lr in (grids or {}).get(b, spec.lrs):
            for seed in spec.seeds:
                cfg = replace(base, hparams={**base.hparams, "lr": lr}, seed=seed, batch_size=b,
                              study=f"cbs-b{b}-seed{seed}", trial=f"lr{lr:g}")
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
                  outcome=rec["outcome"], stopped_by=rec.get("stopped_by") or "")


def write_cbs(summary: CbsSummary, runs: Sequence[CbsRun], out: Path, *, title: str,
              extension: Any = None) -> tuple[Path, ...]:
    """Write ``cbs.md`` (table, definition, fit), ``cbs.json`` (the same with the bound and the grid extension),
    ``cbs.csv`` (every trial) and ``cbs.png`` under ``out``."""
    import json

    notes = "".join(f"\nNote: {n}.\n" for n in (extension.notes() if extension is not None else []))
    md = write_text(out / "cbs.md", f"# {title}\n\n" + cbs_markdown(summary) + notes)
    js = write_text(out / "cbs.json", json.dumps(cbs_json(summary, extension=extension), indent=2) + "\n")
    lines = ["batch_size,lr,seed,outcome,steps_to_target,examples_to_target"]
    for r in runs:
        lines.append(f"{r.batch_size},{r.lr!r},{r.seed},{r.outcome},"
                     f"{'' if r.steps_to_target is None else r.steps_to_target},"
                     f"{'' if r.examples_to_target is None else r.examples_to_target}")
    csv = write_text(out / "cbs.csv", "\n".join(lines) + "\n")
    with plain_text():
        fig = plot_cbs(summary, title=title)
    return md, js, csv, save_png(fig, out / "cbs.png")


# ------------------------------------------------------------------------------- learning-rate sensitivity


def plan_lr_sweep(submissions: Sequence[str], spec: CbsSpec, base: TrialConfig, *,
                  grids: Mapping[str, Sequence[float]] | None = None) -> list[Planned]:
    """Steps to target of each submission at every learning rate of ``spec`` (its one batch size), or of its own
    grid in ``grids`` (submission -> learning rates, once a grid extension grew it): a :func:`plan_cbs` per
    submission, tagged with the submission."""
    if len(spec.batch_sizes) != 1:
        raise UsageError("a learning-rate sweep runs at one batch size")
    if not submissions:
        raise UsageError("name at least one submission with --opt")
    return [replace(p, tags={**p.tags, "submission": name})
            for name in dict.fromkeys(submissions)
            for p in plan_cbs(replace(spec, submission=name), base, kind="lr-sweep",
                              grids=None if grids is None else {spec.batch_sizes[0]: grids[name]})]


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
    seconds = {s: {lr for lr in lrs if _out_of_seconds([r for r in runs if r.lr == lr])} for s, runs in sweeps.items()}

    def cell(s: str, lr: float) -> str:
        c = med[s].get(lr, math.nan)
        if c != math.inf:
            return f"{c:.4g}"
        return "missed (seconds)" if lr in seconds[s] else "missed"  # a seconds budget's miss is the machine's

    best = {s: min(v.values()) for s, v in med.items()}
    good = {s: sum(1 for v in med[s].values() if math.isfinite(v) and v <= within * best[s]) for s in sweeps}
    edge = {s: grid_edge(list(med[s]), med[s]) for s in sweeps}
    rows = [[f"{lr:g}", *(cell(s, lr) for s in sweeps)] for lr in lrs]
    rows += [["best", *("missed" if best[s] == math.inf else f"{best[s]:.4g}" for s in sweeps)],
             [f"lrs within {within:g}x of best", *(str(good[s]) for s in sweeps)],
             ["best lr at grid edge", *(edge[s] or "no" for s in sweeps)]]
    return "\n".join(markdown_table(["lr", *sweeps], rows)) + "\n" + paired_markdown(sweeps)


def paired_markdown(sweeps: Mapping[str, Sequence[CbsRun]], *, alpha: float = 0.05) -> str:
    """Every pair of submissions at its own best learning rate (fewest median steps), paired by seed: the median
    ratio of steps and the exact two-sided sign-flip p-value (:func:`optbench.scoring.stats.paired_test`), and a
    line naming the comparisons that cannot reach ``p < alpha`` with the seeds run."""
    import pandas as pd

    from optbench.scoring.stats import paired_test, significance_note

    per_seed = {}
    for name, runs in sweeps.items():
        scores = lr_scores(runs, key=lambda r: 0).get(0, {})
        if scores:
            best = min(scores, key=lambda lr: (scores[lr], lr))
            per_seed[name] = pd.Series({r.seed: _steps(r) for r in runs if r.lr == best}, dtype=float)
    names = list(per_seed)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    if not pairs:
        return ""
    lines = ["", "Paired by seed, each at its best lr (steps B / A: above 1, A needs fewer; exact two-sided "
             "sign-flip test on signed ranks):", ""]
    for a, b in pairs:
        t = paired_test(None, workload="", a=a, b=b, by="steps", alternative="two-sided", per_seed=per_seed)
        lines.append(f"- {a} vs {b}: median ratio {t.speedup:.3g}, p = {t.p_value:.3g} ({t.n_pairs} seeds, "
                     f"{t.n_used} informative)")
    n = min(len(v) for v in per_seed.values())
    note = significance_note(n, [f"{a} vs {b}" for a, b in pairs], alpha=alpha)
    return "\n".join(lines + (["", f"Note: {note}."] if note else [])) + "\n"
