"""Helpers shared by the built-in submissions: schedules from hyperparameters, search-space files, float32 state
for low-precision parameters, and the opening every ``step()`` shares (the closure, the groups with gradients).

Matrix helpers of the matrix-preconditioned methods live in :mod:`optbench_submissions._linalg`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from optbench.api import TrialInfo, Updater
from optbench.schedules import Scheduled, from_hparams

SEARCH_SPACES = Path(__file__).parent / "search_spaces"

LOW_PRECISION = (torch.bfloat16, torch.float16)


def state_dtype(p: torch.Tensor) -> torch.dtype:
    """The dtype the optimizer state of ``p`` is kept in: float32 for half precision, else ``p``'s own dtype."""
    return torch.float32 if p.dtype in LOW_PRECISION else p.dtype


def work_copies(params: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Parameters and gradients to compute with: float32 copies of half-precision ones, the tensors themselves else.

    Returns:
      (work, grads): ``work[i] is params[i]`` unless ``params[i]`` is half precision; see :func:`write_back`.
    """
    work = [p.float() if p.dtype in LOW_PRECISION else p for p in params]
    grads = [p.grad.float() if p.grad.dtype in LOW_PRECISION else p.grad for p in params]
    return work, grads


def write_back(params: list[torch.Tensor], work: list[torch.Tensor]) -> None:
    """Round the float32 working copies of half-precision parameters back into them (one rounding per step)."""
    for p, w in zip(params, work):
        if w is not p:
            p.copy_(w)


def run_closure(closure: Callable[[], Any] | None) -> Any:
    """The loss ``closure`` returns, computed with gradients enabled (``step`` may run under ``no_grad``), or None.

    The opening of ``torch.optim.Optimizer.step(closure)``: a closure re-evaluates the model and its gradients.
    """
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def groups_with_grads(param_groups: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[torch.Tensor]]]:
    """Each parameter group with its parameters that have a gradient, in order; groups with none are skipped.

    Each group's list is taken when the loop reaches it, as a loop over ``param_groups`` would.
    """
    for group in param_groups:
        params = [p for p in group["params"] if p.grad is not None]
        if params:
            yield group, params


def device_scalar(value: float | torch.Tensor, device: torch.device) -> torch.Tensor:
    """``value`` as a 0-d float64 tensor on ``device``, for optimizer scalars that must not leave the device.

    A float (a fresh optimizer's default) is filled in on the device (``torch.full``: no host-to-device copy, which
    from pageable memory would wait for the device); a tensor is returned as it is once it is there
    (:meth:`Float32StateOptimizer.load_state_dict` puts a loaded one back on its parameters' device).
    """
    if torch.is_tensor(value):
        return value.to(device=device, dtype=torch.float64)
    return torch.full((), float(value), dtype=torch.float64, device=device)


def foreach_scalar(value: torch.Tensor, tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-d device scalar as a ``torch._foreach_*`` op on ``tensors`` wants it: in their dtype when they are
    float32 or float64, else float32.

    CUDA's foreach kernels take a scalar tensor on their fast path (one launch for the whole list) only in the
    list's own dtype; any other runs one kernel per tensor. A Python float is rounded to float32 for a float32 list
    too, so the product is the same. Half-precision lists keep a float32 scalar (1 - lr wd rounded to bf16 is 1)
    and take the per-tensor path, as they did with a Python float.
    """
    dtype = tensors[0].dtype if tensors and tensors[0].dtype in (torch.float32, torch.float64) else torch.float32
    return value.to(dtype)


def foreach_add_scalar_(tensors: list[torch.Tensor], value: torch.Tensor) -> None:
    """``tensors[i] += value`` for a 0-d device ``value`` (:func:`foreach_scalar`), with no host read.

    ``torch._foreach_add_(tensors, value)`` binds a 0-d tensor to the Scalar overload, which reads it with
    ``.item()``; the Tensor overload is named explicitly.
    """
    torch.ops.aten._foreach_add_.Tensor(tensors, foreach_scalar(value, tensors))


def flat_sum(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The sum of every element of ``tensors``: one concatenation and one reduction (0-d, their dtype), instead of
    a reduction kernel per tensor and a stack (hundreds of launches on a GPT)."""
    return torch.cat([t.reshape(-1) for t in tensors]).sum()


class Float32StateOptimizer(torch.optim.Optimizer):
    """Base of optimizers that keep float32 state for low-precision (bf16/fp16) parameters.

    ``torch.optim.Optimizer.load_state_dict`` casts every floating state tensor except ``step`` to its parameter's
    dtype, which would silently turn the float32 moments of a bf16 parameter into bf16 on resume; this base puts the
    saved tensors back in the dtype they were saved in, so a resumed trial continues bit for bit (checked by the
    conformance suite's ``state_dict`` check, for float32 and bfloat16 parameters). Tensors held in the param
    groups (the device scalars of D-Adaptation, Prodigy and DoG) are put back on their parameters' device.
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group in self.param_groups:  # 0-d device scalars (:func:`device_scalar`) come back on the CPU
            if group["params"]:
                device = group["params"][0].device
                for key, value in group.items():
                    if torch.is_tensor(value) and key != "params":
                        group[key] = value.to(device)
        params = [p for g in self.param_groups for p in g["params"]]
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for i, p in zip(saved_ids, params):
            for key, value in state_dict["state"].get(i, {}).items():
                if torch.is_tensor(value) and value.is_floating_point() and value.dtype != p.dtype and key != "step":
                    self.state[p][key] = value.to(device=p.device, copy=True)

SCHEDULE_DEFAULTS: Mapping[str, Any] = {"schedule": "cosine", "warmup_frac": 0.05, "decay_floor": 0.1}


def search_space_file(name: str) -> Path:
    """Path of the packaged search-space JSON ``search_spaces/<name>.json``."""
    return SEARCH_SPACES / f"{name}.json"


def with_schedule(
    make: Callable[[nn.Module, Mapping[str, Any], TrialInfo], Any],
) -> Callable[[nn.Module, Mapping[str, Any], TrialInfo], Updater]:
    """Wrap an optimizer factory so the result follows the schedule named in the hyperparameters.

    The schedule spans ``info.step_hint`` steps (the workload's estimate of what a tuned baseline needs).
    """

    def factory(model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        return Scheduled(make(model, hparams, info), from_hparams(hparams, total_steps=info.step_hint))

    return factory
