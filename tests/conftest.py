"""Shared fixtures: a results directory per test and paths of the deliberately bad plugins."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Trials the tests start without naming a device run on the CPU, with a GPU visible too (their expected outcomes,
# records and timings are the CPU's); a test of a CUDA path names its device. Set before optbench is imported: the
# --device default is read from it (optbench.engine.prepared.DEVICE_ENV), here and in every subprocess.
os.environ.setdefault("OPTBENCH_DEVICE", "cpu")

PLUGINS = Path(__file__).parent / "plugins"


@pytest.fixture
def results(tmp_path: Path) -> Path:
    return tmp_path / "results"


@pytest.fixture
def bad_plugins() -> Path:
    return PLUGINS / "bad_optimizers.py"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module of small-tensor tests (use with ``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``): on a shared 2-core machine, OpenMP barriers between two threads
    cost more than the work itself."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
