"""SOAP: Adam run in the slowly changing eigenbasis of Shampoo's Kronecker factors.

References:
  Vyas, Morwani, Zhao et al., "SOAP: Improving and Stabilizing Shampoo using Adam", 2024 (arXiv 2409.11321),
    Algorithm 3; reference code github.com/nikhilvyas/SOAP (read, not copied).
  Gupta, Koren & Singer, "Shampoo: Preconditioned Stochastic Tensor Optimization", ICML 2018 (arXiv 1802.09568).

Every parameter with two or more dimensions is viewed as a matrix G of shape (m, n) = (shape[0], prod(shape[1:]))
(a conv kernel (out, in, kh, kw) becomes (out, in*kh*kw): the fan-out side and the whole fan-in side, the rule the
reference's ``merge_dims`` reaches for kernels whose fan-in fits ``max_precond_dim``). A side of size above
``max_precond_dim`` keeps the identity basis (no factor is stored for it). Per matrix, with Q_L (m, m), Q_R (n, n):

    step 1 (initialisation only, no parameter update):
        L = (1 - sb) G G^T,  R = (1 - sb) G^T G,  Q_L, Q_R = eigenvectors of L, R (eigh, descending eigenvalues)
    step t >= 1 after it (t counts the Adam steps):
        G' = Q_L^T G Q_R                                   (gradient in the eigenbasis)
        M <- b1 M + (1 - b1) G'                            (both moments live in the rotated coordinates)
        V <- b2 V + (1 - b2) G'^2
        theta <- theta * (1 - lr * wd)                     (decoupled weight decay)
        theta <- theta - lr * Q_L [ (M / (1 - b1^t)) / (sqrt(V / (1 - b2^t)) + eps) ] Q_R^T
        L <- sb L + (1 - sb) G G^T,  R <- sb R + (1 - sb) G^T G
        if t % precondition_frequency == 0, refresh each basis Q (of factor F = L or R):
            M_orig = Q_L M Q_R^T                           (first moment back to parameter coordinates)
            order = argsort(diag(Q^T F Q), descending);  Q <- Q[:, order];  V re-ordered along that axis
            Q <- qr(F Q).Q                                 (one power-iteration step from the previous basis)
            M = Q_L^T M_orig Q_R                           (first moment into the new basis)

The second moment is not rotated at a refresh (it cannot be: it is not a linear quantity), only re-ordered so that
each of its rows/columns follows its eigenvector; this is the reference code's choice. ``refresh="eigh"`` replaces
the power-iteration + QR step by an exact eigendecomposition (used by the tests; QR is cheaper and the default).

Deviations from the reference, all deliberate:
  * ``max_precond_dim`` defaults to 2048, not 10000: an eigh of a vocabulary-sized (8192) factor takes about a
    minute on a CPU and memory grows as d^2, so embeddings and output heads keep the vocabulary side in the identity
    basis (preconditioned on the width side only). One of the authors' later versions of the code uses 2048 too.
  * The learning rate defaults to 1e-2 (the repository's AdamW default), not the paper's 3e-3 (tuned for 360M-660M
    LMs): at 3e-3 the conformance quadratic is not solved in 500 steps; on ``linreg`` tiny 1e-2 reaches the target
    in 250 steps (3e-3: 850). beta1 = beta2 = shampoo_beta = 0.95, wd 0.01, frequency 10 are the paper's.
  * The bias-corrected second moment is used as in AdamW (eps added to sqrt(V / (1 - b2^t))), like every Adam in
    this repository; the reference adds eps to sqrt(V) and folds sqrt(1 - b2^t) into the step size.
  * Weight decay is applied before the update (as in the repository's AdamW), the reference applies it after.
  * 1-D parameters (biases, norm gains), and matrices with both sides above ``max_precond_dim``, take plain AdamW
    steps with the same hyperparameters from the first step on (they have no factor to initialise).
  * ``one_sided=True`` (off by default) rotates only the smaller side of each matrix, the space/time-saving variant
    the paper discusses; the larger side keeps the identity basis.

Cost: per step and matrix (m, n) with both sides rotated, SOAP adds six (m, n)-by-side products (rotate the gradient,
rotate the update back, update L and R): about 6 m n (m + n) flops, against 6 m n T for the layer's forward and
backward over T tokens. Its relative overhead is therefore about (m + n) / T per matrix, independent of the
eigendecompositions (the QR refreshes add about 15% to it at frequency 10). It is negligible at LM batch sizes
(T ~ 1e5-1e6 tokens) but not on the small CPU LM of benchmarks/step_cost.py (T = 1024 tokens, m + n up to 640):
there a whole training step costs 1.25x AdamW's (one-sided: 1.08x; one thread, see docs/PERFORMANCE.md).

Performance: matrices of equal shape are stacked and processed with batched matmul / eigh / qr. The stacked state
tensors are kept between steps, and each parameter's state entries are *views* of them (see :class:`StackedState`),
so ``state_dict()`` still holds ordinary per-parameter tensors while a step copies nothing but the gradients. State is
float32 for bfloat16/float16 parameters (and float64 for float64 ones); the step is rounded once into the parameter.
A bucket holds matrices of one shape *and one Adam step count* (they differ only for parameters whose first gradient
came later), so its bias corrections and its refresh are the bucket's, and no per-matrix step or index tensor is
made from host data inside a step (on CUDA, a blocking copy from pageable memory waits for the device).

Host reads on CUDA: the default QR refresh reads nothing back; ``torch.linalg.eigh`` reads its solver's status once
per call, which happens at the first step (initialisation: one batched eigh per factor size across every bucket,
``optbench_submissions._linalg.batched_by_size``) and, with ``refresh="eigh"`` only, at each refresh.
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

REFRESH_MODES = ("qr", "eigh")


def eigh_descending(a: torch.Tensor) -> torch.Tensor:
    """Eigenvectors of symmetric ``a`` (B, d, d) as columns, by descending eigenvalue, computed in float64.

    float64 because this runs once per matrix (SOAP's first step) and an ill-conditioned factor loses its small
    eigenvectors in float32; the result has ``a``'s dtype.
    """
    vecs = torch.linalg.eigh(a.double()).eigenvectors
    return vecs.flip(-1).to(a.dtype)


def _rotate(x: torch.Tensor, ql: torch.Tensor | None, qr: torch.Tensor | None) -> torch.Tensor:
    """Q_L^T x Q_R for x (B, m, n); a missing side is the identity."""
    if ql is not None:
        x = torch.bmm(ql.mT, x)
    if qr is not None:
        x = torch.bmm(x, qr)
    return x


def _unrotate(x: torch.Tensor, ql: torch.Tensor | None, qr: torch.Tensor | None) -> torch.Tensor:
    """Q_L x Q_R^T for x (B, m, n): back from the eigenbasis to parameter coordinates."""
    if ql is not None:
        x = torch.bmm(ql, x)
    if qr is not None:
        x = torch.bmm(x, qr.mT)
    return x


# ----------------------------------------------------------------------------------------------------------------


class SOAP(Float32StateOptimizer):
    """SOAP (Vyas et al. 2024) with AdamW for 1-D parameters; see the module docstring for the update.

    Args:
      params: parameters or parameter groups.
      lr: learning rate.
      betas: Adam's (beta1, beta2), applied in the eigenbasis.
      shampoo_beta: EMA factor of the Kronecker factors L and R.
      eps: Adam's epsilon.
      weight_decay: decoupled weight decay (multiplied by lr).
      precondition_frequency: refresh the eigenbases every this many Adam steps.
      max_precond_dim: matrix sides larger than this keep the identity basis.
      refresh: ``"qr"`` (one power iteration + QR, the paper's) or ``"eigh"`` (exact; slower).
      one_sided: rotate only the smaller side of each matrix (the paper's one-sided variant; the rows when square).
    """

    def __init__(self, params: Any, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.01,
                 precondition_frequency: int = 10, max_precond_dim: int = 2048, refresh: str = "qr",
                 one_sided: bool = False) -> None:
        if lr < 0 or eps < 0 or weight_decay < 0 or not all(0 <= b < 1 for b in (*betas, shampoo_beta)):
            raise ValueError(f"invalid SOAP hyperparameters lr={lr} betas={betas} shampoo_beta={shampoo_beta} "
                             f"eps={eps} weight_decay={weight_decay}")
        if int(precondition_frequency) < 1 or int(max_precond_dim) < 1:
            raise ValueError("precondition_frequency and max_precond_dim must be >= 1")
        if refresh not in REFRESH_MODES:
            raise ValueError(f"refresh must be one of {REFRESH_MODES}, got {refresh!r}")
        defaults = dict(lr=lr, betas=tuple(betas), shampoo_beta=shampoo_beta, eps=eps, weight_decay=weight_decay,
                        precondition_frequency=int(precondition_frequency), max_precond_dim=int(max_precond_dim),
                        refresh=refresh, one_sided=bool(one_sided))
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
            fresh: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            buckets: dict[tuple[Any, ...], list[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                shape = matrix_shape(p)
                if shape is None or min(shape) > group["max_precond_dim"]:
                    vectors.append(p)
                elif not self.state[p]:
                    fresh.setdefault((shape, state_dtype(p), p.device), []).append(p)
                else:
                    # Equal shape and equal Adam step count: one batched update whose bias corrections and refresh
                    # are the bucket's (the count differs only for parameters whose first gradient came later).
                    key = (shape, state_dtype(p), p.device, self.state[p]["step"])
                    buckets.setdefault(key, []).append(p)
            if vectors:
                adamw_step(vectors, [self.state[p] for p in vectors], lr=group["lr"], betas=group["betas"],
                           eps=group["eps"], weight_decay=group["weight_decay"])
            if fresh:
                self._init_matrices(list(fresh.items()), group)
            for (shape, dtype, _, _), params in buckets.items():
                self._update_matrices(params, shape, dtype, group, tag=(gi, shape, dtype, tuple(map(id, params))))
        return loss

    def _sides(self, shape: tuple[int, int], group: Mapping[str, Any]) -> tuple[bool, bool]:
        """Whether the left (rows) and right (columns) side of a (m, n) matrix get a factor and a basis."""
        left, right = shape[0] <= group["max_precond_dim"], shape[1] <= group["max_precond_dim"]
        if group["one_sided"] and left and right:
            return shape[0] <= shape[1], shape[0] > shape[1]
        return left, right

    def _init_matrices(self, buckets: list[tuple[tuple[Any, ...], list[torch.Tensor]]],
                       group: Mapping[str, Any]) -> None:
        """SOAP's first step: factors from the first gradient, bases by eigh, zero moments; no parameter update.

        The eigendecompositions of every bucket are batched by factor size (one eigh per size, not per bucket side).
        """
        sb = group["shampoo_beta"]
        factors: list[tuple[list[torch.Tensor], str, torch.Tensor]] = []  # (params, side, (B, d, d) factor)
        for (shape, dtype, _), params in buckets:
            g = stack_grads(params, shape, dtype)  # (B, m, n)
            left, right = self._sides(shape, group)
            if left:
                factors.append((params, "L", torch.bmm(g, g.mT).mul_(1 - sb)))  # (B, m, m)
            if right:
                factors.append((params, "R", torch.bmm(g.mT, g).mul_(1 - sb)))  # (B, n, n)
            for p in params:
                st = self.state[p]
                st["step"] = 0  # Adam steps taken; the initialisation step is not one
                st["exp_avg"] = torch.zeros(shape, dtype=dtype, device=p.device)
                st["exp_avg_sq"] = torch.zeros(shape, dtype=dtype, device=p.device)
        bases = batched_by_size(eigh_descending, [f for _, _, f in factors])
        for (params, side, f), q in zip(factors, bases):
            for i, p in enumerate(params):
                self.state[p][f"GG_{side}"] = f[i].clone()
                self.state[p][f"Q_{side}"] = q[i].clone()

    def _update_matrices(self, params: list[torch.Tensor], shape: tuple[int, int], dtype: torch.dtype,
                         group: Mapping[str, Any], *, tag: Any) -> None:
        """One SOAP step for a bucket of equally shaped matrices, batched over the bucket."""
        states = [self.state[p] for p in params]
        left, right = self._sides(shape, group)
        keys = ["exp_avg", "exp_avg_sq"] + (["GG_L", "Q_L"] if left else []) + (["GG_R", "Q_R"] if right else [])
        s = self._stacks.get(tag, params, states, keys)
        g = stack_grads(params, shape, dtype)  # (B, m, n)
        ql, qr = s.get("Q_L"), s.get("Q_R")
        beta1, beta2 = group["betas"]
        lr, eps, sb = group["lr"], group["eps"], group["shampoo_beta"]
        for st in states:
            st["step"] += 1
        t = states[0]["step"]  # the bucket's (buckets are keyed by step count)

        g_rot = _rotate(g, ql, qr)  # (B, m, n) gradient in the eigenbasis
        m, v = s["exp_avg"], s["exp_avg_sq"]
        m.lerp_(g_rot, 1 - beta1)
        v.mul_(beta2).addcmul_(g_rot, g_rot, value=1 - beta2)
        upd = v.div(1 - beta2**t).sqrt_().add_(eps)
        torch.div(m, upd, out=upd)  # (B, m, n): Adam's direction in the eigenbasis, before 1 / (1 - beta1^t)
        upd = _unrotate(upd, ql, qr)
        apply_update(params, list(upd.unbind(0)), alpha=-lr / (1 - beta1**t), decay=1 - lr * group["weight_decay"])

        if left:
            s["GG_L"].baddbmm_(g, g.mT, beta=sb, alpha=1 - sb)
        if right:
            s["GG_R"].baddbmm_(g.mT, g, beta=sb, alpha=1 - sb)
        if t % group["precondition_frequency"] == 0:
            self._refresh(s, left, right, exact=group["refresh"] == "eigh")

    @staticmethod
    def _refresh(s: dict[str, torch.Tensor], left: bool, right: bool, *, exact: bool) -> None:
        """Refresh the bases of a whole bucket in place.

        The first moment goes back to parameter coordinates with the old bases and into the new ones; the second
        moment is re-ordered to follow the eigenvalue order of each side (SOAP's reference code).
        """
        ql, qr = (s["Q_L"] if left else None), (s["Q_R"] if right else None)
        m_orig = _unrotate(s["exp_avg"], ql, qr)  # (B, m, n) in parameter coordinates
        v = s["exp_avg_sq"]
        new = {}
        for side, q, dim in (("L", ql, 1), ("R", qr, 2)):
            if q is None:
                continue
            f = s[f"GG_{side}"]  # (B, d, d)
            fq = torch.bmm(f, q)
            est = (q * fq).sum(dim=1)  # (B, d): diag(Q^T F Q), the eigenvalue estimates of the old basis
            order = est.argsort(dim=-1, descending=True)
            # Rows (L) or columns (R) of V follow the order. gather with an expanded index: take_along_dim would
            # also normalise negative indices, a full extra pass over the index.
            v = v.gather(dim, order.unsqueeze(3 - dim).expand_as(v))
            if exact:
                new[side] = eigh_descending(f)
            else:
                fq = fq.gather(2, order.unsqueeze(1).expand_as(fq))  # F Q[:, order]
                new[side] = torch.linalg.qr(fq).Q
        for side, q in new.items():  # after both sides: the old bases are read above
            s[f"Q_{side}"].copy_(q)
        s["exp_avg_sq"].copy_(v)
        s["exp_avg"].copy_(_rotate(m_orig, new.get("L"), new.get("R")))


DEFAULTS: Mapping[str, Any] = {
    "lr": 1e-2, "beta1": 0.95, "beta2": 0.95, "shampoo_beta": 0.95, "eps": 1e-8, "weight_decay": 0.01,
    "precondition_frequency": 10, "max_precond_dim": 2048, "one_sided": False, **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> SOAP:
    return SOAP(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), shampoo_beta=hp["shampoo_beta"],
                eps=hp["eps"], weight_decay=hp["weight_decay"], precondition_frequency=hp["precondition_frequency"],
                max_precond_dim=hp["max_precond_dim"], one_sided=hp["one_sided"])


soap = SubmissionSpec(
    name="soap", factory=with_schedule(_make), defaults=DEFAULTS, search_space_file=search_space_file("soap"),
    paper="Vyas et al. 2024, arXiv 2409.11321",
)
