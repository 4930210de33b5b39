"""D-Adaptation Adam: Adam whose step size d is estimated online as a lower bound on the distance to the solution.

References:
  Defazio & Mishchenko, "Learning-Rate-Free Learning by D-Adaptation", ICML 2023 (arXiv 2301.07733), the Adam
  variant (Algorithm "D-Adapted Adam" of the appendix); reference code github.com/facebookresearch/dadaptation
  (``dadapt_adam.py``, v3).

At step k = 0, 1, ... with gradient g, learning-rate multiplier gamma_k (1.0 times the schedule) and d_0 = 1e-6:

    lam_k   = d_k * gamma_k                     (times sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) with bias_correction)
    r_{k+1} = sqrt(beta2) r_k + (1 - sqrt(beta2)) lam_k <g_k, s_k / (sqrt(v_k) + eps)>   (v_k, s_k: before update)
    m_{k+1} = beta1 m_k + (1 - beta1) lam_k g_k
    v_{k+1} = beta2 v_k + (1 - beta2) g_k^2
    s_{k+1} = sqrt(beta2) s_k + (1 - sqrt(beta2)) lam_k g_k
    d_hat   = r_{k+1} / ((1 - sqrt(beta2)) ||s_{k+1}||_1),     d_{k+1} = max(d_k, min(d_hat, growth_rate * d_k))
    x_{k+1} = x_k - lam_k wd x_k - m_{k+1} / (sqrt(v_{k+1}) + eps)        (decoupled weight decay)

Sums <.,.> and ||.||_1 run over all parameters (one d for the model). As in the reference code, r uses the
preconditioner before this step's v update, the step the one after (the paper writes A_{k+1} in both); m carries
lam, so a change of d or of the schedule acts through the momentum. The first step has s_0 = 0, so d_1 = d_0 and it
moves by ~d_0 gamma; d grows from the second step on. Weight decay is decoupled (AdamW style; the reference's
``decouple=True``); the reference's default L2-in-the-gradient variant is not offered.

Schedule: D-Adaptation is run with the usual warmup + cosine schedule on the multiplier gamma (paper's experiments,
AlgoPerf practice), so ``with_schedule`` wraps it with lr = 1.0. The reference's defaults (d_0 1e-6, betas (0.9,
0.999), eps 1e-8, no bias correction) reach the linreg tiny target at steps 450-750 (seeds 0-5; d settles near
0.008).

On a GPU nothing is read back to the host: d and r are 0-d float64 tensors on the parameters' device (Python's
max/min become torch.maximum/minimum, the "no estimate yet" branch a torch.where), so the step's arithmetic is the
equations' in float64 as before, and the queue never drains (the reference code reads its sums once per parameter).
The sums take one concatenation and reduction and one ``_foreach_norm`` per group, not a kernel per parameter.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import SubmissionSpec, TrialInfo, named_params
from optbench.errors import UsageError
from optbench_submissions._common import (
    SCHEDULE_DEFAULTS,
    Float32StateOptimizer,
    device_scalar,
    flat_sum,
    foreach_scalar,
    groups_with_grads,
    run_closure,
    search_space_file,
    state_dtype,
    with_schedule,
)


class DAdaptAdam(Float32StateOptimizer):
    """Adam with the D-Adaptation step size; d, r (0-d float64 device tensors once stepped) and the step count live in
    every param group (identical copies).

    Args:
      params: parameters or parameter groups (all groups share one lr multiplier and one d).
      lr: multiplier gamma of the adapted step size (1.0; the schedule scales it).
      betas: Adam's (beta1, beta2); sqrt(beta2) weights the d estimate.
      eps: added to sqrt(v).
      weight_decay: decoupled decay, scaled by d * lr.
      d0: initial under-estimate of the distance to the solution.
      growth_rate: cap on d_{k+1} / d_k (inf: none).
      bias_correction: Adam's bias correction folded into lam (off in the reference by default).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        d0: float = 1e-6,
        growth_rate: float = math.inf,
        bias_correction: bool = False,
    ) -> None:
        if lr < 0 or eps <= 0 or weight_decay < 0 or d0 <= 0 or growth_rate < 1 or not (
                0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid D-Adapt Adam hyperparameters lr={lr} betas={betas} eps={eps} "
                             f"wd={weight_decay} d0={d0} growth_rate={growth_rate}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, growth_rate=growth_rate,
                        bias_correction=bias_correction, d=d0, numerator=0.0, k=0)
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        st = self.state[p]
        if not st:
            dtype = state_dtype(p)  # float32 state for bf16 parameters
            for key in ("exp_avg", "exp_avg_sq", "s"):
                st[key] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
        return st

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        work = [(group, params, [self._init_state(p) for p in params])
                for group, params in groups_with_grads(self.param_groups)]
        if not work:
            return loss
        first = self.param_groups[0]
        beta1, beta2 = first["betas"]
        sqrt_b2 = math.sqrt(beta2)
        k = first["k"]
        device = work[0][1][0].device
        d, numerator = device_scalar(first["d"], device), device_scalar(first["numerator"], device)  # 0-d float64
        lr = max(g["lr"] for g in self.param_groups)
        bc = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1)) if first["bias_correction"] else 1.0
        dlr = d * lr * bc  # lam_k, 0-d float64 on the device

        inner, l1 = [], []  # per group, 0-d: <g, s / (sqrt(v) + eps)> (without lam) and ||s_new||_1
        for group, params, states in work:
            m, v, s = ([st[key] for st in states] for key in ("exp_avg", "exp_avg_sq", "s"))
            grads = [p.grad.to(st["s"].dtype) for p, st in zip(params, states)]
            inner.append(flat_sum(torch._foreach_mul(grads, self._preconditioned(s, v, group["eps"]))))
            lam_g = torch._foreach_mul(grads, foreach_scalar(dlr, grads))  # lam g
            torch._foreach_lerp_(m, lam_g, 1 - beta1)  # beta1 m + (1 - beta1) lam g
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            torch._foreach_mul_(s, sqrt_b2)
            torch._foreach_add_(s, torch._foreach_mul(grads, foreach_scalar(dlr * (1 - sqrt_b2), grads)))
            l1.append(torch.stack(torch._foreach_norm(s, ord=1)).sum())
        inner_sum = dlr * torch.stack(inner).sum().double()
        l1_sum = torch.stack(l1).sum().double()

        # The d estimate stays on the device (0-d float64): nothing is read back to the host.
        numerator = sqrt_b2 * numerator + (1 - sqrt_b2) * inner_sum
        if lr > 0:
            d_hat = numerator / ((1 - sqrt_b2) * l1_sum)
            grown = torch.maximum(d, torch.minimum(d_hat, d * first["growth_rate"]))
            d = torch.where(l1_sum > 0, grown, d)  # ||s||_1 = 0 (the first step): no estimate yet
        for group in self.param_groups:  # new tensors, never updated in place: a saved state_dict keeps its values
            group["numerator"], group["d"], group["k"] = numerator, d, k + 1
        for group, params, states in work:
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, foreach_scalar(1 - group["weight_decay"] * dlr, params))
            denom = torch._foreach_sqrt([st["exp_avg_sq"] for st in states])
            torch._foreach_add_(denom, group["eps"])
            # computed in float32, rounded once into a bf16 parameter
            torch._foreach_sub_(params, torch._foreach_div([st["exp_avg"] for st in states], denom))
        return loss

    @staticmethod
    def _preconditioned(s: list[torch.Tensor], v: list[torch.Tensor], eps: float) -> list[torch.Tensor]:
        """s / (sqrt(v) + eps) with this step's s and v (before their update)."""
        denom = torch._foreach_sqrt(v)
        torch._foreach_add_(denom, eps)
        return torch._foreach_div(s, denom)



DEFAULTS: Mapping[str, Any] = {
    "lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "d0": 1e-6,
    "bias_correction": False, **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> DAdaptAdam:
    """One parameter group with every trainable parameter (D-Adaptation estimates one d for the whole model).

    Raises:
      UsageError: a hyperparameter out of range.
    """
    try:
        return DAdaptAdam([p for _, p in named_params(model)], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                          eps=hp["eps"], weight_decay=hp["weight_decay"], d0=hp["d0"],
                          bias_correction=bool(hp["bias_correction"]))
    except ValueError as exc:
        raise UsageError(f"dadapt: {exc}") from None


dadapt = SubmissionSpec(
    name="dadapt", factory=with_schedule(_make), defaults=DEFAULTS, search_space_file=search_space_file("dadapt"),
    paper="Defazio & Mishchenko 2023, Learning-Rate-Free Learning by D-Adaptation, arXiv 2301.07733 (Adam variant)",
)
