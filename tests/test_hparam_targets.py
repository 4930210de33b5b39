"""Hyperparameters per submission (``-o adamw.lr=...``), repeated keys, and the schedule's horizon."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.errors import UsageError
from optbench.plugins.hparams import check_prefixes, for_submission, parse_assignments


def records(root: Path) -> dict[str, dict]:
    out = {}
    for f in root.rglob("*.parquet"):
        rec = json.loads(pq.read_schema(f).metadata[b"optbench"])
        out[rec["submission"]] = rec
    return out


def test_values_for_one_submission_win_over_plain_ones_and_skip_the_others() -> None:
    given = {"lr": 0.1, "adamw.lr": 0.002, "sgd.momentum": 0.5}
    assert for_submission(given, {"adamw"}) == {"lr": 0.002}
    assert for_submission(given, {"sgd"}) == {"lr": 0.1, "momentum": 0.5}


def test_a_repeated_key_is_an_error_not_last_one_wins() -> None:
    with pytest.raises(UsageError, match=r"^--opt-arg lr is given twice \(0\.1, then 0\.2\); give it once$"):
        parse_assignments(["lr=0.1", "lr=0.2"])
    assert parse_assignments(["lr=0.1", "adamw.lr=0.2"]) == {"lr": 0.1, "adamw.lr": 0.2}


def test_a_prefix_naming_no_submission_is_an_error() -> None:
    check_prefixes({"adamw.lr": 1}, ["adamw", "sgd"])
    with pytest.raises(UsageError, match="'adamv' names no submission"):
        check_prefixes({"adamv.lr": 1}, ["adamw", "sgd"])


def test_each_submission_of_a_run_gets_its_own_values(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "-s", "sgd", "-o", "adamw.lr=0.002",
                                    "-o", "sgd.lr=0.05", "--max-steps", "3", "--quiet", "--results-dir",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    recs = records(tmp_path)
    assert json.loads(recs["adamw"]["hparams"])["lr"] == 0.002 and json.loads(recs["sgd"]["hparams"])["lr"] == 0.05


@pytest.mark.parametrize("args, hint", [(["--step-hint", "30"], 30), ([], 1500)])
def test_the_schedule_spans_the_step_hint_given(args: list[str], hint: int, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "--max-steps", "30", "--eval-every",
                                    "10", "--quiet", "--results-dir", str(tmp_path), *args])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    assert json.loads(pq.read_schema(path).metadata[b"optbench"])["step_hint"] == hint
    lrs = pq.read_table(path, columns=["learning_rate"]).column(0).to_pylist()
    if hint == 30:
        assert lrs[-1] == pytest.approx(0.1 * 0.01)  # decayed to adamw's floor (0.1 x lr) by step 30
    else:
        assert lrs[1] < lrs[2] < lrs[3]  # the size's 1500-step schedule is still warming up at step 30


def test_a_dotted_spec_can_be_a_prefix_and_a_typo_is_one_line(tmp_path: Path) -> None:
    assert for_submission({"torch.optim:SGD.lr": 0.1}, {"torch.optim:SGD"}) == {"lr": 0.1}
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "-o", "adamv.lr=0.1", "--results-dir",
                                    str(tmp_path)])
    assert res.exit_code == 2 and "'adamv' names no submission" in res.output
    assert not list(tmp_path.rglob("*.parquet"))
