"""Submissions that fail the harness's way (hang, exit, interrupt, sabotage the store), for the reliability tests."""

import os
import shutil
import time
from pathlib import Path

import torch


class _Counting(torch.optim.SGD):
    def __init__(self, params, lr: float = 0.01, after: int = 3):
        super().__init__(params, lr=lr)
        self.calls, self.after = 0, after

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        super().step()
        if self.calls >= self.after:
            self.fault()

    def fault(self):
        raise NotImplementedError


class Hanging(_Counting):
    """A step that does not return for a minute (``after`` steps in): only a deadline that interrupts the step
    ends the trial sooner (a check between steps waits the minute out, and the test's time limit catches it)."""

    def fault(self):
        time.sleep(60)


class Spinning(_Counting):
    """A step that spins in Python for a minute, never sleeping."""

    def fault(self):
        end = time.monotonic() + 60
        while time.monotonic() < end:
            pass


class Deadlocked(_Counting):
    """A step that waits on a lock it already holds (for a minute at most, so a broken deadline shows as slow)."""

    def fault(self):
        import threading

        lock = threading.Lock()
        lock.acquire()
        lock.acquire(timeout=60)


class Exiting(_Counting):
    """Plugin code that calls sys.exit: must be an ``error`` outcome, not the end of the command."""

    def fault(self):
        raise SystemExit(3)


class Interrupting(_Counting):
    """Ctrl-C arriving during a step."""

    def fault(self):
        raise KeyboardInterrupt


class InterruptedOnce(_Counting):
    """Ctrl-C during a step while the file $OPTBENCH_TEST_INTERRUPT exists (the test removes it before resuming);
    ``after`` defaults to 30 steps, past the first checkpoint of a trial that saves every 0 s."""

    def __init__(self, params, lr: float = 0.01, after: int = 30):
        super().__init__(params, lr=lr, after=after)

    def fault(self):
        if Path(os.environ["OPTBENCH_TEST_INTERRUPT"]).exists():
            raise KeyboardInterrupt


class Marking(torch.optim.SGD):
    """Writes $OPTBENCH_TEST_MARKER when created: proves whether a trial started at all."""

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)
        Path(os.environ["OPTBENCH_TEST_MARKER"]).write_text("created")


class Sabotage(_Counting):
    """Replaces the results directory ($OPTBENCH_TEST_SABOTAGE) by a regular file mid-trial: the final write fails."""

    def fault(self):
        target = Path(os.environ["OPTBENCH_TEST_SABOTAGE"])
        if target.is_dir():
            shutil.rmtree(target)
            target.write_text("not a directory any more")


class RaisingOnRank1(_Counting):
    """Raises in its third step on torchrun's rank 1 only: the other rank must not hang."""

    def fault(self):
        if os.environ.get("RANK") == "1":
            raise RuntimeError("rank 1 broke on purpose")
