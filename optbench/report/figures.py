"""The report's plots as figures: matplotlib's object-oriented API on the Agg canvas, no pyplot state.

* ``profile``: performance profiles rho_s(tau), one step line per submission (Dolan & More 2002);
* ``curves-<workload>``: validation metric vs timed seconds and vs steps, median and min-max band over studies of
  each study's best trial (the trial scoring uses; a stopped run keeps its last value), target as a horizontal line
  with the leaderboard's median time to target marked on it;
* ``sensitivity-<workload>``: best metric and time-to-target vs a swept hyperparameter (default ``lr``, log x);
  misses as hollow markers on the top edge;
* ``outcomes``: submissions x workloads heatmap of the fraction of trials that reached (with a colour bar),
  annotated with counts in black or white by cell luminance.

Each function returns a figure (or None: nothing to show) and is drawn, in parallel and cached, by
:mod:`optbench.report.plots`; which plots a page holds is :func:`optbench.report.sections.report_plots`.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from optbench.report.pages import plain_log_ticks

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from optbench.scoring.profiles import Leaderboard

UNIT = {"time": "s", "steps": "steps", "examples": "examples", "tokens": "tokens"}
CURVE_POINTS = 200  # grid on which runs are interpolated before taking median and band
EVAL_AXIS = {"time": "timed_seconds", "steps": "step"}  # the curves' x axes a scored measure can be marked on


def _label(name: Any) -> str:
    """A legend label: matplotlib drops labels that start with "_" (its "no legend" marker), so pad those."""
    text = str(name)
    return f" {text}" if text.startswith("_") else text


def representative_runs(trials: pd.DataFrame, *, by: str) -> pd.DataFrame:
    """The best trial of each (workload, submission, study): the smallest measure, else the best metric.

    This is the trial whose time scoring uses; curves show these so that a study's unlucky hyperparameter points
    do not drown its result.
    """
    from optbench.store.records import goal_sign
    from optbench.scoring.profiles import trial_values

    table = trial_values(trials, by=by)
    sign = table["metric_goal"].map(goal_sign).to_numpy(dtype=float)
    table = table.assign(_tie=(table["best_metric"].astype(float) * sign).fillna(np.inf))
    table = table.sort_values(["value", "_tie", "run_id"], kind="stable")
    return table.groupby(["workload", "submission", "study"], sort=True).head(1)


def _held_runs(runs: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray, *, goal: str) -> np.ndarray:
    """Each run's metric on ``grid``: its latest evaluation at or before x; shape (runs, len(grid)).

    This is what scoring sees: a run is known to be at the target from the evaluation that met it on (no line
    drawn between evaluations, which would cross the target earlier than any evaluation did). Runs stop at their
    target or budget and then keep their last value: dropping them would leave the median to the slow runs still
    going, and it would end short of the target although most studies reached it (the bug the leaderboard's
    "reached" exposed). A NaN (diverged) value counts as the worst (+inf for a metric to minimise, -inf to
    maximise): never reached. NaN before a run's first evaluation.
    """
    worst = np.inf if goal == "min" else -np.inf
    out = np.full((len(runs), len(grid)), np.nan)
    for i, (x, y) in enumerate(runs):
        if len(x):
            idx = np.searchsorted(x, grid, side="right") - 1
            held = np.where(np.isnan(y), worst, y)[np.maximum(idx, 0)]
            out[i] = np.where(idx >= 0, held, np.nan)
    return out


def colors_for(subs: list[str]) -> dict[str, Any]:
    """One colour per submission, in board order, shared by every plot of a page."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(subs)}


PROFILE_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
PROFILE_OFFSET = 0.012  # vertical shift per submission whose profile coincides with an earlier one's
PROFILE_OVERLAP_NOTE = (f"Submissions whose profiles coincide are drawn offset vertically by {PROFILE_OFFSET:g} "
                        "each, in legend order, and every line carries its own marker, so none hides another.")


def coincident_offsets(rho: pd.DataFrame) -> dict[str, float]:
    """Vertical offset of each submission's profile: 0 for the first of a set of identical curves, then
    ``PROFILE_OFFSET`` times its place among them (the curves stay exact; only their drawing moves)."""
    seen: dict[bytes, int] = {}
    out = {}
    for s in rho.columns:
        key = np.round(rho[s].to_numpy(dtype=float), 12).tobytes()
        out[str(s)] = PROFILE_OFFSET * seen.get(key, 0)
        seen[key] = seen.get(key, 0) + 1
    return out


def plot_profiles(board: Leaderboard, colors: dict[str, Any]) -> Figure:
    """Performance profiles as exact step functions on [1, r_max]; coinciding ones offset and every line marked
    (:data:`PROFILE_OVERLAP_NOTE`)."""
    from matplotlib.figure import Figure

    from optbench.scoring.profiles import profile_curve

    r = board.ratios.to_numpy(dtype=float)
    finite = np.clip(r[np.isfinite(r)], 1.0, board.r_max)
    taus = np.unique(np.concatenate([[1.0, board.r_max], finite]))
    rho = profile_curve(board.ratios, taus)  # (T, S)
    offsets = coincident_offsets(rho[list(board.scores.index)])
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(board.scores.index):
        shift = offsets[str(s)]
        label = f"{s} (score {board.scores[s]:.3f})" + (f", drawn +{shift:g}" if shift else "")
        ax.step(taus, rho[s].to_numpy() + shift, where="post", color=colors[s], lw=2, label=_label(label),
                marker=PROFILE_MARKERS[i % len(PROFILE_MARKERS)], markersize=5, markevery=slice(0, -1))
    ax.set(xlim=(1.0, board.r_max), ylim=(-0.02, 1.05 + max(offsets.values(), default=0.0)),
           xlabel=f"tau (ratio of {board.by} to the best)",
           ylabel="fraction of workloads", title="Performance profiles")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def _median_band(evals: pd.DataFrame, run_ids: Any, *, col: str, goal: str) -> tuple[np.ndarray, ...]:
    """(grid, median, min, max, number of runs) of the metric of ``run_ids`` against ``col``, each run held at its
    last value (:func:`_held_runs`); a held inf (diverged) is NaN, so not drawn."""
    ordered = (evals[evals["run_id"] == rid].sort_values("step") for rid in run_ids)
    curves = [(e[col].to_numpy(dtype=float), e["metric_value"].to_numpy(dtype=float)) for e in ordered]
    top = max((x.max() for x, _ in curves if len(x)), default=0.0)
    # the grid holds every evaluation, so that each step of the median falls where an evaluation was
    grid = np.unique(np.concatenate([np.linspace(0.0, top, CURVE_POINTS) if top > 0 else np.zeros(1),
                                     *(x[np.isfinite(x)] for x, _ in curves)]))
    ys = _held_runs(curves, grid, goal=goal)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first evaluation
        med, lo, hi = (np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0))
    med, lo, hi = (np.where(np.isfinite(v), v, np.nan) for v in (med, lo, hi))
    return grid, med, lo, hi, len(curves)


def plot_curves(evals: pd.DataFrame, runs: pd.DataFrame, *, colors: dict[str, Any], workload: str,
                scored: dict[str, float] | None = None, by: str = "time") -> Figure:
    """Metric vs timed seconds and vs steps for one workload: median and min-max band over studies.

    Every run counts at every x: after it stopped it is held at its last value (see :func:`_held_runs`), so for
    an odd number of studies the median line is at or past the target from the leaderboard's median time on.
    ``scored`` (submission -> the leaderboard's median ``by`` to target) is marked on the target line of the
    matching axis (time or steps), so that plot and leaderboard can be read against each other.
    """
    from matplotlib.figure import Figure

    first = runs.iloc[0]
    goal, target, metric = str(first["metric_goal"]), float(first["target"]), str(first["metric_name"])
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    values = evals["metric_value"].to_numpy(dtype=float)
    positive = values[np.isfinite(values)]
    log_y = goal == "min" and len(positive) and positive.min() > 0 and positive.max() / positive.min() > 20
    for ax, col, label in ((axes[0], "timed_seconds", "timed seconds"), (axes[1], "step", "steps")):
        for sub, group in runs.groupby("submission", sort=False):
            grid, med, lo, hi, n = _median_band(evals, group["run_id"], col=col, goal=goal)
            ax.plot(grid, med, color=colors[sub], lw=1.8, drawstyle="steps-post", label=_label(f"{sub} (n={n})"))
            if n > 1:
                ax.fill_between(grid, lo, hi, color=colors[sub], alpha=0.2, lw=0, step="post")
            t = (scored or {}).get(str(sub), math.nan)
            if col == EVAL_AXIS.get(by) and math.isfinite(t):
                ax.plot([t], [target], marker="D", ms=7, mfc=colors[sub], mec="black", ls="none", zorder=5,
                        label=_label(f"{sub}: scored median {by} to target"))
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
        ax.set(xlabel=label, ylabel=metric)
        if log_y:
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=3, fontsize=8)  # off the data
    fig.suptitle(f"{workload}: {metric} ({goal}), median and min-max over studies (best trial of each)")
    return fig


def plot_sensitivity(sens: pd.DataFrame, *, colors: dict[str, Any], workload: str, hparam: str, by: str,
                     metric: str) -> Figure | None:
    """Best metric and time-to-target vs one hyperparameter (log x).

    A value whose median trial missed has no time to target: it is drawn as a hollow marker on the top edge of
    the axes (axes coordinates, off the data scale, in the legend as "missed"), never at a made-up time.
    """
    from matplotlib.figure import Figure

    from optbench.scoring.profiles import TRIAL_MEASURES

    numeric = sens[sens["value"].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))]
    numeric = numeric[numeric["value"].astype(float) > 0]
    if numeric.empty or numeric.groupby("submission")["value"].nunique().max() < 2:
        return None
    col = TRIAL_MEASURES[by]
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    ax_m, ax_t = fig.subplots(1, 2)
    missed_any = False
    for sub, g in numeric.groupby("submission", sort=False):
        x = g["value"].astype(float).to_numpy()
        ax_m.plot(x, g["best_metric"].astype(float), "o-", color=colors.get(sub), ms=4, label=_label(sub))
        t = g[col].astype(float).to_numpy()
        hit = np.isfinite(t)
        ax_t.plot(x[hit], t[hit], "o-", color=colors.get(sub), ms=4, label=_label(sub))
        if (~hit).any():  # no measurement: hollow markers on the top edge, outside the data, labelled
            ax_t.plot(x[~hit], np.ones((~hit).sum()), "o", mfc="none", mec=colors.get(sub), mew=1.5, ms=8,
                      clip_on=False, transform=ax_t.get_xaxis_transform(), label=_label(f"{sub}: missed"))
            missed_any = True
    ax_m.set(xscale="log", xlabel=hparam, ylabel=f"best {metric} (median)")
    ax_m.set_title("best metric", pad=12)
    ax_t.set(xscale="log", xlabel=hparam, ylabel=f"{by} to target, {UNIT[by]} (median)")
    ax_t.set_title("time to target (hollow on the top edge = missed)", pad=12)
    for ax in (ax_m, ax_t):
        ax.grid(alpha=0.3)
        plain_log_ticks(ax.xaxis)
    ax_m.legend(fontsize=8)
    if missed_any:
        ax_t.legend(fontsize=7)
    fig.suptitle(f"{workload}: sensitivity to {hparam}")
    return fig


def plot_outcomes(board: Leaderboard) -> Figure:
    """Submissions x workloads: colour = fraction of trials that reached; text = counts by outcome."""
    from matplotlib.figure import Figure

    from matplotlib import colormaps

    from optbench.report.render import outcome_counts, outcome_letters

    subs, works = list(board.scores.index), list(board.times.index)
    frac = np.full((len(subs), len(works)), np.nan)
    cmap = colormaps["RdYlGn"]
    fig = Figure(figsize=(max(6.0, 1.9 * len(works) + 3.5), 0.55 * len(subs) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(subs):
        for j, w in enumerate(works):
            if (w, s) not in board.cells.index:
                ax.text(j, i, "not run", ha="center", va="center", fontsize=8, color="#555555")
                continue
            cell = board.cells.loc[(w, s)]
            frac[i, j] = cell["reached"] / max(1, cell["n_trials"])
            ax.text(j, i, outcome_counts(cell), ha="center", va="center", fontsize=8,
                    color=text_color(cmap(frac[i, j])))
    image = ax.imshow(frac, cmap=cmap, vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(image, ax=ax, label="fraction of trials reached", fraction=0.05, pad=0.02)
    ax.set_xticks(range(len(works)), works, rotation=20, ha="right")
    ax.set_yticks(range(len(subs)), subs)
    ax.set_title(f"Trial outcomes\ncolour: fraction reached; text: counts ({outcome_letters()})", fontsize=10)
    return fig


def relative_luminance(rgb: Any) -> float:
    """WCAG 2 relative luminance of a colour (any matplotlib colour: a name, "#rrggbb", an RGB(A) tuple)."""
    from matplotlib.colors import to_rgb

    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in to_rgb(rgb)]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: Any, b: Any) -> float:
    """WCAG 2 contrast ratio of two colours, in [1, 21]."""
    hi, lo = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def text_color(background: Any) -> str:
    """Black or white, whichever contrasts more with ``background`` (at least 4.58:1 either way)."""
    return "black" if contrast(background, (0, 0, 0)) >= contrast(background, (1, 1, 1)) else "white"
