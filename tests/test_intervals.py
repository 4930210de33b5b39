"""Intervals that say what they cover, and the seeds a paired test needs (issue 21, items 1 and 2).

The order-statistic interval of a median is checked in simulation: 1000 samples each of n = 2, 3, 5, 10, 20 draws
from skewed distributions; its coverage of the true median must be at least the level it states, within Monte-Carlo
error. The bootstrap interval it replaces fails the same check with few draws (the min-max of 2 covers 50%)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from optbench.errors import UsageError
from optbench.scoring import stats
from tests.test_stats import INF, seeded_runs

DRAWS = 1000
SKEWED = {  # name -> (draw(rng, shape), true median)
    "lognormal": (lambda rng, shape: rng.lognormal(0.0, 1.0, size=shape), 1.0),
    "exponential": (lambda rng, shape: rng.exponential(1.0, size=shape), math.log(2.0)),
}


def _coverage(samples: np.ndarray, truth: float, level: float) -> tuple[float, float]:
    """(achieved level the interval states, fraction of samples whose interval holds ``truth``), vectorised: every
    sample of one n has the same ranks j, n+1-j."""
    n = samples.shape[1]
    j = stats.order_rank(n, level)
    ordered = np.sort(samples, axis=1)
    covered = (ordered[:, j - 1] <= truth) & (truth <= ordered[:, n - j])
    return stats.order_coverage(n, j), float(covered.mean())


@pytest.mark.parametrize("dist", sorted(SKEWED))
@pytest.mark.parametrize("n", [2, 3, 5, 10, 20])
def test_order_interval_covers_at_least_its_stated_level(dist, n, capsys):
    draw, truth = SKEWED[dist]
    samples = draw(np.random.default_rng(21 + n), (DRAWS, n))
    stated, covered = _coverage(samples, truth, 0.9)
    mc = 3 * math.sqrt(stated * (1 - stated) / DRAWS)  # three Monte-Carlo standard errors
    with capsys.disabled():
        print(f"\n  {dist:11s} n={n:2d}: stated {stated:.3f}, covered {covered:.3f}")
    assert covered >= stated - mc
    one = stats.median_order_interval(samples[0], level=0.9)  # the function agrees with the vectorised ranks
    assert one.level == stated and one.low <= one.estimate <= one.high


@pytest.mark.parametrize(("n", "level", "label"), [
    (2, 0.5, "50% (90% unreachable) order-statistic interval, n=2"),
    (3, 0.75, "75% (90% unreachable) order-statistic interval, n=3"),
    (4, 0.875, "87.5% (90% unreachable) order-statistic interval, n=4"),
    (5, 0.9375, "93.8% order-statistic interval, n=5"),
])
def test_small_samples_state_the_level_they_reach(n, level, label):
    ci = stats.median_order_interval(np.arange(1.0, n + 1.0), level=0.9)
    assert (ci.low, ci.high) == (1.0, float(n))  # too few for anything narrower than the range
    assert ci.level == level and ci.requested == 0.9 and ci.label() == label


def test_the_narrowest_interval_reaching_the_level_is_taken():
    assert stats.order_rank(20, 0.9) == 6 and stats.order_coverage(20, 6) >= 0.9 > stats.order_coverage(20, 7)
    ci = stats.median_order_interval(np.arange(1.0, 21.0), level=0.9)
    assert (ci.low, ci.high) == (6.0, 15.0)
    one = stats.median_order_interval([4.0])
    assert one.estimate == 4.0 and math.isnan(one.low) and one.level == 0.0 and one.label() == "no interval, n=1"


def test_misses_stay_inf_in_the_interval():
    ci = stats.median_order_interval([10.0, 12.0, INF, INF, 11.0])
    assert ci.estimate == 12.0 and ci.low == 10.0 and math.isinf(ci.high)


def test_time_ci_is_the_order_interval_and_bootstrap_says_nominal():
    trials = seeded_runs({"X": [10.0, 20.0, 30.0]})
    ci = stats.time_ci(trials, workload="w", submission="X")
    assert (ci.low, ci.high, ci.level, ci.method, ci.n_units) == (10.0, 30.0, 0.75, "order", 3)
    boot = stats.time_ci(trials, workload="w", submission="X", method="bootstrap")
    assert boot.method == "bootstrap" and boot.level == 0.9
    with pytest.raises(UsageError, match="interval method"):
        stats.time_ci(trials, workload="w", submission="X", method="exact")


def test_score_ci_states_its_level_and_smallest_sample():
    trials = seeded_runs({"A": [10.0, 11.0, 12.0], "B": [20.0, 21.0]})
    ci = stats.score_ci(trials, n_boot=50)
    assert (ci["level"] == 0.9).all() and (ci["method"] == "bootstrap").all()
    assert ci.loc["A", "n"] == 3 and ci.loc["B", "n"] == 2


# -------------------------------------------------------------------------------------------- seeds needed


def test_min_seeds_is_where_the_exact_test_can_first_reach_alpha():
    assert stats.min_seeds_for(0.05) == 5 and stats.min_seeds_for(0.05, two_sided=True) == 6
    assert stats.smallest_p(4) == 1 / 16 > 0.05 > stats.smallest_p(5)
    assert stats.min_seeds_for(0.01, two_sided=True) == 8
    # the paired test itself: n pairs all one way give exactly smallest_p
    for n in (5, 6):
        per_seed = {"a": pd.Series(np.ones(n)), "b": pd.Series(np.arange(2.0, n + 2.0))}
        p = stats.paired_test(None, workload="", a="a", b="b", alternative="two-sided", per_seed=per_seed).p_value
        assert p == stats.smallest_p(n, two_sided=True)
    with pytest.raises(UsageError, match="alpha"):
        stats.min_seeds_for(1.0)


def test_recipe_defaults_are_the_minimum_seeds():
    from optbench.recipes.cbs import LR_SWEEP_SEEDS
    from optbench.recipes.seesaw import SEESAW_SEEDS, SeesawSpec

    assert LR_SWEEP_SEEDS == SEESAW_SEEDS == stats.min_seeds_for(0.05, two_sided=True)
    assert len(SeesawSpec().seeds) == SEESAW_SEEDS


def test_significance_note_names_what_cannot_reach():
    note = stats.significance_note(2, ["adamw vs sgd"])
    assert note is not None and "cannot reach p <= 0.05" in note and "6 seeds" in note and "adamw vs sgd" in note
    assert stats.significance_note(6, ["adamw vs sgd"]) is None


# ------------------------------------------------------------------------------------------- tuning effort


def test_tuning_effort_counts_trials_to_the_first_reach_in_trial_order():
    rows = []
    for study, outcomes in enumerate([["missed", "reached", "reached"], ["reached", "missed", "missed"],
                                      ["missed", "missed", "missed"]]):
        for i, o in reversed(list(enumerate(outcomes))):  # written out of order: the trial index orders them
            rows.append({"workload": "w", "submission": "X", "study": f"study-{study}", "trial": str(i),
                         "outcome": o})
    per_study = stats.trials_to_first_reach(pd.DataFrame(rows))
    assert per_study.tolist() == [2.0, 1.0, INF]
    effort = stats.tuning_effort(pd.DataFrame(rows)).loc[("w", "X")]
    assert (effort["estimate"], effort["low"], effort["high"], effort["n"], effort["reached"]) == (2.0, 1.0, INF,
                                                                                                   3, 2)
    assert effort["level"] == 0.75 and effort["trials"] == 3
