"""Helpers shared by the optimizer tests: a short trial's info, a weights_only checkpoint round trip, a linreg loop."""

from __future__ import annotations

import io

import torch

from optbench.api import TrialInfo


def short_info() -> TrialInfo:
    """TrialInfo of a 40-step linreg/tiny run whose schedules span 20 steps."""
    return TrialInfo(workload="linreg", size="tiny", step_hint=20, max_steps=40, batch_size=32, device="cpu", seed=0)


def reload(obj: dict) -> dict:
    """``obj`` through ``torch.save`` and ``torch.load(weights_only=True)``, as the harness checkpoints it."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def linreg_run(task, model, opt, gen: torch.Generator, steps: int) -> None:
    """``steps`` plain training steps on a linreg task, batches of 32 drawn from ``gen``."""
    for _ in range(steps):
        batch = task.next_batch(32, gen)
        opt.zero_grad()
        task.loss(model, batch).backward()
        opt.step()
