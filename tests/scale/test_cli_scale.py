"""The scale options reach the trials from both commands, and bad values are one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from optbench.cli import main


def records(root: Path) -> list[dict]:
    return [json.loads(pq.read_schema(f).metadata[b"optbench"]) for f in sorted(root.rglob("*.parquet"))]


@pytest.mark.parametrize("command", [["run"], ["tune", "--trials", "1", "--studies", "1"]])
def test_micro_batch_and_sync_every_reach_the_record(command: list[str], tmp_path: Path) -> None:
    res = CliRunner().invoke(main, [*command, "-w", "linreg", "-s", "adamw", "--max-steps", "4", "--batch-size", "32",
                                    "--micro-batch-size", "8", "--sync-every", "2", "--quiet",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    (rec,) = records(tmp_path)
    assert (rec["micro_batch_size"], rec["accumulation_steps"], rec["sync_every"]) == (8, 4, 2)
    assert rec["device"] == "cpu"  # --device auto on a machine without CUDA


@pytest.mark.parametrize("option, value, message", [
    ("--micro-batch-size", "0", "--micro-batch-size must be an integer >= 1"),
    ("--sync-every", "0", "--sync-every must be an integer >= 1"),
])
def test_bad_scale_options_are_one_line(option: str, value: str, message: str, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", option, value, "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and message in res.output and len(res.output.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("*.parquet"))


def test_nproc_is_checked_before_torchrun_starts(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "--nproc", "0", "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "--nproc" in res.output
