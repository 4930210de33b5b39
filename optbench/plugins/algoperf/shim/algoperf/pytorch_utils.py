"""The PyTorch helpers AlgoPerf submissions call at import: one process, no DDP (optbench runs one process per
trial for AlgoPerf files; see docs/ALGOPERF.md)."""

from __future__ import annotations

from typing import Any

import torch


def pytorch_setup() -> tuple[bool, int, torch.device, int]:
    """``(use_pytorch_ddp, rank, device, n_gpus)``: never DDP here; the device is CUDA where available (as
    AlgoPerf's), else the CPU. Submissions should take devices from the parameters they are handed."""
    cuda = torch.cuda.is_available()
    return False, 0, torch.device("cuda:0" if cuda else "cpu"), torch.cuda.device_count() if cuda else 0


def pytorch_init(use_pytorch_ddp: bool, rank: int, profiler: Any = None) -> None:
    """Nothing to set up: the harness owns the process and its torch settings."""


def sync_ddp_time(time: float, device: Any) -> float:
    """One process: the time is everyone's."""
    return time
