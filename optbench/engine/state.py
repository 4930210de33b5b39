"""A trial's whole state in one place: model, updater, random generators, data position, counters and clocks.

Everything a resumed trial needs is here, and :meth:`TrialState.state_dict` holds only tensors, numbers, strings,
lists and dicts, so checkpoints load with ``torch.load(..., weights_only=True)`` (never a pickle of arbitrary
objects). The data position *is* the data generator's state: workloads draw every batch from it.

The random state saved is the trial's own: its generators, torch's CPU generator and, on CUDA, the default
generator of the trial's device only (never every visible GPU's: a trial resumed with fewer GPUs visible, or on
another one, restores the same state). :meth:`TrialState.load_state_dict` checks every generator state against
the trial's before restoring anything, so that a checkpoint written on another device type is refused whole
(:class:`ForeignState`) rather than half loaded.
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
    compiles: int = 0  # graphs torch.compile built (--compile), in every process the trial ran in
    recompiles: int = 0  # of those, frames compiled again (a shape or value the first graph did not cover)
    compile_seconds: float = 0.0  # wall seconds spent compiling, warm-up included

    def keep_compiles(self, other: Counters) -> None:
        """Take ``other``'s compile counts (warm-up steps are undone, but what they compiled stays compiled)."""
        self.compiles, self.recompiles = other.compiles, other.recompiles
        self.compile_seconds = other.compile_seconds


class ForeignState(ValueError):
    """A saved state that does not fit this trial (a generator of another device type); nothing was restored."""


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
      device: the trial's device (on CUDA its default generator's state is saved too).
    """

    model: nn.Module
    updater: Updater
    data_gen: torch.Generator
    sample_gen: torch.Generator
    clock: Clock
    counters: Counters = field(default_factory=Counters)
    rows: list[EvalRow] = field(default_factory=list)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

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
        if self.device.type == "cuda":
            sd["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        """Restore everything :meth:`state_dict` saved.

        Raises:
          ForeignState: a generator state of another size (saved on another device type), or a device generator
            state missing or extra for this trial's device; raised before anything is restored.
        """
        self.check_generators(sd)
        self.model.load_state_dict(sd["model"])
        self.updater.load_state_dict(sd["updater"])
        self.data_gen.set_state(sd["data_gen"])
        self.sample_gen.set_state(sd["sample_gen"])
        torch.set_rng_state(sd["torch_rng"])
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(sd["cuda_rng"], self.device)
        self.clock.timed = float(sd["clock"]["timed"])
        self.clock.untimed = float(sd["clock"]["untimed"])
        self.counters = Counters(**sd["counters"])
        self.rows = [EvalRow(**r) for r in sd["rows"]]

    def check_generators(self, sd: dict[str, Any]) -> None:
        """Raise :class:`ForeignState` unless every generator state in ``sd`` fits this trial's generators."""
        mine = {"data_gen": self.data_gen.get_state(), "sample_gen": self.sample_gen.get_state(),
                "torch_rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            mine["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        if ("cuda_rng" in sd) != ("cuda_rng" in mine):
            where = "a CUDA device" if "cuda_rng" in sd else "a device without a CUDA generator"
            raise ForeignState(f"its random state was saved on {where}; this trial runs on {self.device}")
        for name, state in mine.items():
            theirs = sd.get(name)
            if not isinstance(theirs, torch.Tensor) or theirs.dtype != state.dtype or theirs.shape != state.shape:
                raise ForeignState(f"its {name} generator state does not fit this trial's generator on "
                                   f"{self.device} (saved on another device type?)")

    def snapshot(self) -> dict[str, Any]:
        """A deep copy of :meth:`state_dict` (for warm-up steps that must leave no trace)."""
        return copy.deepcopy(self.state_dict())

