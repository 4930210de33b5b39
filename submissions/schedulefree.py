"""Schedule-Free AdamW: momentum replaced by interpolation and online averaging, no learning-rate decay.

References:
  Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", NeurIPS 2024 (arXiv 2405.15682),
  Algorithm 1 (Schedule-Free AdamW); reference code github.com/facebookresearch/schedule_free
  (``adamw_schedulefree_reference.py``). Winner of AlgoPerf 2024's self-tuning track.

Three sequences per parameter; at step t = 1, 2, ... the gradient is taken at y:

    y_t     = (1 - beta1) z_t + beta1 x_t                      (what the model's parameters hold while training)
    g_t     = grad f(y_t)
    v_t     = beta2 v_{t-1} + (1 - beta2) g_t^2
    gamma_t = lr * min(1, t / warmup) * sqrt(1 - beta2^t)     (linear warmup; Adam's bias correction of v)
    z_{t+1} = z_t - gamma_t g_t / (sqrt(v_t) + eps) - gamma_t * wd * y_t
    w_t     = t^r * (max_{i<=t} gamma_i)^weight_lr_power,    c_{t+1} = w_t / sum_{i<=t} w_i
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1}              (x is the point to evaluate)

with x_1 = z_1 = y_1 = the initial parameters. gamma_t g / (sqrt(v) + eps) is lr * g / (sqrt(v_hat) + eps')
with v_hat = v / (1 - beta2^t) the bias-corrected second moment and eps' = eps / sqrt(1 - beta2^t): the paper's
form, followed here exactly. With weight_lr_power = 2 and r = 0 the average weights iterates by gamma_t^2, so the
warmup steps count little; the running max equals gamma_t itself because gamma_t never decreases here (the base lr
is constant: Schedule-Free takes no external schedule, only its own warmup).

Defaults: the reference's betas (0.9, 0.999), eps 1e-8, r = 0, weight_lr_power = 2, 5% warmup, but lr = 0.01, not
its 0.0025: on linreg tiny lr = 0.0025 reaches the target only at step ~1950 of 3000, lr = 0.005 at ~1100, lr = 0.01
at ~650 (seed 0; the paper notes Schedule-Free wants a larger lr than a scheduled AdamW, and 0.01 is this
project's AdamW default).

Evaluation (``Capability.EVAL_PARAMS``): :meth:`AdamWScheduleFree.eval_params` swaps x into the parameters and y back
on exit. Both x and z are kept in the state (one buffer more than the reference's memory-saving version, which keeps
only z and recovers x from y by an in-place lerp): y is recomputed from (x, z) by the same kernel as in ``step``, so
the swap is exact to the bit however many times the harness evaluates, and bf16 parameters get float32 x and z
(only the rounded y lives in the model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from optbench.api import Capability, SubmissionSpec, TrialInfo, named_params
from optbench.errors import UsageError
from optbench_submissions._common import (
    Float32StateOptimizer,
    groups_with_grads,
    run_closure,
    search_space_file,
    state_dtype,
)


def _y_of(z: list[torch.Tensor], x: list[torch.Tensor], beta1: float) -> list[torch.Tensor]:
    """y = (1 - beta1) z + beta1 x, one kernel for ``step`` and ``eval_params`` so both give the same bits."""
    return torch._foreach_lerp(z, x, beta1)


class AdamWScheduleFree(Float32StateOptimizer):
    """Schedule-Free AdamW (paper's Algorithm 1); the parameters hold y, :meth:`eval_params` swaps in x.

    Args:
      params: parameters or parameter groups.
      lr: peak learning rate gamma.
      betas: (beta1, beta2): beta1 is the interpolation weight of y between z and x, beta2 the EMA of g^2.
      eps: added to sqrt(v).
      weight_decay: decoupled decay, taken at y.
      warmup_steps: linear warmup length (0: none).
      r: polynomial weighting t^r of the average.
      weight_lr_power: power of the learning rate in the averaging weights.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
    ) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or warmup_steps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"invalid Schedule-Free AdamW hyperparameters lr={lr} betas={betas} eps={eps} "
                             f"wd={weight_decay} warmup_steps={warmup_steps}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, warmup_steps=int(warmup_steps),
                        r=r, weight_lr_power=weight_lr_power,
                        k=0, lr_max=0.0, weight_sum=0.0)  # per-group counters: saved by state_dict
        super().__init__(params, defaults)

    def _gamma(self, group: dict[str, Any], t: int) -> float:
        """gamma_t = lr * warmup(t) * sqrt(1 - beta2^t)."""
        warm = group["warmup_steps"]
        sched = min(1.0, t / warm) if warm > 0 else 1.0
        return group["lr"] * sched * math.sqrt(1 - group["betas"][1] ** t)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            beta1, beta2 = group["betas"]
            t = group["k"] + 1
            gamma = self._gamma(group, t)
            group["lr_max"] = lr_max = max(group["lr_max"], gamma)
            weight = (t ** group["r"]) * (lr_max ** group["weight_lr_power"])
            group["weight_sum"] = weight_sum = group["weight_sum"] + weight
            c = weight / weight_sum if weight_sum > 0 else 0.0
            states = [self._init_state(p) for p in params]
            x, z, v = ([st[k] for st in states] for k in ("x", "z", "exp_avg_sq"))
            grads = [p.grad.to(st["z"].dtype) for p, st in zip(params, states)]  # no copy for float32 params

            y = _y_of(z, x, beta1)  # y_t in state precision (the parameter may hold it rounded to bf16)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)
            denom = torch._foreach_sqrt(v)
            torch._foreach_add_(denom, group["eps"])
            if group["weight_decay"] != 0:
                torch._foreach_add_(z, y, alpha=-gamma * group["weight_decay"])
            torch._foreach_addcdiv_(z, grads, denom, -gamma)
            torch._foreach_lerp_(x, z, c)  # x <- (1 - c) x + c z
            for p, y_new in zip(params, _y_of(z, x, beta1)):
                p.copy_(y_new)
            group["k"] = t
        return loss

    def _init_state(self, p: torch.Tensor) -> dict[str, Any]:
        st = self.state[p]
        if not st:
            start = p.detach().to(state_dtype(p), copy=True)
            st["x"] = start
            st["z"] = start.clone()
            st["exp_avg_sq"] = torch.zeros_like(start)
        return st

    @contextmanager
    def eval_params(self) -> Iterator[None]:
        """Hold x in the parameters inside the block and y after it (bit-exact: y is recomputed as in ``step``).

        Parameters that have not been stepped yet hold x = y = their initial value and are left alone.
        """
        swapped: list[tuple[dict[str, Any], list[torch.Tensor]]] = []
        with torch.no_grad():
            for group in self.param_groups:
                params = [p for p in group["params"] if "x" in self.state.get(p, {})]
                for p in params:
                    p.copy_(self.state[p]["x"])
                swapped.append((group, params))
        try:
            yield
        finally:
            with torch.no_grad():
                for group, params in swapped:
                    if not params:
                        continue
                    z = [self.state[p]["z"] for p in params]
                    x = [self.state[p]["x"] for p in params]
                    for p, y in zip(params, _y_of(z, x, group["betas"][0])):
                        p.copy_(y)




DEFAULTS: Mapping[str, Any] = {
    "lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
    "warmup_frac": 0.05, "r": 0.0, "weight_lr_power": 2.0,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> AdamWScheduleFree:
    """One parameter group with every trainable parameter; warmup = warmup_frac * step_hint steps.

    Raises:
      UsageError: a hyperparameter out of range.
    """
    warmup = round(float(hp["warmup_frac"]) * info.step_hint)
    try:
        return AdamWScheduleFree([p for _, p in named_params(model)], lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                                 eps=hp["eps"], weight_decay=hp["weight_decay"], warmup_steps=warmup, r=hp["r"],
                                 weight_lr_power=hp["weight_lr_power"])
    except ValueError as exc:
        raise UsageError(f"schedulefree: {exc}") from None


schedulefree = SubmissionSpec(
    name="schedulefree", factory=_make, defaults=DEFAULTS, capabilities=frozenset({Capability.EVAL_PARAMS}),
    search_space_file=search_space_file("schedulefree"),
    paper="Defazio et al. 2024, The Road Less Scheduled, arXiv 2405.15682",
)
