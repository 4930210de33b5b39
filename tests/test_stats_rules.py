"""Scoring and bootstrap rules whose plausible bugs used to pass: shared bootstrap indices, the r_max boundary."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from optbench.scoring import profiles as scoring, stats
from tests.test_stats import seeded_runs

INF = math.inf


def test_identical_noisy_submissions_have_intervals_that_do_not_collapse():
    # A and B ran the same 8 noisy seeds. Each cell must be resampled on its own: then in some replicates A's median
    # beats B's and in others it loses, so both scores spread below 1. Drawing the same indices for every cell would
    # give A and B identical medians in every replicate, ratio 1, score interval [1, 1].
    times = list(100 * np.exp(0.4 * np.random.default_rng(7).standard_normal(8)))
    trials = seeded_runs({"A": times, "B": times})
    ci = stats.score_ci(trials, n_boot=400, seed=0)
    assert ci["estimate"].tolist() == [1.0, 1.0]  # the point estimate is a tie ...
    for s in ("A", "B"):
        assert ci.loc[s, "low"] < 0.95 and ci.loc[s, "high"] == 1.0  # ... the interval is not
    # Two workloads: a workload's replicates must not reuse another's indices either.
    both = pd.concat([trials, seeded_runs({"A": times, "B": times}, workload="w2")])
    ci2 = stats.score_ci(both, n_boot=400, seed=0)
    assert (ci2["low"] < 0.95).all()


def test_ratio_exactly_at_r_max_is_kept_not_a_miss():
    # B takes exactly 4x A's time: r = 4 = r_max is the last ratio that still counts (only r > r_max is a miss).
    trials = seeded_runs({"A": [10.0], "B": [40.0], "C": [40.000001]})
    board = scoring.leaderboard(trials, r_max=4.0)
    assert board.ratios.loc["w", "B"] == 4.0
    assert math.isinf(board.ratios.loc["w", "C"])  # just above r_max
    rho = board.profile([1.0, 3.999, 4.0])
    assert rho["B"].tolist() == [0.0, 0.0, 1.0] and rho["C"].tolist() == [0.0, 0.0, 0.0]
    # Exact area: r = r_max earns (r_max - r) / (r_max - 1) = 0, the same as a miss ...
    assert board.scores["B"] == 0.0
    # ... but AlgoPerf's trapezoid sees rho(4) = 1 at its last grid point: half a step of credit.
    algo = scoring.leaderboard(trials, r_max=4.0, algoperf=True).scores
    assert algo["B"] == pytest.approx((3 / 99) / 2 / 3, abs=1e-12) and algo["C"] == 0.0


def test_vectorised_ratio_boundary():
    r = scoring.ratios_from_times(np.array([[1.0, 4.0, 4.0 + 1e-9, INF]]), r_max=4.0)
    np.testing.assert_array_equal(r, [[1.0, 4.0, INF, INF]])
