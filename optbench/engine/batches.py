"""Cutting a training batch into parts: a rank's share of the global batch, and micro-batches for accumulation.

A workload's batch is whatever its ``next_batch`` returns; the harness cuts it along the first (example) dimension
of every tensor in it. Tensors, tuples, lists, dicts and dataclasses (nested) are understood; a tensor whose first
dimension is not the batch's (a shared lookup table, a scalar) is passed whole to every part. A workload whose batch
is something else defines ``Task.slice_batch(batch, start, stop)`` and the harness uses that instead.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch


def batch_length(batch: Any) -> int:
    """Number of examples in ``batch``: the first dimension of its first tensor of at least one dimension.

    Raises:
      TypeError: the batch holds no tensor with a first dimension.
    """
    n = _first_length(batch)
    if n is None:
        raise TypeError(f"cannot find the examples of a {type(batch).__name__} batch: give the task a "
                        "slice_batch(batch, start, stop) method")
    return n


def _first_length(obj: Any) -> int | None:
    if isinstance(obj, torch.Tensor):
        return int(obj.shape[0]) if obj.dim() else None
    for child in _children(obj):
        n = _first_length(child)
        if n is not None:
            return n
    return None


def _children(obj: Any) -> list[Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, dict):
        return list(obj.values())
    if isinstance(obj, (tuple, list)):
        return list(obj)
    return []


def slice_batch(task: Any, batch: Any, start: int, stop: int) -> Any:
    """Examples ``[start, stop)`` of ``batch`` (views, no copies), through the task's own ``slice_batch`` if it has
    one, else by slicing the first dimension of every tensor of length ``batch_length(batch)``."""
    own = getattr(task, "slice_batch", None)
    if own is not None:
        return own(batch, start, stop)
    return _slice(batch, batch_length(batch), start, stop)


def _slice(obj: Any, n: int, start: int, stop: int) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj[start:stop] if obj.dim() and obj.shape[0] == n else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _slice(getattr(obj, f.name), n, start, stop) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, dict):
        return type(obj)((k, _slice(v, n, start, stop)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # NamedTuple
        return type(obj)(*(_slice(v, n, start, stop) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_slice(v, n, start, stop) for v in obj)
    return obj


def micro_ranges(start: int, stop: int, micro: int | None) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into consecutive ranges of ``micro`` examples (the last may be shorter); one range
    when ``micro`` is None or not smaller than the span. An empty span gives no range (a rank with no examples)."""
    span = stop - start
    if span <= 0:
        return []
    if micro is None or micro >= span:
        return [(start, stop)]
    return [(a, min(a + micro, stop)) for a in range(start, stop, micro)]


def accumulation_steps(batch_size: int, *, world_size: int, micro: int | None) -> int:
    """Micro-batches per update on the busiest rank: ceil(ceil(B / world) / m) (1 without a micro-batch size)."""
    per_rank = math.ceil(batch_size / world_size)
    return 1 if micro is None else max(1, math.ceil(per_rank / micro))
