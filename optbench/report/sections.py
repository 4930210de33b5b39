"""The report page's sections as HTML (every string from results escaped) and the list of its plots.

The leaderboard (scores with bootstrap intervals, times to target with intervals, outcome counts), paired tests of
every submission against the best one, the plots of curves and sensitivity (:func:`report_plots`), and the
provenance of every result; :mod:`optbench.report.html` puts them on one page. A :class:`Section` is one more
section the report's caller hands in (a research recipe's, made a layer above: the report imports no recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from optbench.errors import UsageError
from optbench.report.figures import (EVAL_AXIS, PROFILE_OVERLAP_NOTE, colors_for, plot_curves, plot_outcomes,
                                     plot_profiles, plot_sensitivity, representative_runs)
from optbench.report.pages import esc, html_table, safe_name

if TYPE_CHECKING:  # pragma: no cover
    from optbench.report.plots import Plot, Saved
    from optbench.scoring.profiles import Leaderboard
    from optbench.store.reader import ResultSet
    from optbench.store.units import Units

PROVENANCE = ("optbench_version", "code_hash", "git_commit", "torch_version", "python_version", "device",
              "device_name", "cpu_model")


@dataclass(frozen=True, kw_only=True)
class Section:
    """One section of the page from the report's caller: a title, a note, an HTML table (escaped by its maker) and
    its plots (drawn with the report's own, after them)."""

    title: str
    note: str
    table_html: str
    plots: tuple[Plot, ...]


def section_html(section: Section, saved: dict[str, Saved]) -> str:
    """A handed-in section: its heading, note, table and the figures of its plots that were drawn."""
    return (f'<h2>{esc(section.title)}</h2>\n<p class="note">{esc(section.note)}</p>\n{section.table_html}\n'
            + "".join(figure_html(saved[p.name]) for p in section.plots if p.name in saved))


def _fmt(v: float, by: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if not math.isfinite(v):
        return "miss"
    return f"{v:.3g} s" if by == "time" else f"{v:.4g}"


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


def leaderboard_html(board: Leaderboard, score_ci: pd.DataFrame, time_ci: pd.DataFrame) -> str:
    from optbench.report.intervals import time_interval_text
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
            if finite and (w, s) in time_ci.index:  # the interval with its achieved coverage and n
                text += time_interval_text(time_ci.loc[(w, s)], lambda v: _fmt(v, by))
            ratio = float(board.ratios.loc[w, s])
            text += f" ({ratio:.2f}x)" if math.isfinite(ratio) else f" ({miss_reason(board, str(w), str(s))})"
            cells.append(esc(text))
        counts = "/".join(str(int(board.outcomes.loc[s, o])) for o in OUTCOMES)
        rows.append([str(rank), esc(s), esc(score), *cells, esc(counts)])
    return html_table(headers, rows, table_id="leaderboard", left=2)


def paired_html(rows: list[dict[str, Any]]) -> str:
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


COMPUTE = ("model_flops_per_example", "optimizer_flops_per_step", "optimizer_share", "mfu")


def compute_html(trials: pd.DataFrame) -> str:
    """Where the compute goes, per workload and submission (medians over trials): model FLOPs per example,
    optimizer FLOPs per step, the optimizer step's share of the timed seconds, MFU; "" when nothing was counted
    (results from before these fields)."""
    present = [c for c in COMPUTE if c in trials.columns]
    if not present or trials[present].isna().all().all():
        return ""
    table = trials.groupby(["workload", "submission"], sort=True)[present].median()
    rows = [[esc(w), esc(s)] + ["n/a" if pd.isna(r[c]) else (f"{r[c]:.1%}" if c in ("optimizer_share", "mfu")
                                                              else f"{r[c]:.3g}") for c in present]
            for (w, s), r in table.iterrows()]
    note = ("Medians over trials. FLOPs: model forward+backward per example and one optimizer step, counted at "
            "trial start (--by flops scores their sum to the target); optimizer share: the update step's share of "
            "the timed seconds; MFU: model FLOPs per timed second over the GPU's dense bf16 peak.")
    return (f'<h2>Compute</h2>\n<p class="note">{esc(note)}</p>\n'
            + html_table(["workload", "submission", *present], rows, table_id="compute", left=2))


SHOWN_FAILURES = 50  # failed trials listed on the page, latest first (the heading counts them all)


def failures_html(trials: pd.DataFrame) -> str:
    """Every failed trial (error, oom, timeout, diverged) with its reason, latest first; "" when none failed.
    ``optbench show RUN_ID`` prints a trial's whole record and traceback."""
    from optbench.store.failures import FAILED, failure_note, reason_line

    failed = trials[trials["outcome"].isin(FAILED)].sort_values("created_at", ascending=False)
    if failed.empty:
        return ""
    rows = [[esc(r["run_id"]), esc(f"{r['workload']}"), esc(r["submission"]), esc(r["seed"]), esc(r["outcome"]),
             esc(reason_line(r["error"]) or "-")] for _, r in failed.head(SHOWN_FAILURES).iterrows()]
    more = f" The latest {SHOWN_FAILURES} are listed." if len(failed) > SHOWN_FAILURES else ""
    note = f"{failure_note(failed.to_dict('records'))}.{more}"
    return (f'<h2>Failed trials</h2>\n<p class="note">{esc(note)}</p>\n'
            + html_table(["run_id", "workload", "submission", "seed", "outcome", "reason"], rows,
                         table_id="failures", left=6))


def provenance_html(trials: pd.DataFrame) -> str:
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


def page_warnings(loaded: ResultSet, units: Units) -> list[str]:
    """The page's warnings: files skipped, what the ranking left out or split, pooled studies, mixed code versions
    or devices among the ranked trials."""
    from optbench.report.render import pooled_warning

    out = [f"skipped {p.splitlines()[0]}" for p in loaded.problems] + units.notes()
    trials = units.trials
    if trials.empty:
        return out
    pooled = pooled_warning(trials)
    if pooled:
        out.append(pooled)
    for col, what in (("code_hash", "versions of the engine code"), ("device_name", "devices")):
        n = trials[col].nunique()
        if n > 1:
            out.append(f"results come from {n} different {what}: timed seconds may not be comparable "
                       "(see Provenance; --by steps and --by flops are hardware-independent)")
    if trials["device_name"].nunique() <= 1:  # different devices: said just above; here, different loads
        from optbench.scoring.conditions import time_warning

        load = time_warning(trials.to_dict("records"))
        if load:
            out.append(load.removeprefix("warning: "))
    return out


_DIAMONDS = (" Diamonds: the leaderboard's median {by} to target (median over studies of each study's first "
             "evaluation at the target). With an odd number of studies the line meets the target at the diamond; "
             "with an even number the leaderboard takes the mean of the middle two, and the line may cross "
             "between them.")


def report_plots(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, *, by: str, hparam: str) -> list[Plot]:
    """Every plot of the ranked trials (``trials``, :meth:`optbench.store.reader.ResultSet.scoring_trials`), to be
    drawn (by :func:`optbench.report.plots.render_all`)."""
    from optbench.report import render
    from optbench.report.plots import Plot
    from optbench.scoring.stats import sensitivity

    colors = colors_for(list(board.scores.index))
    plots = [
        Plot(name="profile", caption=("Performance profiles: fraction of workloads a submission reaches within tau "
                                      "times the best (step function; the score is the area under it, normalised). "
                                      + PROFILE_OVERLAP_NOTE),
             draw=plot_profiles, args=(board, colors)),
        Plot(name="outcomes", caption=f"Outcomes of every trial per submission and workload. {render.outcome_legend()}",
             draw=plot_outcomes, args=(board,)),
    ]
    runs = representative_runs(trials, by=by)
    evals = loaded.units().evals(loaded.evals_of(runs["run_id"].tolist()))  # only the curves that are drawn
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



def figure_html(saved: Saved) -> str:
    """A plot's HTML block: the PNG embedded, the caption, links to both files."""
    name = saved.name
    return (f'<figure id="fig-{esc(name)}"><img src="data:image/png;base64,{saved.png_base64}" alt="{esc(name)}">'
            f'<figcaption>{esc(saved.caption)} <a href="{esc(saved.svg.name)}">SVG</a> '
            f'<a href="{esc(saved.png.name)}">PNG</a></figcaption></figure>')
