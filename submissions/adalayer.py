"""Adalayer: Adam with one second-moment scalar per block (per layer), per output row for the head and embeddings.

Reference:
  Zhao, Morwani, Brandfonbrener, Vyas & Kakade, "Deconstructing What Makes a Good Optimizer for Language Models",
  2024 (arXiv 2407.07972), the Adalayer section, introduced there to study which part of Adam's preconditioning
  matters: it keeps Adam's per-coordinate momentum but shares the second moment within each block, so inside a
  block the update is SGD-with-momentum direction, scaled by one adaptive step size.

Step t (1-based), gradient g, blocks b partitioning the parameters, lr after the schedule, decoupled decay wd:

    m <- beta1 * m + (1 - beta1) * g                       (per coordinate, as in Adam)
    v_b <- beta2 * v_b + (1 - beta2) * mean_{i in b} g_i^2  (one scalar per block)
    theta_i <- theta_i (1 - lr * wd) - lr * (m_i / (1 - beta1^t)) / (sqrt(v_b / (1 - beta2^t)) + eps),  i in b

Blocks (the grouping rule: per-layer scalars as in the paper, with the last layer split per output), by parameter
role (optbench.plugins.roles: named by the workload, else classified by module type):

* the output ``head``: one block per output row (per logit/token), i.e. v has shape (out_features, 1); its bias, if
  any, one block per output (per element);
* every ``embedding`` (nn.Embedding weights): one block per row (per token), v of shape (num_embeddings, 1); an
  embedding tied to the head is the same tensor and gets the same per-row blocks;
* every other parameter tensor (``hidden`` matrices and conv kernels, ``norm_bias`` gains and biases): one block
  per tensor, v a scalar. A fused parameter (e.g. one qkv matrix) is one block: the optimizer only sees tensors.
  (Before roles, the last nn.Linear was taken for the head even where a tied GPT ends in its residual stream, which
  gave its last MLP projection per-row blocks; that layer is hidden, hence per-tensor now.)

The per-tensor group computes its block means with torch._foreach_norm; half-precision parameters keep m and v in
float32 and the step is computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import Role, SubmissionSpec, TrialInfo, named_params
from optbench.plugins.roles import roles_of
from optbench_submissions._common import (
    SCHEDULE_DEFAULTS,
    Float32StateOptimizer,
    groups_with_grads,
    run_closure,
    search_space_file,
    state_dtype,
    with_schedule,
    work_copies,
    write_back,
)


def per_row_parameters(model: nn.Module) -> set[int]:
    """Ids of the tensors that get one block per row: the head's weight and bias and every embedding weight.

    Args:
      model: the whole model.
    Returns:
      ``id(p)`` of each such parameter.
    """
    roles = roles_of(model)
    return {id(p) for name, p in named_params(model) if roles[name] in (Role.EMBEDDING, Role.HEAD)}


def adalayer_param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Parameter groups for :class:`Adalayer`: ``per_row=True`` for the head and embeddings, False for the rest.

    Args:
      model: the whole model (tied weights appear once).
    Returns:
      Up to two groups, each ``{"params": [...], "per_row": bool}``; empty groups are left out.
    """
    rows = per_row_parameters(model)
    params = [p for _, p in named_params(model)]
    groups = [
        {"params": [p for p in params if id(p) not in rows], "per_row": False},
        {"params": [p for p in params if id(p) in rows], "per_row": True},
    ]
    return [g for g in groups if g["params"]]


def block_mean_sq(grads: list[torch.Tensor], per_row: bool) -> list[torch.Tensor]:
    """mean(g^2) over each block: a scalar per tensor, or per row (dims 1.. reduced, kept) when ``per_row``.

    Args:
      grads: gradients of one group.
      per_row: blocks are rows (1-D tensors: single elements) instead of whole tensors.
    Returns:
      One tensor per gradient: shape () or (rows, 1, ...), broadcastable against the gradient.
    """
    if per_row:
        return [g.square().mean(dim=tuple(range(1, g.dim())), keepdim=True) if g.dim() >= 2 else g.square()
                for g in grads]
    norms = torch._foreach_norm(grads)  # ||g||_2 per tensor, one launch for the group
    sq = torch._foreach_mul(norms, norms)
    return torch._foreach_mul(sq, [1.0 / max(1, g.numel()) for g in grads])


class Adalayer(Float32StateOptimizer):
    """Adam whose second moment is one scalar per block (see the module docstring for the blocks).

    Args:
      params: parameters or groups; a group with ``per_row=True`` uses one block per row, otherwise one per tensor.
        :func:`adalayer_param_groups` builds the groups of the paper's variant from a model.
      lr: step size.
      betas: (beta1, beta2) as in Adam.
      eps: added to the root of the bias-corrected block second moment.
      weight_decay: decoupled decay, theta <- theta * (1 - lr * weight_decay).
    """

    def __init__(
        self, params: Any, lr: float = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Adalayer hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, per_row=False))

    def _init_state(self, p: torch.Tensor, per_row: bool) -> dict[str, torch.Tensor]:
        dtype = state_dtype(p)
        if per_row and p.dim() >= 2:
            v_shape = (p.shape[0],) + (1,) * (p.dim() - 1)  # (rows, 1, ...)
        elif per_row:
            v_shape = tuple(p.shape)  # a vector's rows are its elements
        else:
            v_shape = ()
        return {
            "step": torch.zeros((), dtype=torch.float64),
            "exp_avg": torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros(v_shape, dtype=dtype, device=p.device),
        }

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            self._group_step(params, group)
        return loss

    def _group_step(self, params: list[torch.Tensor], group: dict[str, Any]) -> None:
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if not st:
                st.update(self._init_state(p, group["per_row"]))
            st["step"] += 1
        t = int(states[0]["step"])
        beta1, beta2 = group["betas"]
        lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
        work, grads = work_copies(params)
        m = [st["exp_avg"] for st in states]
        v = [st["exp_avg_sq"] for st in states]
        torch._foreach_lerp_(m, grads, 1 - beta1)
        torch._foreach_lerp_(v, block_mean_sq(grads, group["per_row"]), 1 - beta2)
        denom = torch._foreach_sqrt(v)  # per block: () or (rows, 1, ...)
        torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
        torch._foreach_add_(denom, eps)
        if wd != 0:
            torch._foreach_mul_(work, 1 - lr * wd)
        # Per tensor, not _foreach_div: m and denom differ in shape (a block's scalar broadcasts over its
        # coordinates), which foreach kernels do not promise to broadcast on every backend and version.
        update = [mi / di for mi, di in zip(m, denom)]
        torch._foreach_add_(work, update, alpha=-lr / (1 - beta1**t))
        write_back(params, work)


# linreg tiny's model is one nn.Linear(d, 1): its single output row is one block, so Adalayer there is momentum SGD
# normalised by the gradient's RMS. lr 1e-2 (Adam's default here) reaches the target.
DEFAULTS: Mapping[str, Any] = {
    "lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Adalayer:
    return Adalayer(adalayer_param_groups(model), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                    weight_decay=hp["weight_decay"])


adalayer = SubmissionSpec(
    name="adalayer", factory=with_schedule(_make), defaults=DEFAULTS,
    search_space_file=search_space_file("adalayer"), paper="Zhao et al. 2024, arXiv 2407.07972",
)
