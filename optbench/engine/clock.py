"""The trial clock: timed work (data loading + update steps) is separated from untimed work (evaluation, logging,
checkpointing), following AlgoPerf's timing rules, without synchronising the device in the steady-state step.

The runner times *stretches* of steps: :meth:`Clock.run` opens a stretch when the device queue is empty, the steps
queue their kernels without any wait, and :meth:`Clock.halt` closes it with one synchronisation, so that every
queued kernel is charged to the stretch that launched it (modded-nanogpt times its runs the same way; AlgoPerf
synchronises every step, which drains the launch queue each time). Between a halt and the next run, host-side
bookkeeping (reading the losses, the progress bar) is charged to the untimed total, as are evaluations
(:meth:`Clock.paused`).

Every synchronisation goes through :meth:`Clock.sync`, which counts them in :attr:`Clock.syncs`: the seam the tests
use to show that a steady-state step synchronises nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

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
        self.clock.sync()
        self.start = time.perf_counter()
        self.clock.settle_gap(self.start)

    def __exit__(self, *exc: object) -> None:
        self.clock.sync()
        now = time.perf_counter()
        if self.timed:
            self.clock.timed += now - self.start
        else:
            self.clock.untimed += now - self.start


@dataclass
class Clock:
    """Accumulates timed and untimed seconds; its totals are part of the trial state (saved in checkpoints).

    Attributes:
      device: the trial's device (what :meth:`sync` waits for).
      timed: seconds of data loading + update steps.
      untimed: seconds of evaluation, logging and checkpointing.
      syncs: synchronisations so far (not saved: a count of this process's waits, for tests and benchmarks).
      waiter: what a synchronisation calls; the data-parallel runner replaces it with one that also watches the
        other ranks (:meth:`optbench.parallel.distributed.Group.sync`).
    """

    device: torch.device
    timed: float = 0.0
    untimed: float = 0.0
    syncs: int = 0
    waiter: Callable[[], None] | None = field(default=None, repr=False)
    _since: float | None = field(default=None, repr=False)  # perf_counter() when the open stretch began
    _halted_at: float | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        """Whether a timed stretch is open."""
        return self._since is not None

    def sync(self) -> None:
        """Wait for the device's queued work (counted in :attr:`syncs`)."""
        self.syncs += 1
        if self.waiter is not None:
            self.waiter()
        else:
            synchronize(self.device)

    def run(self) -> None:
        """Open a timed stretch now. Call it only when the device queue is empty (after :meth:`halt` or an
        evaluation): what was queued before would otherwise be charged to this stretch. The host-side gap since
        the last :meth:`halt` goes to the untimed total."""
        now = time.perf_counter()
        self.settle_gap(now)
        self._since = now

    def halt(self) -> None:
        """Close the open stretch: one synchronisation, then its seconds go to the timed total."""
        if self._since is None:
            return
        self.sync()
        now = time.perf_counter()
        self.timed += now - self._since
        self._since = None
        self.gap_from(now)

    def gap_from(self, now: float) -> None:
        """Host-side work begins at ``now`` (off the clock until the next stretch or charge)."""
        self._halted_at = now

    def settle_gap(self, now: float) -> None:
        """Charge the host-side gap since :meth:`gap_from`, if any, to the untimed total."""
        if self._halted_at is not None:
            self.untimed += now - self._halted_at
            self._halted_at = None

    def timing(self) -> _Charge:
        """Charge the enclosed work to the timed budget (outside a stretch: e.g. an evaluation-parameter swap)."""
        return _Charge(self, timed=True)

    def paused(self) -> _Charge:
        """Run the enclosed work off the timed budget (evaluation, logging, checkpointing)."""
        return _Charge(self, timed=False)
