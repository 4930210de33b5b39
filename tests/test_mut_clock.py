"""The trial clock on its own: each context charges its enclosed wall time to its own total, and only there.

Sleeps give known lower bounds; the upper bounds are loose (a busy 2-core machine), but far below what a clock that
charged the wrong total or reset instead of accumulating would show.
"""

from __future__ import annotations

import time

import pytest
import torch

from optbench.engine.clock import Clock, synchronize

NAP = 0.05


def test_a_new_clock_starts_at_zero():
    c = Clock(device=torch.device("cpu"))
    assert (c.timed, c.untimed) == (0.0, 0.0)


def test_timing_accumulates_into_timed_only():
    c = Clock(device=torch.device("cpu"))
    with c.timing():
        time.sleep(NAP)
    first = c.timed
    assert NAP <= first < NAP + 1.0 and c.untimed == 0.0
    with c.timing():
        time.sleep(NAP)
    assert first + NAP <= c.timed < first + NAP + 1.0 and c.untimed == 0.0


def test_paused_accumulates_into_untimed_only():
    c = Clock(device=torch.device("cpu"), timed=2.0, untimed=1.0)
    with c.paused():
        time.sleep(NAP)
    assert 1.0 + NAP <= c.untimed < 2.0 + NAP and c.timed == 2.0
    with c.paused():
        time.sleep(NAP)
    assert 1.0 + 2 * NAP <= c.untimed < 2.0 + 2 * NAP and c.timed == 2.0


@pytest.mark.parametrize("kind", ["timing", "paused"])
def test_work_that_raises_is_still_charged_and_the_error_passes(kind):
    c = Clock(device=torch.device("cpu"))
    with pytest.raises(KeyError):
        with getattr(c, kind)():
            time.sleep(NAP)
            raise KeyError("x")
    charged, other = (c.timed, c.untimed) if kind == "timing" else (c.untimed, c.timed)
    assert NAP <= charged < NAP + 1.0 and other == 0.0


def test_time_outside_the_contexts_is_not_charged():
    c = Clock(device=torch.device("cpu"))
    with c.timing():
        pass
    time.sleep(NAP)
    with c.paused():
        pass
    assert c.timed < NAP / 2 and c.untimed < NAP / 2


def test_synchronize_on_cpu_returns_at_once():
    start = time.perf_counter()
    synchronize(torch.device("cpu"))
    assert time.perf_counter() - start < 0.5


# On this CPU-only build, reaching torch's CUDA or MPS synchronisation raises (no such backend): that is how a CPU
# test tells that a CUDA/MPS clock reading does wait for the device (skipping it would charge queued kernels to
# whatever is timed next). With a GPU present, the same call must simply return.
@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA present, synchronize really waits")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_synchronize_on_cuda_goes_to_torch_cuda(device):
    with pytest.raises(AssertionError, match="not compiled with CUDA"):
        synchronize(torch.device(device))


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="with MPS present, synchronize really waits")
def test_synchronize_on_mps_goes_to_torch_mps():
    with pytest.raises(RuntimeError, match="MPS"):
        synchronize(torch.device("mps"))
