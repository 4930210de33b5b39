"""Learning-rate schedules as pure functions of the step, and the wrapper that applies one to an optimizer.

A schedule is a frozen dataclass whose ``__call__(step)`` returns a multiplier of the base learning rate; it is
pure (no state), so a resumed trial needs only the step count. ``Scheduled`` sets ``group["lr"] = base_lr *
schedule(t)`` before every update; the base lr lives in ``group["base_lr"]`` so the schedule survives a
state_dict round trip.

References:
  Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017 (cosine decay).
  Goyal et al., "Accurate, Large Minibatch SGD", 2017 (linear warmup).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

SCHEDULE_HPARAMS = ("schedule", "warmup_frac", "decay_floor")  # keys every built-in scheduled submission accepts


class Schedule(Protocol):
    def __call__(self, step: int) -> float: ...


@dataclass(frozen=True, kw_only=True)
class Constant:
    """lr(t) = base."""

    def __call__(self, step: int) -> float:
        return 1.0


@dataclass(frozen=True, kw_only=True)
class WarmupCosine:
    """Linear warmup over ``warmup`` steps, then cosine decay to ``floor`` * base at ``total`` steps, then floor.

    lr(t) = t/warmup for t < warmup; floor + (1 - floor) * (1 + cos(pi * s)) / 2 with s = (t - warmup)/(total - warmup).
    Step numbers count from 1 (the first update uses t = 1), so warmup never applies a zero learning rate.
    """

    warmup: int
    total: int
    floor: float = 0.0

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return step / max(1, self.warmup)
        s = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * s))


@dataclass(frozen=True, kw_only=True)
class WarmupLinear:
    """Linear warmup over ``warmup`` steps, then linear decay to ``floor`` * base at ``total`` steps."""

    warmup: int
    total: int
    floor: float = 0.0

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return step / max(1, self.warmup)
        s = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 1.0 - (1.0 - self.floor) * s


SCHEDULES = ("constant", "cosine", "linear")


def from_hparams(hparams: Mapping[str, Any], *, total_steps: int) -> Schedule:
    """The schedule named by ``hparams["schedule"]`` over ``total_steps`` (usually the workload's step_hint).

    Args:
      hparams: reads ``schedule`` (constant|cosine|linear), ``warmup_frac`` (fraction of total_steps) and
        ``decay_floor`` (final multiplier).
      total_steps: length of the decay.
    Returns:
      A pure schedule.
    """
    name = hparams.get("schedule", "constant")
    warmup = int(round(float(hparams.get("warmup_frac", 0.0)) * total_steps))
    floor = float(hparams.get("decay_floor", 0.0))
    if name == "constant":
        return Constant() if warmup == 0 else WarmupLinear(warmup=warmup, total=10**12, floor=1.0)
    if name == "cosine":
        return WarmupCosine(warmup=warmup, total=total_steps, floor=floor)
    if name == "linear":
        return WarmupLinear(warmup=warmup, total=total_steps, floor=floor)
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


class Scheduled:
    """An optimizer with a learning-rate schedule: the ``torch.optim.Optimizer`` interface, schedule applied first.

    Args:
      optimizer: the wrapped optimizer; each group's current ``lr`` becomes its ``base_lr``.
      schedule: multiplier as a function of the 1-based step.
    """

    def __init__(self, optimizer: Any, schedule: Callable[[int], float]) -> None:
        self.optimizer = optimizer
        self.schedule = schedule
        self.t = 0
        for g in optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def step(self, closure: Callable[..., Any] | None = None) -> Any:
        self.t += 1
        factor = self.schedule(self.t)
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor
        return self.optimizer.step(closure) if closure is not None else self.optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "t": self.t}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.t = int(state_dict["t"])

    def __getattr__(self, name: str) -> Any:
        # Optional hooks (eval_params, batch_size) of the wrapped optimizer stay reachable.
        if name == "optimizer":
            raise AttributeError(name)
        return getattr(self.optimizer, name)
