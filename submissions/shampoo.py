"""Shampoo with layer-wise Adam grafting, momentum and decoupled weight decay (the practitioners' Shampoo).

References:
  Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018 (arXiv 1802.09568).
  Anil, Gupta, Koren, Regan & Singer, "Scalable Second Order Optimization for Deep Learning", 2020
    (arXiv 2002.09018): grafting, preconditioner roots every k steps, momentum.
  Shi et al., "A Distributed Data-Parallel PyTorch Implementation of the Distributed Shampoo Optimizer", 2023
    (arXiv 2309.06497): EMA factors, start_preconditioning_step, Adam grafting as used in AlgoPerf.
  Vyas et al., "SOAP", 2024 (arXiv 2409.11321): Shampoo with the 1/2 power (``exponent=0.5``).

Every parameter with two or more dimensions is a matrix G (m, n) = (shape[0], prod(shape[1:])) (conv kernels:
(out, in*kh*kw)); a side above ``max_precond_dim`` is not preconditioned (identity). At step t (1-based):

    L <- sb L + (1 - sb) G G^T,   R <- sb R + (1 - sb) G^T G      (sb = shampoo_beta; sb = 1: L += G G^T, Gupta's sum)
    every precondition_frequency steps (and at t = start_preconditioning_step), by eigh: F = U diag(lam) U^T,
        F^-e = U diag((max(lam, 0) + matrix_eps * lam_max)^-e) U^T       for F = L, R; e = exponent
    A = G / (sqrt(v / (1 - b2^t)) + eps),  v <- b2 v + (1 - b2) G^2    (Adam without momentum: the grafting step)
    S = L^-e G R^-e                            (t >= start_preconditioning_step; before that S = A)
    D = S * ||A||_F / ||S||_F                  (layer-wise grafting: Shampoo's direction, Adam's per-layer norm)
    M <- b1 M + (1 - b1) D                     (momentum on the grafted update)
    theta <- theta * (1 - lr * wd) - lr * M / (1 - b1^t)

The damping is relative to the largest eigenvalue (``matrix_eps * lam_max``) rather than absolute: with grafting the
update is invariant to the scale of the gradients, and relative damping keeps it so; it also keeps the float32
eigendecomposition's rounding (about 1e-7 lam_max) below the damping. ``exponent`` is per side: 0.25 is Gupta et
al.'s inverse 4th root for matrices, 0.5 the SOAP paper's 1/2-power variant. Until ``start_preconditioning_step``
(default: the first root computation, ``precondition_frequency``) the factors are only accumulated and the grafted
Adam direction is used, so the first roots are not taken from a rank-deficient one-gradient factor.

Defaults: lr 1e-2 (the grafted step has Adam's per-layer norm, so Adam's learning rates apply; the repository's AdamW
default), b1 0.9, b2 0.999, factor EMA 0.999, roots every 10 steps. On the small CPU LM of benchmarks/step_cost.py a
training step costs about 1.2x AdamW's: the factor updates (2 m n (m + n) flops per matrix), the preconditioning (as
much again) and the eigendecompositions every 10 steps (a third of the optimizer's time) are all per matrix.

1-D parameters (biases, norm gains), and matrices with both sides above ``max_precond_dim``, take AdamW steps with
(lr, b1, b2, eps, weight_decay). Matrices of equal shape (and step count) are stacked and processed with batched
matmuls, the stacked state persisting between steps (see ``optbench_submissions._linalg.StackedState``); state is
float32 for bfloat16 parameters. At a refresh the factors due are decomposed across buckets, one batched eigh per
factor size (``optbench_submissions._linalg.batched_by_size``): on a GPT the d x d factors of every block's matrices
go in one call. On CUDA each ``torch.linalg.eigh`` call reads its solver's status back to the host (there is no
``eigh_ex``; the read is also what lets a failed float32 decomposition fall back to float64), so a refresh step
waits for the device once per factor size, every ``precondition_frequency`` steps, and no other step does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
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
)
from optbench_submissions._linalg import (
    StackedState,
    adamw_step,
    apply_update,
    batched_by_size,
    matrix_shape,
    stack_grads,
)


def inverse_root(f: torch.Tensor, exponent: float, matrix_eps: float) -> torch.Tensor:
    """F^-exponent of symmetric PSD factors by eigh, with damping relative to the largest eigenvalue.

    Args:
      f: (B, d, d) symmetric factors.
      exponent: the power e > 0 in F^-e.
      matrix_eps: damping as a fraction of each factor's largest eigenvalue.
    Returns:
      (B, d, d) in ``f``'s dtype.
    """
    try:
        lam, u = torch.linalg.eigh(f)
    except torch.linalg.LinAlgError:  # float32 eigh can fail to converge on nearly degenerate factors
        lam, u = (x.to(f.dtype) for x in torch.linalg.eigh(f.double()))
    lam = lam.clamp_min(0)  # (B, d); rounding can make tiny eigenvalues negative
    damp = matrix_eps * lam.amax(dim=-1, keepdim=True).clamp_min(1e-30)  # an all-zero factor stays finite
    scale = (lam + damp).pow(-exponent)  # (B, d)
    return torch.bmm(u * scale.unsqueeze(1), u.mT)


@dataclass(frozen=True)
class _Bucket:
    """One step of a bucket of equally shaped matrices at one step count, between its passes."""

    params: list[torch.Tensor]
    stacks: dict[str, torch.Tensor]  # key -> (B, ...) stacked state (StackedState)
    grad: torch.Tensor  # (B, m, n)
    t: int  # the step count after this step
    left: bool  # whether the rows have a factor
    right: bool
    due: bool  # whether the roots are recomputed at this step


class Shampoo(Float32StateOptimizer):
    """Shampoo with Adam grafting (see the module docstring for the update).

    Args:
      params: parameters or parameter groups.
      lr: learning rate (of the grafted step).
      betas: (b1, b2): momentum of the grafted update, and the grafting Adam's second-moment EMA.
      shampoo_beta: EMA factor of the Kronecker factors; 1.0 sums them as in Gupta et al.
      eps: epsilon of the grafting Adam (and of AdamW for 1-D parameters).
      matrix_eps: damping added to the factors' eigenvalues, relative to the largest one.
      exponent: per-side exponent e of L^-e G R^-e.
      weight_decay: decoupled weight decay (multiplied by lr).
      precondition_frequency: recompute the inverse roots every this many steps.
      start_preconditioning_step: first step that uses Shampoo's direction (None: precondition_frequency).
      max_precond_dim: matrix sides larger than this are not preconditioned.
    """

    def __init__(self, params: Any, lr: float = 3e-3, betas: tuple[float, float] = (0.9, 0.999),
                 shampoo_beta: float = 0.999, eps: float = 1e-8, matrix_eps: float = 1e-6, exponent: float = 0.25,
                 weight_decay: float = 0.0, precondition_frequency: int = 10,
                 start_preconditioning_step: int | None = None, max_precond_dim: int = 2048) -> None:
        if lr < 0 or eps < 0 or matrix_eps <= 0 or weight_decay < 0 or not exponent > 0:
            raise ValueError(f"invalid Shampoo hyperparameters lr={lr} eps={eps} matrix_eps={matrix_eps} "
                             f"exponent={exponent} weight_decay={weight_decay}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1 and 0 <= shampoo_beta <= 1):
            raise ValueError(f"invalid Shampoo betas {betas} / shampoo_beta {shampoo_beta}")
        freq = int(precondition_frequency)
        start = freq if start_preconditioning_step is None else int(start_preconditioning_step)
        if freq < 1 or start < 1 or int(max_precond_dim) < 1:
            raise ValueError("precondition_frequency, start_preconditioning_step and max_precond_dim must be >= 1")
        defaults = dict(lr=lr, betas=tuple(betas), shampoo_beta=shampoo_beta, eps=eps, matrix_eps=matrix_eps,
                        exponent=exponent, weight_decay=weight_decay, precondition_frequency=freq,
                        start_preconditioning_step=start, max_precond_dim=int(max_precond_dim))
        super().__init__(params, defaults)
        self._stacks = StackedState()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)  # float32 state of bf16 parameters stays float32 (Float32StateOptimizer)
        self._stacks.clear()

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for gi, group in enumerate(self.param_groups):
            vectors: list[torch.Tensor] = []
            buckets: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                shape = matrix_shape(p)
                if shape is None or min(shape) > group["max_precond_dim"]:
                    vectors.append(p)
                else:
                    self._init_state(p, shape, group)
                    # Equal shape and equal step count: one batched update (the step count differs only for
                    # parameters that received their first gradient later).
                    key = (shape, state_dtype(p), p.device, self.state[p]["step"])
                    buckets.setdefault(key, []).append(p)
            if vectors:
                adamw_step(vectors, [self.state[p] for p in vectors], lr=group["lr"], betas=group["betas"],
                           eps=group["eps"], weight_decay=group["weight_decay"])
            # Three passes over the buckets, so that the roots due at this step are taken together, batched by
            # factor size across buckets (see optbench_submissions._linalg.batched_by_size).
            steps = [self._accumulate(params, shape, dtype, group, tag=(gi, shape, dtype, tuple(map(id, params))))
                     for (shape, dtype, _, _), params in buckets.items()]
            self._refresh_roots([b for b in steps if b.due], group)
            for b in steps:
                self._update(b, group)
        return loss

    def _sides(self, shape: tuple[int, int], group: Mapping[str, Any]) -> tuple[bool, bool]:
        return shape[0] <= group["max_precond_dim"], shape[1] <= group["max_precond_dim"]

    def _init_state(self, p: torch.Tensor, shape: tuple[int, int], group: Mapping[str, Any]) -> None:
        """Zero factors, identity roots, zero momentum and grafting moment, on a parameter's first gradient."""
        st = self.state[p]
        if st:
            return
        dtype = state_dtype(p)
        st["step"] = 0
        st["exp_avg"] = torch.zeros(shape, dtype=dtype, device=p.device)
        st["graft_sq"] = torch.zeros(shape, dtype=dtype, device=p.device)
        for side, d, on in zip("LR", shape, self._sides(shape, group)):
            if on:
                st[f"GG_{side}"] = torch.zeros(d, d, dtype=dtype, device=p.device)
                st[f"P_{side}"] = torch.eye(d, dtype=dtype, device=p.device)

    def _accumulate(self, params: list[torch.Tensor], shape: tuple[int, int], dtype: torch.dtype,
                    group: Mapping[str, Any], *, tag: Any) -> _Bucket:
        """Count the step and add G G^T, G^T G to the factors of a bucket of equal matrices at one step count."""
        states = [self.state[p] for p in params]
        left, right = self._sides(shape, group)
        keys = ["exp_avg", "graft_sq"] + (["GG_L", "P_L"] if left else []) + (["GG_R", "P_R"] if right else [])
        s = self._stacks.get(tag, params, states, keys)
        g = stack_grads(params, shape, dtype)  # (B, m, n)
        for st in states:
            st["step"] += 1
        t = states[0]["step"]
        sb = group["shampoo_beta"]
        start = group["start_preconditioning_step"]
        # sb = 1: plain sums (Gupta et al.)
        if left:
            s["GG_L"].baddbmm_(g, g.mT, beta=sb, alpha=1.0 if sb == 1 else 1 - sb)
        if right:
            s["GG_R"].baddbmm_(g.mT, g, beta=sb, alpha=1.0 if sb == 1 else 1 - sb)
        due = t >= start and (t == start or t % group["precondition_frequency"] == 0)
        return _Bucket(params=params, stacks=s, grad=g, t=t, left=left, right=right, due=due)

    @staticmethod
    def _refresh_roots(buckets: list[_Bucket], group: Mapping[str, Any]) -> None:
        """P = F^-e for every factor of the buckets due, one batched eigh per factor size (and dtype, device)."""
        pairs = [(b.stacks[f"GG_{side}"], b.stacks[f"P_{side}"]) for b in buckets
                 for side, on in (("L", b.left), ("R", b.right)) if on]
        if not pairs:
            return
        roots = batched_by_size(lambda f: inverse_root(f, group["exponent"], group["matrix_eps"]),
                                [f for f, _ in pairs])
        for (_, root), new in zip(pairs, roots):
            root.copy_(new)

    @staticmethod
    def _update(b: _Bucket, group: Mapping[str, Any]) -> None:
        """The grafted, momentum-averaged step of one bucket, with its roots as they are now."""
        s, g, t = b.stacks, b.grad, b.t
        beta1, beta2 = group["betas"]
        # The grafting step: Adam without momentum.
        v = s["graft_sq"]
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        adam = v.div(1 - beta2**t).sqrt_().add_(group["eps"])
        torch.div(g, adam, out=adam)  # (B, m, n)
        if t >= group["start_preconditioning_step"]:
            direction = g
            if b.left:
                direction = torch.bmm(s["P_L"], direction)
            if b.right:
                direction = torch.bmm(direction, s["P_R"])
            adam_norm = torch.linalg.vector_norm(adam, dim=(1, 2), keepdim=True)  # (B, 1, 1)
            shampoo_norm = torch.linalg.vector_norm(direction, dim=(1, 2), keepdim=True)
            direction = direction * (adam_norm / shampoo_norm.clamp_min(1e-30))
        else:
            direction = adam
        m = s["exp_avg"]
        m.lerp_(direction, 1 - beta1)
        lr = group["lr"]
        apply_update(b.params, list(m.unbind(0)), alpha=-lr / (1 - beta1**t), decay=1 - lr * group["weight_decay"])


DEFAULTS: Mapping[str, Any] = {
    "lr": 1e-2, "beta1": 0.9, "beta2": 0.999, "shampoo_beta": 0.999, "eps": 1e-8, "matrix_eps": 1e-6,
    "exponent": 0.25, "weight_decay": 0.0, "precondition_frequency": 10, "start_preconditioning_step": 10,
    "max_precond_dim": 2048, **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Shampoo:
    return Shampoo(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), shampoo_beta=hp["shampoo_beta"],
                   eps=hp["eps"], matrix_eps=hp["matrix_eps"], exponent=hp["exponent"],
                   weight_decay=hp["weight_decay"], precondition_frequency=hp["precondition_frequency"],
                   start_preconditioning_step=hp["start_preconditioning_step"], max_precond_dim=hp["max_precond_dim"])


shampoo = SubmissionSpec(
    name="shampoo", factory=with_schedule(_make), defaults=DEFAULTS, search_space_file=search_space_file("shampoo"),
    paper="Gupta et al. 2018, arXiv 1802.09568; Adam grafting per Anil et al. 2020, arXiv 2002.09018",
)
