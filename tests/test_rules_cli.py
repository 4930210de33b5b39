"""`optbench score` checked against hand-computed numbers, in every format, row by row.

Replaces evidence that could not fail: a one-submission leaderboard (its ratio is 1.0 and its score 1.000 whatever
the scoring does) and format tests that looked for a header only. Here three submissions with known times are
written to a real results store: fast 10 s, slow 25 s, never (missed). Ratios 1, 2.5, inf; exact scores with
r_max 4: 1, (4 - 2.5) / 3 = 0.5, 0.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.store.writer import write_trial
from tests.test_results import _record, _row

EXPECTED = [("fast", 1.0, 1.0, "10 s (1.00x)"), ("slow", 0.5, 2.5, "25 s (2.50x)"),
            ("never", 0.0, math.inf, "miss (1 budget)")]
OUTCOME_CELLS = ["r1", "r1", "m1"]  # the outcome column the Markdown and LaTeX tables keep


@pytest.fixture
def store(tmp_path):
    for run_id, (sub, _, ratio, _) in enumerate(EXPECTED):
        t = 10.0 * ratio if math.isfinite(ratio) else None
        write_trial(tmp_path, _record(run_id=f"r{run_id}", submission=sub, outcome="reached" if t else "missed",
                                      time_to_target=t, steps_to_target=100 if t else None,
                                      examples_to_target=3200 if t else None, tokens_to_target=3200 if t else None,
                                      total_timed_seconds=t or 30.0), [_row(0, 1.0), _row(100, 0.05 if t else 0.5)])
    return tmp_path


def _score(store, *args: str) -> str:
    r = CliRunner().invoke(main, ["score", "--results-dir", str(store), *args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r.output


def test_csv_rows_hold_the_hand_computed_scores_and_ratios(store):
    rows = list(csv.DictReader(io.StringIO(_score(store, "--format", "csv"))))
    assert [row["submission"] for row in rows] == [e[0] for e in EXPECTED]
    assert [int(row["rank"]) for row in rows] == [1, 2, 3]
    assert [float(row["score"]) for row in rows] == pytest.approx([e[1] for e in EXPECTED], abs=1e-12)
    assert [float(row["linreg/tiny:ratio"]) for row in rows] == [e[2] for e in EXPECTED]
    assert [float(row["linreg/tiny:time"]) for row in rows] == [10.0, 25.0, math.inf]
    assert [(row["reached"], row["missed"]) for row in rows] == [("1", "0"), ("1", "0"), ("0", "1")]
    assert [row["linreg/tiny:miss"] for row in rows] == ["", "", "1 budget"]  # why the miss missed


def test_json_rows_hold_the_hand_computed_scores(store):
    doc = json.loads(_score(store, "--format", "json"))
    assert (doc["by"], doc["r_max"]) == ("time", 4.0)
    got = [(r["submission"], r["score"], r["linreg/tiny:ratio"]) for r in doc["rows"]]
    assert got[:2] == [("fast", 1.0, 1.0), ("slow", pytest.approx(0.5), 2.5)]
    assert got[2][:2] == ("never", 0.0)


@pytest.mark.parametrize("fmt,split", [
    ("markdown", lambda line: [c.strip() for c in line.strip().strip("|").split("|")]),
    ("latex", lambda line: [c.strip() for c in line.rstrip().removesuffix("\\\\").split("&")]),
])
def test_markdown_and_latex_rows(store, fmt, split):
    out = _score(store, "--format", fmt)
    cells = [split(line) for line in out.splitlines() if ("|" in line or "&" in line)]
    body = [c for c in cells if c[0].isdigit()]  # the data rows (header, rules and notes start otherwise)
    assert body == [[str(i + 1), sub, f"{score:.3f}", cell, counts]
                    for i, ((sub, score, _, cell), counts) in enumerate(zip(EXPECTED, OUTCOME_CELLS))]


def test_default_table_rows(store):
    lines = _score(store).splitlines()
    for sub, score, _, cell in EXPECTED:
        line = next(ln for ln in lines if f" {sub} " in ln)
        assert f"{score:.3f}" in line and cell in line


def test_reference_mode_and_r_max_change_the_numbers(store):
    # --reference slow: fast 10 / 25 = 0.4 (full credit, 1.0), slow 1 (1.0), never inf (0).
    rows = list(csv.DictReader(io.StringIO(_score(store, "--format", "csv", "--reference", "slow"))))
    by_sub = {row["submission"]: row for row in rows}
    assert float(by_sub["fast"]["linreg/tiny:ratio"]) == pytest.approx(0.4)
    assert float(by_sub["slow"]["score"]) == 1.0 and float(by_sub["never"]["score"]) == 0.0
    # --r-max 2: slow's 2.5 is now a miss.
    rows = list(csv.DictReader(io.StringIO(_score(store, "--format", "csv", "--r-max", "2"))))
    assert [float(row["score"]) for row in rows] == [1.0, 0.0, 0.0]
