"""Issue 13, "outputs that read well": the score legend and captions, why a miss missed, the report's plots read
against the leaderboard, and the warning for `run` and `tune` results pooled in one results directory.

Every test reads a real artefact: the CLI's output on a real Parquet store, or a real matplotlib figure.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from optbench.report import render
from optbench.cli import main
from optbench.report.figures import contrast, plot_curves, plot_outcomes, plot_sensitivity, representative_runs
from optbench.report.html import build_report
from optbench.report.pages import PLAIN_TEXT
from optbench.store.reader import read_results
from optbench.store.units import with_workload_key
from optbench.store.writer import write_trial
from optbench.scoring.profiles import leaderboard, pooled_run_and_tune
from tests.test_report import _trial
from tests.test_results import _record, _row


def _trials(rows: list[tuple[str, str, str, str, float | None]]) -> pd.DataFrame:
    """A trials table from (workload, submission, study, outcome, time) rows."""
    return pd.DataFrame([
        {"workload": w, "submission": s, "study": st, "trial": "0", "seed": 0, "outcome": o, "metric_goal": "min",
         "target": 0.1, "time_to_target": t} for w, s, st, o, t in rows])


# ------------------------------------------------------------------------------------------------------ score


def test_every_outcome_has_a_letter_a_meaning_and_a_miss_reason():
    from optbench.store.records import OUTCOMES

    assert list(render.OUTCOME_LETTERS) == list(render.OUTCOME_MEANING) == list(OUTCOMES)
    assert list(render.MISS_REASON) == [o for o in OUTCOMES if o != "reached"]
    assert len(set(render.OUTCOME_LETTERS.values())) == len(OUTCOMES)


def test_a_miss_says_why():
    board = leaderboard(_trials([
        ("w", "a", "s0", "reached", 10.0), ("w", "a", "s1", "reached", 11.0), ("w", "a", "s2", "reached", 12.0),
        ("w", "b", "s0", "diverged", None), ("w", "b", "s1", "diverged", None), ("w", "b", "s2", "error", None),
        ("w", "c", "s0", "reached", 10.0), ("w", "c", "s1", "missed", None), ("w", "c", "s2", "oom", None),
        ("w", "d", "s0", "reached", 50.0),  # 5x the best: beyond r_max 4
        ("v", "a", "s0", "reached", 1.0),  # b, c, d never ran v
    ]), r_max=4.0)
    cells = {r["submission"]: (render._cell(r, "w", "time"), render._cell(r, "v", "time"))
             for r in render.rows(board)}
    assert cells["b"][0] == "miss (2 diverged, 1 error)"
    assert cells["c"][0] == "miss (1 budget, 1 oom, 1/3 studies reached)"
    assert cells["d"][0] == "50 s (miss: ratio > 4)"
    assert cells["b"][1] == "miss (not run)"
    assert cells["a"] == ("11 s (1.00x)", "1 s (1.00x)")  # median of 10, 11, 12


def _store(tmp_path: Path, studies: dict[str, list[str]]) -> Path:
    """A real results store: per submission, one reached trial per study (10 s each)."""
    for sub, names in studies.items():
        for k, study in enumerate(names):
            write_trial(tmp_path, _record(run_id=f"{sub}-{k}", submission=sub, study=study, time_to_target=10.0),
                        [_row(0, 1.0), _row(100, 0.05)])
    return tmp_path


def _score(store: Path, *args: str):
    r = CliRunner().invoke(main, ["score", "--results-dir", str(store), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


LEGEND_ITEMS = ["r = reached", "m = budget spent", "d = diverged", "E = raised an error", "o = out of memory",
                "t = killed at its time limit", "i = interrupted"]


@pytest.mark.parametrize("fmt", ["table", "markdown", "latex", "json"])
def test_every_format_spells_out_the_outcome_letters(tmp_path, fmt):
    out = _score(_store(tmp_path, {"sgd": ["seed0"]}), "--format", fmt).stdout
    flat = re.sub(r"\s+", " ", out)  # the rich caption wraps
    for item in LEGEND_ITEMS:
        assert item in flat, (fmt, item)


def test_markdown_and_latex_carry_a_caption_and_the_outcome_counts(tmp_path):
    store = _store(tmp_path, {"sgd": ["seed0"]})
    md = _score(store, "--format", "markdown").stdout.splitlines()
    assert md[0].endswith("| outcomes (r/m/d/E/o/t/i) |") and md[2].endswith("| r1 |")
    assert md[-1].startswith("Table: optbench leaderboard (by time). Benchmark score:")
    tex = _score(store, "--format", "latex").stdout
    assert tex.startswith("\\begin{table}") and tex.rstrip().endswith("\\end{table}")
    assert re.search(r"^1 & sgd & 1\.000 & .* & r1 \\\\$", tex, re.M)
    assert "\\caption{optbench leaderboard (by time). Benchmark score:" in tex


def test_latex_escapes_what_latex_would_read():
    assert render._tex("a_b & 50% #1 $x$ {y} ~^\\") == (
        r"a\_b \& 50\% \#1 \$x\$ \{y\} \textasciitilde{}\textasciicircum{}\textbackslash{}")


# --------------------------------------------------------------------------------------- pooled run and tune


def test_pooled_run_and_tune_results_warn_once_on_stderr(tmp_path):
    store = _store(tmp_path, {"adamw": ["seed0", "study-0", "study-1"], "sgd": ["seed0", "seed1"],
                              "lion": ["study-0"]})
    r = _score(store, "--format", "csv")
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 1 and "adamw on linreg/tiny" in lines[0], r.stderr
    assert "sgd" not in lines[0] and "lion" not in lines[0]
    assert "warning" not in r.stdout  # the CSV stays clean for machines


def test_run_or_tune_results_alone_do_not_warn(tmp_path):
    store = _store(tmp_path, {"adamw": ["seed0", "seed1"], "sgd": ["study-0", "study-1"], "x": ["mystudy"]})
    assert "warning" not in _score(store).stderr


def test_pooling_is_per_workload_and_submission():
    trials = _trials([("w/tiny", "a", "seed0", "reached", 1.0), ("w/small", "a", "study-0", "reached", 1.0),
                      ("w/tiny", "b", "seed3", "reached", 1.0), ("w/tiny", "b", "study-2", "reached", 1.0),
                      ("w/tiny", "c", "seed3x", "reached", 1.0), ("w/tiny", "c", "study-2", "reached", 1.0)])
    assert pooled_run_and_tune(trials) == [("w/tiny", "b")]


# ------------------------------------------------------------------------------------------------ report plots


def test_outcome_heatmap_text_is_readable_on_every_cell_and_has_a_colour_bar():
    board = leaderboard(_trials([("w", "good", "s0", "reached", 1.0), ("w", "bad", "s0", "missed", None),
                                 ("w", "half", "s0", "reached", 2.0), ("w", "half", "s1", "missed", None),
                                 ("v", "good", "s0", "reached", 1.0)]))
    fig = plot_outcomes(board)
    ax = fig.axes[0]
    image = ax.get_images()[0]
    shown = 0
    for text in ax.texts:
        j, i = (round(c) for c in text.get_position())
        value = image.get_array()[i, j]
        if np.ma.is_masked(value):
            continue  # "not run": on the blank background
        cell = image.cmap(image.norm(value))
        assert contrast(cell, text.get_color()) >= 4.5, (text.get_text(), cell, text.get_color())
        shown += 1
    assert shown == 4
    assert any(t.get_text() == "not run" for t in ax.texts)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "fraction of trials reached"  # the colour bar


def _curve_store(tmp_path: Path) -> Path:
    """One submission, 3 studies that reach at steps 300, 500 and 800 (median 500: 5 s), and one that diverges."""
    root = tmp_path / "results"
    for seed, rate in enumerate((0.8, 0.5, 0.3)):
        _trial(root, workload="linreg", sub="sgd", study=f"seed{seed}", seed=seed, rate=rate, lr=0.1)
    return root


@pytest.mark.parametrize("by,col", [("time", "timed_seconds"), ("steps", "step")])
def test_curves_median_meets_the_target_at_the_leaderboards_median_time(tmp_path, by, col):
    loaded = read_results(_curve_store(tmp_path))
    trials = loaded.scoring_trials()
    board = leaderboard(trials, by=by)
    w = board.times.index[0]
    scored = float(board.times.loc[w, "sgd"])
    runs = representative_runs(trials, by=by)
    evals = with_workload_key(loaded.evals_of(runs["run_id"].tolist()))
    from matplotlib import rc_context

    with rc_context(PLAIN_TEXT):
        fig = plot_curves(evals, runs, colors={"sgd": "C0"}, workload=w, scored={"sgd": scored}, by=by)
    ax = fig.axes[0 if col == "timed_seconds" else 1]
    line = next(ln for ln in ax.get_lines() if ln.get_label() == "sgd (n=3)")
    x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
    assert (y[x >= scored] <= 0.1).all() and np.isfinite(y[x >= scored]).any()  # reached from then on...
    assert (y[x < scored] > 0.1).all()  # ...and not before
    marker = next(ln for ln in ax.get_lines() if "scored median" in str(ln.get_label()))
    assert (float(marker.get_xdata()[0]), float(marker.get_ydata()[0])) == (scored, 0.1)


def test_sensitivity_misses_are_hollow_marks_on_the_edge_not_measurements():
    sens = pd.DataFrame({"workload": "w", "submission": "sgd", "value": [0.01, 0.1, 1.0],
                         "best_metric": [0.05, 0.08, 0.9], "time_to_target": [3.0, 4.0, math.inf]})
    fig = plot_sensitivity(sens, colors={"sgd": "C0"}, workload="w", hparam="lr", by="time", metric="m")
    ax_t = fig.axes[1]
    lines = {str(ln.get_label()): ln for ln in ax_t.get_lines()}
    missed = lines["sgd: missed"]
    assert list(missed.get_xdata()) == [1.0] and list(missed.get_ydata()) == [1.0]
    assert missed.get_transform() == ax_t.get_xaxis_transform()  # y in axes units: the top edge, not a time
    assert missed.get_markerfacecolor() == "none" and not missed.get_clip_on()
    measured = lines["sgd"]
    assert list(measured.get_xdata()) == [0.01, 0.1]  # the miss is no point of the measured line
    assert "missed" in ax_t.get_legend().texts[-1].get_text()


# ------------------------------------------------------------------------------------------------ report page


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    root = tmp_path_factory.mktemp("pooled") / "results"
    for seed in range(3):
        _trial(root, workload="linreg", sub="fast", study=f"seed{seed}", seed=seed, rate=0.9, lr=0.01)
        _trial(root, workload="linreg", sub="never", study=f"seed{seed}", seed=seed, rate=0.05, lr=0.1)
        for sub in ("fast", "never"):  # both miss "other": no informative pair, speed-up undefined
            _trial(root, workload="other", sub=sub, study=f"seed{seed}", seed=seed, rate=0.05, lr=0.1)
    _trial(root, workload="linreg", sub="fast", study="study-0", seed=7, rate=0.9, lr=0.01)
    rep = build_report(read_results(root), out=root.parent / "rep", n_boot=50)
    return rep.index.read_text(encoding="utf-8")


def test_paired_table_explains_inf_and_na(page):
    table = page.split('id="paired"')[1].split("</table>")[0]
    rows = {r.split("</td>")[0]: re.findall(r"<td[^>]*>([^<]*)</td>", r)
            for r in table.split('<tr><td class="l">')[1:]}
    assert rows["linreg/tiny"][3] == "inf" and rows["linreg/tiny"][7] == "n/a"  # B never reached: nothing to size
    assert rows["other/tiny"][3] == "n/a"  # neither ever reached: no speed-up at all (not "nan")
    legend = page.split('id="paired-legend">')[1].split("</p>")[0]
    assert "inf (speed-up)" in legend and "n/a (seeds needed)" in legend


def test_provenance_tables_scroll_instead_of_wrapping(page):
    for table_id in ("provenance", "origins", "trials"):
        assert re.search(rf'<div class="scroll nowrap"><table id="{table_id}">', page), table_id
    assert ".nowrap th,.nowrap td{white-space:nowrap}" in page and ".scroll{overflow-x:auto" in page
    assert '<div class="scroll"><table id="leaderboard">' in page  # the leaderboard may still wrap


def test_report_page_warns_of_pooled_studies_and_says_why_cells_miss(page):
    assert re.search(r'<p class="warn">this results directory pools [^<]*fast on linreg/tiny', page)
    board = page.split('id="leaderboard"')[1].split("</table>")[0]
    assert "miss (3 budget)" in board
    assert "outcomes<br>r/m/d/E/o/t/i" in board and "i = interrupted" in page
