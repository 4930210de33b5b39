"""DoG and LDoG ("Distance over Gradients"): SGD whose step size is the distance travelled over the gradient norms.

References:
  Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free Dynamic Step Size Schedule", ICML 2023
  (arXiv 2302.12022), equation (1) (DoG) and Section 3.3 (layer-wise LDoG); reference code github.com/formll/dog.

At step t = 0, 1, ... with gradient g_t (plus wd * x_t: L2 weight decay, as in the reference) and multiplier c = lr:

    rbar_t = max(r_eps, max_{i<=t} ||x_i - x_0||),     r_eps = reps_rel * (1 + ||x_0||)
    G_t    = sum_{i<=t} ||g_i||^2   (+ eps once, at t = 0)
    eta_t  = c * rbar_t / sqrt(G_t)
    x_{t+1} = x_t - eta_t g_t

DoG treats the whole model as one vector (norms over all parameters); LDoG applies the same rule to each parameter
tensor separately (its own x_0 distance, r_eps and G). No momentum and no external schedule: eta_t is its own
schedule, so there is no ``with_schedule`` (the paper uses none either).

Evaluation (``Capability.EVAL_PARAMS``), as in the paper's experiments: the polynomial-decay average of Shamir &
Zhang (2013) with gamma = ``average`` (the paper's 8; 0 turns it off and evaluates x_t),

    xbar_t = (1 - w_t) xbar_{t-1} + w_t x_t,    w_t = (1 + gamma) / (t + gamma),   t = 1, 2, ... (xbar_1 = x_1),

kept in float32 state and swapped in by :meth:`DoG.eval_params` (the training iterate is copied aside and back, so
the swap is exact).

Defaults: reps_rel = 1e-6 (the paper's; 1e-4 is its advice for batch-norm models), averaging gamma = 8, but
c = lr = 2, not the paper's 1: on linreg tiny, c = 1 misses the target within the 3000-step budget (excess risk
0.097 at step 2900 with averaging, 0.106 at 3000 without; rbar, the distance travelled, keeps growing, so eta_t
only reaches 0.007 at step 500 and 0.013 at 3000 where SGD's good lr is 0.01-0.02), c = 1.5 reaches it at ~1950,
c = 2 at ~1750 (seeds 0-2). At c = 2 eta_t settles near 0.018, the edge of SGD's stability on that problem
(2 / (lambda_max + tr H / B) ~ 0.019): the raw iterate has bursts the average absorbs, so keep averaging on with
c > 1. Neither reads anything back to the host in a step: DoG keeps rbar and G as 0-d float64 tensors on the
parameters' device (the same float64 arithmetic as Python floats, max as torch.maximum), LDoG per tensor in its state;
the norms take one ``_foreach_norm``, the update one ``_foreach_mul`` and ``_foreach_sub_``, the average one
``_foreach_lerp_``. Only with eps = 0, where the first G can be 0, is it checked, once, at the first step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from optbench.api import Capability, SubmissionSpec, TrialInfo, named_params
from optbench.errors import UsageError
from optbench_submissions._common import (
    Float32StateOptimizer,
    device_scalar,
    foreach_scalar,
    groups_with_grads,
    run_closure,
    search_space_file,
)


def _wide(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 at least (a copy only for bf16/fp16)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _sq_norms(tensors: list[torch.Tensor]) -> torch.Tensor:
    """(n,) squared L2 norms of ``tensors``, taken in float32 at least, by one ``_foreach_norm``."""
    return torch.stack(torch._foreach_norm([_wide(t) for t in tensors])).square()


def _dist_sq(params: list[torch.Tensor], x0: list[torch.Tensor]) -> torch.Tensor:
    """(n,) squared distances ||x - x_0||^2 per tensor, the difference taken in float32 at least."""
    return _sq_norms(torch._foreach_sub([_wide(p) for p in params], [_wide(x) for x in x0]))


class DoG(Float32StateOptimizer):
    """DoG (``layerwise=False``) or LDoG (``layerwise=True``).

    State: per parameter ``x0`` (the starting point) and ``avg`` (the average, with ``average > 0``); for LDoG also
    ``rbar`` and ``G`` (0-d tensors, float32 at least); for DoG the group holds ``rbar`` and ``G`` (0-d float64 tensors
    on the parameters' device once stepped); ``k`` counts the group's steps.

    Args:
      params: parameters or parameter groups (DoG's norms run over one group).
      lr: the multiplier c of the step size (the paper's 1.0; see the module docstring for the default of 2).
      reps_rel: r_eps relative to 1 + ||x_0||.
      eps: added to the first G.
      weight_decay: L2 weight decay added to the gradient.
      layerwise: LDoG.
      average: gamma of the polynomial-decay average used by :meth:`eval_params` (0: no average).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1.0,
        reps_rel: float = 1e-6,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        layerwise: bool = False,
        average: float = 0.0,
    ) -> None:
        if lr <= 0 or reps_rel <= 0 or eps < 0 or weight_decay < 0 or average < 0:
            raise ValueError(f"invalid DoG hyperparameters lr={lr} reps_rel={reps_rel} eps={eps} wd={weight_decay} "
                             f"average={average}")
        defaults = dict(lr=lr, reps_rel=reps_rel, eps=eps, weight_decay=weight_decay, layerwise=layerwise,
                        average=average, k=0, rbar=0.0, G=0.0)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = run_closure(closure)
        for group, params in groups_with_grads(self.param_groups):
            first = group["k"] == 0
            for p in params:
                if "x0" not in self.state[p]:
                    self.state[p]["x0"] = p.detach().clone()
            grads = [p.grad for p in params]
            if group["weight_decay"] != 0:
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            if group["layerwise"]:  # one 0-d eta per tensor (float32 at least: it does not promote g's dtype)
                steps = torch._foreach_mul(grads, self._ldog_etas(group, params, grads, first))  # eta_i g_i
            else:
                eta = self._dog_eta(group, params, grads, first)
                steps = torch._foreach_mul(grads, foreach_scalar(eta, grads))  # eta g
            torch._foreach_sub_(params, steps)
            group["k"] += 1
            if group["average"] > 0:
                self._update_average(group, params)
        return loss

    def _update_average(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """xbar_t = (1 - w) xbar_{t-1} + w x_t with w = (1 + gamma) / (t + gamma), t = 1, 2, ... (xbar_1 = x_1)."""
        gamma, t = group["average"], group["k"]
        w = (1 + gamma) / (t + gamma)
        have = [p for p in params if "avg" in self.state[p]]
        if have:  # one foreach lerp, not a kernel per parameter
            torch._foreach_lerp_([self.state[p]["avg"] for p in have], [_wide(p) for p in have], w)
        for p in params:
            if "avg" not in self.state[p]:
                self.state[p]["avg"] = _wide(p.detach()).clone()

    @contextmanager
    def eval_params(self) -> Iterator[None]:
        """Hold the polynomial-decay average in the parameters inside the block (a no-op with ``average=0``).

        The training iterate is copied aside on enter and copied back on exit, so the swap is exact.
        """
        saved: list[tuple[torch.Tensor, torch.Tensor]] = []
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    avg = self.state.get(p, {}).get("avg")
                    if avg is not None and group["average"] > 0:
                        saved.append((p, p.detach().clone()))
                        p.copy_(avg)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, x in saved:
                    p.copy_(x)

    def _dog_eta(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
                 first: bool) -> torch.Tensor:
        """eta_t for the whole group, norms over all of its parameters: 0-d float64 on the device.

        rbar and G live in the group as 0-d float64 device tensors (a fresh group's floats are filled in at its first
        step), so the step reads nothing back to the host.
        """
        device = params[0].device
        x0 = [self.state[p]["x0"] for p in params]
        g_sq = _sq_norms(grads).sum().double()
        if first:
            x_norm = _sq_norms(x0).sum().double().sqrt()
            rbar = group["reps_rel"] * (1 + x_norm)
            G = g_sq + group["eps"]
            if group["eps"] <= 0:  # only then can G be 0: checked once, at the first step (one host read)
                self._check_first_gradient(G)
        else:
            dist = _dist_sq(params, x0).sum().double().sqrt()
            rbar = torch.maximum(device_scalar(group["rbar"], device), dist)
            G = device_scalar(group["G"], device) + g_sq
        group["rbar"], group["G"] = rbar, G  # new tensors, never updated in place (a saved state_dict keeps them)
        return group["lr"] * rbar / G.sqrt()

    @staticmethod
    def _check_first_gradient(G: torch.Tensor) -> None:
        if not bool(G > 0):
            raise RuntimeError("DoG needs a nonzero first gradient (sum of squared gradients is 0)")

    def _ldog_etas(self, group: dict[str, Any], params: list[torch.Tensor], grads: list[torch.Tensor],
                   first: bool) -> list[torch.Tensor]:
        """Per-tensor eta_t (LDoG); rbar and G live in each parameter's state as 0-d tensors (float32 at least)."""
        g_sq = _sq_norms(grads)  # (n,)
        if first:
            r = group["reps_rel"] * (1 + _sq_norms([self.state[p]["x0"] for p in params]).sqrt())
            G = g_sq + group["eps"]
        else:
            dist = _dist_sq(params, [self.state[p]["x0"] for p in params]).sqrt()
            r = torch.maximum(torch.stack([self.state[p]["rbar"] for p in params]), dist)
            G = torch.stack([self.state[p]["G"] for p in params]) + g_sq
        for p, r_i, g_i in zip(params, r.unbind(), G.unbind()):  # views of r and G: no copy kernel per parameter
            self.state[p]["rbar"], self.state[p]["G"] = r_i, g_i
        eta = group["lr"] * r / G.sqrt()  # (n,)
        return list(eta.unbind())



DEFAULTS: Mapping[str, Any] = {"lr": 2.0, "reps_rel": 1e-6, "eps": 1e-8, "weight_decay": 0.0, "average": 8.0}


def _make(layerwise: bool) -> Callable[[nn.Module, Mapping[str, Any], TrialInfo], DoG]:
    def make(model: nn.Module, hp: Mapping[str, Any], info: TrialInfo) -> DoG:
        """One parameter group with every trainable parameter (DoG: one distance for the model; LDoG: per tensor).

        Raises:
          UsageError: a hyperparameter out of range.
        """
        try:
            return DoG([p for _, p in named_params(model)], lr=hp["lr"], reps_rel=hp["reps_rel"], eps=hp["eps"],
                       weight_decay=hp["weight_decay"], layerwise=layerwise, average=hp["average"])
        except ValueError as exc:
            raise UsageError(f"{'ldog' if layerwise else 'dog'}: {exc}") from None

    return make


dog = SubmissionSpec(
    name="dog", factory=_make(False), defaults=DEFAULTS, capabilities=frozenset({Capability.EVAL_PARAMS}),
    search_space_file=search_space_file("dog"),
    paper="Ivgi, Hinder & Carmon 2023, DoG is SGD's Best Friend, arXiv 2302.12022",
)
ldog = SubmissionSpec(
    name="ldog", factory=_make(True), defaults=DEFAULTS, capabilities=frozenset({Capability.EVAL_PARAMS}),
    search_space_file=search_space_file("dog"),
    paper="Ivgi, Hinder & Carmon 2023, arXiv 2302.12022 (layer-wise DoG)",
)
