"""Learning-rate schedules as pure functions of the step, and the wrapper that applies one to an optimizer.

A schedule is a frozen dataclass whose ``__call__(step)`` returns a multiplier of the base learning rate; it is
pure (no state), so a resumed trial needs only the step count. ``Scheduled`` sets ``group["lr"] = base_lr *
schedule(t)`` before every update; the base lr lives in ``group["base_lr"]`` so the schedule survives a
state_dict round trip.

References:
  Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", 2017 (cosine decay).
  Goyal et al., "Accurate, Large Minibatch SGD", 2017 (linear warmup).
  Hu et al., "MiniCPM", 2024, and Hägele et al., "Scaling Laws and Compute-Optimal Training Beyond Fixed Training
    Durations", 2024 (warmup-stable-decay, the 1-sqrt cooldown).
  Vaswani et al., "Attention Is All You Need", 2017; Zhai et al., "Scaling Vision Transformers", 2022 (1/sqrt(t),
    with a linear cooldown).
  He et al., "Deep Residual Learning", 2016 (step decay at milestones).
  Naganuma et al., "What do near-optimal learning rate schedules look like?" (the shape family ``poly``: warmup,
    stable phase, polynomial decay to a floor, searched apart from the base learning rate).

Every schedule is chosen by hyperparameters (:func:`from_hparams`); :data:`TABLE` lists each one with the keys it
reads, and is what docs/RESEARCH.md and ``optbench schedules --list`` print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from optbench.errors import UsageError

# Keys of the schedule hyperparameters and the value each takes when not given. The first three are in every
# built-in scheduled submission's defaults; the others are read only by the schedules that need them.
KEY_DEFAULTS: Mapping[str, Any] = {
    "schedule": "constant", "warmup_frac": 0.0, "decay_floor": 0.0,
    "cooldown_frac": 0.2, "cooldown_shape": "linear",  # wsd; invsqrt (whose cooldown_frac default is 0)
    "decay_factor": 0.5, "decay_milestones": (0.5, 0.75),  # step
    "decay_start_frac": 0.0, "decay_power": 1.0,  # poly
}
SCHEDULE_HPARAMS = tuple(KEY_DEFAULTS)  # every key a schedule reads
OWN_DEFAULTS: Mapping[str, Mapping[str, Any]] = {"invsqrt": {"cooldown_frac": 0.0}}  # horizon-free unless asked


def key_default(schedule: str, key: str) -> Any:
    """The value ``key`` takes for ``schedule`` when not given (:data:`KEY_DEFAULTS`, or the schedule's own)."""
    return OWN_DEFAULTS.get(schedule, {}).get(key, KEY_DEFAULTS[key])


class ScheduleError(UsageError, ValueError):
    """A schedule hyperparameter that makes no schedule: the CLI prints one line (UsageError); a ValueError too,
    as :func:`from_hparams` raised before."""


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


COOLDOWN_SHAPES: Mapping[str, Callable[[float], float]] = {
    # d(s): the fraction of the way from the floor to the start value left at progress s in [0, 1]; d(0)=1, d(1)=0.
    "linear": lambda s: 1.0 - s,
    "1-sqrt": lambda s: 1.0 - math.sqrt(s),  # Hägele et al. 2024: better than linear at equal length
    "cosine": lambda s: 0.5 * (1.0 + math.cos(math.pi * s)),
}


def _ramp(step: int, warmup: int) -> float:
    """Linear warmup multiplier at the 1-based ``step`` (1 once past the warmup)."""
    return min(1.0, step / max(1, warmup))


def _progress(step: int, start: int, end: int) -> float:
    """Where ``step`` is in the window (start, end]: 0 at start, 1 at end and after, clipped."""
    return min(1.0, max(0.0, (step - start) / max(1, end - start)))


@dataclass(frozen=True, kw_only=True)
class WarmupStableDecay:
    """Warmup, a constant phase, then a cooldown over the last ``cooldown`` steps before ``total`` (WSD).

    lr(t) = t/warmup while warming up; 1 until ``total - cooldown``; then floor + (1 - floor) * d(s), with
    s = (t - (total - cooldown)) / cooldown and d the shape (``linear``: 1 - s; ``1-sqrt``: 1 - sqrt(s); ``cosine``);
    floor after ``total``.
    """

    warmup: int
    total: int
    cooldown: int
    floor: float = 0.0
    shape: str = "linear"

    def __call__(self, step: int) -> float:
        start = self.total - self.cooldown
        if step <= self.warmup and step <= start:
            return _ramp(step, self.warmup)
        if step <= start:
            return 1.0
        return self.floor + (1.0 - self.floor) * COOLDOWN_SHAPES[self.shape](_progress(step, start, self.total))


@dataclass(frozen=True, kw_only=True)
class InverseSqrt:
    """Warmup, then lr(t) = sqrt(tau / t) with tau = max(1, warmup) (continuous at the end of warmup; horizon-free
    when ``cooldown`` is 0). With a cooldown, the last ``cooldown`` steps before ``total`` go from the value r_c
    reached at ``total - cooldown`` to min(floor, r_c) along the cooldown shape, then stay there.
    """

    warmup: int
    total: int = 0
    cooldown: int = 0
    floor: float = 0.0
    shape: str = "linear"

    def _rsqrt(self, step: int) -> float:
        tau = max(1, self.warmup)
        return math.sqrt(tau / max(step, tau))

    def __call__(self, step: int) -> float:
        if step <= self.warmup:
            return _ramp(step, self.warmup)
        start = self.total - self.cooldown
        if self.cooldown <= 0 or step <= start:
            return self._rsqrt(step)
        r_c = self._rsqrt(start)
        end = min(self.floor, r_c)
        return end + (r_c - end) * COOLDOWN_SHAPES[self.shape](_progress(step, start, self.total))


@dataclass(frozen=True, kw_only=True)
class StepDecay:
    """Warmup, then the base lr times ``factor`` per milestone passed: lr(t) = factor^k, k = #{m : t > m}.

    Milestones are step numbers: the first ``m`` steps run at the old rate, step ``m + 1`` at the new one.
    """

    warmup: int
    milestones: tuple[int, ...]
    factor: float = 0.5

    def halvings(self, step: int) -> int:
        """Milestones passed before ``step``: the k in factor^k (Seesaw doubles the batch once per milestone)."""
        return sum(1 for m in self.milestones if step > m)

    def __call__(self, step: int) -> float:
        return _ramp(step, self.warmup) * self.factor ** self.halvings(step)


@dataclass(frozen=True, kw_only=True)
class PolyShape:
    """The shape family searched apart from the base learning rate: warmup, stable, polynomial decay, floor.

    lr(t) = t/warmup while warming up; 1 until ``decay_start`` (never before the warmup ends); then
    floor + (1 - floor) * (1 - s)^power with s the progress from ``decay_start`` to ``total``; floor after.
    power 1 is linear decay, power < 1 stays high longer (1-sqrt-like), power > 1 drops early.
    """

    warmup: int
    total: int
    decay_start: int
    power: float = 1.0
    floor: float = 0.0

    def __call__(self, step: int) -> float:
        start = max(self.warmup, self.decay_start)
        if step <= self.warmup:
            return _ramp(step, self.warmup)
        if step <= start:
            return 1.0
        return self.floor + (1.0 - self.floor) * (1.0 - _progress(step, start, self.total)) ** self.power


@dataclass(frozen=True)
class ScheduleKind:
    """One row of :data:`TABLE`: a schedule's name, the hyperparameter keys it reads, and its formula."""

    name: str
    keys: tuple[str, ...]
    formula: str


TABLE: tuple[ScheduleKind, ...] = (
    ScheduleKind("constant", ("warmup_frac",), "1 (after an optional linear warmup)"),
    ScheduleKind("cosine", ("warmup_frac", "decay_floor"),
                 "warmup, then floor + (1-floor)(1+cos(pi s))/2 over the rest of total_steps"),
    ScheduleKind("linear", ("warmup_frac", "decay_floor"), "warmup, then 1 - (1-floor) s"),
    ScheduleKind("wsd", ("warmup_frac", "cooldown_frac", "cooldown_shape", "decay_floor"),
                 "warmup, 1, then floor + (1-floor) d(s) over the last cooldown_frac; d: linear 1-s, 1-sqrt, cosine"),
    ScheduleKind("invsqrt", ("warmup_frac", "cooldown_frac", "cooldown_shape", "decay_floor"),
                 "warmup, then sqrt(tau/t), tau = max(1, warmup); an optional cooldown (cooldown_frac) to floor"),
    ScheduleKind("step", ("warmup_frac", "decay_factor", "decay_milestones"),
                 "warmup, then decay_factor^k, k = milestones passed (fractions of total_steps)"),
    ScheduleKind("poly", ("warmup_frac", "decay_start_frac", "decay_power", "decay_floor"),
                 "warmup, 1 until decay_start_frac, then floor + (1-floor)(1-s)^decay_power"),
)
SCHEDULES = tuple(k.name for k in TABLE)


def given(hparams: Mapping[str, Any], key: str) -> Any:
    """``hparams[key]``, or the schedule's default for it when absent or None (None: "the schedule's default", the
    value a submission that accepts every key records for the keys it was not given)."""
    value = hparams.get(key)
    if value is None:
        return "constant" if key == "schedule" else key_default(str(given(hparams, "schedule")), key)
    return value


def _number(hparams: Mapping[str, Any], key: str, *, low: float, high: float) -> float:
    """``hparams[key]`` (or its default) as a finite float in [low, high], else a one-line :class:`ScheduleError`."""
    value = given(hparams, key)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ScheduleError(f"schedule hyperparameter {key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not low <= x <= high:  # NaN fails both comparisons
        raise ScheduleError(f"schedule hyperparameter {key} must be in [{low:g}, {high:g}], got {value!r}")
    return x


def _shape(hparams: Mapping[str, Any]) -> str:
    shape = given(hparams, "cooldown_shape")
    if shape not in COOLDOWN_SHAPES:
        raise ScheduleError(f"unknown cooldown_shape {shape!r}; choose one of {', '.join(COOLDOWN_SHAPES)}")
    return str(shape)


def _milestones(hparams: Mapping[str, Any], total_steps: int) -> tuple[int, ...]:
    raw = given(hparams, "decay_milestones")
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = [raw]
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ScheduleError(f"decay_milestones must be a list of fractions of the steps in (0, 1], got {raw!r}")
    fracs = [_number({"decay_milestones": f}, "decay_milestones", low=0.0, high=1.0) for f in raw]
    if any(b <= a for a, b in zip(fracs, fracs[1:])) or fracs[0] <= 0:
        raise ScheduleError(f"decay_milestones must increase strictly, in (0, 1]; got {raw!r}")
    return tuple(int(round(f * total_steps)) for f in fracs)


def from_hparams(hparams: Mapping[str, Any], *, total_steps: int) -> Schedule:
    """The schedule named by ``hparams["schedule"]`` over ``total_steps`` (usually the workload's step_hint).

    Args:
      hparams: reads ``schedule`` (one of :data:`SCHEDULES`) and the keys :data:`TABLE` lists for it; a missing key
        takes its value in :data:`KEY_DEFAULTS`. Fractions are of ``total_steps``.
      total_steps: length of the schedule (decays end there).
    Returns:
      A pure schedule.
    Raises:
      ScheduleError: an unknown schedule or shape, or a value out of its range.
    """
    name = given(hparams, "schedule")
    warmup = int(round(_number(hparams, "warmup_frac", low=0.0, high=1.0) * total_steps))
    floor = _number(hparams, "decay_floor", low=0.0, high=1.0)
    if name == "constant":
        return Constant() if warmup == 0 else WarmupLinear(warmup=warmup, total=10**12, floor=1.0)
    if name == "cosine":
        return WarmupCosine(warmup=warmup, total=total_steps, floor=floor)
    if name == "linear":
        return WarmupLinear(warmup=warmup, total=total_steps, floor=floor)
    if name in ("wsd", "invsqrt"):
        frac = _number(hparams, "cooldown_frac", low=0.0, high=1.0)
        kind = WarmupStableDecay if name == "wsd" else InverseSqrt
        return kind(warmup=warmup, total=total_steps, cooldown=int(round(frac * total_steps)), floor=floor,
                    shape=_shape(hparams))
    if name == "step":
        return StepDecay(warmup=warmup, milestones=_milestones(hparams, total_steps),
                         factor=_number(hparams, "decay_factor", low=0.0, high=1.0))
    if name == "poly":
        start = int(round(_number(hparams, "decay_start_frac", low=0.0, high=1.0) * total_steps))
        return PolyShape(warmup=warmup, total=total_steps, decay_start=start, floor=floor,
                         power=_number(hparams, "decay_power", low=1e-3, high=1e3))
    raise ScheduleError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")


def values(schedule: Schedule, steps: Iterable[int]) -> list[float]:
    """The multipliers of ``schedule`` at each of ``steps`` (1-based)."""
    return [float(schedule(int(t))) for t in steps]


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
