"""The report's research sections, present only when the results hold what they need.

* **Batch-size sweeps**: every workload and submission whose trials ran at two or more configured batch sizes
  (``TrialRecord.base_batch_size``; ``optbench cbs`` writes such a sweep, so do runs with ``--batch-size``):
  steps to target against batch size at each batch size's best learning rate, perfect linear scaling and the
  critical batch size, by the definition :meth:`optbench.recipes.cbs.CbsSummary.definition` states (the same table
  ``optbench cbs`` prints, computed by the same function).
* **Curvature and noise**: every trial run with ``--diagnostics``: the training loss's top Hessian eigenvalue
  (and Adam's preconditioned one) at each evaluation beside its edge-of-stability threshold 2/lr, and the gradient
  noise scale B_simple, one line per trial. Only these trials' evaluation rows are read.
* **Model-size scaling**: the trials of ``optbench scaling`` ladders: per size and submission the best learning
  rate's final loss with its interval, FLOPs and the effective compute speedup over the reference, the fitted power
  laws (:mod:`optbench.recipes.scaling`, the same table the command writes).

References:
  Zhang et al., "How Does Critical Batch Size Scale in Pre-training?", arXiv:2410.21676 (2024).
  McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162 (2018).
  Cohen et al., "Gradient Descent on Neural Networks Typically Occurs at the Edge of Stability", ICLR 2021.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

import pandas as pd

from optbench.report.pages import esc, html_table, plain_log_ticks, safe_name
from optbench.report.plots import Plot
from optbench.report.sections import Section
from optbench.scoring.profiles import parse_hparams

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from optbench.recipes.cbs import CbsRun, CbsSummary
    from optbench.store.reader import ResultSet

# Outcomes that say something about steps to target; an error, OOM, timeout or interruption says nothing.
SWEEP_OUTCOMES = ("reached", "missed", "diverged")
MAX_DIAGNOSED_RUNS = 12  # lines per diagnostics plot; more are listed as left out in the caption
DIAGNOSTIC_KEYS = ("sharpness", "eos_threshold", "preconditioned_sharpness", "adaptive_eos_threshold",
                   "noise_scale")


def _lr(hparams: dict) -> float:
    """A trial's learning rate (NaN if it has none or a non-number): ``hparams`` as :func:`parse_hparams` decodes
    it (the reader already refused files whose hparams are not a JSON object)."""
    value = hparams.get("lr")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def batch_sweeps(trials: pd.DataFrame) -> dict[tuple[str, str], list[CbsRun]]:
    """(workload, submission) -> its trials as :class:`optbench.recipes.cbs.CbsRun`, for every pair whose trials ran
    at two or more configured batch sizes with the same other hyperparameters (a sweep holds them fixed and varies
    the batch size and learning rate; pairs with several such sweeps get one each, labelled by what differs).
    ``trials``: every trial (:meth:`~optbench.store.reader.ResultSet.all_trials`; ``workload`` is the workload key)."""
    if "base_batch_size" not in trials.columns or trials.empty:
        return {}
    known = trials[trials["base_batch_size"].notna() & trials["outcome"].isin(SWEEP_OUTCOMES)]
    parsed = [parse_hparams(h) for h in known["hparams"]]  # each trial's hyperparameters decoded once
    # What a sweep holds fixed: every hyperparameter but the learning rate, as canonical JSON (a groupable key).
    known = known.assign(sweep_lr=[_lr(h) for h in parsed],
                         sweep_rest=[json.dumps({k: v for k, v in h.items() if k != "lr"}, sort_keys=True)
                                     for h in parsed])
    out: dict[tuple[str, str], list[CbsRun]] = {}
    for (w, s), pair in known.groupby(["workload", "submission"], sort=True):
        sweeps = [g for _, g in pair.groupby("sweep_rest", sort=True) if g["base_batch_size"].nunique() >= 2]
        for g in sweeps:
            others = [x["sweep_rest"].iloc[0] for x in sweeps]
            label = str(s) if len(sweeps) == 1 else f"{s} ({_difference(g['sweep_rest'].iloc[0], others)})"
            out[(str(w), label)] = _cbs_runs(g)
    return out


def _difference(rest: str, others: list[str]) -> str:
    """The keys by which one sweep's fixed hyperparameters differ from the other sweeps', as k=v pairs."""
    mine = json.loads(rest)
    theirs = [json.loads(o) for o in others]
    keys = sorted(k for k in mine if any(o.get(k) != mine[k] for o in theirs))
    keys += sorted(k for o in theirs for k in o if k not in mine)
    return ", ".join(f"{k}={mine.get(k)}" for k in dict.fromkeys(keys)) or "same hyperparameters"


def _cbs_runs(g: pd.DataFrame) -> list[CbsRun]:
    from optbench.recipes.cbs import CbsRun

    return [
            CbsRun(batch_size=int(r.base_batch_size), lr=r.sweep_lr, seed=int(r.seed),
                   steps_to_target=None if pd.isna(r.steps_to_target) else int(r.steps_to_target),
                   examples_to_target=None if pd.isna(r.examples_to_target) else int(r.examples_to_target),
                   outcome=str(r.outcome))
            for r in g.itertuples(index=False)]


def _cbs_table(summaries: list[tuple[str, str, CbsSummary]]) -> str:
    from optbench.recipes.cbs import CBS_HEADERS, cbs_cells

    rows = [[esc(w), esc(s), *map(esc, cbs_cells(r)), _critical_mark(summary, r.batch_size)]
            for w, s, summary in summaries for r in summary.rows]
    return html_table(["workload", "submission", *CBS_HEADERS, "critical"], rows, table_id="cbs", left=2)


def _critical_mark(summary: CbsSummary, batch_size: int) -> str:
    """The critical column of a row: ``yes``, or ``yes (upper bound)`` / ``(lower bound)`` at an end of the sweep."""
    if batch_size != summary.critical_batch_size:
        return ""
    return "yes" + {"upper": " (upper bound)", "lower": " (lower bound)"}.get(summary.bound, "")


def cbs_section(trials: pd.DataFrame) -> Section | None:
    """The batch-size section, or None when no workload and submission ran at two batch sizes."""
    from optbench.recipes.cbs import plot_cbs, summarize_cbs

    sweeps = batch_sweeps(trials)
    if not sweeps:
        return None
    summaries = [(w, s, summarize_cbs(runs)) for (w, s), runs in sweeps.items()]
    figures: list[Plot] = []
    for w, s, summary in summaries:
        caption = (f"{w}, {s}: steps to target against batch size at each batch size's best learning rate (median "
                   f"over seeds; bars: distribution-free order-statistic interval, its coverage and n in the "
                   f"table), perfect linear scaling from the smallest batch size that reached, and the critical "
                   f"batch size {summary.critical_text()}.")
        figures.append(Plot(name=f"cbs-{safe_name(w)}-{safe_name(s)}", caption=caption,
                            draw=plot_cbs, args=(summary,), kwargs=dict(title=f"{w}: {s}")))
    fits = "; ".join(f"{w} {s}: S_min = {x.s_min:.4g}, B_noise = {x.b_noise:.4g}" for w, s, x in summaries)
    definition = summaries[0][2].definition()
    note = (f"{definition[0].upper()}{definition[1:]} Fit S(B) = S_min (1 + B_noise / B) (McCandlish et al. "
            f"2018): {fits}.")
    return Section(title="Batch-size sweeps", note=note, table_html=_cbs_table(summaries), plots=tuple(figures))


def diagnosed_rows(loaded: ResultSet, trials: pd.DataFrame) -> pd.DataFrame:
    """The evaluation rows of the trials run with ``--diagnostics``, one column per :data:`DIAGNOSTIC_KEYS` key
    (NaN where a row lacks it), with ``submission``, ``lr`` (the trial's) and the workload key as ``workload``."""
    if "diagnostics" not in trials.columns:
        return pd.DataFrame()
    runs = trials[trials["diagnostics"].fillna(False).astype(bool)]
    if runs.empty:
        return pd.DataFrame()
    evals = loaded.evals_of(runs["run_id"].tolist())
    if evals.empty:
        return pd.DataFrame()
    parsed = [_metrics(text) for text in evals["metrics_json"]]
    for key in DIAGNOSTIC_KEYS:
        evals[key] = [p.get(key, math.nan) for p in parsed]
    lr = dict(zip(runs["run_id"], (_lr(parse_hparams(h)) for h in runs["hparams"])))
    evals["trial_lr"] = evals["run_id"].map(lr)
    evals["workload"] = evals["workload_key"]
    return evals


def _metrics(text: str) -> dict[str, float]:
    try:
        raw = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return {k: float(v) for k, v in raw.items() if isinstance(v, (int, float)) and not isinstance(v, bool)} \
        if isinstance(raw, dict) else {}


def plot_diagnostics(rows: pd.DataFrame, *, workload: str) -> Figure:
    """Sharpness beside 2/lr (left, log y) and the noise scale (right, log y) against step, one colour per trial."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 4.0), layout="constrained")
    sharp, noise = fig.subplots(1, 2)
    cmap = colormaps["tab10"]
    for i, (run_id, g) in enumerate(rows.groupby("run_id", sort=False)):
        g = g.sort_values("step")
        color, first = cmap(i % 10), g.iloc[0]
        label = f"{first['submission']} lr={first['trial_lr']:.3g} seed {first['seed']}"
        sharp.plot(g["step"], g["sharpness"], "o-", color=color, ms=3, lw=1.5, label=label)
        if g["preconditioned_sharpness"].notna().any():
            sharp.plot(g["step"], g["preconditioned_sharpness"], "s-", color=color, ms=3, lw=1, alpha=0.6)
            sharp.plot(g["step"], g["adaptive_eos_threshold"], ":", color=color, lw=1)
        sharp.plot(g["step"], g["eos_threshold"], "--", color=color, lw=1)
        ok = g["noise_scale"].where(g["noise_scale"] > 0)
        if ok.notna().any():
            noise.plot(g["step"], ok, "o-", color=color, ms=3, lw=1.5, label=label)
    for ax in (sharp, noise):
        if any(line.get_ydata().size and (pd.Series(line.get_ydata()) > 0).any() for line in ax.get_lines()):
            ax.set_yscale("log")
            plain_log_ticks(ax.yaxis)
        ax.grid(alpha=0.3, which="both")
    sharp.set(xlabel="step", ylabel="top Hessian eigenvalue", title=f"{workload}: sharpness (dashed: 2/lr)")
    noise.set(xlabel="step", ylabel="B_simple (examples)", title=f"{workload}: gradient noise scale")
    sharp.legend(fontsize=7)
    return fig


def diagnostics_section(loaded: ResultSet, trials: pd.DataFrame) -> Section | None:
    """The curvature section, or None when no trial ran with ``--diagnostics``."""
    rows = diagnosed_rows(loaded, trials)
    if rows.empty:
        return None
    figures: list[Plot] = []
    table: list[list[str]] = []
    for w, g in rows.groupby("workload", sort=True):
        ids = list(dict.fromkeys(g.sort_values(["submission", "trial_lr", "seed"])["run_id"]))
        shown = ids[:MAX_DIAGNOSED_RUNS]
        left = f" {len(ids) - len(shown)} more trials left out of the plot." if len(ids) > len(shown) else ""
        caption = (f"{w}: top Hessian eigenvalue of the training loss on a fixed batch at each evaluation (circles; "
                   "squares: Adam's preconditioned sharpness, dotted: its threshold) beside 2/lr (dashed, same "
                   "colour); right: McCandlish et al.'s simple noise scale (non-positive estimates left out)." + left)
        figures.append(Plot(name=f"diagnostics-{safe_name(w)}", caption=caption,
                            draw=plot_diagnostics, args=(g[g["run_id"].isin(shown)],), kwargs=dict(workload=str(w))))
        for run_id in ids:
            r = g[g["run_id"] == run_id].sort_values("step")
            last = r.iloc[-1]
            ratio = last["sharpness"] / last["eos_threshold"] if last["eos_threshold"] > 0 else math.nan
            table.append([esc(w), esc(last["submission"]), f"{last['trial_lr']:.3g}", str(last["seed"]),
                          str(int(last["step"])), _g(r["sharpness"].max()), _g(last["sharpness"]),
                          _g(last["eos_threshold"]), _g(ratio), _g(r["noise_scale"].median())])
    head = ["workload", "submission", "lr", "seed", "last step", "max sharpness", "last sharpness", "2/lr",
            "last sharpness / (2/lr)", "median noise scale"]
    html = html_table(head, table, table_id="diagnostics", left=2)
    note = ("Measured off the clock at every evaluation of the trials run with --diagnostics "
            "(optbench.engine.diagnostics): sharpness near or above 2/lr is the edge of stability (Cohen et al. 2021).")
    return Section(title="Curvature and noise", note=note, table_html=html, plots=tuple(figures))


def _g(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{float(x):.4g}"


def scaling_runs_of(loaded: ResultSet, trials: pd.DataFrame) -> dict[str, list]:
    """Workload and tier -> the trials of ``optbench scaling`` ladders on it, as
    :class:`optbench.recipes.scaling.ScalingRun` (their final loss is their last evaluation's metric: only these
    trials' evaluation rows are read)."""
    from optbench.recipes.scaling import KIND, run_of

    if "study_kind" not in trials.columns:
        return {}
    runs = trials[trials["study_kind"] == KIND]
    if runs.empty:
        return {}
    evals = loaded.evals_of(runs["run_id"].tolist())
    last = {} if evals.empty else {r["run_id"]: r for r in
                                   evals.sort_values("step").groupby("run_id").tail(1).to_dict("records")}
    out: dict[str, list] = {}
    for rec in runs.to_dict("records"):
        run = run_of(rec, last.get(rec["run_id"]))
        key = str(rec["workload"])  # each rung is its own size (TIER+MODEL): the ladder is the key without it
        out.setdefault(key.removesuffix(f"+{run.model}"), []).append(run)
    return out


def scaling_section(loaded: ResultSet, trials: pd.DataFrame) -> Section | None:
    """The model-size ladder section (``optbench scaling``), or None when no such trial is recorded: the same
    table and plots the command writes, with AdamW as the reference where it ran (else the first submission)."""
    from optbench.recipes.scaling import summarize_scaling
    from optbench.recipes.scaling_tables import HEADERS, definition, fit_lines, plot_best_lr, plot_loss, row_cells

    ladders = scaling_runs_of(loaded, trials)
    if not ladders:
        return None
    rows, figures, notes = [], [], []
    for w, runs in sorted(ladders.items()):
        subs = sorted({r.submission for r in runs})
        summary = summarize_scaling(runs, reference="adamw" if "adamw" in subs else subs[0])
        rows += [[esc(w), *map(esc, row_cells(r, reference=summary.reference))] for r in summary.rows]
        notes += [f"{w}: {line}" for line in fit_lines(summary)]
        for kind, draw in (("loss", plot_loss), ("lr", plot_best_lr)):
            what = ("final loss against model FLOPs (best lr, mean over seeds, interval), fits solid over the "
                    "measured sizes and dashed beyond" if kind == "loss" else "best learning rate against parameters "
                    "(x: at the grid's edge) with lr*(N) = c N^-d")
            figures.append(Plot(name=f"scaling-{kind}-{safe_name(w)}", caption=f"{w}: {what}.", draw=draw,
                                args=(summary,), kwargs=dict(title=str(w))))
    note = definition(summary) + " Fits: " + "; ".join(notes or ["none (fewer than two sizes)"]) + "."
    html = html_table(["workload", *map(esc, HEADERS)], rows, table_id="scaling", left=4)
    return Section(title="Model-size scaling", note=note, table_html=html, plots=tuple(figures))


def research_sections(loaded: ResultSet, trials: pd.DataFrame) -> list[Section]:
    """Every research section the results support, in page order, for ``optbench report`` to hand to
    :func:`optbench.report.html.build_report`. ``trials``: every trial, research ones included
    (:meth:`optbench.store.reader.ResultSet.all_trials`): these sections read research trials on purpose."""
    found = [cbs_section(trials), diagnostics_section(loaded, trials), scaling_section(loaded, trials)]
    return [s for s in found if s is not None]
