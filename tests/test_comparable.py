"""Only comparable trials are ranked, in ``optbench score`` (every format, ``--ci``, ``--sensitivity``) and in
``optbench report``: a research recipe's trials are left out with one note, and trials of one workload whose fixed
settings (configured batch size, target) differ are scored as separate units with one note naming the split, never
pooled into one leaderboard cell. Real result files, read by the real reader, through the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.store.reader import read_results
from optbench.store.writer import write_trial
from tests.test_results import _record, _row

RESEARCH_NOTE = ("note: 4 research trials left out of the leaderboard (cbs: 4); their recipes print their own "
                 "tables")
BATCH_NOTE = ("note: linreg/tiny holds trials of different batch sizes, scored apart as linreg/tiny (batch 32), "
              "linreg/tiny (batch 64)")


def _runs(root: Path, sub: str, *, seconds: float, seeds: int = 3, **record: object) -> None:
    """``seeds`` plain runs of ``sub`` on linreg/tiny that reached in ``seconds`` (fields of ``record`` set)."""
    tag = "-".join(f"{k}{v}" for k, v in sorted(record.items()))
    for seed in range(seeds):
        write_trial(root, _record(run_id=f"{sub}-{seed}-{tag}", submission=sub, seed=seed, study=f"seed{seed}",
                                  time_to_target=seconds, **record), [_row(0, 1.0), _row(100, 0.05)])


def _cbs(root: Path) -> None:
    """A cbs recipe's sweep of sgd: 2 batch sizes x 2 learning rates, every trial faster than any run."""
    for batch in (16, 64):
        for lr in (0.01, 0.03):
            write_trial(root, _record(run_id=f"cbs-{batch}-{lr}", submission="sgd", study=f"b{batch}-lr{lr}",
                                      hparams=json.dumps({"lr": lr}), base_batch_size=batch, time_to_target=0.5,
                                      steps_to_target=int(6400 / batch), study_kind="cbs", varies="batch_size,lr"),
                        [_row(0, 1.0), _row(100, 0.05)])


def _invoke(*args: str, code: int = 0):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


def _board(root: Path, *args: str) -> tuple[list[dict], list[str]]:
    """The JSON leaderboard's rows and the ``note:`` lines on stderr."""
    r = _invoke("score", "--results-dir", str(root), "--format", "json", *args)
    return json.loads(r.stdout)["rows"], [ln for ln in r.stderr.splitlines() if ln.startswith("note:")]


def _units(row: dict) -> list[str]:
    return sorted(k.split(":")[0] for k in row if k.endswith(":time"))


def test_score_leaves_research_trials_out_with_one_note(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "fast", seconds=5.0, base_batch_size=32)
    _cbs(tmp_path)
    rows, notes = _board(tmp_path)
    assert [r["submission"] for r in rows] == ["fast", "adamw"]  # sgd's cbs trials, faster still, are not ranked
    assert _units(rows[0]) == ["linreg/tiny"]  # nor do their batch sizes split the runs' workload
    assert notes == [RESEARCH_NOTE]


def test_trials_at_different_batch_sizes_are_separate_units_with_one_note(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "adamw", seconds=20.0, base_batch_size=64)
    _runs(tmp_path, "fast", seconds=5.0, base_batch_size=32)
    rows, notes = _board(tmp_path)
    adamw = next(r for r in rows if r["submission"] == "adamw")
    assert _units(adamw) == ["linreg/tiny (batch 32)", "linreg/tiny (batch 64)"]
    assert adamw["linreg/tiny (batch 32):time"] == 10.0 and adamw["linreg/tiny (batch 64):time"] == 20.0  # no pool
    assert adamw["linreg/tiny (batch 64):ratio"] == 1.0  # the only submission run at batch 64
    assert notes == [BATCH_NOTE]


def test_ci_and_sensitivity_rank_the_same_units(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "adamw", seconds=20.0, base_batch_size=64)
    _cbs(tmp_path)
    rows, notes = _board(tmp_path, "--ci")
    assert _units(rows[0]) == ["linreg/tiny (batch 32)", "linreg/tiny (batch 64)"] and "score_low" in rows[0]
    assert [r["submission"] for r in rows] == ["adamw"] and notes == [RESEARCH_NOTE, BATCH_NOTE]
    r = _invoke("score", "--results-dir", str(tmp_path), "--format", "json", "--sensitivity", "lr")
    table = json.loads(r.stdout)
    assert sorted({row["workload"] for row in table}) == ["linreg/tiny (batch 32)", "linreg/tiny (batch 64)"]
    assert {row["submission"] for row in table} == {"adamw"}


def test_different_targets_are_separate_units_not_an_error(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32, target=0.1)
    _runs(tmp_path, "adamw", seconds=30.0, base_batch_size=32, target=0.01)
    rows, notes = _board(tmp_path)
    assert _units(rows[0]) == ["linreg/tiny (target 0.01)", "linreg/tiny (target 0.1)"]
    assert notes == ["note: linreg/tiny holds trials of different targets, scored apart as linreg/tiny "
                     "(target 0.01), linreg/tiny (target 0.1)"]


def test_a_file_without_a_batch_size_is_its_own_setting(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "old", seconds=10.0)  # written before base_batch_size existed: None
    units = read_results(tmp_path).units()
    assert sorted(set(units.trials["workload"])) == ["linreg/tiny (batch 32)", "linreg/tiny (batch not recorded)"]
    assert units.splits == {"linreg/tiny": ("batch sizes", ("linreg/tiny (batch not recorded)",
                                                            "linreg/tiny (batch 32)"))}


def test_one_setting_keeps_the_plain_workload_key_and_no_note(tmp_path):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "fast", seconds=5.0, base_batch_size=32, study_kind="tune", varies="lr")
    rows, notes = _board(tmp_path)
    assert _units(rows[0]) == ["linreg/tiny"] and notes == []  # run and tune are both ranked


def test_only_research_trials_is_a_one_line_error_for_score(tmp_path):
    _cbs(tmp_path)
    r = _invoke("score", "--results-dir", str(tmp_path), code=2)
    assert r.stderr.strip() == ("error: no trial to rank: 4 research trials left out of the leaderboard (cbs: 4); "
                                "their recipes print their own tables")


# ------------------------------------------------------------------------------------------------------ report


def _section(page: str, title: str) -> str:
    start = page.index(f"<h2>{title}</h2>")
    return page[start:page.index("<h2>", start + 4)]


def test_report_ranks_the_same_units_and_keeps_the_research_section(tmp_path):
    root = tmp_path / "results"
    _runs(root, "adamw", seconds=10.0, base_batch_size=32)
    _runs(root, "adamw", seconds=20.0, base_batch_size=64)
    _runs(root, "fast", seconds=5.0, base_batch_size=32)
    _cbs(root)
    r = _invoke("report", "--results-dir", str(root), "--out", str(tmp_path / "r"))
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("note:")] == [RESEARCH_NOTE, BATCH_NOTE]
    page = (tmp_path / "r" / "index.html").read_text()
    board = _section(page, "Leaderboard")
    assert "linreg/tiny (batch 32)<br>" in board and "linreg/tiny (batch 64)<br>" in board
    # adamw first: alone at batch 64, it takes that unit's full share, while fast missed it (not run)
    assert re.findall(r'<tr><td class="l">\d+</td><td class="l">([^<]*)</td>', board) == ["adamw", "fast"]
    warnings = re.findall(r'<p class="warn">([^<]*)</p>', page)
    assert warnings == [RESEARCH_NOTE.removeprefix("note: "), BATCH_NOTE.removeprefix("note: ")]
    sweep = _section(page, "Batch-size sweeps")  # the research section still reads the cbs trials (and every
    rows = re.findall(r"<tr><td[^>]*>linreg/tiny</td><td[^>]*>(\w+)</td><td[^>]*>(\d+)</td>", sweep)  # sweep)
    assert [r for r in rows if r[0] == "sgd"] == [("sgd", "16"), ("sgd", "64")]
    assert re.search(r'<p class="note">(\d+) trials', page).group(1) == "13"  # the summary counts every trial read
    assert (tmp_path / "r" / "curves-linreg-tiny-batch-64.png").is_file()


def test_report_of_research_trials_only_has_no_leaderboard_but_its_sections(tmp_path):
    root = tmp_path / "results"
    _cbs(root)
    _invoke("report", "--results-dir", str(root), "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    assert "No trial to rank: 4 research trials left out of the leaderboard (cbs: 4)" in _section(page, "Leaderboard")
    assert 'id="leaderboard"' not in page and "<h2>Paired tests" not in page
    assert "sgd" in _section(page, "Batch-size sweeps") and 'id="provenance"' in page


@pytest.mark.parametrize("kind", ["lr-sweep", "shape-search", "curvature", "seesaw"])
def test_every_research_kind_is_left_out_and_named(tmp_path, kind):
    _runs(tmp_path, "adamw", seconds=10.0, base_batch_size=32)
    _runs(tmp_path, "sgd", seconds=1.0, seeds=2, base_batch_size=32, study_kind=kind)
    rows, notes = _board(tmp_path)
    assert [r["submission"] for r in rows] == ["adamw"]
    assert notes == [f"note: 2 research trials left out of the leaderboard ({kind}: 2); their recipes print their "
                     "own tables"]
