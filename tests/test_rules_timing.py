"""The runner's timing and divergence rules, each shaped so that the plausible bug fails it deterministically.

Timing: evaluation is untimed and data loading is timed (README, "Timing rules"); a seconds-based evaluation period
is measured from the previous evaluation. Divergence: a finite training loss above ``divergence_factor`` (100) times
its first value is ``diverged``; one just under it is not. The workloads are in tests/plugins/rule_workloads.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.runner import TrialConfig, run_trial
from tests.plugins.rule_workloads import BATCH_SLEEP, EVAL_SLEEP, JUMP_AT

PLUGIN = Path(__file__).parent / "plugins" / "rule_workloads.py"
SGD = {"lr": 1e-3, "schedule": "constant", "warmup_frac": 0.0}


def _run(results: Path, workload: str, **cfg):
    return run_trial(load_workload(f"{PLUGIN}:{workload}"), load_submission("sgd"),
                     TrialConfig(hparams=SGD, **cfg), results_dir=results)


def test_evaluation_is_charged_to_the_untimed_clock(results):
    # 3 evaluations (steps 0, 5, 10) of EVAL_SLEEP each: all of it untimed. A clock that counted evaluation as timed
    # work would show EVAL_SLEEP timed seconds at step 0 (where no timed work has happened yet) and 3 x EVAL_SLEEP at
    # the end; ten linreg steps at d=64 take a few ms, far below the 2 x EVAL_SLEEP allowed here even on a busy machine.
    r = _run(results, "slow_eval", max_steps=10, eval_every_steps=5)
    assert [row.step for row in r.rows] == [0, 5, 10]
    assert r.rows[0].timed_seconds == 0.0
    for k, row in enumerate(r.rows):
        assert row.eval_seconds >= (k + 1) * EVAL_SLEEP  # this evaluation included
        assert row.timed_seconds < 2 * EVAL_SLEEP
        assert row.wall_seconds >= row.eval_seconds
    assert r.record.total_timed_seconds == r.rows[-1].timed_seconds


def test_data_loading_is_charged_to_the_timed_clock(results):
    r = _run(results, "slow_batch", max_steps=10, eval_every_steps=5)
    assert r.rows[0].timed_seconds == 0.0  # step 0 is evaluated before any timed work
    assert r.rows[-1].timed_seconds >= 10 * BATCH_SLEEP
    assert r.rows[-1].eval_seconds < 10 * BATCH_SLEEP  # linreg's closed-form evaluation is cheap


def test_seconds_based_evaluation_period_is_measured_from_the_previous_evaluation(results):
    # Every step costs >= BATCH_SLEEP timed seconds, so 40 steps are >= 0.4 s. With a 0.1 s period, consecutive
    # evaluations must be >= 0.1 timed seconds apart (the last one, at the budget's end, may come sooner), however
    # slow the machine. A reference point that is never advanced evaluates after every step once the first period
    # has passed: gaps of one step, about BATCH_SLEEP.
    period = 10 * BATCH_SLEEP
    r = _run(results, "slow_batch", max_steps=40, eval_every_seconds=period)
    assert r.rows[-1].step == 40
    gaps = [b.timed_seconds - a.timed_seconds for a, b in zip(r.rows[:-1], r.rows[1:-1])]
    assert len(gaps) >= 2 and min(gaps) >= period


@pytest.mark.parametrize("workload,factor", [("loss_x150", 150.0), ("loss_x101", 101.0)])
def test_finite_loss_above_the_factor_is_diverged(results, workload, factor):
    r = _run(results, workload, max_steps=20, eval_every_steps=10)
    assert r.record.outcome == "diverged"
    assert r.record.total_steps == JUMP_AT  # stopped at the first step above the factor
    assert f"{factor:.4g}" in r.record.error and "100x" in r.record.error


def test_finite_loss_just_under_the_factor_is_not_diverged(results):
    r = _run(results, "loss_x99", max_steps=20, eval_every_steps=10)
    assert r.record.outcome == "missed" and r.record.error is None
    assert r.record.total_steps == 20
    assert r.rows[-1].train_loss == pytest.approx(99.0)  # the loss really was 99x its first value


def test_divergence_factor_is_configurable(results):
    r = _run(results, "loss_x99", max_steps=20, eval_every_steps=10, divergence_factor=50.0)
    assert r.record.outcome == "diverged" and "50x" in r.record.error
