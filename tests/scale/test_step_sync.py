"""The clock never waits for the device inside a stretch of steps (the seam: Clock.sync, and every host read).

On the CPU nothing is asynchronous, so the test counts what would stall a GPU: calls of :meth:`Clock.sync`, and
conversions of tensors to Python values (``item``, ``float``, ``tolist``...) made by the harness's own modules.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.scale.helpers import make_loop

HARNESS = ("optbench/engine/runner.py", "optbench/engine/loop.py", "optbench/engine/stepping.py", "optbench/engine/clock.py", "optbench/engine/batches.py",
           "optbench/parallel/distributed.py", "optbench/engine/state.py")
READS = ("item", "tolist", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Counter:
    """Counts tensor-to-host conversions whose caller is a harness module."""
    seen: Counter = Counter()
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename.replace("\\", "/")
            if caller.endswith(HARNESS):
                seen[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return seen


def steps_then_read(loop, n: int) -> None:
    loop.state.clock.run()
    for _ in range(n):
        loop.step()


@pytest.mark.parametrize("submission", ["adamw", "sophia"])
def test_steady_state_steps_neither_sync_nor_read(submission: str, tmp_path: Path, host_reads: Counter) -> None:
    loop = make_loop("linreg", submission, tmp=tmp_path, batch_size=32, micro_batch_size=8, sync_every=50,
                     max_steps=1000)
    syncs = loop.state.clock.syncs
    steps_then_read(loop, 30)
    assert loop.state.clock.syncs == syncs and sum(host_reads.values()) == 0
    assert len(loop.pending) == 30
    loop.state.clock.halt()
    loop.read_losses()  # the end of the stretch: one sync, one transfer of 30 losses
    assert loop.state.clock.syncs == syncs + 1 and host_reads["tolist"] == 1
    assert loop.state.counters.loss_count == 30 and not loop.pending


def test_a_trial_syncs_once_per_stretch_and_evaluation(tmp_path: Path) -> None:
    """60 steps, losses read every 20, evaluations every 30 (and at 0): syncs do not grow with the steps."""
    counts = []
    for steps in (60, 120):
        loop = make_loop("linreg", "adamw", tmp=tmp_path, batch_size=16, sync_every=20, eval_every_steps=30,
                         max_steps=steps)
        outcome, _ = loop.run()
        stretches = len({*range(20, steps + 1, 20), *range(30, steps + 1, 30)})
        evaluations = len(loop.state.rows)
        counts.append((loop.state.clock.syncs, stretches, evaluations, outcome))
    for syncs, stretches, evaluations, outcome in counts:
        assert outcome == "missed"
        assert syncs == stretches + 2 * evaluations  # one per stretch, two per evaluation (its paused clock)


def test_divergence_is_found_at_the_end_of_the_stretch_and_names_its_step(tmp_path: Path) -> None:
    from optbench.engine.loop import Stop

    loop = make_loop("linreg", "sgd", tmp=tmp_path, hparams={"lr": 1e6}, batch_size=16, sync_every=10,
                     max_steps=100)
    with pytest.raises(Stop) as stop:
        loop.run()
    assert stop.value.outcome == "diverged"
    step = int(stop.value.reason.rsplit("step ", 1)[1])
    assert loop.state.counters.step % 10 == 0 and step <= loop.state.counters.step  # read at the stretch's end
    assert step < 10  # but the reason names the step where it happened


def test_a_seconds_budget_overshoots_by_less_than_a_stretch(tmp_path: Path) -> None:
    loop = make_loop("linreg", "adamw", tmp=tmp_path, batch_size=16, sync_every=7, max_seconds=0.05,
                     max_steps=10**6, eval_every_steps=10**6)
    outcome, _ = loop.run()
    assert outcome == "missed" and loop.state.counters.step % 7 == 0
    assert loop.state.clock.timed >= 0.05
