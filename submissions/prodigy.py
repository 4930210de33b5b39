"""Prodigy: D-Adaptation's Adam with a faster-growing estimate of the distance to the solution.

References:
  Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024 (arXiv 2306.06101),
  Algorithm 3 (Adam version); reference code github.com/konstmish/prodigy (``prodigyopt/prodigy.py``).

At step k = 0, 1, ... with gradient g, multiplier gamma_k (1.0 times the schedule), d_0 = 1e-6, beta3 = sqrt(beta2):

    m_{k+1} = beta1 m_k + (1 - beta1) d_k g_k
    v_{k+1} = beta2 v_k + (1 - beta2) d_k^2 g_k^2
    r_{k+1} = beta3 r_k + gamma_k d_k^2 <g_k, x_0 - x_k>
    s_{k+1} = beta3 s_k + gamma_k d_k^2 g_k                 (d_k^2 alone, without gamma_k, with safeguard_warmup)
    d_hat   = d_coef * r_{k+1} / ||s_{k+1}||_1,       d_{k+1} = max(d_k, d_hat)   (growth_rate = inf)
    x_{k+1} = x_k - gamma_k d_k wd x_k - gamma_k d_k m_{k+1} / (sqrt(v_{k+1}) + d_k eps)

The paper writes (1 - beta3) in front of the new terms of r and s; it cancels in d_hat and is left out, as in the
code (which also divides both by d_0, which cancels too). Sums run over all parameters: one d for the model. With a
finite ``growth_rate`` the reference's rule is kept: d_max = max(d_0, d_hats so far), d_{k+1} = min(d_max,
growth_rate * d_k), except that the first increase from d_0 is not capped. The denominator uses d_k eps as in the
paper (the code uses d_{k+1} eps; the difference is in the eps term only). Weight decay is decoupled (the
reference's default ``decouple=True``). ``bias_correction`` multiplies gamma_k by sqrt(1 - beta2^(k+1)) /
(1 - beta1^(k+1)) (reference ``use_bias_correction``, off by default).

Schedule: Prodigy is used with a warmup + cosine schedule on gamma (paper's experiments; the authors recommend
cosine annealing), so ``with_schedule`` wraps it with lr = 1.0. Defaults are the reference's (d_coef 1, d_0 1e-6,
betas (0.9, 0.999)) except ``safeguard_warmup`` = True, the authors' advice for runs with warmup (the small gamma of
warmup otherwise deflates ||s|| and inflates d_hat). On linreg tiny they reach the target at steps 900-1300
(seeds 0-5; d settles near 0.004, a little below AdamW's good lr of 0.01).

On a GPU nothing is read back to the host: d, d_max and r are 0-d float64 tensors on the parameters' device (the
rule's max/min and its branches as torch.maximum/minimum/where), the same float64 arithmetic as the reference's
Python floats; the sums take one concatenation and reduction and one ``_foreach_norm`` per group.
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
    foreach_add_scalar_,
    foreach_scalar,
    groups_with_grads,
    run_closure,
    search_space_file,
    state_dtype,
    with_schedule,
)


class Prodigy(Float32StateOptimizer):
    """Adam with the Prodigy step size; d, d_max, r (0-d float64 device tensors once stepped) and the step count live
    in every group (identical copies).

    Args:
      params: parameters or parameter groups (all groups share one lr multiplier and one d).
      lr: multiplier gamma (1.0; the schedule scales it).
      betas: Adam's (beta1, beta2).
      beta3: decay of r and s (None: sqrt(beta2)).
      eps: added to sqrt(v), scaled by d.
      weight_decay: decoupled decay, scaled by d * lr.
      d0: initial under-estimate of the distance to the solution.
      d_coef: multiplier of d_hat (the authors' preferred knob).
      growth_rate: cap on d_{k+1} / d_k (inf: none).
      bias_correction: Adam's bias correction folded into gamma.
      safeguard_warmup: leave gamma out of s (for runs with warmup).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = math.inf,
        bias_correction: bool = False,
        safeguard_warmup: bool = False,
    ) -> None:
        beta3 = math.sqrt(betas[1]) if beta3 is None else beta3
        if lr < 0 or eps <= 0 or weight_decay < 0 or d0 <= 0 or d_coef <= 0 or growth_rate < 1 or not (
                0 <= betas[0] < 1 and 0 <= betas[1] < 1 and 0 <= beta3 < 1):
            raise ValueError(f"invalid Prodigy hyperparameters lr={lr} betas={betas} beta3={beta3} eps={eps} "
                             f"wd={weight_decay} d0={d0} d_coef={d_coef} growth_rate={growth_rate}")
        defaults = dict(lr=lr, betas=tuple(betas), beta3=beta3, eps=eps, weight_decay=weight_decay, d0=d0,
                        d_coef=d_coef, growth_rate=growth_rate, bias_correction=bias_correction,
                        safeguard_warmup=safeguard_warmup, d=d0, d_max=d0, numerator=0.0, k=0)
        super().__init__(params, defaults)

    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        st = self.state[p]
        if not st:
            dtype = state_dtype(p)  # float32 state for bf16 parameters
            st["p0"] = p.detach().to(dtype, copy=True)  # x_0
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
        beta3, k = first["beta3"], first["k"]
        device = work[0][1][0].device
        d, d_max, numerator = (device_scalar(first[key], device) for key in ("d", "d_max", "numerator"))  # 0-d f64
        lr = max(g["lr"] for g in self.param_groups)
        bc = math.sqrt(1 - beta2 ** (k + 1)) / (1 - beta1 ** (k + 1)) if first["bias_correction"] else 1.0
        dlr = d * lr * bc  # gamma_k d_k
        s_coef = d * d if first["safeguard_warmup"] else d * dlr

        inner, l1 = [], []  # per group, 0-d: <g, x0 - x> (without gamma d^2) and ||s_new||_1
        for _, params, states in work:
            m, v, s = ([st[key] for st in states] for key in ("exp_avg", "exp_avg_sq", "s"))
            grads = [p.grad.to(st["s"].dtype) for p, st in zip(params, states)]
            moved = torch._foreach_sub([st["p0"] for st in states], [p.to(st["p0"].dtype) for p, st in
                                                                       zip(params, states)])  # x_0 - x_k
            torch._foreach_mul_(moved, grads)
            inner.append(flat_sum(moved))
            d_g = torch._foreach_mul(grads, foreach_scalar(d, grads))
            torch._foreach_lerp_(m, d_g, 1 - beta1)  # beta1 m + (1 - beta1) d g
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, torch._foreach_mul(grads, foreach_scalar((1 - beta2) * d * d, grads)))
            torch._foreach_mul_(s, beta3)
            torch._foreach_add_(s, torch._foreach_mul(grads, foreach_scalar(s_coef, grads)))
            l1.append(torch.stack(torch._foreach_norm(s, ord=1)).sum())
        inner_sum = d * dlr * torch.stack(inner).sum().double()
        l1_sum = torch.stack(l1).sum().double()

        # d, d_max and r stay on the device (0-d float64): nothing is read back to the host.
        numerator = beta3 * numerator + inner_sum
        d_new = d
        if lr > 0:
            d_hat = first["d_coef"] * numerator / l1_sum
            rise = torch.where(d == first["d0"], torch.maximum(d, d_hat), d)  # the first increase is never capped
            grown_max = torch.maximum(d_max, d_hat)
            grown = torch.minimum(grown_max, rise * first["growth_rate"])
            estimated = l1_sum > 0  # ||s||_1 = 0: no estimate
            d_new, d_max = torch.where(estimated, grown, d), torch.where(estimated, grown_max, d_max)
        for group in self.param_groups:  # new tensors, never updated in place: a saved state_dict keeps its values
            group["numerator"], group["d"], group["d_max"], group["k"] = numerator, d_new, d_max, k + 1
        for group, params, states in work:
            if group["weight_decay"] != 0:
                torch._foreach_mul_(params, foreach_scalar(1 - group["weight_decay"] * dlr, params))
            denom = torch._foreach_sqrt([st["exp_avg_sq"] for st in states])
            foreach_add_scalar_(denom, d * group["eps"])
            update = torch._foreach_div([st["exp_avg"] for st in states], denom)
            torch._foreach_mul_(update, foreach_scalar(dlr, update))
            torch._foreach_sub_(params, update)  # computed in float32, rounded once into a bf16 parameter
        return loss



DEFAULTS: Mapping[str, Any] = {
    "lr": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0, "d0": 1e-6, "d_coef": 1.0,
    "bias_correction": False, "safeguard_warmup": True, **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Prodigy:
    """One parameter group with every trainable parameter (Prodigy estimates one d for the whole model).

    Raises:
      UsageError: a hyperparameter out of range.
    """
    try:
        return Prodigy([p for _, p in named_params(model)], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                       eps=hp["eps"], weight_decay=hp["weight_decay"], d0=hp["d0"], d_coef=hp["d_coef"],
                       bias_correction=bool(hp["bias_correction"]), safeguard_warmup=bool(hp["safeguard_warmup"]))
    except ValueError as exc:
        raise UsageError(f"prodigy: {exc}") from None


prodigy = SubmissionSpec(
    name="prodigy", factory=with_schedule(_make), defaults=DEFAULTS, search_space_file=search_space_file("prodigy"),
    paper="Mishchenko & Defazio 2024, Prodigy, arXiv 2306.06101",
)
