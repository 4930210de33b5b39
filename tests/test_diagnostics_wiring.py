"""--diagnostics: curvature and noise at every evaluation, in metrics_json, without changing the trial."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from optbench.cli import main


def curve(root: Path) -> tuple[list, list]:
    (path,) = root.rglob("*.parquet")
    t = pq.read_table(path, columns=["train_loss", "metric_value", "metrics_json"])
    return [t.column(0).to_pylist(), t.column(1).to_pylist()], [json.loads(m) for m in t.column(2).to_pylist()]


def run(root: Path, *extra: str) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "--max-steps", "40", "--eval-every", "20",
                                    "--quiet", "--results-dir", str(root), *extra])
    assert res.exit_code == 0, res.output


def test_diagnostics_are_recorded_and_leave_the_trial_as_it_was(tmp_path: Path) -> None:
    run(tmp_path / "plain")
    run(tmp_path / "diag", "--diagnostics")
    (plain, plain_metrics), (diag, diag_metrics) = curve(tmp_path / "plain"), curve(tmp_path / "diag")
    assert str(plain) == str(diag)  # the same losses and metrics, bit for bit
    assert "sharpness" not in plain_metrics[0]
    for m in diag_metrics:
        assert m["sharpness"] > 0 and m["noise_scale"] > 0 and "eos_threshold" in m
    # AdamW's moments exist from its first step on: its preconditioned sharpness beside the adaptive threshold
    assert "preconditioned_sharpness" not in diag_metrics[0]
    assert all("preconditioned_sharpness" in m and "adaptive_eos_threshold" in m for m in diag_metrics[1:])
