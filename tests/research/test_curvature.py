"""Curvature in real training: the teacher workload fits the API, gradient descent on it reaches the edge of
stability (sharpness ~ 2/lr), diagnostics land in metrics_json without changing the training, and
``optbench curvature`` writes its table and plot."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine.diagnostics import Diagnostics
from optbench_workloads.teacher import teacher
from optbench.plugins.registry import check_workload, load_submission, load_workload
from optbench.recipes.curvature import stability_threshold
from optbench.engine.runner import TrialConfig, run_trial


def test_teacher_fits_the_workload_api_and_is_full_batch_by_default():
    check_workload(teacher, "teacher")
    task = teacher.setup(teacher.sizes["tiny"], device=torch.device("cpu"))
    full = task.next_batch(256, torch.Generator())
    assert full.x.shape == (256, 16) and torch.equal(full.x, task.next_batch(10**6, torch.Generator()).x)
    assert task.next_batch(8, torch.Generator().manual_seed(0)).x.shape == (8, 16)
    assert abs(float(task.y.std()) - 1.0) < 1e-5


def test_gradient_descent_sharpens_to_two_over_lr_and_stays_there():
    task = teacher.setup(teacher.sizes["tiny"], device=torch.device("cpu"))
    model = task.init_model(torch.Generator().manual_seed(0))
    lr = 1.0  # 2/lr = 2 sits just below the initial sharpness (about 2.4): GD is at the edge from the start
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    diag = Diagnostics(task, seed=0, batch_size=256, noise_batches=0, iters=30)
    sharp = []
    for t in range(1, 901):
        task.loss(model, task.next_batch(256, torch.Generator())).backward()
        opt.step()
        opt.zero_grad()
        if t % 300 == 0:
            sharp.append(diag.measure(model, lr=lr)["sharpness"])
    assert all(abs(s / (2.0 / lr) - 1.0) < 0.08 for s in sharp), sharp


def test_diagnostics_go_into_metrics_json_and_leave_training_alone(results):
    sgd = load_submission("sgd")
    cfg = TrialConfig(max_steps=40, eval_every_steps=20, hparams={"lr": 0.5, "momentum": 0.0, "schedule": "constant",
                                                                  "warmup_frac": 0.0})
    plain = run_trial(load_workload("teacher"), sgd, cfg, results_dir=results)
    measured = run_trial(load_workload("teacher"), sgd, replace(cfg, diagnostics=True, noise_batches=4, iters=5),
                         results_dir=results)
    assert [r.train_loss for r in measured.rows] == [r.train_loss for r in plain.rows]
    assert [r.metric_value for r in measured.rows] == [r.metric_value for r in plain.rows]
    for row in measured.rows:
        m = json.loads(row.metrics_json)
        assert m["sharpness"] > 0 and {"noise_scale", "grad_sq", "trace_cov", "loss"} <= set(m)
    assert "sharpness" not in json.loads(plain.rows[-1].metrics_json)


def test_stability_threshold_of_heavy_ball():
    assert stability_threshold(0.5) == 4.0 and stability_threshold(0.1, momentum=0.9) == pytest.approx(38.0)
    assert stability_threshold(0.0) == float("inf")


def test_curvature_command_writes_table_and_plot(tmp_path):
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["curvature", "--lrs", "0.5,1.0", "-o", "momentum=0", "-o", "schedule=constant",
                                  "--max-steps", "40", "--eval-every", "20", "--iters", "5",
                                  "--results-dir", str(tmp_path / "res"), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    table = (out / "curvature.md").read_text()
    assert table.count("\n| 0.5 | ") == 3 and table.count("\n| 1 | ") == 3  # steps 0, 20, 40: the whole budget
    assert "| 0.5 | 40 |" in table and "| 4 |" in table  # 2/lr for lr 0.5
    assert (out / "curvature.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("args", [["--lrs", "0"], ["--noise-batches", "1"], ["--iters", "0"]])
def test_bad_curvature_options_fail_in_one_line(tmp_path, args):
    r = CliRunner().invoke(main, ["curvature", "--results-dir", str(tmp_path), "--out", str(tmp_path / "o"), *args])
    assert r.exit_code == 2 and r.output.startswith("error: ") and r.output.count("\n") == 1, r.output
