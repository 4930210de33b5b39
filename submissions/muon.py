"""Muon: momentum orthogonalised by Newton-Schulz for hidden matrices, AdamW for everything else.

References:
  Jordan, Jin, Boza, You, Cesista, Newhouse & Bernstein, "Muon: An optimizer for hidden layers in neural networks",
    2024, kellerjordan.github.io/posts/muon (and the author's reference code, github.com/KellerJordan/Muon).
  Bernstein & Newhouse, "Old Optimizer, New Norm: An Anthology", 2024 (arXiv 2409.20325): steepest descent under
    the spectral norm, whose step is the orthogonalised gradient.
  Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019: the AdamW part.

For a hidden matrix W (m, n) with gradient G (a conv kernel (out, in, kh, kw) is flattened to (out, in*kh*kw)):

    B <- mu B + (1 - mu) G                              (momentum, as an EMA)
    U = mu B + (1 - mu) G    (nesterov)   or   U = B    (plain)
    O = NewtonSchulz5(U)                                ~ the orthogonal polar factor U (U^T U)^-1/2
    W <- W * (1 - lr * wd) - lr * max(1, m / n)^0.5 * O

NewtonSchulz5: X = U / (||U||_F + 1e-7) (transposed first when m > n, so that X X^T is the small Gram matrix), then
``ns_steps`` times X <- a X + (b A + c A^2) X with A = X X^T and (a, b, c) = (3.4445, -4.7750, 2.0315). This quintic
is tuned to push every singular value into roughly [0.7, 1.2] fast rather than to converge to exactly 1, so O is
only approximately orthogonal. The learning-rate scale max(1, m/n)^0.5 (m = fan-out rows, n = fan-in columns) is
the author's current convention: it makes tall matrices' steps as large per entry as square ones'.

Routing by parameter role (optbench.plugins.roles: the workload names each parameter's role; a model without named
roles is classified by module type):
  * Muon: the ``hidden`` matrices (nn.Linear and convolution weights inside the body).
  * AdamW (adam_lr, adam_beta1, adam_beta2, adam_eps, weight_decay): every other role: ``embedding`` (nn.Embedding
    weights, a tied head, free-standing tables such as a hand-made position embedding), ``head`` (the output layer)
    and ``norm_bias`` (biases, norm gains).
  * Without named roles the output head is the last nn.Linear in registration order, unless it maps back to the
    width of an nn.Embedding (out_features == embedding_dim): then the model ends in its residual stream and reads
    logits off a tied embedding (GPT's tied head), and the last Linear is a hidden layer.
  On ``linreg`` the model is one bias-free nn.Linear(d, 1): it is the output head, so Muon runs plain AdamW there
  and reaches the target through ``adam_lr``. (Orthogonalising a 1 x d matrix would give normalised SGD, g/||g||,
  which is not what Muon is for.)

Newton-Schulz runs in bfloat16 on CUDA (as in the reference code), in float32 on CPUs, where bfloat16 matmuls are
70-150x slower without bf16 units; ``ns_dtype`` ("auto", "bfloat16", "float32") overrides. Matrices of equal shape
are orthogonalised together with batched matmuls. State (momentum, Adam moments) is float32 for bf16 parameters.

Cost: five Newton-Schulz iterations on an (m, n) matrix with r = min(m, n) take about 5 (4 r^2 max(m, n) + 2 r^3)
flops, against 6 m n T for the layer's forward and backward over T tokens: about 3.3 r / T of it, small at LM batch
sizes, about 1.1x AdamW's whole step on the small CPU LM of benchmarks/step_cost.py (T = 1024).

Defaults: Muon's lr 0.02, momentum 0.95, Nesterov, 5 steps are the author's; the AdamW part uses adam_lr 1e-2 with
betas (0.9, 0.95) (the author's betas; his small-model Adam lrs range 3e-4 to 8e-3 per parameter kind) so that
``linreg``, where everything is AdamW, reaches its target with the defaults.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
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
)
from optbench_submissions._linalg import adamw_step, apply_update, matrix_shape

NS_COEFFS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


def newton_schulz5(g: torch.Tensor, steps: int = 5, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Approximate orthogonalisation of a batch of matrices by the quintic Newton-Schulz iteration.

    Args:
      g: (B, m, n) matrices.
      steps: iterations (5 in the reference).
      dtype: dtype of the iteration (bfloat16 on GPUs, float32 on CPUs).
    Returns:
      (B, m, n) in ``dtype``, with singular values in roughly [0.7, 1.2] (zero ones stay zero).
    """
    a, b, c = NS_COEFFS
    x = g.to(dtype)
    tall = g.shape[-2] > g.shape[-1]
    if tall:
        x = x.mT  # (B, n, m): X X^T is then (n, n), the smaller Gram matrix
    x = x / (torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius <= 1
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)  # (B, r, r)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a, alpha=1.0)  # a X + (b A + c A^2) X
    return x.mT if tall else x


def lr_scale(shape: tuple[int, int]) -> float:
    """max(1, rows / cols)^0.5 for a (fan-out, fan-in) matrix (the reference code's shape scale)."""
    return max(1.0, shape[0] / shape[1]) ** 0.5


def route(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Split the trainable parameters of ``model`` into (Muon, AdamW) lists by role, each parameter once.

    Args:
      model: the whole model (its roles: :func:`optbench.plugins.roles.roles_of`).
    Returns:
      (muon_params, adamw_params): the ``hidden`` parameters and the rest, in :func:`named_params` order.
    """
    roles = roles_of(model)
    muon, adamw = [], []
    for name, p in named_params(model):
        (muon if roles[name] is Role.HIDDEN else adamw).append(p)
    return muon, adamw


class Muon(Float32StateOptimizer):
    """Muon for ``muon_params``, AdamW for ``adam_params`` (two parameter groups; see the module docstring).

    Args:
      muon_params: 2-D (or conv) hidden weights.
      adam_params: everything else.
      lr: Muon's learning rate.
      momentum, nesterov, ns_steps: Muon's momentum, its Nesterov variant, Newton-Schulz iterations.
      adam_lr, adam_betas, adam_eps: the AdamW group's hyperparameters.
      weight_decay: decoupled weight decay of both groups (multiplied by each group's lr).
      ns_dtype: "auto" (bfloat16 on CUDA, float32 elsewhere), "bfloat16" or "float32".
    """

    def __init__(self, muon_params: Iterable[nn.Parameter], adam_params: Iterable[nn.Parameter], *, lr: float = 0.02,
                 momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5, adam_lr: float = 1e-2,
                 adam_betas: tuple[float, float] = (0.9, 0.95), adam_eps: float = 1e-10, weight_decay: float = 0.0,
                 ns_dtype: str = "auto") -> None:
        if lr < 0 or adam_lr < 0 or weight_decay < 0 or not 0 <= momentum < 1 or int(ns_steps) < 0:
            raise ValueError(f"invalid Muon hyperparameters lr={lr} adam_lr={adam_lr} momentum={momentum} "
                             f"ns_steps={ns_steps} weight_decay={weight_decay}")
        if ns_dtype != "auto" and ns_dtype not in NS_DTYPES:
            raise ValueError(f"ns_dtype must be 'auto' or one of {sorted(NS_DTYPES)}, got {ns_dtype!r}")
        groups = [
            dict(params=list(muon_params), use_muon=True, lr=lr, momentum=momentum, nesterov=bool(nesterov),
                 ns_steps=int(ns_steps), ns_dtype=ns_dtype, weight_decay=weight_decay),
            dict(params=list(adam_params), use_muon=False, lr=adam_lr, betas=tuple(adam_betas), eps=adam_eps,
                 weight_decay=weight_decay),
        ]
        super().__init__([g for g in groups if g["params"]], {})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            if group["use_muon"]:
                self._muon_step(params, group)
            else:
                adamw_step(params, [self.state[p] for p in params], lr=group["lr"], betas=group["betas"],
                           eps=group["eps"], weight_decay=group["weight_decay"])
        return loss

    def _muon_step(self, params: list[torch.Tensor], group: Mapping[str, Any]) -> None:
        """Momentum for every matrix with foreach kernels, then Newton-Schulz batched over equal shapes."""
        mu = group["momentum"]
        states = [self.state[p] for p in params]
        for p, st in zip(params, states):
            if not st:
                st["momentum_buffer"] = torch.zeros_like(p, dtype=state_dtype(p), memory_format=torch.contiguous_format)
        bufs = [st["momentum_buffer"] for st in states]
        grads = [p.grad.to(b.dtype) for p, b in zip(params, bufs)]
        torch._foreach_lerp_(bufs, grads, 1 - mu)
        updates = torch._foreach_lerp(grads, bufs, mu) if group["nesterov"] else bufs
        buckets: dict[tuple[Any, ...], list[int]] = {}
        for i, (p, u) in enumerate(zip(params, updates)):
            buckets.setdefault((matrix_shape(p), u.dtype, p.device), []).append(i)
        lr, decay = group["lr"], 1 - group["lr"] * group["weight_decay"]
        for (shape, dtype, device), idx in buckets.items():
            ns_dtype = group["ns_dtype"]
            if ns_dtype == "auto":
                ns_dtype = "bfloat16" if device.type == "cuda" else "float32"
            stacked = torch.stack([updates[i].reshape(shape) for i in idx])  # (B, m, n)
            ortho = newton_schulz5(stacked, group["ns_steps"], NS_DTYPES[ns_dtype]).to(dtype)
            apply_update([params[i] for i in idx], list(ortho.unbind(0)), alpha=-lr * lr_scale(shape), decay=decay)


DEFAULTS: Mapping[str, Any] = {
    "lr": 0.02, "momentum": 0.95, "nesterov": True, "ns_steps": 5, "adam_lr": 1e-2, "adam_beta1": 0.9,
    "adam_beta2": 0.95, "adam_eps": 1e-10, "weight_decay": 0.0, "ns_dtype": "auto", **SCHEDULE_DEFAULTS,
}


def _make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> Muon:
    muon_params, adam_params = route(model)
    return Muon(muon_params, adam_params, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"],
                ns_steps=hp["ns_steps"], adam_lr=hp["adam_lr"], adam_betas=(hp["adam_beta1"], hp["adam_beta2"]),
                adam_eps=hp["adam_eps"], weight_decay=hp["weight_decay"], ns_dtype=hp["ns_dtype"])


muon = SubmissionSpec(
    name="muon", factory=with_schedule(_make), defaults=DEFAULTS, search_space_file=search_space_file("muon"),
    paper="Jordan et al. 2024, kellerjordan.github.io/posts/muon",
)
