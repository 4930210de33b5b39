"""Curvature and gradient-noise diagnostics, measured off the clock at evaluations.

* **Sharpness**: the top eigenvalue of the Hessian of the training loss on a fixed batch, by power iteration on
  Hessian-vector products (double backward; no Hessian is formed). Gradient descent with learning rate lr is stable
  on a quadratic only while sharpness < 2/lr: Cohen et al. (2021) find full-batch GD rises to that line (progressive
  sharpening) and hovers there (the edge of stability). For Adam the relevant quantity is the sharpness of the
  *preconditioned* Hessian P^-1 H, P = diag(sqrt(v_hat) + eps), against (2 + 2 beta1) / ((1 - beta1) lr) (Cohen et
  al. 2022, "Adaptive Gradient Methods at the Edge of Stability").
* **Gradient noise scale**: McCandlish et al. (2018), "An Empirical Model of Large-Batch Training": the simple noise
  scale B_simple = tr(Sigma) / |G|^2 (Sigma the per-example gradient covariance, G the true gradient), the batch size
  beyond which larger batches stop cutting the number of steps much. Estimated without per-example gradients from
  k batches of size b (their mean is a batch of size k b), with E|G_b|^2 = |G|^2 + tr(Sigma)/b:
  |G|^2 ~ (B |G_B|^2 - b |G_b|^2) / (B - b) and tr(Sigma) ~ (|G_b|^2 - |G_B|^2) / (1/b - 1/B), B = k b (their
  appendix A.1), |G_b|^2 averaged over the k small batches.

Both work on any batch a trial can train on: a batch is taken in micro-batches of the trial's micro-batch size,
each one's mean loss weighted by its share w_i = n_i / N of the batch's tokens (as
:mod:`optbench.engine.stepping` weights them), so the Hessian-vector product H v = sum_i w_i H_i v and each noise-scale
gradient G = sum_i w_i G_i are the whole batch's without its activations in memory at once. The Hessian-vector
product runs attention on the math backend: the fused SDPA kernels (flash, memory-efficient, and the CPU flash kernel)
have no double backward (pytorch/pytorch#116350).

Everything here leaves the model as it was: it runs with ``torch.autograd.grad`` (the parameters' ``.grad`` are
not touched) in eval mode (no dropout; batch-norm statistics are read, not updated, so micro-batches change
nothing), and draws from its own generator, so a trial's data order is the same with or without diagnostics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from optbench.api import Task, named_params
from optbench.engine.batches import batch_length, micro_ranges, slice_batch

Vector = list[torch.Tensor]
LossFn = Callable[[], torch.Tensor]
WeightedLosses = Sequence[tuple[LossFn, float]]  # a loss as sum_i w_i loss_i, e.g. over micro-batches


def _dot(a: Vector, b: Vector) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))  # type: ignore[return-value]


def _normalize(v: Vector) -> Vector:
    norm = torch.sqrt(_dot(v, v))
    return [x / norm for x in v]


def micro_batches(task: Task, batch: Any, micro: int | None) -> list[tuple[Any, float]]:
    """``batch`` in micro-batches of at most ``micro`` examples, each with its share of the batch's tokens (the
    weights of :meth:`optbench.engine.stepping.Stepper.plan`); the whole batch with weight 1 when ``micro`` is None
    or not smaller than the batch."""
    if micro is None:
        return [(batch, 1.0)]
    ranges = micro_ranges(0, batch_length(batch), micro)
    if len(ranges) == 1:
        return [(batch, 1.0)]
    total = task.counts(batch)[1]
    parts = [slice_batch(task, batch, a, b) for a, b in ranges]
    return [(mb, task.counts(mb)[1] / total) for mb in parts]


def _weighted(loss_fn: LossFn | WeightedLosses) -> WeightedLosses:
    return [(loss_fn, 1.0)] if callable(loss_fn) else loss_fn


def _hvp_once(loss_fn: LossFn, params: Sequence[torch.Tensor], v: Vector) -> Vector:
    # Math attention for the forward and both backwards: the fused kernels have no double backward, and a
    # checkpointed region (the chunked LM loss) is recomputed inside the first backward.
    with torch.enable_grad(), sdpa_kernel(SDPBackend.MATH):
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        hv = torch.autograd.grad(grads, params, grad_outputs=v, allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for h, p in zip(hv, params)]


def hessian_vector_product(loss_fn: LossFn | WeightedLosses, params: Sequence[torch.Tensor],
                           v: Vector) -> Vector:
    """H v for the Hessian H of ``loss_fn()`` with respect to ``params`` (Pearlmutter 1994, "Fast Exact
    Multiplication by the Hessian": one forward, two backwards).

    ``loss_fn`` may be weighted pieces [(loss_i, w_i)] of the loss sum_i w_i loss_i (a batch's micro-batches): the
    Hessian is linear in the loss, so H v = sum_i w_i H_i v, one piece's graph in memory at a time.
    """
    total = [torch.zeros_like(p) for p in params]
    for fn, w in _weighted(loss_fn):
        for t, h in zip(total, _hvp_once(fn, params, v)):
            t.add_(h, alpha=w)
    return total


def top_hessian_eigenvalue(loss_fn: LossFn | WeightedLosses, params: Sequence[torch.Tensor], *,
                           generator: torch.Generator, iters: int = 50, tol: float = 1e-4,
                           preconditioner: Vector | None = None) -> float:
    """The Hessian eigenvalue of largest magnitude by power iteration (its Rayleigh quotient; normally the top one).

    Args:
      loss_fn: the loss as a function of the current parameters (a fixed batch: deterministic), or its
        weighted micro-batch pieces (see :func:`hessian_vector_product`).
      params: the parameters.
      generator: draws the start vector (a CPU generator).
      iters: at most this many Hessian-vector products.
      tol: stop once the estimate changes by less than ``tol`` relatively.
      preconditioner: optional diagonal P (one tensor per parameter, positive): the eigenvalue of P^-1 H,
        computed on the symmetric P^-1/2 H P^-1/2.
    Returns:
      The eigenvalue estimate.
    """
    scale = [p.rsqrt() for p in preconditioner] if preconditioner is not None else None
    v = _normalize([torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params])
    estimate = math.nan
    for _ in range(iters):
        u = [x * s for x, s in zip(v, scale)] if scale else v
        hv = hessian_vector_product(loss_fn, params, u)
        if scale:
            hv = [h * s for h, s in zip(hv, scale)]
        new = float(_dot(v, hv))
        norm = float(torch.sqrt(_dot(hv, hv)))
        if norm == 0.0 or not math.isfinite(norm):
            return new
        v = [h / norm for h in hv]
        if math.isfinite(estimate) and abs(new - estimate) <= tol * abs(new):
            return new
        estimate = new
    return estimate


def _gradient(task: Task, model: nn.Module, batch: Any, params: Sequence[torch.Tensor],
              micro: int | None) -> Vector:
    """The gradient of the batch's mean loss, accumulated over its micro-batches (sum_i w_i G_i)."""
    total = [torch.zeros_like(p) for p in params]
    for mb, w in micro_batches(task, batch, micro):
        with torch.enable_grad():
            g = torch.autograd.grad(task.loss(model, mb), params)
        for t, x in zip(total, g):
            t.add_(x, alpha=w)
    return total


def gradient_noise_scale(task: Task, model: nn.Module, *, batch_size: int, batches: int,
                         generator: torch.Generator, micro_batch_size: int | None = None) -> dict[str, float]:
    """McCandlish et al.'s simple noise scale from ``batches`` fresh batches of ``batch_size`` (see module docstring),
    each batch's gradient accumulated over micro-batches of ``micro_batch_size`` (None: one pass).

    Returns:
      ``grad_sq``: |G|^2, ``trace_cov``: tr(Sigma), ``noise_scale``: B_simple (NaN when |G|^2 <= 0, which the
      unbiased estimate can be when the gradient is small against its noise).
    """
    if batches < 2 or batch_size < 1:
        raise ValueError("the noise scale needs at least 2 batches of at least 1 example")
    params = [p for _, p in named_params(model)]
    small_sq = 0.0
    total: Vector = [torch.zeros_like(p) for p in params]
    for _ in range(batches):
        g = _gradient(task, model, task.next_batch(batch_size, generator), params, micro_batch_size)
        small_sq += float(_dot(g, g)) / batches
        total = [t + x / batches for t, x in zip(total, g)]
    b, big = float(batch_size), float(batch_size * batches)
    big_sq = float(_dot(total, total))
    grad_sq = (big * big_sq - b * small_sq) / (big - b)
    trace_cov = (small_sq - big_sq) / (1.0 / b - 1.0 / big)
    return {"grad_sq": grad_sq, "trace_cov": trace_cov,
            "noise_scale": trace_cov / grad_sq if grad_sq > 0 else math.nan}


def adam_preconditioner(updater: Any, params: Sequence[torch.Tensor]) -> Vector | None:
    """Adam's diagonal preconditioner sqrt(v_hat) + eps from an updater's state, or None if it keeps no
    ``exp_avg_sq`` (then only the plain sharpness is measured)."""
    groups = {id(p): g for g in getattr(updater, "param_groups", []) for p in g["params"]}
    state = getattr(updater, "state", {})
    out = []
    for p in params:
        st, g = state.get(p, {}), groups.get(id(p))
        if g is None or "exp_avg_sq" not in st or "betas" not in g:
            return None
        t = float(st.get("step", 1))
        v_hat = st["exp_avg_sq"] / (1.0 - g["betas"][1] ** max(t, 1.0))
        out.append(v_hat.sqrt() + g.get("eps", 0.0))
    return out


class Diagnostics:
    """The diagnostics of one trial: a fixed batch for the sharpness, its own generator for the noise scale.

    Args:
      task: the trial's task.
      seed: seeds the diagnostics' own generator (derive it from the trial's seed: never the data generator).
      batch_size: size of the fixed sharpness batch and of each noise-scale batch.
      micro_batch_size: examples per forward/backward pass (the trial's; None: each batch in one pass).
      noise_batches: batches per noise-scale estimate (0: skip it).
      iters: power-iteration steps at most.
    """

    def __init__(self, task: Task, *, seed: int, batch_size: int, micro_batch_size: int | None = None,
                 noise_batches: int = 8, iters: int = 30) -> None:
        self.task, self.batch_size, self.noise_batches, self.iters = task, batch_size, noise_batches, iters
        self.micro_batch_size = micro_batch_size
        self.generator = torch.Generator().manual_seed(seed)
        device = getattr(task, "device", torch.device("cpu"))
        self.data_gen = torch.Generator(device=device if torch.device(device).type == "cuda" else "cpu")
        self.data_gen.manual_seed(seed)
        self.batch = task.next_batch(batch_size, self.data_gen)
        self.pieces = micro_batches(task, self.batch, micro_batch_size)  # views of the batch, with their weights

    def measure(self, model: nn.Module, *, lr: float | None = None, updater: Any = None) -> dict[str, float]:
        """Sharpness beside 2/lr (when ``lr`` is given; and Adam's preconditioned sharpness when ``updater`` keeps
        its moments), and the noise scale, as floats for ``metrics_json``. The model's mode is restored on return."""
        was_training = model.training
        model.eval()
        try:
            params = [p for _, p in named_params(model)]
            loss_fn = [(self._loss_of(model, mb), w) for mb, w in self.pieces]
            out = {"sharpness": top_hessian_eigenvalue(loss_fn, params, generator=self.generator, iters=self.iters)}
            if lr is not None:
                out["eos_threshold"] = 2.0 / lr if lr > 0 else math.inf
            pre = adam_preconditioner(updater, params) if updater is not None and lr is not None else None
            if pre is not None:
                beta1 = float(updater.param_groups[0]["betas"][0])
                out["preconditioned_sharpness"] = top_hessian_eigenvalue(
                    loss_fn, params, generator=self.generator, iters=self.iters, preconditioner=pre)
                out["adaptive_eos_threshold"] = (2.0 + 2.0 * beta1) / ((1.0 - beta1) * lr) if lr > 0 else math.inf
            if self.noise_batches >= 2:
                out.update(gradient_noise_scale(self.task, model, batch_size=self.batch_size,
                                                batches=self.noise_batches, generator=self.data_gen,
                                                micro_batch_size=self.micro_batch_size))
            return out
        finally:
            model.train(was_training)

    def _loss_of(self, model: nn.Module, batch: Any) -> LossFn:
        return lambda: self.task.loss(model, batch)


def summary(metrics: Mapping[str, float]) -> str:
    """One line of a measurement, for logs."""
    return ", ".join(f"{k}={v:.4g}" for k, v in metrics.items())
