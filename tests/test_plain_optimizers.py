"""A plain torch.optim class: checked over a small lr grid unless an lr is given, and schedulable like a built-in."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine.conformance import LR_GRID, run_check
from optbench.plugins.hparams import merge
from optbench.plugins.registry import is_plain_optimizer, load_submission


def test_a_plain_class_passes_the_quadratic_at_some_lr_of_the_grid() -> None:
    radam = load_submission("torch.optim:RAdam")
    assert is_plain_optimizer(radam.obj) and not is_plain_optimizer(load_submission("adamw").obj)
    res = run_check(radam, "quadratic")
    assert res.passed and "lr grid" in res.detail
    lr = float(res.detail.split("at lr=")[1].split()[0])
    assert lr in LR_GRID and lr != radam.obj.defaults["lr"]  # torch's default 1e-3 is too small here


def test_a_given_lr_is_checked_alone() -> None:
    radam = load_submission("torch.optim:RAdam")
    res = run_check(radam, "quadratic", hparams=merge(radam.obj.defaults, {"lr": 1e-5}, submission="radam"))
    assert not res.passed and "grid" not in res.detail


def test_a_built_in_is_checked_at_its_defaults_only() -> None:
    res = run_check(load_submission("adamw"), "quadratic")
    assert res.passed and "grid" not in res.detail


def test_a_plain_class_runs_under_a_schedule_when_asked(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "torch.optim:SGD", "-o", "lr=0.01", "-o",
                                    "schedule=cosine", "-o", "warmup_frac=0.1", "--step-hint", "40",
                                    "--max-steps", "40", "--eval-every", "10", "--quiet", "--results-dir",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    lrs = pq.read_table(path, columns=["learning_rate"]).column(0).to_pylist()
    assert lrs[1] > lrs[2] > lrs[4]  # warmed up by step 4, then decaying
    assert json.loads(json.loads(pq.read_schema(path).metadata[b"optbench"])["hparams"])["schedule"] == "cosine"


def test_by_default_a_plain_class_keeps_its_constant_lr(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "torch.optim:SGD", "-o", "lr=0.01",
                                    "--max-steps", "20", "--eval-every", "10", "--quiet", "--results-dir",
                                    str(tmp_path)])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    assert set(pq.read_table(path, columns=["learning_rate"]).column(0).to_pylist()) == {0.01}
