"""Statistics on time-to-target: bootstrap intervals, a paired seed test, seeds needed, hyperparameter sensitivity.

Pure functions on the trials table of :mod:`optbench.scoring.profiles` (no I/O). Randomness comes only from a seeded
``numpy.random.Generator`` passed as ``seed`` (an int or a Generator), so every number is reproducible.

Missed targets are +inf throughout, never dropped: dropping them would make a submission that often fails look
fast. Percentile intervals are read off sorted bootstrap replicates by order statistic (no interpolation), so a
bound can be inf without arithmetic on infinities.

References:
  Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile intervals).
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023).
  Wilcoxon (1945) signed-rank statistic; Fisher/Pitman sign-flip permutation tests.
  Noether (1987) / Guenther (1981) sample-size approximations.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist

import numpy as np
import pandas as pd

from optbench.errors import UsageError
from optbench.scoring.order import (  # re-exported: the intervals every caller of this module shows
    METHOD_NAMES as METHOD_NAMES,
    Interval as Interval,
    check_level as _check_level,
    interval_label as interval_label,
    median_order_interval as median_order_interval,
    order_coverage as order_coverage,
    order_rank as order_rank,
)
from optbench.scoring.effort import trials_to_first_reach as trials_to_first_reach
from optbench.scoring.effort import tuning_effort as tuning_effort
from optbench.scoring.profiles import (
    TRIAL_MEASURES,
    leaderboard,
    parse_hparams,
    ratios_from_times,
    scores_from_ratios,
    study_values,
    trial_values,
)

EXACT_MAX_PAIRS = 16  # up to 2**16 sign vectors: enumerate exactly; beyond, Monte Carlo
# Below this many studies in a cell a bootstrap percentile interval of a median is little more than the sample's
# range (its coverage falls well short of the nominal level: 2 studies, 50% for any nominal level), so its level is
# marked nominal wherever it is shown.
BOOTSTRAP_MIN_UNITS = 10


@dataclass(frozen=True, kw_only=True)
class PairedTest:
    """Result of :func:`paired_test`.

    Attributes:
      p_value: permutation p-value for the chosen alternative.
      speedup: median over informative pairs of t_B / t_A (> 1: A is faster); inf/0 when most pairs are one-sided
        misses, NaN when undefined.
      statistic: signed-rank sum, sum_i sign(d_i) rank(|d_i|), with d_i = log t_B - log t_A.
      n_pairs: seeds run by both submissions.
      n_used: pairs with a nonzero difference (what the test uses).
      n_a_only, n_b_only: pairs where only A (only B) reached the target.
      n_both_missed: pairs where neither reached (no information; excluded).
      exact: whether the p-value enumerates all 2**n_used sign vectors (else Monte Carlo).
    """

    p_value: float
    speedup: float
    statistic: float
    n_pairs: int
    n_used: int
    n_a_only: int
    n_b_only: int
    n_both_missed: int
    exact: bool


def _check_count(n: int, name: str) -> int:
    if int(n) < 1:
        raise UsageError(f"{name} must be a positive integer, got {n}")
    return int(n)


def _percentile_bounds(replicates: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Lower/upper percentile bounds along axis 0, by order statistic (safe with inf: no interpolation)."""
    n = replicates.shape[0]
    tail = (1.0 - level) / 2.0
    lo = min(n - 1, int(math.floor(tail * n)))
    hi = max(0, int(math.ceil((1.0 - tail) * n)) - 1)
    ordered = np.sort(replicates, axis=0)
    return ordered[lo], ordered[hi]


def _bootstrap_medians(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` resamples (with replacement) of ``values``; shape (n_boot,)."""
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    return np.median(values[idx], axis=1)  # inf stays inf: the two middle values are averaged, never subtracted


def _unit(trials: pd.DataFrame) -> str:
    per_study = trials.groupby("study").size()
    return "seed" if (per_study == 1).all() else "study"


def time_ci(
    trials: pd.DataFrame,
    *,
    workload: str,
    submission: str,
    by: str = "time",
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int | np.random.Generator = 0,
    method: str = "order",
) -> Interval:
    """Interval for a submission's aggregated time-to-target on one workload (AlgoPerf's statistic: the median over
    studies of each study's best trial).

    By default the distribution-free order-statistic interval over studies (:func:`median_order_interval`): its
    coverage is exact whatever the distribution, so with few studies it says the level it reaches (3 studies: 75%)
    rather than claim the requested one. ``method="bootstrap"`` resamples studies instead (percentile interval,
    nominal level; it undercovers with few studies: the min-max of 2 covers 50%, not 90%). With one trial per study a
    study is one seed's run. Misses are +inf, so the upper bound (and the estimate) can be inf, meaning "the data are
    consistent with not reaching".

    Args:
      trials: the trials table (see :func:`optbench.scoring.profiles.aggregate`).
      workload: workload key, e.g. ``"linreg/tiny"``.
      submission: submission name.
      by: ``"time"``, ``"steps"``, ``"examples"`` or ``"tokens"``.
      level: requested coverage of the interval.
      n_boot: bootstrap replicates (``method="bootstrap"``).
      seed: int seed or a numpy Generator (``method="bootstrap"``).
      method: ``"order"`` or ``"bootstrap"``.
    Returns:
      The :class:`Interval` (``level`` the coverage achieved); bounds are NaN when there is only one study.
    Raises:
      UsageError: no trials for that (workload, submission), or bad arguments.
    References:
      Hollander et al. 2014, section 3.6; Efron & Tibshirani 1993, ch. 13; Dahl et al. 2023, section 4.3.
    """
    _check_level(level)
    _check_count(n_boot, "n_boot")
    if method not in ("order", "bootstrap"):
        raise UsageError(f"interval method must be 'order' or 'bootstrap', got {method!r}")
    cell = trials[(trials["workload"] == workload) & (trials["submission"] == submission)]
    if cell.empty:
        raise UsageError(f"no trials of {submission!r} on {workload!r}")
    values = study_values(cell, by=by).to_numpy()
    ci = replace(median_order_interval(values, level=level), unit=_unit(cell))
    if method == "order" or len(values) < 2:
        return ci
    low, high = _percentile_bounds(_bootstrap_medians(values, n_boot, np.random.default_rng(seed)), level)
    return replace(ci, low=float(low), high=float(high), level=level, method="bootstrap")


def time_cis(
    trials: pd.DataFrame,
    *,
    by: str = "time",
    level: float = 0.9,
    n_boot: int = 2000,
    seed: int | np.random.Generator = 0,
    method: str = "order",
) -> pd.DataFrame:
    """:func:`time_ci` for every (workload, submission) cell, one Generator drawn in sorted cell order (bootstrap).

    Returns:
      DataFrame indexed by (workload, submission) with ``estimate, low, high, level, n_units, unit, requested,
      method`` (``level`` the coverage achieved).
    """
    trial_values(trials, by=by)  # validate once, before looping over cells
    rng = np.random.default_rng(seed)
    rows = {}
    for (w, s), cell in trials.groupby(["workload", "submission"], sort=True):
        ci = time_ci(cell, workload=w, submission=s, by=by, level=level, n_boot=n_boot, seed=rng, method=method)
        rows[(w, s)] = asdict(ci)
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["workload", "submission"])
    return out


def score_ci(
    trials: pd.DataFrame,
    *,
    by: str = "time",
    r_max: float = 4.0,
    reference: str | None = None,
    algoperf: bool = False,
    workloads: Sequence[str] | None = None,
    level: float = 0.9,
    n_boot: int = 1000,
    seed: int | np.random.Generator = 0,
) -> pd.DataFrame:
    """Bootstrap percentile intervals for every submission's benchmark score.

    Each replicate resamples the studies of every (workload, submission) cell independently, recomputes each
    cell's median, then the whole leaderboard (ratios to the replicate's best or reference, then scores), so the
    interval includes the uncertainty of the competitors' times that the ratios depend on.

    Args:
      trials: the trials table.
      by, r_max, reference, algoperf, workloads: as in :func:`optbench.scoring.profiles.leaderboard`.
      level: nominal coverage.
      n_boot: bootstrap replicates.
      seed: int seed or a numpy Generator.
    Returns:
      DataFrame indexed by submission (best score first) with ``estimate, low, high``, ``level`` (the nominal
      bootstrap level: no exact coverage is known for a score), ``n`` (the fewest studies in any of the
      submission's cells: the bootstrap is only as sound as its smallest sample; below
      :data:`BOOTSTRAP_MIN_UNITS` the level is nominal only) and ``method`` (``"bootstrap"``).
    References:
      Efron & Tibshirani 1993, ch. 13; Dahl et al. 2023, section 4.4.
    """
    _check_level(level)
    _check_count(n_boot, "n_boot")
    board = leaderboard(trials, by=by, r_max=r_max, reference=reference, algoperf=algoperf, workloads=workloads)
    rng = np.random.default_rng(seed)
    w_pos = {w: i for i, w in enumerate(board.times.index)}
    s_pos = {s: j for j, s in enumerate(board.times.columns)}
    boot = np.full((n_boot, len(w_pos), len(s_pos)), np.inf)  # (B, W, S); absent cells stay missed
    n_min = dict.fromkeys(s_pos, 0)
    for (w, s), values in study_values(trials, by=by).groupby(level=["workload", "submission"], sort=True):
        if w in w_pos:  # workloads outside an explicit ``workloads`` list are not scored
            boot[:, w_pos[w], s_pos[s]] = _bootstrap_medians(values.to_numpy(), n_boot, rng)
            n_min[s] = len(values) if n_min[s] == 0 else min(n_min[s], len(values))
    ref = None if reference is None else s_pos[reference]
    scores = scores_from_ratios(ratios_from_times(boot, r_max=r_max, reference=ref), r_max=r_max, algoperf=algoperf)
    low, high = _percentile_bounds(scores, level)  # (S,), (S,)
    out = pd.DataFrame({"low": low, "high": high, "n": [n_min[s] for s in board.times.columns]},
                       index=board.times.columns)
    out = out.loc[board.scores.index].assign(estimate=board.scores, level=level, method="bootstrap")
    return out.loc[:, ["estimate", "low", "high", "level", "n", "method"]]


# ---------------------------------------------------------------------------------------------- paired test


def values_per_seed(trials: pd.DataFrame, *, workload: str, by: str) -> dict[str, pd.Series]:
    """Best value per seed (inf = missed) of every submission on one workload, the table validated once: pass it
    as ``per_seed=`` to :func:`paired_test` and :func:`paired_log_sd` when testing many pairs of one workload."""
    table = trial_values(trials, by=by)
    cell = table[table["workload"] == workload]
    return {str(s): g.groupby("seed")["value"].min() for s, g in cell.groupby("submission", sort=False)}


def _per_seed(trials: pd.DataFrame | None, *, workload: str, submission: str, by: str,
              known: Mapping[str, pd.Series] | None = None) -> pd.Series:
    """Best value per seed (inf = missed) of one submission on one workload (from ``known`` when given)."""
    seeds = values_per_seed(trials, workload=workload, by=by) if known is None else known
    if submission not in seeds:
        raise UsageError(f"no trials of {submission!r} on {workload!r}")
    return seeds[submission]


def _log_ratios(t_a: np.ndarray, t_b: np.ndarray) -> np.ndarray:
    """d = log t_B - log t_A with misses (+inf) giving +-inf; both missed (or both 0) gives 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.log(t_b) - np.log(t_a)
    return np.where(np.isnan(d), 0.0, d)


def _median(x: np.ndarray) -> float:
    """Median that tolerates +-inf (NaN only when the two middle values are -inf and +inf)."""
    if len(x) == 0:
        return math.nan
    with np.errstate(invalid="ignore"):
        return float(np.median(x))


def _signed_rank(d: np.ndarray) -> tuple[np.ndarray, float]:
    """Ranks of |d| (ties averaged; inf ranks above every finite value) and the signed-rank sum."""
    ranks = pd.Series(np.abs(d)).rank(method="average").to_numpy()
    return ranks, float(np.sum(np.sign(d) * ranks))


def _sign_flip_null(ranks: np.ndarray, n_perm: int, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    """Signed-rank sums under random signs: all 2**n sign vectors when n is small, else ``n_perm`` draws."""
    n = len(ranks)
    if n <= EXACT_MAX_PAIRS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2**n, n)
        return (1 - 2 * bits) @ ranks, True
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, n))
    return signs @ ranks, False


def paired_test(
    trials: pd.DataFrame | None,
    *,
    workload: str,
    a: str,
    b: str,
    by: str = "time",
    alternative: str = "greater",
    n_perm: int = 10000,
    seed: int | np.random.Generator = 0,
    per_seed: Mapping[str, pd.Series] | None = None,
) -> PairedTest:
    """Does submission ``a`` reach the target faster than ``b``? A paired sign-flip test on matched seeds.

    Pairs are the seeds both submissions ran on the workload (per seed the best trial, so hyperparameter sweeps
    repeated over seeds pair up too). Per pair ``d = log t_B - log t_A``. Misses are +inf, which is
    censoring-consistent for the *sign*: a miss took longer than the budget, hence longer than any reached run.
    The test therefore works on ranks: |d| is ranked (a one-sided miss, |d| = inf, ranks above every finite
    difference, ties averaged), pairs where both missed or d = 0 are dropped (Wilcoxon's convention: they carry no
    information on the sign), and the null distribution of the signed-rank sum comes from flipping signs, exactly
    for up to 16 pairs and by Monte Carlo beyond. Giving a one-sided miss the top rank assumes its unknown log
    ratio is at least as large as every observed one; it is a convention, stated here, not an estimate.

    Args:
      trials: the trials table.
      workload: workload key.
      a, b: the two submissions.
      by: the measure.
      alternative: ``"greater"`` (a is faster), ``"less"`` (a is slower) or ``"two-sided"``.
      n_perm: Monte Carlo sign vectors when there are more than 16 informative pairs.
      seed: int seed or numpy Generator (Monte Carlo only).
      per_seed: :func:`values_per_seed` of ``trials`` on ``workload``, when already computed (``trials`` is not read).
    Returns:
      :class:`PairedTest` with the p-value and the median speed-up t_B / t_A.
    Raises:
      UsageError: unknown alternative, no trials, or no seed run by both.
    References:
      Wilcoxon (1945); Good, "Permutation Tests" (2000), ch. 3 (paired sign-flip); Dahl et al. 2023.
    """
    _check_count(n_perm, "n_perm")
    if alternative not in ("greater", "less", "two-sided"):
        raise UsageError(f"alternative must be 'greater', 'less' or 'two-sided', got {alternative!r}")
    known = per_seed if per_seed is not None else values_per_seed(trials, workload=workload, by=by)
    per_a = _per_seed(trials, workload=workload, submission=a, by=by, known=known)
    per_b = _per_seed(trials, workload=workload, submission=b, by=by, known=known)
    seeds = per_a.index.intersection(per_b.index)
    if len(seeds) == 0:
        raise UsageError(f"{a!r} and {b!r} share no seed on {workload!r}; a paired test needs matched seeds")
    t_a, t_b = per_a.loc[seeds].to_numpy(), per_b.loc[seeds].to_numpy()
    inf_a, inf_b = np.isinf(t_a), np.isinf(t_b)
    informative = ~(inf_a & inf_b)
    d = _log_ratios(t_a, t_b)
    speedup = math.exp(_median(d[informative])) if informative.any() else math.nan
    d = d[d != 0]
    counts = dict(n_pairs=len(seeds), n_used=len(d), n_a_only=int((~inf_a & inf_b).sum()),
                  n_b_only=int((inf_a & ~inf_b).sum()), n_both_missed=int((inf_a & inf_b).sum()))
    if len(d) == 0:
        return PairedTest(p_value=1.0, speedup=speedup, statistic=0.0, exact=True, **counts)
    ranks, stat = _signed_rank(d)
    null, exact = _sign_flip_null(ranks, n_perm, np.random.default_rng(seed))
    tol = 1e-9 * ranks.sum()  # rank sums are multiples of 0.5: compare with a tolerance, not exactly
    if alternative == "greater":
        hits = np.sum(null >= stat - tol)
    elif alternative == "less":
        hits = np.sum(null <= stat + tol)
    else:
        hits = np.sum(np.abs(null) >= abs(stat) - tol)
    # Exact: the observed sign vector is among the 2**n. Monte Carlo: add it (Phipson & Smyth 2010), p > 0.
    p = hits / len(null) if exact else (hits + 1) / (len(null) + 1)
    return PairedTest(p_value=float(p), speedup=speedup, statistic=stat, exact=exact, **counts)


# ------------------------------------------------------------------------------------------- seeds needed


def log_time_sd(trials: pd.DataFrame, *, workload: str, submission: str, by: str = "time") -> float:
    """Standard deviation over seeds of log time-to-target (reached seeds only; NaN with fewer than 2).

    For two independent submissions with this spread each, the paired difference has sd ``sqrt(2)`` times it;
    pass that to :func:`seeds_needed`, or better :func:`paired_log_sd` when both have been run.
    """
    values = _per_seed(trials, workload=workload, submission=submission, by=by).to_numpy()
    logs = np.log(values[np.isfinite(values) & (values > 0)])
    return float(np.std(logs, ddof=1)) if len(logs) >= 2 else math.nan


def paired_log_sd(trials: pd.DataFrame | None, *, workload: str, a: str, b: str, by: str = "time",
                  per_seed: Mapping[str, pd.Series] | None = None) -> float:
    """Standard deviation of ``log t_B - log t_A`` over matched seeds where both reached (NaN with fewer than 2);
    ``per_seed`` as :func:`paired_test`'s."""
    per_a = _per_seed(trials, workload=workload, submission=a, by=by, known=per_seed)
    per_b = _per_seed(trials, workload=workload, submission=b, by=by, known=per_seed)
    seeds = per_a.index.intersection(per_b.index)
    d = _log_ratios(per_a.loc[seeds].to_numpy(), per_b.loc[seeds].to_numpy())
    finite = np.isfinite(per_a.loc[seeds].to_numpy()) & np.isfinite(per_b.loc[seeds].to_numpy())
    return float(np.std(d[finite], ddof=1)) if finite.sum() >= 2 else math.nan


def seeds_needed(speedup: float, *, sd: float, power: float = 0.8, alpha: float = 0.05,
                 two_sided: bool = False) -> int:
    """Matched seeds needed for :func:`paired_test` to detect a speed-up with the given power.

    Normal approximation for a paired test on log time ratios: ``n_t = ((z_alpha + z_power) * sd / log(speedup))^2
    + z_alpha^2 / 2`` (the second term is Guenther's small-sample correction for estimating sd), divided by 3/pi,
    the asymptotic relative efficiency of the signed-rank test to the t-test under normality (Noether 1987). The
    result is at least the smallest n at which the exact sign-flip test can reach ``alpha`` at all
    (2**-n <= alpha, one-sided). Misses are not modelled: if a fraction of seeds miss, expect to need more.

    Args:
      speedup: claimed t_B / t_A, > 1 (e.g. 1.2 for "A is 20% faster").
      sd: standard deviation of the paired log ratio over seeds (:func:`paired_log_sd`, or ``sqrt(2) *``
        :func:`log_time_sd` for independent runs).
      power: desired probability of rejecting when the speed-up is real, in (0, 1).
      alpha: significance level, in (0, 1).
      two_sided: size for a two-sided test.
    Returns:
      Number of matched seeds (per submission).
    Raises:
      UsageError: speedup <= 1, negative or non-finite sd, power or alpha outside (0, 1).
    References:
      Guenther, "Sample size formulas for normal theory t tests", Am. Statistician 35 (1981);
      Noether, "Sample size determination for some common nonparametric tests", JASA 82 (1987).
    """
    if not speedup > 1 or not math.isfinite(speedup):
        raise UsageError(f"speedup must be a finite ratio > 1 (t_B / t_A), got {speedup}")
    if not sd >= 0 or not math.isfinite(sd):
        raise UsageError(f"sd must be a finite number >= 0, got {sd}")
    if not (0 < power < 1 and 0 < alpha < 1):
        raise UsageError(f"power and alpha must be in (0, 1), got power={power}, alpha={alpha}")
    a = alpha / 2 if two_sided else alpha
    z_a, z_b = NormalDist().inv_cdf(1 - a), NormalDist().inv_cdf(power)
    n_t = ((z_a + z_b) * sd / math.log(speedup)) ** 2 + z_a**2 / 2
    return max(min_seeds_for(alpha, two_sided=two_sided), math.ceil(n_t / (3 / math.pi)))


def smallest_p(n: int, *, two_sided: bool = False) -> float:
    """The smallest p-value :func:`paired_test` can give with ``n`` informative pairs, exactly: every sign the same
    is the most extreme of the 2**n sign vectors, so 2**-n one-sided, twice that two-sided (capped at 1)."""
    if n < 1:
        return 1.0
    return min(1.0, (2.0 if two_sided else 1.0) * 2.0**-n)


def min_seeds_for(alpha: float = 0.05, *, two_sided: bool = False) -> int:
    """The fewest matched seeds with which :func:`paired_test` (exact sign-flip on signed ranks; the sign test has
    the same floor) can give ``p <= alpha`` at all: 5 one-sided and 6 two-sided at alpha = 0.05 (p = 1/32, 1/32).
    Fewer seeds cannot reach significance whatever the data: a recipe run with fewer says so.

    Raises:
      UsageError: alpha outside (0, 1).
    """
    if not 0 < alpha < 1:
        raise UsageError(f"alpha must be in (0, 1), got {alpha}")
    n = 1
    while smallest_p(n, two_sided=two_sided) > alpha + 1e-15:
        n += 1
    return n


def significance_note(n_seeds: int, comparisons: Sequence[str], *, alpha: float = 0.05,
                      two_sided: bool = True) -> str | None:
    """One line saying which paired comparisons cannot reach ``p <= alpha`` with ``n_seeds`` seeds (and how many
    would), or None when they can."""
    need = min_seeds_for(alpha, two_sided=two_sided)
    if n_seeds >= need or not comparisons:
        return None
    side = "two-sided" if two_sided else "one-sided"
    return (f"with {n_seeds} seed{'' if n_seeds == 1 else 's'} the paired {side} test cannot reach p <= {alpha:g} "
            f"(smallest possible p = {smallest_p(n_seeds, two_sided=two_sided):.3g}; {need} seeds can): "
            + ", ".join(comparisons))


# -------------------------------------------------------------------------------------------- sensitivity


def _hparam_value(cell: str, hparam: str) -> object:
    value = parse_hparams(cell).get(hparam)
    if isinstance(value, (list, dict)):  # unhashable: group by its canonical JSON text
        return json.dumps(value, sort_keys=True)
    return value


def sensitivity(trials: pd.DataFrame, *, hparam: str = "lr", by: str = "time") -> pd.DataFrame:
    """Best metric and time-to-target as a function of one swept hyperparameter.

    For each (workload, submission, value of ``hparam``), over the trials with that value (seeds, studies):
    the median ``best_metric`` and the median measure (+inf for misses, so a value that misses on most seeds shows
    inf). Medians, not bests, because the curve should show what a value typically does, not its luckiest seed.

    Args:
      trials: the trials table with ``hparams`` (a JSON object per row) and ``best_metric``.
      hparam: the hyperparameter key, e.g. ``"lr"``; trials without it are skipped.
      by: the measure.
    Returns:
      DataFrame with columns ``workload, submission, value, n_trials, n_reached, best_metric`` and the measure's
      column (e.g. ``time_to_target``), sorted by workload, submission, value.
    Raises:
      UsageError: malformed hparams JSON, or no trial sets ``hparam`` (the message lists the keys present).
    """
    table, col = trial_values(trials, by=by), TRIAL_MEASURES[by]
    if "hparams" not in table.columns or "best_metric" not in table.columns:
        raise UsageError("trials lack column(s): hparams and/or best_metric")
    values = table["hparams"].map(lambda c: _hparam_value(c, hparam))
    keep = values.notna()
    if not keep.any():
        keys = sorted({k for c in table["hparams"] for k in parse_hparams(c)})
        raise UsageError(f"no trial sets hyperparameter {hparam!r}; present: {', '.join(keys) or '(none)'}")
    # trial_values' ``value`` column is the measure (inf = missed); the swept value goes in ``hp``.
    table = table.loc[keep].assign(hp=values[keep].astype(object), is_reached=table["outcome"] == "reached")
    grouped = table.groupby(["workload", "submission", "hp"], sort=False)
    out = pd.DataFrame({
        "n_trials": grouped.size(),
        "n_reached": grouped["is_reached"].sum().astype(int),
        "best_metric": grouped["best_metric"].median(),
        col: grouped["value"].median(),
    }).reset_index().rename(columns={"hp": "value"})
    return out.sort_values(["workload", "submission", "value"], key=_sort_key, kind="stable", ignore_index=True)


def _sort_key(column: pd.Series) -> pd.Series:
    """Numeric values sort numerically; mixed or text values sort by their text."""
    if column.name == "value" and not all(isinstance(v, (int, float)) for v in column):
        return column.map(str)
    return column
