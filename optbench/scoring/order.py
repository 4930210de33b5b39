"""The distribution-free interval of a median from order statistics, and the :class:`Interval` every table shows.

With n iid draws, ``[x_(j), x_(n+1-j)]`` covers the population median with probability ``P(j <= B <= n-j)``,
``B ~ Binomial(n, 1/2)``, whatever the continuous distribution (with ties, at least that). So with few seeds the
coverage is known exactly, and often below the level asked for: the min-max of 2 draws covers 50%, of 3 draws 75%,
of 5 draws 93.75%. An :class:`Interval` carries the level it achieves, the level requested and n, and says them
(:meth:`Interval.label`), so no table shows an interval without what it covers.

References:
  Hollander, Wolfe & Chicken, "Nonparametric Statistical Methods" (2014), section 3.6.
  David & Nagaraja, "Order Statistics" (2003), section 7.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from optbench.errors import UsageError


def check_level(level: float) -> float:
    if not 0 < level < 1:
        raise UsageError(f"confidence level must be in (0, 1), got {level}")
    return level


@dataclass(frozen=True, kw_only=True)
class Interval:
    """An interval for a median, with the coverage it actually has.

    Attributes:
      estimate: the statistic on the data (median over studies of the best trial; inf = missed).
      low, high: interval bounds (may be inf; NaN when fewer than 2 units).
      level: the coverage the interval achieves: exact (distribution-free) for ``method="order"``, nominal for
        ``method="bootstrap"``; below ``requested`` when too few units make the requested level unreachable (2 units:
        at most 50%), 0 with one unit.
      requested: the coverage asked for, e.g. 0.9.
      n_units: number of units (studies) the interval is over.
      unit: ``"study"``, or ``"seed"`` when every study holds one trial (then each study is one seed's run).
      method: ``"order"`` (order statistics of the units, binomial coverage), ``"bootstrap"`` or ``"none"``.
    """

    estimate: float
    low: float
    high: float
    level: float
    n_units: int
    unit: str
    requested: float = math.nan
    method: str = "order"

    def label(self) -> str:
        """What the interval covers, for tables and captions: ``75% order-statistic interval, n=3``."""
        return interval_label(level=self.level, n=self.n_units, method=self.method, requested=self.requested)


METHOD_NAMES = {"order": "order-statistic", "bootstrap": "bootstrap", "none": "no"}


def interval_label(*, level: float, n: int, method: str = "order", requested: float = math.nan) -> str:
    """``90% order-statistic interval, n=5``; a level below the requested one says so (``50% (90% unreachable)``)."""
    if n < 2 or method == "none":
        return f"no interval, n={n}"
    short = "" if math.isnan(requested) or level >= requested - 1e-12 else f" ({requested:.0%} unreachable)"
    return f"{level:.1%}".replace(".0%", "%") + f"{short} {METHOD_NAMES.get(method, method)} interval, n={n}"


def order_coverage(n: int, j: int) -> float:
    """Coverage of ``[x_(j), x_(n+1-j)]`` (1-based order statistics of n iid draws) for the population median:
    ``P(j <= B <= n-j)`` with ``B ~ Binomial(n, 1/2)``, whatever the (continuous) distribution; with ties it is at
    least this."""
    if n < 2 or not 1 <= j <= n // 2:
        return 0.0
    return 1.0 - 2.0 * sum(math.comb(n, i) for i in range(j)) / 2.0**n


def order_rank(n: int, level: float) -> int:
    """The 1-based rank j of the narrowest symmetric order-statistic interval whose coverage is at least ``level``;
    1 (min to max, the widest there is) when no j reaches it. 0 when n < 2 (no interval)."""
    if n < 2:
        return 0
    j = 1
    while j + 1 <= n // 2 and order_coverage(n, j + 1) >= level - 1e-12:
        j += 1
    return j


def median_order_interval(values: Sequence[float] | np.ndarray, *, level: float = 0.9) -> Interval:
    """The median of ``values`` (inf = missed) and its distribution-free order-statistic interval.

    ``[x_(j), x_(n+1-j)]`` covers the population median with probability :func:`order_coverage` (binomial, no
    assumption on the distribution), so small samples get an honest level instead of a bootstrap's nominal one: with
    2 values the min-max covers 50%, with 3 values 75%, with 5 values 93.75%. The narrowest j reaching ``level`` is
    taken; when none does, the min-max, with the lower level it achieves recorded in ``level``.

    Returns:
      :class:`Interval` with ``unit="value"``; NaN bounds and level 0 for fewer than 2 values.
    References:
      Hollander, Wolfe & Chicken, "Nonparametric Statistical Methods" (2014), section 3.6; David & Nagaraja,
      "Order Statistics" (2003), section 7.1.
    """
    check_level(level)
    x = np.sort(np.asarray(values, dtype=float))
    n = len(x)
    estimate = float(np.median(x)) if n else math.nan
    j = order_rank(n, level)
    if j == 0:
        return Interval(estimate=estimate, low=math.nan, high=math.nan, level=0.0, requested=level, n_units=n,
                        unit="value", method="none")
    return Interval(estimate=estimate, low=float(x[j - 1]), high=float(x[n - j]), level=order_coverage(n, j),
                    requested=level, n_units=n, unit="value", method="order")
