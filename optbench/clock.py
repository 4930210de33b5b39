"""The trial clock: timed work (data loading + update steps) is separated from untimed work (evaluation, logging,
checkpointing), following AlgoPerf's timing rules.

On CUDA the device is synchronised before every clock reading, so queued kernels are charged to the step that
launched them and not to whatever runs next (modded-nanogpt, airbench).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - not on CI
        torch.mps.synchronize()


@dataclass
class Clock:
    """Accumulates timed and untimed seconds; its totals are part of the trial state (saved in checkpoints)."""

    device: torch.device
    timed: float = 0.0  # seconds of data loading + update steps
    untimed: float = 0.0  # seconds of evaluation (and the eval-mode swaps' bookkeeping)

    @contextmanager
    def timing(self) -> Iterator[None]:
        """Charge the enclosed work to the timed budget."""
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.timed += time.perf_counter() - t0

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Run the enclosed work off the timed budget (evaluation, logging, checkpointing)."""
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.untimed += time.perf_counter() - t0
