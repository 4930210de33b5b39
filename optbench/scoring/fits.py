"""Scaling fits: power laws of loss against compute and of the best learning rate against model size, with
bootstrap intervals, and a submission's effective compute speedup over a reference.

What is fitted, and why:

* **Loss against compute**, ``L(C) = E + a C^-b`` with the floor ``E`` *given* (default 0: a pure power law), fitted
  by least squares on ``log(L - E) = log a - b log C``. A ladder measures 3-5 sizes; with that few points a free
  ``E`` trades off against ``a`` and ``b`` almost exactly (Hoffmann et al. fit theirs on hundreds of runs), so its
  interval would be the whole axis. A known floor (a corpus's entropy) can be given instead;
  :func:`fit_free_floor` fits ``E`` too, by profiling it, for ladders of 4 or more points.
* **Best learning rate against model size**, ``lr*(N) = c N^-d``, likewise log-log least squares.
* **Bootstrap**: seeds are resampled with replacement within each point (a point is one model size: a grid of
  learning rates x seeds, paired by seed), the best learning rate is chosen again in every draw, and the fit is
  redone; intervals are percentile intervals of the draws. Everything is vectorised over the draws.
* **Effective compute speedup** of a submission over a reference at one point (as Wen et al. 2025 report effective
  data speedups over AdamW): the factor ``k`` by which the reference, on its fitted curve, needs more compute than
  the submission spent to reach the submission's loss, ``k = C_ref(L_sub) / C_sub`` with ``C_ref(L) =
  ((L - E) / a)^(-1/b)``. A ``C_ref`` outside the reference's measured compute is an extrapolation and is flagged.
  At one Chinchilla multiple per size, compute and tokens scale together along the ladder, so this is also the
  factor in tokens along that frontier.

Pure numpy; randomness only from the seed passed in.

References:
  Kaplan et al., "Scaling Laws for Neural Language Models", arXiv 2001.08361 (2020).
  Hoffmann et al., "Training Compute-Optimal Large Language Models", arXiv 2203.15556 (2022).
  Wen et al., "Fantastic Pretraining Optimizers and Where to Find Them", 2025 (effective data speedup).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

N_BOOT = 1000  # bootstrap draws of every fit
LEVEL = 0.9  # the intervals' coverage
RANGE_SLACK = 1e-9  # relative: a needed compute this close to the measured range's ends is not an extrapolation


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap percentile interval (NaN bounds when they cannot be computed)."""

    value: float
    low: float
    high: float

    def covers(self, x: float) -> bool:
        return self.low <= x <= self.high


@dataclass(frozen=True, kw_only=True)
class Point:
    """One point of a fit: its x (compute, or model size) and its measurements.

    Attributes:
      x: the point's abscissa (> 0).
      losses: (candidates, seeds) final losses, one row per learning rate of the grid, one column per seed (paired:
        column j is seed j at every learning rate); NaN where a trial has no result, inf where it diverged.
      candidates: the value of each row (the learning rates), for the best-learning-rate fit.
    """

    x: float
    losses: np.ndarray
    candidates: tuple[float, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PowerLaw:
    """``y = floor + a x^-b``."""

    a: float
    b: float
    floor: float = 0.0

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        return self.floor + self.a * np.power(x, -self.b)

    def inverse(self, y: float) -> float:
        """The x at which the curve reaches ``y`` (NaN where it never does: ``y`` at or below the floor, or a
        curve that does not fall)."""
        return float(_inverse(np.float64(y), np.log(self.a), np.float64(self.b), self.floor))


@dataclass(frozen=True, kw_only=True)
class Fit:
    """A fitted power law with its parameters' intervals and bootstrap draws.

    Attributes:
      law: the fit on the full data (best candidate per point on the mean over all seeds).
      a, b: its parameters with percentile intervals over the draws.
      x_range: the smallest and largest x fitted (beyond them the curve is an extrapolation).
      points: how many points were fitted.
      draws: (n_boot, 2) ``[log a, b]`` per draw (NaN rows where a draw had too few finite points).
      y: the fitted y of each point (the best mean over seeds), in x order; xs: those points' x.
    """

    law: PowerLaw
    a: Interval
    b: Interval
    x_range: tuple[float, float]
    points: int
    draws: np.ndarray
    xs: tuple[float, ...]
    y: tuple[float, ...]

    def extrapolates(self, x: float) -> bool:
        lo, hi = self.x_range
        return not (lo * (1 - RANGE_SLACK) <= x <= hi * (1 + RANGE_SLACK))


# ------------------------------------------------------------------------------------------------ least squares


def loglog(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least squares of ``log y = log a - b log x`` along the last axis, batched over the leading ones: (log a, b).

    ``x``: (n,); ``y``: (..., n) positive. A batch row with a non-finite or non-positive y is fitted on its finite
    points only; fewer than 2 distinct x give NaN.
    """
    lx = np.log(np.asarray(x, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        ly = np.log(np.asarray(y, dtype=float))
    ok = np.isfinite(ly) & np.isfinite(lx)
    w = ok.astype(float)
    n = w.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx = (w * np.where(ok, lx, 0.0)).sum(-1) / n
        my = (w * np.where(ok, ly, 0.0)).sum(-1) / n
        dx = np.where(ok, lx - mx[..., None], 0.0)
        dy = np.where(ok, ly - my[..., None], 0.0)
        sxx = (dx * dx).sum(-1)
        slope = (dx * dy).sum(-1) / sxx
    bad = (n < 2) | ~(sxx > 1e-300)
    slope = np.where(bad, np.nan, slope)
    return np.where(bad, np.nan, my - slope * mx), -slope


def _inverse(y: np.ndarray, log_a: np.ndarray, b: np.ndarray, floor: float) -> np.ndarray:
    """x with floor + a x^-b = y, elementwise; NaN where y <= floor or b <= 0 (a curve that does not fall)."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = np.exp((log_a - np.log(y - floor)) / b)
    return np.where((y > floor) & (b > 0), x, np.nan)


# ------------------------------------------------------------------------------------------------ bootstrap


def best_mean(losses: np.ndarray) -> tuple[float, int | None]:
    """The lowest mean over seeds among the candidates of one point, and its row (None: no finite candidate)."""
    with np.errstate(invalid="ignore"), _quiet():
        means = np.nanmean(np.asarray(losses, dtype=float), axis=-1)
    finite = np.where(np.isfinite(means), means, np.inf)
    if not np.isfinite(finite).any():
        return math.inf, None
    i = int(np.argmin(finite))
    return float(finite[i]), i


def resampled_best(losses: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap draws of one point: seeds resampled with replacement (the same seeds at every candidate), the best
    candidate chosen again each time. Returns (best mean (n_boot,), its row (n_boot,), -1 where none is finite)."""
    losses = np.asarray(losses, dtype=float)  # (K, S)
    idx = rng.integers(0, losses.shape[1], size=(n_boot, losses.shape[1]))  # (n_boot, S)
    with np.errstate(invalid="ignore"), _quiet():
        means = np.nanmean(losses[:, idx], axis=-1)  # (K, n_boot)
    means = np.where(np.isfinite(means), means, np.inf)
    row = np.argmin(means, axis=0)
    best = means[row, np.arange(n_boot)]
    return best, np.where(np.isfinite(best), row, -1)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """nanmean of an all-NaN slice warns; NaN is the answer wanted there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def interval(draws: np.ndarray, value: float, level: float = LEVEL) -> Interval:
    """``value`` with the percentile interval of the finite ``draws`` (NaN bounds when fewer than 2 are finite)."""
    d = np.asarray(draws, dtype=float)
    d = d[~np.isnan(d)]
    if d.size < 2:
        return Interval(value, math.nan, math.nan)
    tail = (1 - level) / 2
    low, high = np.quantile(d, [tail, 1 - tail], method="inverted_cdf")
    return Interval(value, float(low), float(high))


# ------------------------------------------------------------------------------------------------ the fits


def fit_loss(points: Sequence[Point], *, floor: float = 0.0, n_boot: int = N_BOOT, level: float = LEVEL,
             seed: int = 0) -> Fit:
    """``L(C) = floor + a C^-b`` through each point's best final loss (see the module docstring); intervals by
    resampling seeds within every point."""
    rng = np.random.default_rng(seed)
    pts = [p for p in sorted(points, key=lambda p: p.x) if math.isfinite(best_mean(p.losses)[0])]
    xs = np.array([p.x for p in pts], dtype=float)
    y = np.array([best_mean(p.losses)[0] for p in pts], dtype=float)
    draws = np.stack([resampled_best(p.losses, n_boot, rng)[0] for p in pts], axis=-1) if pts else \
        np.empty((n_boot, 0))
    return _fit(xs, y - floor, draws - floor, floor=floor, level=level)


def fit_best_lr(points: Sequence[Point], *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> Fit:
    """``lr*(N) = c N^-d`` through each point's best learning rate (``Point.candidates``, ``Point.x`` = N)."""
    rng = np.random.default_rng(seed)
    pts = [p for p in sorted(points, key=lambda p: p.x) if best_mean(p.losses)[1] is not None]
    xs = np.array([p.x for p in pts], dtype=float)
    y = np.array([p.candidates[best_mean(p.losses)[1]] for p in pts], dtype=float)
    cols = []
    for p in pts:
        _, row = resampled_best(p.losses, n_boot, rng)
        cols.append(np.where(row >= 0, np.asarray(p.candidates, dtype=float)[np.maximum(row, 0)], np.nan))
    draws = np.stack(cols, axis=-1) if cols else np.empty((n_boot, 0))
    return _fit(xs, y, draws, floor=0.0, level=level)


def _fit(xs: np.ndarray, y: np.ndarray, draws: np.ndarray, *, floor: float, level: float) -> Fit:
    """The fit of ``y`` (floor already subtracted) and of every draw row, packed as a :class:`Fit`."""
    log_a, b = loglog(xs, y)
    d_log_a, d_b = loglog(xs, draws)
    a = float(np.exp(log_a))
    rng_x = (float(xs.min()), float(xs.max())) if xs.size else (math.nan, math.nan)
    return Fit(law=PowerLaw(a=a, b=float(b), floor=floor), a=interval(np.exp(d_log_a), a, level),
               b=interval(d_b, float(b), level), x_range=rng_x, points=int(xs.size),
               draws=np.stack([d_log_a, d_b], axis=-1), xs=tuple(xs.tolist()), y=tuple((y + floor).tolist()))


def fit_free_floor(points: Sequence[Point], *, grid: int = 400) -> PowerLaw:
    """``L = E + a C^-b`` with ``E`` fitted too: the ``E`` in [0, min L) whose log-log fit leaves the least squared
    log residual (a profile over a grid of ``E``). Needs 4 or more points: with fewer, any floor fits."""
    pts = [p for p in sorted(points, key=lambda p: p.x) if math.isfinite(best_mean(p.losses)[0])]
    if len(pts) < 4:
        raise ValueError("a free loss floor needs at least 4 points")
    xs = np.array([p.x for p in pts])
    y = np.array([best_mean(p.losses)[0] for p in pts])
    low, high = 0.0, float(y.min())
    for _ in range(3):  # a grid, then two finer grids around its best cell
        floors = np.linspace(low, high, grid, endpoint=False)  # (G,)
        law, i = _best_floor(xs, y, floors)
        step = floors[1] - floors[0]
        low, high = max(0.0, floors[i] - step), min(float(y.min()), floors[i] + step)
    return law


def _best_floor(xs: np.ndarray, y: np.ndarray, floors: np.ndarray) -> tuple[PowerLaw, int]:
    """The floor of ``floors`` whose log-log fit of ``y - floor`` has the least squared log residual, and its index."""
    shifted = y[None, :] - floors[:, None]  # (G, n)
    log_a, b = loglog(xs, shifted)
    with np.errstate(divide="ignore", invalid="ignore"):
        resid = np.log(shifted) - (log_a[:, None] - b[:, None] * np.log(xs)[None, :])
    i = int(np.nanargmin((resid**2).sum(-1)))
    return PowerLaw(a=float(np.exp(log_a[i])), b=float(b[i]), floor=float(floors[i])), i


# ------------------------------------------------------------------------------------------------ speedup


@dataclass(frozen=True, kw_only=True)
class Speedup:
    """A submission's effective compute speedup over a reference at one point.

    Attributes:
      k: C_ref(L_sub) / C_sub with its bootstrap interval (NaN when the reference's curve never reaches L_sub).
      needed: C_ref(L_sub), the compute the reference's fit needs for the submission's loss.
      extrapolated: ``needed`` lies outside the reference's measured compute range.
    """

    k: Interval
    needed: float
    extrapolated: bool


def speedup(reference: Fit, point: Point, *, n_boot: int | None = None, level: float = LEVEL,
            seed: int = 1) -> Speedup:
    """The effective compute speedup of the submission measured at ``point`` (its compute ``point.x`` and losses)
    over ``reference``'s fitted curve; the interval pairs each of the reference's draws with a draw of the
    submission's best loss (resampled independently: different trials)."""
    n = reference.draws.shape[0] if n_boot is None else n_boot
    rng = np.random.default_rng(seed)
    loss, _ = best_mean(point.losses)
    law = reference.law
    needed = law.inverse(loss) if math.isfinite(loss) else math.nan
    sub = resampled_best(point.losses, n, rng)[0]
    ref = reference.draws[:n]
    with np.errstate(invalid="ignore"):
        k_draws = _inverse(sub, ref[:, 0], ref[:, 1], law.floor) / point.x
    k = needed / point.x
    return Speedup(k=interval(k_draws, k, level), needed=needed,
                   extrapolated=bool(math.isfinite(needed) and reference.extrapolates(needed)))
