"""``optbench report``: plots (PNG + SVG) and one self-contained static HTML page of a results directory.

The page holds the leaderboard (scores with bootstrap intervals, times to target with intervals, outcome counts),
paired tests of every submission against the best one, the plots, and the provenance of every result. It loads no
external asset: CSS is inline and every plot is embedded as a base64 PNG (the SVG files beside it are linked for
papers). Every string that comes from results (names, hyperparameters, versions) goes through :func:`html.escape`.

Plots (matplotlib's object-oriented API on the Agg canvas, no pyplot state):

* ``profile``: performance profiles rho_s(tau), one step line per submission (Dolan & More 2002);
* ``curves-<workload>``: validation metric vs timed seconds and vs steps, median and min-max band over studies of
  each study's best trial (the trial scoring uses), target as a horizontal line;
* ``sensitivity-<workload>``: best metric and time-to-target vs a swept hyperparameter (default ``lr``, log x);
* ``outcomes``: submissions x workloads heatmap of the fraction of trials that reached, annotated with counts.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  Dolan & More, "Benchmarking optimization software with performance profiles", Math. Programming 91 (2002).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from optbench.errors import UsageError
from optbench.fsutil import ensure_writable_dir

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from optbench.results import ResultSet
    from optbench.scoring import Leaderboard

UNIT = {"time": "s", "steps": "steps", "examples": "examples", "tokens": "tokens"}
PROVENANCE = ("optbench_version", "code_hash", "git_commit", "torch_version", "python_version", "device",
              "device_name", "cpu_model")
CURVE_POINTS = 200  # grid on which runs are interpolated before taking median and band


@dataclass(frozen=True, kw_only=True)
class Report:
    """What :func:`build_report` wrote: the page and the image files (PNG and SVG of each plot)."""

    index: Path
    images: tuple[Path, ...]


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "workload"


# Names in plots are the user's text: never mathtext ("$x_1$" would be typeset, a lone "$" or "^" can fail to
# parse), never LaTeX. build_report draws and saves every figure under these settings.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


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
    from optbench.results import goal_sign
    from optbench.scoring import trial_values

    table = trial_values(trials, by=by)
    sign = table["metric_goal"].map(goal_sign).to_numpy(dtype=float)
    table = table.assign(_tie=(table["best_metric"].astype(float) * sign).fillna(np.inf))
    table = table.sort_values(["value", "_tie", "run_id"], kind="stable")
    return table.groupby(["workload", "submission", "study"], sort=True).head(1)


def _interp_runs(runs: list[tuple[np.ndarray, np.ndarray]], grid: np.ndarray) -> np.ndarray:
    """Each run's metric on ``grid`` (NaN outside the span it ran); shape (runs, len(grid))."""
    out = np.full((len(runs), len(grid)), np.nan)
    for i, (x, y) in enumerate(runs):
        if len(x):
            out[i] = np.interp(grid, x, y, left=np.nan, right=np.nan)
    return out


def paired_rows(trials: pd.DataFrame, board: Leaderboard, *, by: str) -> list[dict[str, Any]]:
    """The best submission against every other, per workload: p-value, speed-up, matched seeds needed.

    Pairs are studies (for ``optbench run`` results one study is one seed; for tuned results, study k of two
    submissions used the same trial seeds), each represented by its best trial.
    """
    from optbench.stats import paired_log_sd, paired_test, seeds_needed

    paired = trials.assign(seed=trials["study"].astype(str))
    best = str(board.scores.index[0])
    rows = []
    for w in board.times.index:
        one = paired[paired["workload"] == w]  # each test looks at one workload: validate only its rows
        for other in board.scores.index[1:]:
            row: dict[str, Any] = {"workload": w, "a": best, "b": other}
            try:
                t = paired_test(one, workload=w, a=best, b=str(other), by=by)
            except UsageError as exc:
                rows.append(row | {"note": str(exc)})
                continue
            sd = paired_log_sd(one, workload=w, a=best, b=str(other), by=by)
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

    from optbench.scoring import profile_curve

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


def plot_curves(evals: pd.DataFrame, runs: pd.DataFrame, *, colors: dict[str, Any], workload: str) -> Figure:
    """Metric vs timed seconds and vs steps for one workload: median and min-max band over studies."""
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
            grid = np.linspace(0.0, top, CURVE_POINTS) if top > 0 else np.zeros(1)
            ys = _interp_runs(curves, grid)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns past every run's end
                med, lo, hi = np.nanmedian(ys, 0), np.nanmin(ys, 0), np.nanmax(ys, 0)
            # The median only where at least half the runs are still going: past that it would follow the
            # slowest few and jump; the band still shows them.
            med[np.isfinite(ys).sum(0) < math.ceil(len(curves) / 2)] = np.nan
            ax.plot(grid, med, color=colors[sub], lw=1.8, label=_label(f"{sub} (n={len(curves)})"))
            if len(curves) > 1:
                ax.fill_between(grid, lo, hi, color=colors[sub], alpha=0.2, lw=0)
        ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
        ax.set(xlabel=label, ylabel=metric)
        if log_y:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{workload}: {metric} ({goal}), median and min-max over studies (best trial of each)")
    return fig


def plot_sensitivity(sens: pd.DataFrame, *, colors: dict[str, Any], workload: str, hparam: str, by: str,
                     metric: str) -> Figure | None:
    """Best metric and time-to-target vs one hyperparameter (log x); misses are crosses along the top."""
    from matplotlib.figure import Figure

    from optbench.scoring import TRIAL_MEASURES

    numeric = sens[sens["value"].map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))]
    numeric = numeric[numeric["value"].astype(float) > 0]
    if numeric.empty or numeric.groupby("submission")["value"].nunique().max() < 2:
        return None
    col = TRIAL_MEASURES[by]
    fig = Figure(figsize=(10.0, 3.6), layout="constrained")
    ax_m, ax_t = fig.subplots(1, 2)
    for sub, g in numeric.groupby("submission", sort=False):
        x = g["value"].astype(float).to_numpy()
        ax_m.plot(x, g["best_metric"].astype(float), "o-", color=colors.get(sub), ms=4, label=_label(sub))
        t = g[col].astype(float).to_numpy()
        hit = np.isfinite(t)
        ax_t.plot(x[hit], t[hit], "o-", color=colors.get(sub), ms=4, label=_label(sub))
        ax_t.plot(x[~hit], np.full((~hit).sum(), 0.96), "x", color=colors.get(sub), ms=7,
                  transform=ax_t.get_xaxis_transform())
    ax_m.set(xscale="log", xlabel=hparam, ylabel=f"best {metric} (median)", title="best metric")
    ax_t.set(xscale="log", xlabel=hparam, ylabel=f"{by} to target, {UNIT[by]} (median)",
             title="time to target (x = missed)")
    for ax in (ax_m, ax_t):
        ax.grid(alpha=0.3)
    ax_m.legend(fontsize=8)
    fig.suptitle(f"{workload}: sensitivity to {hparam}")
    return fig


def plot_outcomes(board: Leaderboard) -> Figure:
    """Submissions x workloads: colour = fraction of trials that reached; text = counts by outcome."""
    from matplotlib.figure import Figure

    from optbench.results import OUTCOMES

    subs, works = list(board.scores.index), list(board.times.index)
    frac = np.full((len(subs), len(works)), np.nan)
    fig = Figure(figsize=(max(6.0, 1.9 * len(works) + 2.5), 0.55 * len(subs) + 1.8), layout="constrained")
    ax = fig.add_subplot()
    for i, s in enumerate(subs):
        for j, w in enumerate(works):
            if (w, s) not in board.cells.index:
                continue
            cell = board.cells.loc[(w, s)]
            frac[i, j] = cell["reached"] / max(1, cell["n_trials"])
            text = " ".join(f"{o[0] if o != 'error' else 'E'}{int(cell[o])}" for o in OUTCOMES if cell[o])
            ax.text(j, i, text, ha="center", va="center", fontsize=8)
    ax.imshow(frac, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(works)), works, rotation=20, ha="right")
    ax.set_yticks(range(len(subs)), subs)
    ax.set_title("Trial outcomes\ncolour: fraction reached; text: counts (r/m/d/E/o/t)", fontsize=10)
    return fig


def _save(fig: Figure, out: Path, name: str) -> tuple[Path, Path, str]:
    """Write ``name``.png and .svg; return both paths and the PNG as base64."""
    from matplotlib import rc_context

    png, svg = out / f"{name}.png", out / f"{name}.svg"
    buf = io.BytesIO()
    with rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG: smaller, searchable
        fig.savefig(buf, format="png", dpi=110)
        fig.set_layout_engine("none")  # keep the layout the PNG computed: half the cost, identical placement
        fig.savefig(svg, format="svg", metadata={"Date": None})
    png.write_bytes(buf.getvalue())
    return png, svg, base64.b64encode(buf.getvalue()).decode("ascii")


# --------------------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{color:#555;font-size:.9em}.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{font-size:.85em;word-break:break-all}.scroll{overflow-x:auto}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute('data-images-decoded', ok + '/' + imgs.length);
});
"""


def _table(headers: list[str], rows: list[list[str]], *, table_id: str, left: int = 1) -> str:
    """An HTML table; cells are already escaped HTML; the first ``left`` columns are left-aligned."""
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>\n" for r in rows)
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody>'
            "</table></div>")


def _leaderboard_html(board: Leaderboard, score_ci: pd.DataFrame, time_ci: pd.DataFrame) -> str:
    from optbench.results import OUTCOMES

    by = board.by
    headers = ["#", "submission", "score [CI]"] + [f"{esc(w)}<br>{esc(by)} to target [CI] (ratio)"
                                                   for w in board.times.index] + ["outcomes<br>r/m/d/E/o/t"]
    rows = []
    for rank, s in enumerate(board.scores.index, start=1):
        score = f"{board.scores[s]:.3f}"
        if s in score_ci.index:
            score += f" [{score_ci.loc[s, 'low']:.2f}, {score_ci.loc[s, 'high']:.2f}]"
        cells = []
        for w in board.times.index:
            text = _fmt(float(board.times.loc[w, s]), by)
            if (w, s) in time_ci.index and not math.isnan(time_ci.loc[(w, s), "low"]):
                lo, hi = time_ci.loc[(w, s), "low"], time_ci.loc[(w, s), "high"]
                text += f" [{_fmt(float(lo), by)}, {_fmt(float(hi), by)}]"
            ratio = float(board.ratios.loc[w, s])
            cells.append(esc(text + (f" ({ratio:.2f}x)" if math.isfinite(ratio) else "")))
        counts = "/".join(str(int(board.outcomes.loc[s, o])) for o in OUTCOMES)
        rows.append([str(rank), esc(s), esc(score), *cells, esc(counts)])
    return _table(headers, rows, table_id="leaderboard", left=2)


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
        out.append([esc(r["workload"]), esc(r["a"]), esc(r["b"]), f"{r['p']:.3g}", esc(f"{r['speedup']:.3g}"),
                    str(r["pairs"]), str(r["a_only"]), str(r["b_only"]), esc(r["need"]), esc(r["note"])])
    return _table(headers, out, table_id="paired", left=3)


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
    per_trial = [[esc(r[c]) if c != "hparams" else f"<code>{esc(r[c])}</code>" for c in cols]
                 for r in trials.sort_values(["workload", "submission", "study", "trial"])[cols].to_dict("records")]
    return (_table([*PROVENANCE, "workloads", "submissions", "trials"], env_rows, table_id="provenance",
                   left=len(PROVENANCE) + 2)
            + "<h3>Plugin origins</h3>" + _table(["kind", "name", "origin", "trials"], origin_rows,
                                                 table_id="origins", left=3)
            + f"<details><summary>Every trial ({len(trials)})</summary>"
            + _table(cols, per_trial, table_id="trials", left=len(cols)) + "</details>")


def _warnings(loaded: ResultSet, trials: pd.DataFrame) -> list[str]:
    out = [f"skipped {p.splitlines()[0]}" for p in loaded.problems]
    for col, what in (("code_hash", "versions of the engine code"), ("device_name", "devices")):
        n = trials[col].nunique()
        if n > 1:
            out.append(f"results come from {n} different {what}: timed seconds may not be comparable "
                       "(see Provenance; --by steps is hardware-independent)")
    return out


# ------------------------------------------------------------------------------------------------------- driver


def build_report(loaded: ResultSet, *, out: Path, by: str = "time", r_max: float = 4.0, hparam: str = "lr",
                 level: float = 0.9, n_boot: int = 1000, source: str = "") -> Report:
    """Write plots (PNG + SVG) and ``index.html`` for the results in ``loaded``.

    Args:
      loaded: what :func:`optbench.results.read_results` returned.
      out: output directory (created).
      by: measure to score (``time``, ``steps``, ``examples``, ``tokens``).
      r_max: upper end of the performance profiles.
      hparam: hyperparameter of the sensitivity plots.
      level: confidence level of the bootstrap intervals.
      n_boot: bootstrap replicates.
      source: where the results came from, shown on the page.
    Returns:
      The :class:`Report`.
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
    from optbench.scoring import leaderboard
    from optbench.stats import score_ci, time_cis

    if loaded.trials.empty:
        raise UsageError("no results to report; run e.g. 'optbench run' or 'optbench tune' first")
    out = ensure_writable_dir(Path(out), what="report directory")  # before any work is spent on plots
    trials = loaded.scoring_trials()
    board = leaderboard(trials, by=by, r_max=r_max)
    s_ci = score_ci(trials, by=by, r_max=r_max, level=level, n_boot=n_boot)
    t_ci = time_cis(trials, by=by, level=level, n_boot=n_boot)
    paired = paired_rows(trials, board, by=by)
    with rc_context(PLAIN_TEXT):
        figures = _figures(loaded, trials, board, by=by, hparam=hparam)
        try:
            images, blocks = _save_all(figures, out)
            index = out / "index.html"
            index.write_text(_page(loaded, trials, board, s_ci, t_ci, paired, blocks, level=level, source=source),
                             encoding="utf-8")
        except OSError as exc:  # the disk filled up, or the folder went away, while writing
            raise UsageError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None
    return Report(index=index, images=tuple(images))


def _figures(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, *, by: str,
             hparam: str) -> list[tuple[str, str, Figure]]:
    """Every plot of the report as (file name, caption, figure)."""
    from optbench.results import with_workload_key
    from optbench.stats import sensitivity

    colors = _colors(list(board.scores.index))
    figures: list[tuple[str, str, Figure]] = [
        ("profile", ("Performance profiles: fraction of workloads a submission reaches within tau times the best "
                     "(step function; the score is the area under it, normalised)."), plot_profiles(board, colors)),
        ("outcomes", "Outcomes of every trial per submission and workload.", plot_outcomes(board)),
    ]
    runs = representative_runs(trials, by=by)
    evals = with_workload_key(loaded.evals_of(runs["run_id"].tolist()))  # only the curves that are drawn
    try:
        sens = sensitivity(trials, hparam=hparam, by=by)
    except UsageError:
        sens = None
    for w in board.times.index:
        wr = runs[runs["workload"] == w]
        caption = (f"{w}: validation metric of the best trial of each study; line: median over studies (drawn "
                   "while at least half of them run), band: min-max; runs stop at their target or budget.")
        figures.append((f"curves-{_safe_name(w)}", caption,
                        plot_curves(evals[evals["run_id"].isin(wr["run_id"])], wr, colors=colors, workload=w)))
        if sens is not None:
            fig = plot_sensitivity(sens[sens["workload"] == w], colors=colors, workload=w, hparam=hparam, by=by,
                                   metric=str(wr.iloc[0]["metric_name"]))
            if fig is not None:
                caption = f"{w}: median over trials at each value of {hparam} (every seed and study)."
                figures.append((f"sensitivity-{_safe_name(w)}", caption, fig))
    return figures


def _save_all(figures: list[tuple[str, str, Figure]], out: Path) -> tuple[list[Path], list[str]]:
    """Save every figure (PNG + SVG) into ``out``; return the files and each figure's HTML block."""
    images: list[Path] = []
    blocks = []
    for name, caption, fig in figures:
        png, svg, b64 = _save(fig, out, name)
        images += [png, svg]
        blocks.append(f'<figure id="fig-{esc(name)}"><img src="data:image/png;base64,{b64}" alt="{esc(name)}">'
                      f'<figcaption>{esc(caption)} <a href="{esc(svg.name)}">SVG</a> '
                      f'<a href="{esc(png.name)}">PNG</a></figcaption></figure>')
    return images, blocks


def _page(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, s_ci: pd.DataFrame, t_ci: pd.DataFrame,
          paired: list[dict[str, Any]], figures: list[str], *, level: float, source: str) -> str:
    from optbench import __version__, render

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
<p class="note">{esc(render.header(board))} Intervals: {level:.0%} bootstrap percentile intervals over studies
(scores: every cell resampled, the whole leaderboard recomputed per replicate).</p>
{_leaderboard_html(board, s_ci, t_ci)}
<h2>Paired tests against the best submission</h2>
<p class="note">Per workload, a paired sign-flip test on matched studies (a study's best trial; for
<code>optbench run</code> results a study is one seed). p-value: evidence that A reaches the target faster than B.
Speed-up: median over pairs of t_B / t_A. Seeds needed: matched studies for a paired test to detect the observed
speed-up with power 0.8 at alpha 0.05.</p>
{_paired_html(paired)}
<h2>Plots</h2>
{''.join(figures)}
<h2>Provenance</h2>
<p class="note">What produced every result: engine version and code hash, git commit, framework, device, and where
each plugin came from.</p>
{_provenance_html(trials)}
<script>{SCRIPT}</script>
</body></html>
"""
