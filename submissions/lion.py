"""Lion and Signum: sign-based updates of a momentum buffer, with decoupled weight decay.

References:
  Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023 (arXiv 2302.06675): Lion.
  Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems", ICML 2018 (arXiv 1802.04434):
    Signum (signed momentum).
  Zhao et al., "Deconstructing What Makes a Good Optimizer for Language Models", 2024 (arXiv 2407.07972): Signum
    with decoupled weight decay recovers Adam's performance and stability.

Lion, at each step, gradient g, learning rate lr (after the schedule), weight decay wd:

    u = sign(beta1 * m + (1 - beta1) * g)          (interpolate, then take the sign)
    theta <- theta - lr * (u + wd * theta)
    m <- beta2 * m + (1 - beta2) * g               (the buffer tracks g with the *other* beta)

Signum, with one beta:

    m <- beta1 * m + (1 - beta1) * g
    theta <- theta - lr * (sign(m) + wd * theta)

Every coordinate moves by exactly lr (or 0 where the argument of sign is 0) before weight decay, so the learning
rate must be several times smaller than AdamW's (Lion's paper: 3-10x smaller lr, 3-10x larger wd).

Parameters in bfloat16/float16 keep their momentum in float32; the step is computed in float32 and rounded once into
the parameter. All tensors of a group are updated with torch._foreach_* kernels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from optbench.api import SubmissionSpec, TrialInfo
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


class _SignMomentum(Float32StateOptimizer):
    """Shared machinery of Lion and Signum: one momentum buffer per parameter, a sign update, decoupled decay."""

    def _direction(self, m: list[torch.Tensor], grads: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
        """The argument of sign() for this step; also advances the momentum buffers ``m`` in place."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            for p in params:
                if not self.state[p]:
                    self.state[p]["exp_avg"] = torch.zeros_like(p, dtype=state_dtype(p),
                                                                memory_format=torch.preserve_format)
            m = [self.state[p]["exp_avg"] for p in params]
            work, grads = work_copies(params)
            lr, wd = group["lr"], group["weight_decay"]
            direction = self._direction(m, grads, group)
            if wd != 0:
                torch._foreach_mul_(work, 1 - lr * wd)  # theta - lr * wd * theta, with the pre-step theta
            torch._foreach_sign_(direction)
            torch._foreach_add_(work, direction, alpha=-lr)
            write_back(params, work)
        return loss


class Lion(_SignMomentum):
    """Lion (EvoLved Sign Momentum), Chen et al. 2023, Algorithm 2 (with decoupled weight decay).

    Args:
      params: parameters or parameter groups.
      lr: step size; every coordinate moves by lr per step (plus weight decay).
      betas: (beta1, beta2): beta1 interpolates the update direction, beta2 the momentum buffer.
      weight_decay: decoupled decay coefficient, applied as theta *= 1 - lr * weight_decay.
    """

    def __init__(
        self, params: Any, lr: float = 1e-4, *, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not (0 <= betas[0] <= 1 and 0 <= betas[1] <= 1):
            raise ValueError(f"invalid Lion hyperparameters lr={lr} betas={betas} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), weight_decay=weight_decay))

    def _direction(self, m: list[torch.Tensor], grads: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
        beta1, beta2 = group["betas"]
        c = torch._foreach_lerp(m, grads, 1 - beta1)  # beta1 * m + (1 - beta1) * g, before m moves
        torch._foreach_lerp_(m, grads, 1 - beta2)
        return c


class Signum(_SignMomentum):
    """Signum (signed momentum), Bernstein et al. 2018, with decoupled weight decay as in Zhao et al. 2024.

    Args:
      params: parameters or parameter groups.
      lr: step size; every coordinate moves by lr per step (plus weight decay).
      beta: momentum EMA coefficient (0 gives signSGD).
      weight_decay: decoupled decay coefficient, applied as theta *= 1 - lr * weight_decay.
    """

    def __init__(self, params: Any, lr: float = 1e-4, *, beta: float = 0.9, weight_decay: float = 0.0) -> None:
        if lr < 0 or weight_decay < 0 or not 0 <= beta < 1:
            raise ValueError(f"invalid Signum hyperparameters lr={lr} beta={beta} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, beta=beta, weight_decay=weight_decay))

    def _direction(self, m: list[torch.Tensor], grads: list[torch.Tensor], group: dict[str, Any]) -> list[torch.Tensor]:
        torch._foreach_lerp_(m, grads, 1 - group["beta"])  # m <- beta * m + (1 - beta) * g
        return torch._foreach_mul(m, 1.0)  # a copy: sign is taken in place and m must survive


# lr 3e-3 is AdamW's default here (1e-2) scaled down 3.3x, inside the Lion paper's 3-10x: it reaches linreg tiny's
# target in ~500 steps and, unlike 2e-3, also travels far enough in the conformance quadratic's 500 steps (a sign
# method moves at most lr per coordinate per step). Betas are the Lion paper's and the signSGD paper's defaults.
LION_DEFAULTS: Mapping[str, Any] = {
    "lr": 3e-3, "beta1": 0.9, "beta2": 0.99, "weight_decay": 0.0, **SCHEDULE_DEFAULTS,
}
SIGNUM_DEFAULTS: Mapping[str, Any] = {"lr": 3e-3, "beta1": 0.9, "weight_decay": 0.0, **SCHEDULE_DEFAULTS}


def _make_lion(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Lion:
    return Lion(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), weight_decay=hp["weight_decay"])


def _make_signum(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Signum:
    return Signum(model.parameters(), lr=hp["lr"], beta=hp["beta1"], weight_decay=hp["weight_decay"])


lion = SubmissionSpec(
    name="lion", factory=with_schedule(_make_lion), defaults=LION_DEFAULTS,
    search_space_file=search_space_file("lion"), paper="Chen et al. 2023, arXiv 2302.06675",
)
signum = SubmissionSpec(
    name="signum", factory=with_schedule(_make_signum), defaults=SIGNUM_DEFAULTS,
    search_space_file=search_space_file("signum"), paper="Bernstein et al. 2018, arXiv 1802.04434",
)
