"""Workloads that make the runner's timing and divergence rules observable, for tests/test_rules_timing.py.

Each is linreg (its model, data and metric) with one thing changed:
  * ``slow_eval``: ``evaluate`` sleeps ``EVAL_SLEEP`` seconds, so evaluation charged to the timed clock shows up as
    whole sleeps in ``timed_seconds``;
  * ``slow_batch``: ``next_batch`` sleeps ``BATCH_SLEEP`` seconds, so every step costs at least that much timed work
    (data loading is timed), which makes a seconds-based evaluation period advance at a known minimum rate;
  * ``loss_x99``, ``loss_x101``, ``loss_x150``: the training loss is exactly 1.0 for the first ``JUMP_AT`` - 1 steps and
    then exactly 99, 101 or 150 (finite), so the "loss above 100x its first value" rule is tested on its own, on
    both sides of the factor, without NaN or inf ever appearing.
"""

from __future__ import annotations

import time
from dataclasses import replace

from optbench_workloads.linreg import LinReg, LinRegTask

EVAL_SLEEP = 0.2
BATCH_SLEEP = 0.01
JUMP_AT = 5


class _SlowEvalTask(LinRegTask):
    def evaluate(self, model):
        time.sleep(EVAL_SLEEP)
        return super().evaluate(model)


class _SlowBatchTask(LinRegTask):
    def next_batch(self, batch_size, generator):
        time.sleep(BATCH_SLEEP)
        return super().next_batch(batch_size, generator)


class _ScaledLossTask(LinRegTask):
    """The loss keeps linreg's gradient direction but its value is set exactly: 1.0, then ``factor`` from JUMP_AT."""

    def __init__(self, size, device, factor: float) -> None:
        super().__init__(size, device)
        self.factor, self.calls = factor, 0

    def loss(self, model, batch):
        self.calls += 1
        raw = super().loss(model, batch)
        value = self.factor if self.calls >= JUMP_AT else 1.0
        return raw / raw.detach() * value


class _Variant(LinReg):
    def __init__(self, name: str, make_task) -> None:
        self.name, self.make_task = name, make_task
        self.sizes = {"tiny": replace(LinReg.sizes["tiny"], options={**LinReg.sizes["tiny"].options, "dim": 64})}

    def setup(self, size, *, device, data_dir=None):
        return self.make_task(size, device)


slow_eval = _Variant("slow_eval", _SlowEvalTask)
slow_batch = _Variant("slow_batch", _SlowBatchTask)
loss_x99 = _Variant("loss_x99", lambda size, device: _ScaledLossTask(size, device, 99.0))
loss_x101 = _Variant("loss_x101", lambda size, device: _ScaledLossTask(size, device, 101.0))
loss_x150 = _Variant("loss_x150", lambda size, device: _ScaledLossTask(size, device, 150.0))
