"""The trial clock: timed work (data loading + update steps) is separated from untimed work (evaluation, logging,
checkpointing), following AlgoPerf's timing rules.

On CUDA the device is synchronised before every clock reading, so queued kernels are charged to the step that
launched them and not to whatever runs next (modded-nanogpt, airbench).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":  # pragma: no cover - not on CI
        torch.mps.synchronize()


class _Charge:
    """The enclosed work's seconds, charged to the clock's timed or untimed total (see :meth:`Clock.timing`).

    A plain context-manager class rather than ``@contextmanager`` generators, so that the charging rule itself is
    ordinary code (mutation testing reaches it; decorated functions it skips).
    """

    start: float  # perf_counter() at __enter__

    def __init__(self, clock: Clock, *, timed: bool) -> None:
        self.clock, self.timed = clock, timed

    def __enter__(self) -> None:
        synchronize(self.clock.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        synchronize(self.clock.device)
        elapsed = time.perf_counter() - self.start
        if self.timed:
            self.clock.timed += elapsed
        else:
            self.clock.untimed += elapsed


@dataclass
class Clock:
    """Accumulates timed and untimed seconds; its totals are part of the trial state (saved in checkpoints)."""

    device: torch.device
    timed: float = 0.0  # seconds of data loading + update steps
    untimed: float = 0.0  # seconds of evaluation (and the eval-mode swaps' bookkeeping)

    def timing(self) -> _Charge:
        """Charge the enclosed work to the timed budget."""
        return _Charge(self, timed=True)

    def paused(self) -> _Charge:
        """Run the enclosed work off the timed budget (evaluation, logging, checkpointing)."""
        return _Charge(self, timed=False)
