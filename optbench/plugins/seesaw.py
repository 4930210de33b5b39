"""Seesaw (Meterez, Morwani, Wu et al., arXiv 2510.14717): trade learning-rate decay for batch growth.

Wherever the wrapped submission's schedule would divide the learning rate by 2, Seesaw divides it by sqrt(2) and
doubles the batch instead (the batch stops growing at ``max_batch``; halvings past that cap are applied to the
learning rate as usual). The schedule is followed in *examples*: Seesaw's step that starts at example e uses the
twin's schedule at step tau = e / base_batch + 1, so Seesaw and its twin (the same submission without Seesaw) see
the same learning-rate decay per example, and at equal examples Seesaw takes fewer serial steps.

With k(tau) the halvings of the twin's multiplier m(tau) since the end of warmup (floor(log2(1 / m)), 0 during
warmup) and j = min(k, log2(max_batch / base_batch)) the doublings allowed:

    batch(tau) = base_batch * 2^j,    lr(tau) = base_lr * m(tau) * 2^(j (1 - a)),  a = 1/2 (``seesaw_lr_exponent``)

For a step-decay twin with factor 1/2 this is exactly the paper's rule: at each milestone the batch doubles and the
learning rate falls by sqrt(2). The batch size reaches the harness through :attr:`Capability.BATCH_SCHEDULE`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from optbench.api import Capability, Submission, SubmissionSpec, TrialInfo, Updater
from optbench.schedules import Scheduled
from optbench.plugins.wrapping import UpdaterWrapper, with_schedule_keys

# seesaw_max_batch_factor: the largest batch, in base batches. seesaw_lr_exponent a: each halving turned into a
# doubling still divides the lr by 2^a; 0.5 is Seesaw (derived for Adam-like normalised updates), 0 is Smith et al.
# 2018, "Don't Decay the Learning Rate, Increase the Batch Size" (the linear-scaling view of plain SGD).
SEESAW_DEFAULTS: Mapping[str, Any] = {"seesaw_max_batch_factor": 16, "seesaw_lr_exponent": 0.5}
STEP_DEFAULTS: Mapping[str, Any] = {"schedule": "step", "decay_factor": 0.5, "decay_milestones": [0.5, 0.75]}


def halvings(multiplier: float) -> int:
    """How many times the learning rate has been halved to reach ``multiplier`` (<= 1): floor(log2(1/m))."""
    if multiplier <= 0.0:
        return 10**6  # a zero learning rate: as many doublings as the cap allows
    return max(0, math.floor(math.log2(1.0 / multiplier) + 1e-9))  # 0.5**k is exact; the slack absorbs rounding


class Seesaw(UpdaterWrapper):
    """A scheduled updater run the Seesaw way (see the module docstring).

    Args:
      scheduled: a :class:`optbench.schedules.Scheduled` (what every built-in scheduled submission creates).
      base_batch: the batch size of the twin (the trial's batch size).
      max_batch: the batch size never exceeds this (rounded down to base_batch times a power of 2).
      lr_exponent: a halving turned into a doubling divides the learning rate by 2^lr_exponent (Seesaw: 1/2).
    """

    def __init__(self, scheduled: Scheduled, *, base_batch: int, max_batch: int, lr_exponent: float = 0.5) -> None:
        if not isinstance(scheduled, Scheduled):
            raise ValueError("Seesaw wraps a scheduled submission (one whose updater is optbench.schedules.Scheduled)")
        super().__init__(scheduled)
        self.base_batch = int(base_batch)
        self.max_doublings = max(0, int(math.floor(math.log2(max(1, max_batch) / self.base_batch) + 1e-9)))
        self.warmup = int(getattr(scheduled.schedule, "warmup", 0))
        self.progress = 0  # examples seen, in base batches (the twin's steps)
        self.lr_exponent = float(lr_exponent)

    def plan(self) -> tuple[int, float]:
        """(doublings j, learning-rate multiplier) for the next step, from the twin's schedule at tau."""
        tau = self.progress + 1
        m = float(self.inner.schedule(tau))
        j = 0 if tau <= self.warmup else min(halvings(m), self.max_doublings)
        return j, m * 2.0 ** (j * (1.0 - self.lr_exponent))

    def batch_size(self, step: int) -> int:
        """The batch of the next step (the harness asks before each step; ``step`` itself is not needed)."""
        return self.base_batch * 2 ** self.plan()[0]

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        j, factor = self.plan()
        opt = self.inner.optimizer
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        out = opt.step(closure) if closure is not None else opt.step()
        self.progress += 2**j
        self.inner.t = self.progress  # the twin's step count, kept in the inner state dict
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "progress": self.progress}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict["inner"])
        self.progress = int(state_dict["progress"])


def _check_factor(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"seesaw_max_batch_factor must be an integer >= 1, got {value!r}")
    return value


def _check_exponent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"seesaw_lr_exponent must be a number in [0, 1], got {value!r}")
    return float(value)


def seesaw_submission(base: Submission, *, name: str | None = None) -> SubmissionSpec:
    """``base`` run with Seesaw; defaults to the step-decay schedule of :data:`STEP_DEFAULTS` (its twin is
    ``with_schedule_keys(base, defaults=STEP_DEFAULTS)``).

    Raises:
      ValueError: ``base`` already sets its own batch size per step.
    """
    if Capability.BATCH_SCHEDULE in base.capabilities:
        raise ValueError(f"{base.name!r} already sets its own batch size; Seesaw cannot wrap it")
    keys = with_schedule_keys(base, name=name or f"seesaw_{base.name}", defaults=STEP_DEFAULTS)

    def factory(model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        own = {**SEESAW_DEFAULTS, **{k: v for k, v in hparams.items() if k in SEESAW_DEFAULTS}}
        factor, exponent = _check_factor(own["seesaw_max_batch_factor"]), _check_exponent(own["seesaw_lr_exponent"])
        inner = base.create(model, {k: v for k, v in hparams.items() if k not in SEESAW_DEFAULTS}, info)
        return Seesaw(inner, base_batch=info.batch_size, max_batch=info.batch_size * factor, lr_exponent=exponent)

    return SubmissionSpec(
        name=keys.name, factory=factory, defaults={**keys.defaults, **SEESAW_DEFAULTS},
        capabilities=keys.capabilities | {Capability.BATCH_SCHEDULE}, search_space_file=keys.search_space_file,
        paper="Meterez et al. 2025, arXiv 2510.14717 (Seesaw) over " + (keys.paper or base.name),
    )


def serial_steps(seesaw: Seesaw, twin_steps: int) -> int:
    """Seesaw steps needed to see the examples of ``twin_steps`` steps of its twin (simulated on a copy of the
    progress; ``seesaw`` itself is not advanced): the step budget for a comparison at equal examples."""
    saved, steps = seesaw.progress, 0
    try:
        while seesaw.progress < twin_steps:
            seesaw.progress += 2 ** seesaw.plan()[0]
            steps += 1
    finally:
        seesaw.progress = saved
    return steps


def steps_at_equal_examples(hparams: Mapping[str, Any], *, step_hint: int, twin_steps: int) -> int:
    """Serial steps Seesaw with ``hparams`` (schedule keys, ``seesaw_*``) takes to see the examples of
    ``twin_steps`` steps of its twin, whose schedule spans ``step_hint`` steps; only the schedule matters, so it is
    simulated on a one-number optimizer."""
    import torch

    from optbench.schedules import from_hparams

    own = {**SEESAW_DEFAULTS, **{k: v for k, v in hparams.items() if k in SEESAW_DEFAULTS}}
    probe = Scheduled(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0),
                      from_hparams(hparams, total_steps=step_hint))
    seesaw = Seesaw(probe, base_batch=1, max_batch=_check_factor(own["seesaw_max_batch_factor"]),
                    lr_exponent=_check_exponent(own["seesaw_lr_exponent"]))
    return serial_steps(seesaw, twin_steps)


def seesaw_loaded(loaded: Any) -> Any:
    """A loaded submission run with Seesaw, recorded as ``seesaw_<name>``, and its step-decay twin
    ``<name>_step``: (seesaw, twin), for a harness option or the ``seesaw`` recipe (:mod:`optbench.recipes.seesaw`).

    Raises:
      ValueError: the submission takes no schedule or already sets its batch size.
    """
    from optbench.plugins.wrapping import derived, with_schedule_keys

    if "schedule" not in loaded.obj.defaults:
        raise ValueError(f"submission {loaded.name!r} takes no schedule hyperparameter; Seesaw needs a scheduled one")
    seesaw = seesaw_submission(loaded.obj, name=f"seesaw_{loaded.obj.name}")
    twin = with_schedule_keys(loaded.obj, name=f"{loaded.obj.name}_step", defaults=STEP_DEFAULTS)
    return derived(loaded, seesaw, name=f"seesaw_{loaded.name}"), derived(loaded, twin, name=f"{loaded.name}_step")
