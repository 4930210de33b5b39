"""Behaviour tests of optbench.scoring.stats: bootstrap coverage, the paired seed test, seeds needed, sensitivity."""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from optbench.scoring import profiles as scoring, stats
from optbench.errors import UsageError

INF = math.inf


def trial(workload: str, submission: str, t: float, *, study: int = 0, trial_id: int = 0, seed: int = 0,
          hparams: dict | None = None, best_metric: float = 0.4) -> dict:
    reached = math.isfinite(t)
    return dict(
        workload=workload, submission=submission, study=f"s{study}", trial=f"t{trial_id}", seed=seed,
        outcome="reached" if reached else "missed", time_to_target=t if reached else math.nan,
        steps_to_target=math.nan, examples_to_target=math.nan, tokens_to_target=math.nan, metric_goal="min",
        target=0.5, best_metric=best_metric, hparams=json.dumps(hparams or {"lr": 0.1}),
    )


def seeded_runs(times_by_submission: dict[str, list[float]], workload: str = "w") -> pd.DataFrame:
    """One study per seed, one trial each: seed i of every submission is study i."""
    return pd.DataFrame([
        trial(workload, s, t, study=i, seed=i) for s, ts in times_by_submission.items() for i, t in enumerate(ts)
    ])


# ------------------------------------------------------------------------------------------------- bootstrap


def simulated_tables(n_tables: int, n_studies: int, p_miss: float, rng: np.random.Generator) -> pd.DataFrame:
    """``n_tables`` independent cells (one workload each); a study misses with probability ``p_miss``, else
    its time is lognormal(log 100, 0.3)."""
    rows = []
    for w in range(n_tables):
        miss = rng.random(n_studies) < p_miss
        t = np.exp(math.log(100) + 0.3 * rng.standard_normal(n_studies))
        rows += [trial(f"w{w:03d}", "X", INF if m else float(v), study=k, seed=k)
                 for k, (m, v) in enumerate(zip(miss, t))]
    return pd.DataFrame(rows)


def test_time_ci_covers_truth_at_nominal_rate():
    # 200 simulated tables of 15 studies, 10% misses (+inf). The statistic is the median over studies, so the
    # truth is the median of the mixture: F(x) = 0.9 * Phi((log x - log 100) / 0.3) = 1/2.
    truth = math.exp(math.log(100) + 0.3 * NormalDist().inv_cdf(0.5 / 0.9))
    trials = simulated_tables(200, 15, 0.1, np.random.default_rng(1))
    ci = stats.time_cis(trials, level=0.9, n_boot=1000, seed=0)
    coverage = ((ci["low"] <= truth) & (truth <= ci["high"])).mean()
    assert 0.82 <= coverage <= 0.97  # nominal 0.9; binomial sd with 200 tables is 0.02
    assert (ci["unit"] == "seed").all() and (ci["n_units"] == 15).all()
    assert (ci["low"] <= ci["estimate"]).all() and (ci["estimate"] <= ci["high"]).all()


def test_time_ci_bound_can_be_inf_and_is_reproducible():
    trials = seeded_runs({"X": [10.0, 12.0, INF, INF, 11.0]})
    a = stats.time_ci(trials, workload="w", submission="X", n_boot=500, seed=3)
    b = stats.time_ci(trials, workload="w", submission="X", n_boot=500, seed=3)
    assert a == b
    assert a.estimate == 12.0 and math.isinf(a.high) and 10.0 <= a.low <= 12.0


def test_time_ci_resamples_studies_and_needs_two():
    # Two trials per study: the unit is the study (its best trial), not the seed.
    rows = [trial("w", "X", t, study=k, trial_id=j, seed=10 * k + j)
            for k, pair in enumerate([(10.0, 30.0), (20.0, 15.0), (40.0, 50.0)]) for j, t in enumerate(pair)]
    ci = stats.time_ci(pd.DataFrame(rows), workload="w", submission="X", n_boot=300)
    assert (ci.unit, ci.n_units, ci.estimate) == ("study", 3, 15.0)  # median of bests 10, 15, 40
    assert 10.0 <= ci.low <= 15.0 <= ci.high <= 40.0
    one = stats.time_ci(pd.DataFrame(rows[:2]), workload="w", submission="X")
    assert one.estimate == 10.0 and math.isnan(one.low) and math.isnan(one.high)
    with pytest.raises(UsageError, match="no trials"):
        stats.time_ci(pd.DataFrame(rows), workload="w", submission="Y")


def test_score_ci_contains_estimate_and_shrinks_without_noise():
    rng = np.random.default_rng(0)
    noisy = {s: {w: list(base * np.exp(0.3 * rng.standard_normal(6))) for w, base in per_w.items()}
             for s, per_w in {"A": {"w1": 10.0, "w2": 30.0}, "B": {"w1": 15.0, "w2": 25.0}}.items()}
    rows = [trial(w, s, float(t), study=k, seed=k) for s, per_w in noisy.items()
            for w, ts in per_w.items() for k, t in enumerate(ts)]
    ci = stats.score_ci(pd.DataFrame(rows), n_boot=400, seed=1)
    board = scoring.leaderboard(pd.DataFrame(rows))
    assert list(ci.index) == list(board.scores.index)
    np.testing.assert_allclose(ci["estimate"], board.scores)
    assert ((0 <= ci["low"]) & (ci["low"] <= ci["estimate"]) & (ci["estimate"] <= ci["high"])
            & (ci["high"] <= 1)).all()
    assert (ci["high"] - ci["low"] > 0).all()
    # Identical studies: every replicate equals the estimate.
    flat = [trial(w, s, t, study=k, seed=k) for (w, s, t) in [("w1", "A", 10.0), ("w1", "B", 20.0)]
            for k in range(4)]
    flat_ci = stats.score_ci(pd.DataFrame(flat), n_boot=50, reference="A")
    np.testing.assert_allclose(flat_ci["low"], flat_ci["high"])
    assert flat_ci.loc["B", "estimate"] == pytest.approx(2 / 3)  # ratio 2 to the reference: (4 - 2) / 3


# ------------------------------------------------------------------------------------------------ paired test


def test_paired_test_small_p_for_clear_speedup():
    rng = np.random.default_rng(2)
    b = 100 * np.exp(0.1 * rng.standard_normal(10))
    a = b / 2 * np.exp(0.1 * rng.standard_normal(10))  # A is twice as fast on every seed
    res = stats.paired_test(seeded_runs({"A": list(a), "B": list(b)}), workload="w", a="A", b="B")
    assert res.exact and res.n_pairs == res.n_used == 10
    assert res.p_value == pytest.approx(1 / 2**10)  # only the observed all-positive sign vector is as extreme
    assert res.speedup == pytest.approx(2.0, rel=0.15)
    reverse = stats.paired_test(seeded_runs({"A": list(a), "B": list(b)}), workload="w", a="B", b="A")
    assert reverse.p_value == 1.0 and reverse.speedup < 1


def test_paired_test_large_p_without_speedup():
    rng = np.random.default_rng(3)
    base = 100 * np.exp(0.3 * rng.standard_normal(12))
    noise = np.exp(0.2 * rng.standard_normal((2, 12)))  # same distribution for both, independent noise
    res = stats.paired_test(seeded_runs({"A": list(base * noise[0]), "B": list(base * noise[1])}),
                            workload="w", a="A", b="B", alternative="two-sided")
    assert res.p_value > 0.2


def test_paired_test_with_misses_and_monte_carlo():
    # 20 seeds (> 16: Monte Carlo): A always reaches; B misses on 6 seeds and is 1.5x slower otherwise.
    rng = np.random.default_rng(4)
    a = 50 * np.exp(0.2 * rng.standard_normal(20))
    b = [INF if i % 3 == 0 else float(t * 1.5) for i, t in enumerate(a * np.exp(0.1 * rng.standard_normal(20)))]
    b[1] = INF  # pair 1 ...
    a[1] = INF  # ... both missed: no information, excluded
    res = stats.paired_test(seeded_runs({"A": list(a), "B": b}), workload="w", a="A", b="B", n_perm=4000, seed=0)
    assert not res.exact
    assert (res.n_pairs, res.n_both_missed, res.n_a_only, res.n_b_only, res.n_used) == (20, 1, 7, 0, 19)
    assert res.p_value < 0.001 and res.speedup == pytest.approx(1.5, rel=0.2)


def test_paired_test_needs_matched_seeds():
    trials = pd.concat([seeded_runs({"A": [1.0, 2.0]}), seeded_runs({"B": [1.0]}).assign(seed=7)])
    with pytest.raises(UsageError, match="share no seed"):
        stats.paired_test(trials, workload="w", a="A", b="B")


# ------------------------------------------------------------------------------------------------ seeds needed


def test_seeds_needed_monotone_in_effect_size_and_spread():
    speedups = [1.02, 1.05, 1.1, 1.2, 1.5, 2.0, 4.0]
    n = [stats.seeds_needed(s, sd=0.3) for s in speedups]
    assert all(x >= y for x, y in zip(n, n[1:])) and n[0] > n[-1]
    assert n[-1] == 5  # floor: an exact one-sided sign-flip test needs 2**-n <= 0.05
    assert stats.seeds_needed(1.2, sd=0.2) < stats.seeds_needed(1.2, sd=0.4)
    assert stats.seeds_needed(1.2, sd=0.3, power=0.9) > stats.seeds_needed(1.2, sd=0.3, power=0.8)
    with pytest.raises(UsageError):
        stats.seeds_needed(0.9, sd=0.3)


def test_seeds_needed_reaches_the_power_in_simulation():
    # Simulate the claim (log ratio ~ N(log 1.2, 0.2)) at the suggested n and run the actual test.
    n = stats.seeds_needed(1.2, sd=0.2, power=0.8, alpha=0.05)
    rng = np.random.default_rng(5)
    rejections = 0
    for _ in range(200):
        d = math.log(1.2) + 0.2 * rng.standard_normal(n)
        trials = seeded_runs({"A": [100.0] * n, "B": list(100.0 * np.exp(d))})
        rejections += stats.paired_test(trials, workload="w", a="A", b="B", n_perm=2000, seed=rng).p_value <= 0.05
    assert rejections / 200 >= 0.72  # target 0.8; binomial sd 0.03


def test_log_time_sds():
    trials = seeded_runs({"A": [10.0, 20.0, INF, 40.0], "B": [20.0, 40.0, 50.0, 80.0]})
    assert stats.log_time_sd(trials, workload="w", submission="A") == pytest.approx(math.log(2))
    assert stats.paired_log_sd(trials, workload="w", a="A", b="B") == pytest.approx(0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------------ sensitivity


def test_sensitivity_medians_per_value():
    rows = []
    for seed, (t_hi, t_lo) in enumerate([(10.0, 30.0), (12.0, INF), (INF, 40.0)]):
        rows.append(trial("w", "X", t_hi, study=seed, trial_id=0, seed=seed, hparams={"lr": 0.1, "wd": 0.0},
                          best_metric=0.3 + seed / 10))
        rows.append(trial("w", "X", t_lo, study=seed, trial_id=1, seed=seed, hparams={"lr": 0.01, "wd": 0.0},
                          best_metric=0.45))
    rows.append(trial("w", "X", 5.0, hparams={"wd": 0.1}))  # no lr: skipped
    out = stats.sensitivity(pd.DataFrame(rows), hparam="lr")
    assert list(out["value"]) == [0.01, 0.1]
    assert list(out["n_trials"]) == [3, 3] and list(out["n_reached"]) == [2, 2]
    assert list(out["time_to_target"]) == [40.0, 12.0]  # medians of (30, inf, 40) and (10, 12, inf)
    assert list(out["best_metric"]) == pytest.approx([0.45, 0.4])
    with pytest.raises(UsageError, match="present: lr, wd"):
        stats.sensitivity(pd.DataFrame(rows), hparam="momentum")


def test_bad_arguments_are_usage_errors():
    trials = seeded_runs({"A": [1.0, 2.0], "B": [2.0, 3.0]})
    with pytest.raises(UsageError, match="n_boot"):
        stats.time_cis(trials, n_boot=0)
    with pytest.raises(UsageError, match="level"):
        stats.score_ci(trials, level=1.5)
    with pytest.raises(UsageError, match="alternative"):
        stats.paired_test(trials, workload="w", a="A", b="B", alternative="faster")
    with pytest.raises(UsageError, match="no trials"):
        stats.time_cis(trials.iloc[:0])
