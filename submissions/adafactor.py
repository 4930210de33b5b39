"""Adafactor: Adam-like steps with a factored (row x column) second-moment estimate and update clipping.

References:
  Shazeer & Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018 (arXiv 1804.04235).
  Zhai et al., "Scaling Vision Transformers", CVPR 2022 (arXiv 2106.04560): the beta2 schedule capped at 0.999,
    a first moment, an external learning rate and decoupled weight decay.
  Zhao et al., "Deconstructing What Makes a Good Optimizer for Language Models", 2024 (arXiv 2407.07972): Adafactor
    with momentum (beta1 = 0.9) compared with Adam, Lion and Signum.

Step t (1-based), gradient G, learning rate lr (after the schedule), eps1 = 1e-30, clipping threshold d:

    beta2_t = min(beta2, 1 - t^(-decay_rate))                       (paper Sec. 7; capped as in Zhai et al.)
      (decay_rate = 0: the bias-corrected constant decay beta2 (1 - beta2^(t-1)) / (1 - beta2^t), paper Sec. 7)
    matrices (last two dims n x m; leading dims are batch dims), factored:
      R <- beta2_t R + (1 - beta2_t) mean_cols(G^2 + eps1)         (..., n)
      C <- beta2_t C + (1 - beta2_t) mean_rows(G^2 + eps1)         (..., m)
      V = R C^T / mean(R)                                            (..., n, m)
    vectors and scalars, unfactored:
      V <- beta2_t V + (1 - beta2_t) (G^2 + eps1)
    U = G / sqrt(V)
    U <- U / max(1, RMS(U) / d)                                     (update clipping, Sec. 6)
    M <- beta1 M + (1 - beta1) U                                    (optional first moment, on the clipped U)
    theta <- theta - a_t (M + weight_decay * theta)

The paper writes R and C as row and column *sums* with V = R C / (1^T R). Storing *means* instead, R' = R / m and
C' = C / n, gives the same V: R' C'^T / mean(R') = (R C^T / (n m)) / (sum(R) / (n m)) = R C^T / sum(R); the means
stay at the scale of G^2 whatever the width.

The step size a_t is the external lr (relative_step=False, the default, so the benchmark's schedule applies) or the
paper's relative step a_t = max(eps2, RMS(theta_{t-1})) * min(lr, 1/sqrt(t)) (relative_step=True; lr = 1e-2 gives
exactly the paper's rho_t).

Why not torch.optim.Adafactor (torch >= 2.5): it has no first moment (the Deconstructing paper's variant uses one),
always applies the relative step with parameter scaling (so the schedule's lr is only a cap), and has no constant-
beta2 mode. Writing the ~60 lines here keeps the update readable and testable against the paper.

Half-precision parameters keep R, C, V and M in float32; the step is computed in float32.
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
    Float32StateOptimizer,
    run_closure,
    search_space_file,
    state_dtype,
    with_schedule,
    work_copies,
)


def beta2_at(t: int, *, beta2: float, decay_rate: float) -> float:
    """The second-moment decay used at step ``t``.

    Args:
      t: 1-based step.
      beta2: the cap (decay_rate > 0) or the constant decay (decay_rate = 0).
      decay_rate: c in 1 - t^(-c); 0 selects the bias-corrected constant decay.
    Returns:
      beta2_t; 0 at t = 1 in both modes, so V_1 = G_1^2 + eps1 (no bias from the zero start).
    References:
      Shazeer & Stern 2018, Sec. 7 (increasing decay parameter; its bias-corrected constant-decay form).
    """
    if decay_rate > 0:
        return min(beta2, 1.0 - t ** (-decay_rate))
    return beta2 * (1.0 - beta2 ** (t - 1)) / (1.0 - beta2**t)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.square().mean().sqrt()


class Adafactor(Float32StateOptimizer):
    """Adafactor with an optional first moment, update clipping and decoupled weight decay.

    Args:
      params: parameters or parameter groups. Tensors with >= 2 dims are factored over their last two dims.
      lr: step size (or the cap of the relative step when ``relative_step``).
      beta1: first-moment EMA of the clipped update; 0 disables it (no state kept).
      beta2: cap of the increasing decay, or the constant decay when ``decay_rate`` is 0.
      decay_rate: c of beta2_t = 1 - t^(-c); 0 for a constant (bias-corrected) beta2.
      eps1: added to G^2 (keeps the factored estimate positive).
      eps2: floor of RMS(theta) in the relative step.
      clip_threshold: d of the update clipping; the update's RMS never exceeds d.
      weight_decay: decoupled decay coefficient, theta <- theta - a_t * weight_decay * theta.
      relative_step: use the paper's parameter-scaled relative step instead of the external lr.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        *,
        beta1: float = 0.9,
        beta2: float = 0.999,
        decay_rate: float = 0.8,
        eps1: float = 1e-30,
        eps2: float = 1e-3,
        clip_threshold: float = 1.0,
        weight_decay: float = 0.0,
        relative_step: bool = False,
    ) -> None:
        if lr < 0 or weight_decay < 0 or not (0 <= beta1 < 1 and 0 <= beta2 <= 1) or decay_rate < 0:
            raise ValueError(f"invalid Adafactor hyperparameters lr={lr} beta1={beta1} beta2={beta2} "
                             f"decay_rate={decay_rate} wd={weight_decay}")
        if decay_rate == 0 and beta2 >= 1:
            raise ValueError("Adafactor with a constant beta2 (decay_rate=0) needs beta2 < 1")
        if clip_threshold <= 0 or eps1 < 0 or eps2 < 0:
            raise ValueError(f"invalid Adafactor clip_threshold={clip_threshold} eps1={eps1} eps2={eps2}")
        super().__init__(params, dict(lr=lr, beta1=beta1, beta2=beta2, decay_rate=decay_rate, eps1=eps1, eps2=eps2,
                                      clip_threshold=clip_threshold, weight_decay=weight_decay,
                                      relative_step=relative_step))

    def _init_state(self, p: torch.Tensor, beta1: float) -> dict[str, torch.Tensor]:
        dtype = state_dtype(p)
        st: dict[str, torch.Tensor] = {"step": torch.zeros((), dtype=torch.float64)}
        if p.dim() >= 2:
            st["row"] = torch.zeros(p.shape[:-1], dtype=dtype, device=p.device)  # (..., n)
            st["col"] = torch.zeros(p.shape[:-2] + p.shape[-1:], dtype=dtype, device=p.device)  # (..., m)
        else:
            st["v"] = torch.zeros_like(p, dtype=dtype)
        if beta1 > 0:
            st["exp_avg"] = torch.zeros_like(p, dtype=dtype)
        return st

    @staticmethod
    def second_moment(st: dict[str, torch.Tensor], g2: torch.Tensor, beta2_t: float) -> torch.Tensor:
        """Update the accumulators in ``st`` with ``g2 = G^2 + eps1`` and return the estimate V (G's shape)."""
        if "v" in st:
            st["v"].lerp_(g2, 1 - beta2_t)  # beta2_t v + (1 - beta2_t) g2
            return st["v"]
        row, col = st["row"], st["col"]
        row.lerp_(g2.mean(dim=-1), 1 - beta2_t)  # (..., n)
        col.lerp_(g2.mean(dim=-2), 1 - beta2_t)  # (..., m)
        # V = R C^T / mean(R): the rank-1 reconstruction, per leading (batch) index.
        return row.unsqueeze(-1) * col.unsqueeze(-2) / row.mean(dim=-1, keepdim=True).unsqueeze(-1)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st.update(self._init_state(p, group["beta1"]))
                st["step"] += 1
                self._update(p, st, group, int(st["step"]))
        return loss

    def _update(self, p: torch.Tensor, st: dict[str, torch.Tensor], group: dict[str, Any], t: int) -> None:
        """One Adafactor step of parameter ``p`` (the per-tensor factoring and clipping make it per tensor)."""
        (work,), (g,) = work_copies([p])
        b2t = beta2_at(t, beta2=group["beta2"], decay_rate=group["decay_rate"])
        v = self.second_moment(st, g.square().add_(group["eps1"]), b2t)
        u = g / v.sqrt()
        u.div_((_rms(u) / group["clip_threshold"]).clamp_(min=1.0))  # update clipping
        if "exp_avg" in st:
            st["exp_avg"].lerp_(u, 1 - group["beta1"])
            u = st["exp_avg"]
        lr = group["lr"]
        if group["relative_step"]:
            lr = max(group["eps2"], float(_rms(work))) * min(lr, 1.0 / math.sqrt(t))
        if group["weight_decay"] != 0:
            work.mul_(1 - lr * group["weight_decay"])
        work.add_(u, alpha=-lr)
        if work is not p:
            p.copy_(work)


# linreg tiny: the beta2 schedule, first moment and clipping as in the references; lr 1e-2 like AdamW's default.
DEFAULTS: Mapping[str, Any] = {
    "lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "decay_rate": 0.8, "clip_threshold": 1.0, "weight_decay": 0.0,
    **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Adafactor:
    return Adafactor(model.parameters(), lr=hp["lr"], beta1=hp["beta1"], beta2=hp["beta2"],
                     decay_rate=hp["decay_rate"], clip_threshold=hp["clip_threshold"],
                     weight_decay=hp["weight_decay"])


adafactor = SubmissionSpec(
    name="adafactor", factory=with_schedule(_make), defaults=DEFAULTS,
    search_space_file=search_space_file("adafactor"), paper="Shazeer & Stern 2018, arXiv 1804.04235",
)
