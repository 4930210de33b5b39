"""``optbench report``: plots (PNG + SVG) and one self-contained static HTML page of a results directory.

The page holds the leaderboard (scores with bootstrap intervals, times to target with intervals, outcome counts),
paired tests of every submission against the best one, the plots, and the provenance of every result. It loads no
external asset: CSS is inline and every plot is embedded as a base64 PNG (the SVG files beside it are linked for
papers). Every string that comes from results (names, hyperparameters, versions) goes through :func:`html.escape`.

Plots (matplotlib's object-oriented API on the Agg canvas, no pyplot state):

* ``profile``: performance profiles rho_s(tau), one step line per submission (Dolan & More 2002);
* ``curves-<workload>``: validation metric vs timed seconds and vs steps, median and min-max band over studies of
  each study's best trial (the trial scoring uses; a stopped run keeps its last value), target as a horizontal line
  with the leaderboard's median time to target marked on it;
* ``sensitivity-<workload>``: best metric and time-to-target vs a swept hyperparameter (default ``lr``, log x);
  misses as hollow markers on the top edge;
* ``outcomes``: submissions x workloads heatmap of the fraction of trials that reached (with a colour bar),
  annotated with counts in black or white by cell luminance;
* ``cbs-<workload>-<submission>`` and ``diagnostics-<workload>``, each in its own section with a table, only where
  the results hold a batch-size sweep or trials run with ``--diagnostics`` (:mod:`optbench.recipes.sections`).

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  Dolan & More, "Benchmarking optimization software with performance profiles", Math. Programming 91 (2002).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from optbench.errors import UsageError
from optbench.store.fsutil import ensure_writable_dir
from optbench.report.pages import PLAIN_TEXT, esc, html_table, plain_log_ticks, safe_name

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from optbench.report.plots import Plot, Saved
    from optbench.store.reader import ResultSet
    from optbench.scoring.profiles import Leaderboard

UNIT = {"time": "s", "steps": "steps", "examples": "examples", "tokens": "tokens"}
PROVENANCE = ("optbench_version", "code_hash", "git_commit", "torch_version", "python_version", "device",
              "device_name", "cpu_model")
CURVE_POINTS = 200  # grid on which runs are interpolated before taking median and band
EVAL_AXIS = {"time": "timed_seconds", "steps": "step"}  # the curves' x axes a scored measure can be marked on


@dataclass(frozen=True, kw_only=True)
class Report:
    """What :func:`build_report` wrote: the page and the image files (PNG and SVG of each plot)."""

    index: Path
    images: tuple[Path, ...]


def _label(name: Any) -> str:
    """A legend label: matplotlib drops labels that start with "_" (its "no legend" marker), so pad those."""
    text = str(name)
    return f" {text}" if text.startswith("_") else text


def _fmt(v: float, by: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if not math.isfinite(v):
        return "miss"
    return f"{v:.3g} s" if by == "time" else f"{v:.4g}"


# --------------------------------------------------------------------------------------------------------- data


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


def paired_rows(trials: pd.DataFrame, board: Leaderboard, *, by: str) -> list[dict[str, Any]]:
    """The best submission against every other, per workload: p-value, speed-up, matched seeds needed.

    Pairs are studies (for ``optbench run`` results one study is one seed; for tuned results, study k of two
    submissions used the same trial seeds), each represented by its best trial.
    """
    from optbench.scoring.stats import paired_log_sd, paired_test, seeds_needed, values_per_seed

    paired = trials.assign(seed=trials["study"].astype(str))
    best = str(board.scores.index[0])
    rows = []
    for w in board.times.index:
        # Each test looks at one workload: its rows validated once, and each submission's seeds found once.
        seeds = values_per_seed(paired[paired["workload"] == w], workload=w, by=by)
        for other in board.scores.index[1:]:
            row: dict[str, Any] = {"workload": w, "a": best, "b": other}
            try:
                t = paired_test(None, workload=w, a=best, b=str(other), by=by, per_seed=seeds)
            except UsageError as exc:
                rows.append(row | {"note": str(exc)})
                continue
            sd = paired_log_sd(None, workload=w, a=best, b=str(other), by=by, per_seed=seeds)
            need = "n/a"
            if math.isfinite(t.speedup) and t.speedup > 1 and math.isfinite(sd):
                need = str(seeds_needed(t.speedup, sd=sd))
            rows.append(row | {"p": t.p_value, "speedup": t.speedup, "pairs": t.n_pairs, "a_only": t.n_a_only,
                               "b_only": t.n_b_only, "need": need, "note": ""})
    return rows


# -------------------------------------------------------------------------------------------------------- plots


def _colors(subs: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {s: cmap(i % 10) for i, s in enumerate(subs)}


def plot_profiles(board: Leaderboard, colors: dict[str, Any]) -> Figure:
    """Performance profiles as exact step functions on [1, r_max]."""
    from matplotlib.figure import Figure

    from optbench.scoring.profiles import profile_curve

    r = board.ratios.to_numpy(dtype=float)
    finite = np.clip(r[np.isfinite(r)], 1.0, board.r_max)
    taus = np.unique(np.concatenate([[1.0, board.r_max], finite]))
    rho = profile_curve(board.ratios, taus)  # (T, S)
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for s in board.scores.index:
        ax.step(taus, rho[s].to_numpy(), where="post", color=colors[s], lw=2,
                label=_label(f"{s} (score {board.scores[s]:.3f})"))
    ax.set(xlim=(1.0, board.r_max), ylim=(-0.02, 1.05), xlabel=f"tau (ratio of {board.by} to the best)",
           ylabel="fraction of workloads", title="Performance profiles")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


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
            ordered = (evals[evals["run_id"] == rid].sort_values("step") for rid in group["run_id"])
            curves = [(e[col].to_numpy(dtype=float), e["metric_value"].to_numpy(dtype=float)) for e in ordered]
            top = max((x.max() for x, _ in curves if len(x)), default=0.0)
            # the grid holds every evaluation, so that each step of the median falls where an evaluation was
            grid = np.unique(np.concatenate([np.linspace(0.0, top, CURVE_POINTS) if top > 0 else np.zeros(1),
                                             *(x[np.isfinite(x)] for x, _ in curves)]))
            ys = _held_runs(curves, grid, goal=goal)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns before the first evaluation
                med, lo, hi = (np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0))
            med, lo, hi = (np.where(np.isfinite(v), v, np.nan) for v in (med, lo, hi))  # a held inf: not drawn
            ax.plot(grid, med, color=colors[sub], lw=1.8, drawstyle="steps-post",
                    label=_label(f"{sub} (n={len(curves)})"))
            if len(curves) > 1:
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


# --------------------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{color:#555;font-size:.9em}.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{font-size:.85em;word-break:break-all}.scroll{overflow-x:auto;max-width:100%}
.nowrap th,.nowrap td{white-space:nowrap}.nowrap code{word-break:normal}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute('data-images-decoded', ok + '/' + imgs.length);
});
"""


def _leaderboard_html(board: Leaderboard, score_ci: pd.DataFrame, time_ci: pd.DataFrame) -> str:
    from optbench.report.render import miss_reason, outcome_letters
    from optbench.store.records import OUTCOMES

    by = board.by
    headers = ["#", "submission", "score [CI]"] + [f"{esc(w)}<br>{esc(by)} to target [CI] (ratio)"
                                                   for w in board.times.index] + [f"outcomes<br>{outcome_letters()}"]
    rows = []
    for rank, s in enumerate(board.scores.index, start=1):
        score = f"{board.scores[s]:.3f}"
        if s in score_ci.index:
            score += f" [{score_ci.loc[s, 'low']:.2f}, {score_ci.loc[s, 'high']:.2f}]"
        cells = []
        for w in board.times.index:
            text = _fmt(float(board.times.loc[w, s]), by)
            finite = math.isfinite(float(board.times.loc[w, s]))  # a miss has no interval worth printing
            if finite and (w, s) in time_ci.index and not math.isnan(time_ci.loc[(w, s), "low"]):
                lo, hi = time_ci.loc[(w, s), "low"], time_ci.loc[(w, s), "high"]
                text += f" [{_fmt(float(lo), by)}, {_fmt(float(hi), by)}]"
            ratio = float(board.ratios.loc[w, s])
            text += f" ({ratio:.2f}x)" if math.isfinite(ratio) else f" ({miss_reason(board, str(w), str(s))})"
            cells.append(esc(text))
        counts = "/".join(str(int(board.outcomes.loc[s, o])) for o in OUTCOMES)
        rows.append([str(rank), esc(s), esc(score), *cells, esc(counts)])
    return html_table(headers, rows, table_id="leaderboard", left=2)


def _paired_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return '<p class="note">Only one submission: nothing to compare.</p>'
    headers = ["workload", "A (best)", "B", "p-value (A faster)", "speed-up t_B/t_A", "pairs", "only A reached",
               "only B reached", "seeds needed (power 0.8, alpha 0.05)", "note"]
    out = []
    for r in rows:
        if "p" not in r:
            out.append([esc(r["workload"]), esc(r["a"]), esc(r["b"]), "", "", "", "", "", "", esc(r["note"])])
            continue
        speedup = "n/a" if math.isnan(r["speedup"]) else f"{r['speedup']:.3g}"
        out.append([esc(r["workload"]), esc(r["a"]), esc(r["b"]), f"{r['p']:.3g}", esc(speedup),
                    str(r["pairs"]), str(r["a_only"]), str(r["b_only"]), esc(r["need"]), esc(r["note"])])
    return html_table(headers, out, table_id="paired", left=3)


PAIRED_LEGEND = (
    "inf (speed-up): in at least half of the pairs where one of the two reached, only A did, so t_B / t_A is "
    "unbounded (B missed; a miss counts as an infinite time). 0: the same with only B reaching. n/a (speed-up): "
    "no pair where either reached. n/a (seeds needed): nothing to detect, because the speed-up is not above 1 "
    "(B is not slower) or is inf, or fewer than 2 pairs where both reached leave the spread of log(t_B / t_A) "
    "unknown.")


def _provenance_html(trials: pd.DataFrame) -> str:
    env = trials.groupby(list(PROVENANCE), dropna=False).agg(
        trials=("run_id", "size"), workloads=("workload", lambda x: ", ".join(sorted(set(map(str, x))))),
        submissions=("submission", lambda x: ", ".join(sorted(set(map(str, x)))))).reset_index()
    env_rows = [[esc(r[c]) for c in (*PROVENANCE, "workloads", "submissions")] + [str(r["trials"])]
                for _, r in env.iterrows()]
    origins = pd.concat([
        trials[["workload", "workload_origin"]].set_axis(["name", "origin"], axis=1).assign(kind="workload"),
        trials[["submission", "submission_origin"]].set_axis(["name", "origin"], axis=1).assign(kind="submission"),
    ]).groupby(["kind", "name", "origin"]).size().reset_index(name="trials")
    origin_rows = [[esc(r["kind"]), esc(r["name"]), esc(r["origin"]), str(r["trials"])] for _, r in origins.iterrows()]
    cols = ["run_id", "workload", "submission", "study", "trial", "seed", "outcome", "time_to_target",
            "steps_to_target", "best_metric", "created_at", "code_hash", "device_name", "hparams"]
    table = trials.sort_values(["workload", "submission", "study", "trial"])[cols]
    # Escaped column by column, each distinct value once (a lab's 10,000 trials share few names and versions).
    cells = {}
    for c in cols:
        values = table[c].astype(object).tolist()
        escaped = {v: esc(v) for v in dict.fromkeys(map(_hashable, values))}
        cells[c] = [escaped[_hashable(v)] for v in values]
    cells["hparams"] = [f"<code>{h}</code>" for h in cells["hparams"]]
    per_trial = [list(row) for row in zip(*(cells[c] for c in cols))]
    return (html_table([*PROVENANCE, "workloads", "submissions", "trials"], env_rows, table_id="provenance",
                   left=len(PROVENANCE) + 2, wrap=False)
            + "<h3>Plugin origins</h3>" + html_table(["kind", "name", "origin", "trials"], origin_rows,
                                                 table_id="origins", left=3, wrap=False)
            + f"<details><summary>Every trial ({len(trials)})</summary>"
            + html_table(cols, per_trial, table_id="trials", left=len(cols), wrap=False) + "</details>")


def _hashable(value: Any) -> Any:
    """``value`` as a dict key: NaN (which is not equal to itself) and None as their text."""
    return str(value) if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _warnings(loaded: ResultSet, trials: pd.DataFrame) -> list[str]:
    from optbench.report.render import pooled_warning

    out = [f"skipped {p.splitlines()[0]}" for p in loaded.problems]
    pooled = pooled_warning(trials)
    if pooled:
        out.append(pooled)
    for col, what in (("code_hash", "versions of the engine code"), ("device_name", "devices")):
        n = trials[col].nunique()
        if n > 1:
            out.append(f"results come from {n} different {what}: timed seconds may not be comparable "
                       "(see Provenance; --by steps is hardware-independent)")
    return out


# ------------------------------------------------------------------------------------------------------- driver


def build_report(loaded: ResultSet, *, out: Path, by: str = "time", r_max: float = 4.0, hparam: str = "lr",
                 level: float = 0.9, n_boot: int = 1000, source: str = "", plot_cache: Path | None = None) -> Report:
    """Write plots (PNG + SVG) and ``index.html`` for the results in ``loaded``.

    Args:
      loaded: what :func:`optbench.store.reader.read_results` returned.
      out: output directory (created).
      by: measure to score (``time``, ``steps``, ``examples``, ``tokens``).
      r_max: upper end of the performance profiles.
      hparam: hyperparameter of the sensitivity plots.
      level: confidence level of the bootstrap intervals.
      n_boot: bootstrap replicates.
      source: where the results came from, shown on the page.
      plot_cache: a folder of plots drawn before, reused where their inputs are the same
        (:mod:`optbench.report.plots`); None draws every plot.
    Returns:
      The :class:`Report`. Results of ``run`` and ``tune`` pooled on one workload and submission get one
      ``warning:`` line on stderr (:func:`optbench.report.render.warn_pooled`) and a warning on the page.
    Raises:
      UsageError: no results, a bad measure, matplotlib missing, ``out`` not writable (checked before any plot), or
        a write that fails part way.
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4; Efron & Tibshirani 1993 (bootstrap intervals).
    """
    try:
        from matplotlib import rc_context
    except ImportError:
        raise UsageError("optbench report needs matplotlib: pip install matplotlib") from None
    from optbench.report import render
    from optbench.report.plots import render_all
    from optbench.recipes.sections import research_sections
    from optbench.scoring.profiles import leaderboard
    from optbench.scoring.stats import score_ci, time_cis

    if loaded.trials.empty:
        raise UsageError("no results to report; run e.g. 'optbench run' or 'optbench tune' first")
    out = ensure_writable_dir(Path(out), what="report directory")  # before any work is spent on plots
    trials = loaded.scoring_trials()
    render.warn_pooled(trials)  # on stderr now, and on the page among its warnings
    board = leaderboard(trials, by=by, r_max=r_max)
    s_ci = score_ci(trials, by=by, r_max=r_max, level=level, n_boot=n_boot)
    t_ci = time_cis(trials, by=by, level=level, n_boot=n_boot)
    paired = paired_rows(trials, board, by=by)
    with rc_context(PLAIN_TEXT):
        plots = _figures(loaded, trials, board, by=by, hparam=hparam)
        sections = research_sections(loaded, trials)  # batch-size sweeps, diagnostics: only where results have them
        try:
            every = [*plots, *(p for sec in sections for p in sec.plots)]
            saved = {s.name: s for s in render_all(every, out, cache=plot_cache)}
            blocks = [_figure_html(saved[p.name]) for p in plots if p.name in saved]
            research = [f'<h2>{esc(sec.title)}</h2>\n<p class="note">{esc(sec.note)}</p>\n{sec.table_html}\n'
                        + "".join(_figure_html(saved[p.name]) for p in sec.plots if p.name in saved)
                        for sec in sections]
            images = [f for s in saved.values() for f in (s.png, s.svg)]
            index = out / "index.html"
            index.write_text(_page(loaded, trials, board, s_ci, t_ci, paired, blocks, level=level, source=source,
                                   research="\n".join(research)), encoding="utf-8")
        except OSError as exc:  # the disk filled up, or the folder went away, while writing
            raise UsageError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None
    return Report(index=index, images=tuple(images))


def _figures(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, *, by: str, hparam: str) -> list[Plot]:
    """Every plot of the report, to be drawn (by :func:`optbench.report.plots.render_all`)."""
    from optbench.report import render
    from optbench.report.plots import Plot
    from optbench.store.reader import with_workload_key
    from optbench.scoring.stats import sensitivity

    colors = _colors(list(board.scores.index))
    plots = [
        Plot(name="profile", caption=("Performance profiles: fraction of workloads a submission reaches within tau "
                                      "times the best (step function; the score is the area under it, normalised)."),
             draw=plot_profiles, args=(board, colors)),
        Plot(name="outcomes", caption=f"Outcomes of every trial per submission and workload. {render.outcome_legend()}",
             draw=plot_outcomes, args=(board,)),
    ]
    runs = representative_runs(trials, by=by)
    evals = with_workload_key(loaded.evals_of(runs["run_id"].tolist()))  # only the curves that are drawn
    try:
        sens = sensitivity(trials, hparam=hparam, by=by)
    except UsageError:
        sens = None
    for w in board.times.index:
        wr = runs[runs["workload"] == w]
        caption = (f"{w}: validation metric of the best trial of each study, as last evaluated; line: median "
                   "over studies, band: min-max. Runs stop at their target or budget and keep their last value "
                   "(a diverged one counts as never reaching), so the line meets the target where the median "
                   "study has." + (_DIAMONDS.format(by=by) if by in EVAL_AXIS else ""))
        scored = {str(s): float(board.times.loc[w, s]) for s in board.times.columns}
        plots.append(Plot(name=f"curves-{safe_name(w)}", caption=caption, draw=plot_curves,
                          args=(evals[evals["run_id"].isin(wr["run_id"])], wr),
                          kwargs=dict(colors=colors, workload=w, scored=scored, by=by)))
        if sens is not None:
            caption = f"{w}: median over trials at each value of {hparam} (every seed and study)."
            plots.append(Plot(name=f"sensitivity-{safe_name(w)}", caption=caption, draw=plot_sensitivity,
                              args=(sens[sens["workload"] == w],),
                              kwargs=dict(colors=colors, workload=w, hparam=hparam, by=by,
                                          metric=str(wr.iloc[0]["metric_name"]))))
    return plots


_DIAMONDS = (" Diamonds: the leaderboard's median {by} to target (median over studies of each study's first "
             "evaluation at the target). With an odd number of studies the line meets the target at the diamond; "
             "with an even number the leaderboard takes the mean of the middle two, and the line may cross "
             "between them.")


def _figure_html(saved: Saved) -> str:
    """A plot's HTML block: the PNG embedded, the caption, links to both files."""
    name = saved.name
    return (f'<figure id="fig-{esc(name)}"><img src="data:image/png;base64,{saved.png_base64}" alt="{esc(name)}">'
            f'<figcaption>{esc(saved.caption)} <a href="{esc(saved.svg.name)}">SVG</a> '
            f'<a href="{esc(saved.png.name)}">PNG</a></figcaption></figure>')


def _page(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, s_ci: pd.DataFrame, t_ci: pd.DataFrame,
          paired: list[dict[str, Any]], figures: list[str], *, level: float, source: str, research: str = "") -> str:
    from optbench import __version__
    from optbench.report import render

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in _warnings(loaded, trials))
    summary = (f"{len(trials)} trials, {trials['workload'].nunique()} workload(s), "
               f"{trials['submission'].nunique()} submission(s); generated {now} by optbench {__version__}"
               + (f" from {source}" if source else ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>optbench report</title><style>{CSS}</style></head>
<body>
<h1>optbench report</h1>
<p class="note">{esc(summary)}</p>
{warn}
<h2>Leaderboard</h2>
<p class="note">{esc(render.header(board))} {esc(render.outcome_legend())}
Intervals: {level:.0%} bootstrap percentile intervals over studies
(scores: every cell resampled, the whole leaderboard recomputed per replicate).</p>
{_leaderboard_html(board, s_ci, t_ci)}
<h2>Paired tests against the best submission</h2>
<p class="note">Per workload, a paired sign-flip test on matched studies (a study's best trial; for
<code>optbench run</code> results a study is one seed). p-value: evidence that A reaches the target faster than B.
Speed-up: median over pairs of t_B / t_A. Seeds needed: matched studies for a paired test to detect the observed
speed-up with power 0.8 at alpha 0.05.</p>
<p class="note" id="paired-legend">{esc(PAIRED_LEGEND)}</p>
{_paired_html(paired)}
<h2>Plots</h2>
{''.join(figures)}
{research}
<h2>Provenance</h2>
<p class="note">What produced every result: engine version and code hash, git commit, framework, device, and where
each plugin came from.</p>
{_provenance_html(trials)}
<script>{SCRIPT}</script>
</body></html>
"""
