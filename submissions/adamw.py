"""AdamW and NAdamW: Adam with decoupled weight decay, optionally with Nesterov momentum.

References:
  Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015 (arXiv 1412.6980).
  Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019 (arXiv 1711.05101).
  Dozat, "Incorporating Nesterov Momentum into Adam", ICLR workshop 2016 (NAdam); AlgoPerf's NAdamW baseline.

Update at step t (1-based) for gradient g, learning rate lr (after the schedule), weight decay wd:

    theta <- theta * (1 - lr * wd)                                   (decoupled decay)
    m <- beta1 * m + (1 - beta1) * g
    v <- beta2 * v + (1 - beta2) * g^2
    m_use = m                           (AdamW)
    m_use = beta1 * m + (1 - beta1) * g (NAdamW: the Nesterov look-ahead of the first moment)
    theta <- theta - lr / (1 - beta1^t) * m_use / (sqrt(v / (1 - beta2^t)) + eps)

All tensors of a parameter group are updated with torch._foreach_* kernels (one launch per op for the whole group).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import SubmissionSpec, TrialInfo
from optbench_submissions._common import (
    SCHEDULE_DEFAULTS,
    groups_with_grads,
    run_closure,
    search_space_file,
    with_schedule,
)


class AdamW(torch.optim.Optimizer):
    """Adam with decoupled weight decay; ``nesterov=True`` gives NAdamW."""

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid AdamW hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, nesterov=nesterov))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            grads = [p.grad for p in params]
            states = [self.state[p] for p in params]
            for p, st in zip(params, states):
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)  # a tensor: saved by state_dict
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["step"] += 1
            t = int(states[0]["step"])
            beta1, beta2 = group["betas"]
            lr, eps, wd = group["lr"], group["eps"], group["weight_decay"]
            m = [st["exp_avg"] for st in states]
            v = [st["exp_avg_sq"] for st in states]
            if wd != 0:
                torch._foreach_mul_(params, 1 - lr * wd)
            torch._foreach_lerp_(m, grads, 1 - beta1)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            m_use = torch._foreach_lerp(grads, m, beta1) if group["nesterov"] else m
            denom = torch._foreach_sqrt(v)
            torch._foreach_div_(denom, math.sqrt(1 - beta2**t))
            torch._foreach_add_(denom, eps)
            torch._foreach_addcdiv_(params, m_use, denom, -lr / (1 - beta1**t))
        return loss


DEFAULTS: Mapping[str, Any] = {
    "lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, **SCHEDULE_DEFAULTS,
}


def _make(nesterov: bool) -> Callable[[nn.Module, Mapping[str, Any], TrialInfo], AdamW]:
    def make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> AdamW:
        return AdamW(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                     weight_decay=hp["weight_decay"], nesterov=nesterov)

    return make


adamw = SubmissionSpec(
    name="adamw", factory=with_schedule(_make(False)), defaults=DEFAULTS,
    search_space_file=search_space_file("adamw"), paper="Loshchilov & Hutter 2019, arXiv 1711.05101",
)
nadamw = SubmissionSpec(
    name="nadamw", factory=with_schedule(_make(True)), defaults=DEFAULTS,
    search_space_file=search_space_file("adamw"), paper="Dozat 2016; AlgoPerf NAdamW baseline",
)
