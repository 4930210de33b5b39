"""A trial's whole state in one place: model, updater, random generators, data position, counters and clocks.

Everything a resumed trial needs is here, and :meth:`TrialState.state_dict` holds only tensors, numbers, strings,
lists and dicts, so checkpoints load with ``torch.load(..., weights_only=True)`` (never a pickle of arbitrary
objects). The data position *is* the data generator's state: workloads draw every batch from it.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from optbench.api import Updater
from optbench.engine.clock import Clock
from optbench.store.records import EvalRow


@dataclass
class Counters:
    """Progress totals. ``loss_sum``/``loss_count`` average the training loss between evaluations."""

    step: int = 0
    examples: int = 0
    tokens: int = 0
    last_eval_step: int = 0
    last_eval_timed: float = 0.0
    loss_sum: float = 0.0
    loss_count: int = 0
    initial_loss: float | None = None
    last_batch_size: int = 0  # of the latest step (0 before the first)
    last_checkpoint_timed: float = 0.0  # timed seconds at the latest checkpoint
    resumes: int = 0  # times the trial was resumed from a checkpoint
    lost_seconds: float = 0.0  # timed seconds computed past a checkpoint and lost to interruptions


@dataclass
class TrialState:
    """The mutable state of one trial.

    Attributes:
      model: the workload's model, on the trial's device.
      updater: the submission's updater.
      data_gen: generator every training batch is drawn from (on the data device).
      sample_gen: generator for labels sampled from the model (Sophia-style estimators).
      clock: timed and untimed seconds.
      counters: steps, examples, tokens, eval bookkeeping.
      rows: evaluations so far.
    """

    model: nn.Module
    updater: Updater
    data_gen: torch.Generator
    sample_gen: torch.Generator
    clock: Clock
    counters: Counters = field(default_factory=Counters)
    rows: list[EvalRow] = field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain values only (loadable with ``weights_only=True``)."""
        sd: dict[str, Any] = {
            "model": self.model.state_dict(),
            "updater": self.updater.state_dict(),
            "data_gen": self.data_gen.get_state(),
            "sample_gen": self.sample_gen.get_state(),
            "torch_rng": torch.get_rng_state(),
            "clock": {"timed": self.clock.timed, "untimed": self.clock.untimed},
            "counters": asdict(self.counters),
            "rows": [asdict(r) for r in self.rows],
        }
        if torch.cuda.is_available():
            sd["cuda_rng"] = torch.cuda.get_rng_state_all()
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved."""
        self.model.load_state_dict(sd["model"])
        self.updater.load_state_dict(sd["updater"])
        self.data_gen.set_state(sd["data_gen"])
        self.sample_gen.set_state(sd["sample_gen"])
        torch.set_rng_state(sd["torch_rng"])
        if "cuda_rng" in sd and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(sd["cuda_rng"])
        self.clock.timed = float(sd["clock"]["timed"])
        self.clock.untimed = float(sd["clock"]["untimed"])
        self.counters = Counters(**sd["counters"])
        self.rows = [EvalRow(**r) for r in sd["rows"]]

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of :meth:`state_dict` (for warm-up steps that must leave no trace)."""
        return copy.deepcopy(self.state_dict())

