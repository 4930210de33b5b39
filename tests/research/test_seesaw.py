"""Seesaw: the batch doubles exactly where the step-decay twin halves the learning rate, the learning rate falls by
sqrt(2) instead, the schedule is followed in examples, and on linreg Seesaw ends near its twin's excess risk at equal
examples in fewer serial steps."""

from __future__ import annotations

import math

import pytest
import torch

from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.runner import TrialConfig, run_trial
from optbench.schedules import Scheduled, StepDecay
from optbench.plugins.seesaw import Seesaw, halvings, seesaw_submission, serial_steps


def _pair(max_batch: int = 64, milestones=(4, 8, 12)):
    def scheduled():
        p = torch.nn.Parameter(torch.zeros(1))
        return p, Scheduled(torch.optim.SGD([p], lr=0.8), StepDecay(warmup=0, milestones=milestones))

    return scheduled(), scheduled(), max_batch


def _trace(updater, p, steps: int):
    """(batch, lr, examples before the step) of each step, stepping with a zero gradient."""
    out, seen = [], 0
    for t in range(steps):
        bs = updater.batch_size(t + 1) if hasattr(updater, "batch_size") else 2
        p.grad = torch.zeros_like(p)
        updater.step()
        out.append((bs, updater.param_groups[0]["lr"], seen))
        seen += bs
    return out


def test_doubles_the_batch_where_the_twin_halves_the_lr_and_divides_lr_by_sqrt2():
    (p_twin, twin), (p_ss, inner), cap = _pair()
    seesaw = Seesaw(inner, base_batch=2, max_batch=cap)
    twin_trace = _trace(twin, p_twin, 16)  # batch 2: lr 0.8 for steps 1-4, 0.4 for 5-8, 0.2 for 9-12, 0.1 after
    ss_trace = _trace(seesaw, p_ss, 7)
    twin_lr_at = {seen: lr for _, lr, seen in twin_trace}  # the twin's lr at the same example count
    assert [(bs, round(lr, 12)) for bs, lr, _ in ss_trace] == [
        (2, 0.8), (2, 0.8), (2, 0.8), (2, 0.8),  # examples 0..7: the twin's first 4 steps
        (4, round(0.8 / math.sqrt(2), 12)),  # the twin halves at example 8: the batch doubles, lr / sqrt(2)
        (4, round(0.8 / math.sqrt(2), 12)),
        (8, round(0.8 / 2, 12)),  # second halving at example 16
    ]
    for (bs, lr, seen), prev in zip(ss_trace[1:], ss_trace):
        halved = twin_lr_at[seen] == pytest.approx(twin_lr_at[prev[2]] / 2)
        assert (bs == 2 * prev[0]) == halved and (lr == pytest.approx(prev[1] / math.sqrt(2))) == halved


def test_past_the_batch_cap_the_halvings_go_to_the_learning_rate():
    (_, _), (p, inner), _ = _pair()
    seesaw = Seesaw(inner, base_batch=2, max_batch=4)  # one doubling allowed
    trace = _trace(seesaw, p, 10)
    assert [bs for bs, _, _ in trace] == [2, 2, 2, 2, 4, 4, 4, 4, 4, 4]
    # examples 16..23: the twin is at 0.2 (two halvings): one became a doubling, the other stays a halving
    assert trace[6][1] == pytest.approx(0.2 * math.sqrt(2)) and trace[8][1] == pytest.approx(0.1 * math.sqrt(2))


def test_state_dict_keeps_the_progress_and_serial_steps_does_not_advance_it():
    (_, _), (p, inner), cap = _pair()
    seesaw = Seesaw(inner, base_batch=2, max_batch=cap)
    _trace(seesaw, p, 5)
    saved = seesaw.state_dict()
    assert saved["progress"] == 6 and inner.t == 6
    # progress counts base batches: 6 -> 8 (batch x2 after the first milestone) -> 12 (x4) -> 20 (x8) -> 28
    assert serial_steps(seesaw, 24) == 4 and seesaw.progress == 6
    _trace(seesaw, p, 3)
    seesaw.load_state_dict(saved)
    assert seesaw.progress == 6 and seesaw.batch_size(6) == 4


def test_halvings_counts_whole_halvings_only():
    assert [halvings(m) for m in (1.0, 0.75, 0.5, 0.26, 0.25, 0.1, 0.0)] == [0, 0, 1, 1, 2, 3, 10**6]
    assert halvings(0.7071067811865476**2) == 1  # 0.5000000000000001: two decays by 1/sqrt(2) are one halving


def test_the_batch_cap_rounds_down_to_a_power_of_two_times_the_base():
    (_, _), (_, inner), _ = _pair()
    assert Seesaw(inner, base_batch=2, max_batch=7).max_doublings == 1  # 4 <= 7 < 8
    assert Seesaw(inner, base_batch=2, max_batch=8).max_doublings == 2


def test_seesaw_refuses_what_it_cannot_wrap():
    with pytest.raises(ValueError, match="wraps a scheduled submission"):
        Seesaw(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), base_batch=2, max_batch=4)
    with pytest.raises(ValueError, match="already sets its own batch size"):
        seesaw_submission(load_submission("optbench_submissions.seesaw:seesaw_sgd").obj)


def test_on_linreg_seesaw_matches_the_twin_at_equal_examples_in_fewer_serial_steps(results):
    workload = load_workload("linreg")
    twin_steps = 1500  # both run their whole budget
    twin = run_trial(workload, load_submission("optbench_submissions.seesaw:sgd_step"),
                     TrialConfig(max_steps=twin_steps, eval_every_steps=16, full_budget=True), results_dir=results)
    sub = load_submission("optbench_submissions.seesaw:seesaw_sgd")
    probe = sub.obj.create(torch.nn.Linear(2, 1), dict(sub.obj.defaults), twin_info := _info())
    steps = serial_steps(probe, twin_steps)
    seesaw = run_trial(workload, sub, TrialConfig(max_steps=steps, eval_every_steps=8, full_budget=True),
                       results_dir=results)
    assert steps < 0.75 * twin_steps  # milestones at 50% and 75%: 750 + 188 + 94 serial steps
    assert seesaw.rows[-1].examples == pytest.approx(twin.rows[-1].examples, rel=0.01)
    assert max(r.batch_size for r in seesaw.rows) == 4 * twin_info.batch_size

    def tail_mean(rows):  # the iterates fluctuate: compare the mean over the last tenth of the examples
        last = rows[-1].examples
        vals = [r.metric_value for r in rows if r.examples >= 0.9 * last]
        return sum(vals) / len(vals)

    print(f"tail mean excess risk: seesaw {tail_mean(seesaw.rows):.4f} in {steps} steps, twin {tail_mean(twin.rows):.4f} in {twin_steps}")
    assert tail_mean(seesaw.rows) == pytest.approx(tail_mean(twin.rows), rel=0.3)


def _info():
    from optbench.api import TrialInfo

    return TrialInfo(workload="linreg", size="tiny", step_hint=1500, max_steps=3000, batch_size=32, device="cpu",
                     seed=0)


def test_lr_exponent_zero_keeps_the_lr_and_only_grows_the_batch():
    # Smith et al. 2018: with a = 0 each halving becomes a doubling of the batch at the same learning rate.
    (_, _), (p, inner), cap = _pair()
    trace = _trace(Seesaw(inner, base_batch=2, max_batch=cap, lr_exponent=0.0), p, 7)
    assert [bs for bs, _, _ in trace] == [2, 2, 2, 2, 4, 4, 8] and {lr for _, lr, _ in trace} == {0.8}


def test_submission_checks_its_own_keys():
    sub = load_submission("optbench_submissions.seesaw:seesaw_sgd").obj
    for bad, message in (({"seesaw_max_batch_factor": 0}, "seesaw_max_batch_factor must be an integer >= 1"),
                         ({"seesaw_lr_exponent": 2}, r"seesaw_lr_exponent must be a number in \[0, 1\]")):
        with pytest.raises(ValueError, match=message):
            sub.create(torch.nn.Linear(2, 1), {**sub.defaults, **bad}, _info())
    made = sub.create(torch.nn.Linear(2, 1), {**sub.defaults, "seesaw_max_batch_factor": 4}, _info())
    assert made.max_doublings == 2 and made.base_batch == 32 and made.lr_exponent == 0.5


def test_seesaw_command_compares_at_equal_examples_in_fewer_serial_steps(tmp_path):
    from click.testing import CliRunner

    from optbench.cli import main

    out = tmp_path / "out"
    # milestones at 75 and 150 of the 1500-step schedule: 75 + 38 + 13 serial steps see the twin's 200 x 32
    r = CliRunner().invoke(main, ["seesaw", "-w", "linreg", "-s", "sgd", "--seed", "0", "--twin-steps", "200",
                                  "-o", "decay_milestones=[0.05,0.1]", "--eval-every", "25", "--target", "0.5",
                                  "--results-dir", str(tmp_path / "res"), "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [ln.split("|")[1:-1] for ln in (out / "seesaw.md").read_text().splitlines() if ln.startswith("| 0 |")]
    (twin_steps, twin_ex), (ss_steps, ss_ex) = [(int(c[2]), int(c[3])) for c in rows]
    assert (twin_steps, twin_ex) == (200, 6400)
    assert ss_steps == 126 and 6400 <= ss_ex < 6400 + 4 * 32
    assert all(c[6].strip() != "missed" for c in rows)  # excess risk 0.5 is reached by both
    files = sorted(p.parent.name for p in (tmp_path / "res").rglob("*.parquet"))
    assert files == ["seesaw_sgd", "sgd_step"]


def test_seesaw_loaded_gives_seesaw_and_its_twin_or_refuses_unscheduled():
    from optbench.plugins.seesaw import seesaw_loaded

    seesaw, twin = seesaw_loaded(load_submission("adamw"))
    assert (seesaw.name, twin.name) == ("seesaw_adamw", "adamw_step") and seesaw.origin == twin.origin
    assert twin.obj.defaults["schedule"] == "step" and "seesaw_lr_exponent" not in twin.obj.defaults
    with pytest.raises(ValueError, match="takes no schedule hyperparameter"):
        seesaw_loaded(load_submission("dog"))
