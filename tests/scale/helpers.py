"""Building trial loops directly (no results written), for the accumulation, data-parallel and clock tests."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from optbench.engine.prepared import TrialConfig, prepare
from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.loop import TrialLoop
from optbench_workloads.lm import LMTask

CPU = torch.device("cpu")


def lm_task(size: Any, tokens: np.ndarray) -> LMTask:
    """The LM task of ``size`` on a generated corpus (train: the first 80%, validation: the rest)."""
    cut = int(len(tokens) * 0.8)
    return LMTask(size, CPU, train=tokens[:cut], val=tokens[cut:], vocab_size=int(size.options["vocab"]))


LM_VOCAB = 512  # the tiny LM's shape with a small vocabulary: the same code paths, a tenth of the CPU time


def make_loop(workload: str, submission: str, *, hparams: Mapping[str, Any] | None = None,
              tokens: np.ndarray | None = None, tmp: Path, **cfg: Any) -> TrialLoop:
    """A :class:`TrialLoop` of the given trial on the CPU (``tokens``: the corpus of an LM workload, whose size
    then takes a vocabulary of ``LM_VOCAB`` ids)."""
    prep = prepare(load_workload(workload), load_submission(submission),
                   TrialConfig(device="cpu", hparams=dict(hparams or {}), **cfg), results_dir=tmp)
    if tokens is not None:
        size = dataclasses.replace(prep.size, options={**prep.size.options, "vocab": LM_VOCAB})
        prep = dataclasses.replace(prep, size=size)
    task = lm_task(prep.size, tokens) if tokens is not None else prep.workload.obj.setup(
        prep.size, device=CPU, data_dir=None)
    return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())


def params(loop: TrialLoop) -> list[torch.Tensor]:
    """Copies of the loop's model parameters."""
    return [p.detach().clone() for p in loop.state.model.parameters()]


def relative_gap(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over tensors of ||a - b|| / ||b||."""
    return max(float((x - y).norm() / y.norm().clamp_min(1e-30)) for x, y in zip(a, b))


def resumed_twin(prep: Any, *, steps: int, cut: int) -> tuple[TrialLoop, TrialLoop]:
    """``prep``'s trial (prepared with ``resume``, for its checkpoint path) run twice under its torch settings:
    ``steps`` steps at once, and ``cut`` steps saved to its checkpoint, loaded into a fresh loop and continued to
    ``steps``. Returns (whole, resumed): a resume that is exact leaves both with the same parameters."""
    from optbench.engine import checkpoints
    from optbench.engine.backends import TrialSettings

    device = torch.device(prep.device)

    def fresh() -> TrialLoop:
        task = prep.workload.obj.setup(prep.size, device=device, data_dir=None)
        return TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())

    with TrialSettings(device=device, deterministic=prep.deterministic, tf32=prep.tf32):
        whole = fresh()
        for _ in range(steps):
            whole.step()
        first = fresh()
        for _ in range(cut):
            first.step()
        prep.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        checkpoints.save(first.state, prep.checkpoint, prep.checkpoint_key())
        resumed = fresh()
        checkpoints.load(resumed.state, prep.checkpoint, prep.checkpoint_key())
        for _ in range(steps - cut):
            resumed.step()
    return whole, resumed
