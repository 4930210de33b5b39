"""Weight averaging for any submission: an updater wrapper whose evaluation parameters are the averaged weights.

Two averages of the iterates w_1, w_2, ... (the parameters after each update):

* **EMA** with a half-life of ``h`` steps: a <- beta a + (1 - beta) w_t, beta = 2^(-1/h), started at the initial
  weights (so an iterate's weight halves every h steps).
* **Tail** (Polyak-Ruppert over the tail): the uniform mean of the iterates after step ``start``; before it, the
  current weights.

The harness evaluates at the averaged weights through :attr:`optbench.api.Capability.EVAL_PARAMS`:
:meth:`Averaged.eval_params` copies the average into the parameters and, on exit, copies the saved training
weights back bit for bit. The average is updated inside ``step``, so its cost is on the clock, like the swap.

References:
  Polyak & Juditsky, "Acceleration of Stochastic Approximation by Averaging", 1992 (tail averaging).
  Meterez, Nair, Morwani et al., "Anytime Pretraining: Horizon-Free Learning-Rate Schedules with Weight Averaging"
    (constant or 1/sqrt(t) learning rates plus averaging match a tuned cosine).
  Kaddour, "Stop Wasting My Time! Saving Days of ImageNet and BERT Training with Latest Weight Averaging", 2022.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from optbench.api import Capability, Submission, SubmissionSpec, TrialInfo, Updater, named_params
from optbench.plugins.wrapping import UpdaterWrapper

KINDS = ("none", "ema", "tail")
# Hyperparameters an averaged submission adds to its base's: which average, the EMA half-life in steps, and where the
# tail starts as a fraction of the workload's step_hint.
AVERAGING_DEFAULTS: Mapping[str, Any] = {"average": "ema", "ema_halflife": 100.0, "tail_frac": 0.5}


@dataclass(frozen=True, kw_only=True)
class AveragingSpec:
    """Which average: ``kind`` ``"ema"`` (``halflife`` in steps), ``"tail"`` (mean after step ``start``) or ``"none"``."""

    kind: str
    halflife: float = 100.0
    start: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown average {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "ema" and not (math.isfinite(self.halflife) and self.halflife > 0):
            raise ValueError(f"ema_halflife must be a positive number of steps, got {self.halflife!r}")
        if self.start < 0:
            raise ValueError(f"the tail must start at a step >= 0, got {self.start}")

    @property
    def beta(self) -> float:
        """The EMA's decay per step, 2^(-1/halflife)."""
        return 0.5 ** (1.0 / self.halflife)


def _average_dtype(p: torch.Tensor) -> torch.dtype:
    return torch.float32 if p.dtype in (torch.bfloat16, torch.float16) else p.dtype


class Averaged(UpdaterWrapper):
    """An updater that keeps an average of the weights it produces and evaluates at it (see the module docstring).

    Args:
      updater: the submission's updater (``torch.optim.Optimizer`` interface).
      model: the model whose trainable parameters are averaged (each shared tensor once).
      spec: which average.
    """

    def __init__(self, updater: Any, model: nn.Module, spec: AveragingSpec) -> None:
        super().__init__(updater)
        self.spec = spec
        self.params = [p for _, p in named_params(model)]
        self.avg = [p.detach().to(_average_dtype(p), copy=True) for p in self.params]
        self.t = 0  # updates done
        self.n = 0  # iterates in the tail mean

    # ----- the Optimizer interface (the rest is forwarded by UpdaterWrapper) -----------------------------------
    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        out = self.inner.step(closure) if closure is not None else self.inner.step()
        self.t += 1
        self._accumulate()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"updater": self.inner.state_dict(), "avg": [a.clone() for a in self.avg], "t": self.t, "n": self.n}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.inner.load_state_dict(state_dict["updater"])
        for a, saved in zip(self.avg, state_dict["avg"], strict=True):
            a.copy_(saved)
        self.t, self.n = int(state_dict["t"]), int(state_dict["n"])

    # ----- the average --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate(self) -> None:
        if self.spec.kind == "ema":
            beta = self.spec.beta
            for a, p in zip(self.avg, self.params):
                a.lerp_(p.detach().to(a.dtype), 1.0 - beta)
        elif self.spec.kind == "tail" and self.t > self.spec.start:
            self.n += 1
            for a, p in zip(self.avg, self.params):
                if self.n == 1:
                    a.copy_(p.detach())
                else:
                    a.lerp_(p.detach().to(a.dtype), 1.0 / self.n)

    def averaging(self) -> bool:
        """Whether evaluation uses the average now (never for ``none``, nor before a tail has an iterate)."""
        return self.spec.kind == "ema" or (self.spec.kind == "tail" and self.n > 0)

    @contextlib.contextmanager
    def eval_params(self) -> Iterator[None]:
        """Put the averaged weights into the model; on exit, restore the training weights exactly."""
        if not self.averaging():
            yield
            return
        with torch.no_grad():
            saved = [p.detach().clone() for p in self.params]
            for p, a in zip(self.params, self.avg):
                p.copy_(a)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, s in zip(self.params, saved):
                    p.copy_(s)


def wrap(updater: Any, model: nn.Module, spec: AveragingSpec) -> Averaged:
    """``updater`` with the average ``spec`` of ``model``'s weights, evaluated through ``eval_params()``."""
    return Averaged(updater, model, spec)


def spec_from_hparams(hparams: Mapping[str, Any], *, step_hint: int) -> AveragingSpec:
    """The averaging asked for by ``average``, ``ema_halflife`` (steps) and ``tail_frac`` (of ``step_hint``)."""
    given = {**AVERAGING_DEFAULTS, **hparams}
    try:
        halflife, frac = float(given["ema_halflife"]), float(given["tail_frac"])
    except (TypeError, ValueError):
        raise ValueError("ema_halflife and tail_frac must be numbers") from None
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"tail_frac must be in [0, 1], got {given['tail_frac']!r}")
    return AveragingSpec(kind=str(given["average"]), halflife=halflife, start=int(round(frac * step_hint)))


def averaged_submission(base: Submission, *, name: str | None = None) -> SubmissionSpec:
    """``base`` with weight averaging: its hyperparameters plus :data:`AVERAGING_DEFAULTS`, evaluated at the average.

    Raises:
      ValueError: ``base`` already swaps its own evaluation parameters (Schedule-Free): two swaps do not compose.
    """
    if Capability.EVAL_PARAMS in base.capabilities:
        raise ValueError(f"{base.name!r} already evaluates at its own parameters; it cannot be averaged as well")

    def factory(model: nn.Module, hparams: Mapping[str, Any], info: TrialInfo) -> Updater:
        spec = spec_from_hparams(hparams, step_hint=info.step_hint)
        inner = {k: v for k, v in hparams.items() if k not in AVERAGING_DEFAULTS}
        return wrap(base.create(model, inner, info), model, spec)

    return SubmissionSpec(
        name=name or f"{base.name}_avg", factory=factory, defaults={**base.defaults, **AVERAGING_DEFAULTS},
        capabilities=frozenset(base.capabilities) | {Capability.EVAL_PARAMS},
        search_space_file=getattr(base, "search_space_file", None),
        paper="weight averaging (EMA by half-life, tail average) over " + (getattr(base, "paper", "") or base.name),
    )


def averaged_loaded(loaded: Any) -> Any:
    """A loaded submission (``optbench.plugins.registry.load_submission``) with weight averaging, recorded as
    ``<name>_avg``: what a harness option such as ``run --average`` would run in place of ``loaded``."""
    from optbench.plugins.wrapping import derived

    return derived(loaded, averaged_submission(loaded.obj, name=f"{loaded.obj.name}_avg"), name=f"{loaded.name}_avg")
