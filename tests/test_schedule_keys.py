"""Every scheduled submission takes every schedule's keys; a bad schedule is one line before any training."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from optbench.cli import main


def run(tmp_path: Path, *args: str):
    return CliRunner().invoke(main, ["run", "-w", "linreg", "--max-steps", "3", "--quiet", "--results-dir",
                                     str(tmp_path), *args])


def test_a_scheduled_submission_takes_the_wsd_keys(tmp_path: Path) -> None:
    res = run(tmp_path, "-s", "adamw", "-o", "schedule=wsd", "-o", "cooldown_frac=0.3")
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    hparams = json.loads(json.loads(pq.read_schema(path).metadata[b"optbench"])["hparams"])
    assert hparams["schedule"] == "wsd" and hparams["cooldown_frac"] == 0.3


def test_a_misspelt_schedule_key_is_still_refused(tmp_path: Path) -> None:
    res = run(tmp_path, "-s", "torch.optim:SGD", "-o", "lr=0.01", "-o", "cooldown_fraction=0.3")
    assert res.exit_code == 2 and "no hyperparameter cooldown_fraction" in res.output


def test_an_unknown_schedule_is_one_line_and_trains_nothing(tmp_path: Path) -> None:
    res = run(tmp_path, "-s", "adamw", "-o", "schedule=zigzag")
    assert res.exit_code == 2 and "unknown schedule 'zigzag'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not list(tmp_path.rglob("*.parquet"))
