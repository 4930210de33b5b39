"""optbench.scoring.stats pinned down where its statistical tests are loose: exact percentile indices, argument bounds,
the seeds-needed formula, reproducibility under the default seed, options reaching the bootstrap, sort orders and
messages. Each test kills mutmut survivors of optbench/scoring/stats.py (benchmarks/mutation.py; docs/TESTING.md)."""

from __future__ import annotations

import math
import warnings
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest

from optbench.scoring import profiles as scoring, stats
from optbench.errors import UsageError
from tests.test_stats import INF, seeded_runs, trial


# --------------------------------------------------------------------------------------- bootstrap internals


def test_percentile_bounds_pick_the_order_statistics():
    replicates = np.arange(10.0)[::-1]  # unsorted on purpose
    assert stats._percentile_bounds(replicates, 0.5) == (2.0, 7.0)  # tail 0.25: floor(2.5), ceil(7.5) - 1
    assert stats._percentile_bounds(np.arange(20.0), 0.5) == (5.0, 14.0)  # floor(5), ceil(15) - 1
    assert stats._percentile_bounds(np.array([5.0]), 0.9) == (5.0, 5.0)


def test_bootstrap_medians_draw_every_unit():
    medians = stats._bootstrap_medians(np.array([1.0, 5.0]), 400, np.random.default_rng(0))
    assert set(medians.tolist()) == {1.0, 3.0, 5.0}  # both units, and their mix, all occur


@pytest.mark.parametrize("level", [0.0, 1.0])
def test_levels_zero_and_one_are_refused(level):
    with pytest.raises(UsageError, match=rf"^confidence level must be in \(0, 1\), got {level}$"):
        stats.time_ci(seeded_runs({"X": [1.0, 2.0]}), workload="w", submission="X", level=level)


def test_sign_flip_null_is_exact_up_to_16_pairs_and_symmetric_beyond():
    null16, exact16 = stats._sign_flip_null(np.arange(1.0, 17.0), 10, np.random.default_rng(0))
    assert exact16 and len(null16) == 2**16
    ranks = np.arange(1.0, 18.0)
    null, exact = stats._sign_flip_null(ranks, 4000, np.random.default_rng(0))
    assert not exact and len(null) == 4000
    assert null.min() >= -ranks.sum() and null.max() <= ranks.sum()
    assert abs(null.mean()) < 0.1 * ranks.sum()  # signs +-1 with equal weight: centred on 0


# ----------------------------------------------------------------------------------------------------- time_ci


def _two_subs_many_studies(n: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return seeded_runs({"A": list(10 * np.exp(0.4 * rng.standard_normal(n))),
                        "B": list(12 * np.exp(0.4 * rng.standard_normal(n)))})


def test_time_ci_bootstrap_defaults_are_seed_0_and_2000_replicates():
    trials = _two_subs_many_studies(100)  # many units: the 99% bounds move with the random stream
    default = stats.time_ci(trials, workload="w", submission="A", level=0.99, method="bootstrap")
    assert default == stats.time_ci(trials, workload="w", submission="A", n_boot=2000, seed=0, level=0.99,
                                    method="bootstrap")
    assert default.level == 0.99 and default.n_units == 100 and default.unit == "seed"
    other = stats.time_ci(trials, workload="w", submission="A", seed=1, level=0.99, method="bootstrap")
    assert (other.low, other.high) != (default.low, default.high)
    order = stats.time_ci(trials, workload="w", submission="A")  # the default: order statistics, no randomness
    assert order.method == "order" and order.requested == 0.9 and order.level >= 0.9
    assert order == stats.time_ci(trials, workload="w", submission="A", seed=1)


def test_time_ci_with_two_studies_has_bounds_and_one_study_keeps_its_fields():
    two = stats.time_ci(seeded_runs({"X": [10.0, 20.0]}), workload="w", submission="X", level=0.8)
    assert (two.low, two.high, two.n_units, two.level, two.requested) == (10.0, 20.0, 2, 0.5, 0.8)
    one = stats.time_ci(seeded_runs({"X": [10.0]}), workload="w", submission="X", level=0.7)
    assert (one.estimate, one.level, one.requested, one.n_units, one.unit) == (10.0, 0.0, 0.7, 1, "seed")


def _with_steps(rows: list[dict], steps: list[float]) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    return df.assign(steps_to_target=steps)


def test_time_ci_and_time_cis_use_the_measure():
    trials = _with_steps(seeded_runs({"X": [10.0, 20.0, 30.0]}).to_dict("records"), [900.0, 800.0, 700.0])
    trials = trials.assign(time_to_target=np.nan)  # steps recorded, seconds not: --by steps must not need them
    assert stats.time_ci(trials, workload="w", submission="X", by="steps").estimate == 800.0
    cis = stats.time_cis(trials, by="steps", n_boot=50)
    assert cis.loc[("w", "X"), "estimate"] == 800.0


def test_n_boot_must_be_positive_named():
    trials = seeded_runs({"A": [1.0, 2.0], "B": [2.0, 3.0]})
    for call in (lambda: stats.time_ci(trials, workload="w", submission="A", n_boot=0),
                 lambda: stats.score_ci(trials, n_boot=0)):
        with pytest.raises(UsageError, match="^n_boot must be a positive integer, got 0$"):
            call()
    with pytest.raises(UsageError, match="^n_perm must be a positive integer, got 0$"):
        stats.paired_test(trials, workload="w", a="A", b="B", n_perm=0)


# ---------------------------------------------------------------------------------------------------- time_cis


def test_time_cis_draw_one_generator_in_sorted_cell_order():
    trials = pd.concat([_two_subs_many_studies().assign(workload="w2"),
                        _two_subs_many_studies().assign(workload="w1")]).iloc[::-1]
    boot = {"method": "bootstrap"}
    cis = stats.time_cis(trials, level=0.8, n_boot=300, **boot)
    assert cis.index.names == ["workload", "submission"]
    assert list(cis.index) == [("w1", "A"), ("w1", "B"), ("w2", "A"), ("w2", "B")]
    rng = np.random.default_rng(0)  # the default seed, shared by the cells in sorted order
    for w, s in cis.index:
        one = stats.time_ci(trials, workload=w, submission=s, level=0.8, n_boot=300, seed=rng, **boot)
        assert (cis.loc[(w, s), "low"], cis.loc[(w, s), "high"]) == (one.low, one.high)
        assert cis.loc[(w, s), "level"] == 0.8
    assert stats.time_cis(trials, level=0.8, n_boot=300, **boot).equals(cis)  # reproducible
    assert not stats.time_cis(trials, level=0.8, n_boot=300, seed=1, **boot).equals(cis)
    assert stats.time_cis(trials, level=0.8, **boot).equals(stats.time_cis(trials, level=0.8, n_boot=2000, seed=0,
                                                                           **boot))
    order = stats.time_cis(trials, level=0.8)  # 7 studies: ranks 2 and 6, 87.5% coverage
    assert (order["level"] == 0.875).all() and (order["method"] == "order").all()


# --------------------------------------------------------------------------------------------------- score_ci


def _fixed_table() -> pd.DataFrame:
    """One study per cell: every bootstrap replicate equals the data, so the interval collapses."""
    rows = [trial("w1", "A", 10.0), trial("w1", "B", 22.0), trial("w2", "A", INF), trial("w2", "B", 30.0),
            trial("w3", "A", 12.0),  # B never ran w3: an absent cell
            trial("w4", "A", 10.0), trial("w4", "B", 50.0)]  # ratio 5: scored only with r_max above 4
    return pd.DataFrame(rows).assign(steps_to_target=[100.0, 50.0, np.nan, 30.0, 10.0, 10.0, 20.0])


@pytest.mark.parametrize("options", [
    {}, {"reference": "A"}, {"algoperf": True}, {"r_max": 2.1}, {"r_max": 2.3}, {"r_max": 6.0}, {"by": "steps"},
    {"workloads": ["w1", "w2", "w3", "w9"]}, {"workloads": ["w1", "w2"]}, {"reference": "B", "algoperf": True},
])
def test_score_ci_without_noise_collapses_on_the_leaderboard_score(options):
    trials = _fixed_table()
    ci = stats.score_ci(trials, n_boot=20, **options)
    board = scoring.leaderboard(trials, **options)
    assert list(ci.index) == list(board.scores.index)
    np.testing.assert_allclose(ci["estimate"], board.scores, atol=1e-12)
    np.testing.assert_allclose(ci["low"], board.scores, atol=1e-12)
    np.testing.assert_allclose(ci["high"], board.scores, atol=1e-12)


def test_score_ci_reference_ratios_in_every_replicate():
    # With reference A, A's ratio is 1 in every replicate: its interval is exactly [1, 1] even when B is often
    # faster; without a reference it is not.
    rng = np.random.default_rng(0)
    trials = seeded_runs({"A": list(10 * np.exp(0.5 * rng.standard_normal(6))),
                          "B": list(10 * np.exp(0.5 * rng.standard_normal(6)))})
    ref = stats.score_ci(trials, reference="A", n_boot=200)
    assert (ref.loc["A", "low"], ref.loc["A", "high"]) == (1.0, 1.0)
    assert stats.score_ci(trials, n_boot=200).loc["A", "low"] < 1.0


def test_score_ci_defaults_are_seed_0_and_1000_replicates():
    trials = _two_subs_many_studies(101)
    default = stats.score_ci(trials, level=0.99)
    assert default.equals(stats.score_ci(trials, n_boot=1000, seed=0, level=0.99))
    assert not default.equals(stats.score_ci(trials, seed=1, level=0.99))
    assert not default.equals(stats.score_ci(trials, n_boot=1001, level=0.99))


# ------------------------------------------------------------------------------------------------ paired test


def test_paired_test_defaults_and_monte_carlo_p():
    # 17 informative pairs, A faster on 13: Monte Carlo (beyond 16 pairs) with 10000 draws from seed 0.
    rng = np.random.default_rng(1)
    t_a = 10 * np.exp(0.3 * rng.standard_normal(17))
    t_b = t_a * np.exp(np.where(np.arange(17) < 13, 0.2, -0.2) + 0.01 * np.arange(17))
    trials = seeded_runs({"A": list(t_a), "B": list(t_b)})
    res = stats.paired_test(trials, workload="w", a="A", b="B")
    assert not res.exact and res.n_used == 17
    assert res == stats.paired_test(trials, workload="w", a="A", b="B", n_perm=10000, seed=0)
    assert res.p_value != stats.paired_test(trials, workload="w", a="A", b="B", seed=1).p_value
    assert res.p_value != stats.paired_test(trials, workload="w", a="A", b="B", n_perm=10001).p_value
    less = stats.paired_test(trials, workload="w", a="A", b="B", alternative="less")
    assert less.p_value > 0.5


def test_paired_test_speedup_counts_one_sided_misses():
    # Two pairs where only A reached (d = +inf) and one where both reached with t_B / t_A = 2: median is inf.
    trials = seeded_runs({"A": [10.0, 10.0, 10.0], "B": [INF, INF, 20.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(inf), inf - inf are handled by rule, silently
        res = stats.paired_test(trials, workload="w", a="A", b="B")
    assert math.isinf(res.speedup) and (res.n_a_only, res.n_used) == (2, 3)


def test_paired_test_one_pair_has_a_speedup_and_opposite_misses_give_nan_silently():
    one = stats.paired_test(seeded_runs({"A": [10.0], "B": [25.0]}), workload="w", a="A", b="B")
    assert one.speedup == pytest.approx(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        split = stats.paired_test(seeded_runs({"A": [10.0, INF], "B": [INF, 10.0]}), workload="w", a="A", b="B")
    assert math.isnan(split.speedup) and (split.n_a_only, split.n_b_only) == (1, 1)


# ------------------------------------------------------------------------------------------------------ spreads


def test_log_time_sd_skips_zero_and_counts_times_below_one():
    trials = seeded_runs({"X": [0.0, 0.5, 2.0, 8.0]})
    assert stats.log_time_sd(trials, workload="w", submission="X") == pytest.approx(2 * math.log(2))
    two = seeded_runs({"X": [1.5, 6.0]})
    assert stats.log_time_sd(two, workload="w", submission="X") == pytest.approx(math.log(4) / math.sqrt(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # fewer than two: NaN by rule, no degrees-of-freedom warning
        assert math.isnan(stats.log_time_sd(seeded_runs({"X": [3.0, INF]}), workload="w", submission="X"))


def test_paired_log_sd_is_the_sample_sd_of_the_log_ratios():
    trials = seeded_runs({"A": [10.0, 10.0, 10.0, 10.0], "B": [10.0, 20.0, 40.0, INF]})
    expected = float(np.std(np.log([1.0, 2.0, 4.0]), ddof=1))
    assert stats.paired_log_sd(trials, workload="w", a="A", b="B") == pytest.approx(expected)
    two = seeded_runs({"A": [10.0, 10.0], "B": [10.0, 40.0]})
    assert stats.paired_log_sd(two, workload="w", a="A", b="B") == pytest.approx(math.log(4) / math.sqrt(2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(stats.paired_log_sd(seeded_runs({"A": [1.0], "B": [2.0]}), workload="w", a="A", b="B"))


# ------------------------------------------------------------------------------------------------ seeds needed


def _formula(speedup: float, sd: float, power: float, alpha: float) -> int:
    z_a, z_b = NormalDist().inv_cdf(1 - alpha), NormalDist().inv_cdf(power)
    n_t = ((z_a + z_b) * sd / math.log(speedup)) ** 2 + z_a**2 / 2
    return max(math.ceil(math.log2(1 / alpha) - 1e-12), math.ceil(n_t * math.pi / 3))


@pytest.mark.parametrize(("speedup", "sd", "power", "alpha"), [(1.1, 0.3, 0.8, 0.05), (1.05, 0.5, 0.9, 0.01),
                                                               (1.3, 0.2, 0.8, 0.05), (1.5, 0.05, 0.8, 0.2)])
def test_seeds_needed_follows_the_formula(speedup, sd, power, alpha):
    assert stats.seeds_needed(speedup, sd=sd, power=power, alpha=alpha) == _formula(speedup, sd, power, alpha)
    assert stats.seeds_needed(speedup, sd=sd, power=power, alpha=alpha, two_sided=True) == \
        _formula(speedup, sd, power, alpha / 2)


def test_seeds_needed_without_spread_is_the_exact_test_minimum():
    assert stats.seeds_needed(1.2, sd=0.0, alpha=1 / 16) == 4  # 2**-4 = alpha: four pairs suffice
    assert stats.seeds_needed(1.2, sd=0.0, alpha=0.05) == 5


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"speedup": 1.0}, r"^speedup must be a finite ratio > 1 \(t_B / t_A\), got 1.0$"),
    ({"sd": math.inf}, r"^sd must be a finite number >= 0, got inf$"),
    ({"sd": -0.1}, r"^sd must be a finite number >= 0, got -0.1$"),
    ({"power": 0.0}, r"^power and alpha must be in \(0, 1\), got power=0.0, alpha=0.05$"),
    ({"power": 1.0}, "power and alpha"), ({"power": 1.5}, "power and alpha"),
    ({"alpha": 0.0}, "power and alpha"), ({"alpha": 1.0}, "power and alpha"), ({"alpha": 1.5}, "power and alpha"),
])
def test_seeds_needed_bounds(kwargs, message):
    args = {"speedup": 1.2, "sd": 0.3, "power": 0.8, "alpha": 0.05} | kwargs
    with pytest.raises(UsageError, match=message):
        stats.seeds_needed(args.pop("speedup"), **args)


# ------------------------------------------------------------------------------------------------- sensitivity


def test_sensitivity_default_hparam_numeric_order_and_clean_index():
    rows = [trial("w", "X", 10.0 + i, seed=i, hparams={"lr": lr, "wd": 0.0}) for i, lr in enumerate([10, 2, 0.5])]
    out = stats.sensitivity(pd.DataFrame(rows))  # default: lr
    assert out["value"].tolist() == [0.5, 2, 10]  # numerically, not as text ("0.5" < "10" < "2")
    assert out.index.tolist() == [0, 1, 2]
    assert out["n_reached"].dtype == np.int64 and out["n_reached"].tolist() == [1, 1, 1]


def test_sensitivity_mixed_values_sort_as_text_and_lists_group_canonically():
    rows = [trial("w", "X", 10.0, seed=0, hparams={"sched": "cosine"}),
            trial("w", "X", 11.0, seed=1, hparams={"sched": 3}),
            trial("w", "X", 12.0, seed=2, hparams={"sched": {"b": 1, "a": 2}}),
            trial("w", "X", 14.0, seed=3, hparams={"sched": {"a": 2, "b": 1}})]
    out = stats.sensitivity(pd.DataFrame(rows), hparam="sched")
    assert out["value"].map(str).tolist() == sorted(out["value"].map(str).tolist())
    assert set(out["value"].map(str)) == {"3", "cosine", '{"a": 2, "b": 1}'}
    dicts = out[out["value"] == '{"a": 2, "b": 1}']
    assert dicts["n_trials"].tolist() == [2] and dicts["time_to_target"].tolist() == [13.0]


def test_sensitivity_by_steps_and_its_errors():
    rows = [trial("w", "X", 10.0, seed=0, hparams={"lr": 0.1}), trial("w", "X", 20.0, seed=1, hparams={"lr": 0.2})]
    trials = pd.DataFrame(rows).assign(steps_to_target=[300.0, 100.0])
    out = stats.sensitivity(trials, by="steps")
    assert out["steps_to_target"].tolist() == [300.0, 100.0]
    with pytest.raises(UsageError, match=r"^trials lack column\(s\): hparams and/or best_metric$"):
        stats.sensitivity(trials.drop(columns=["best_metric"]))
    with pytest.raises(UsageError, match=r"^no trial sets hyperparameter 'lr'; present: \(none\)$"):
        stats.sensitivity(pd.DataFrame([trial("w", "X", 1.0, hparams={})]).assign(hparams="{}"))


def test_sensitivity_mixed_values_sort_by_their_text():
    # Mixed numbers and text sort as text ("10" < "9" < "b"), not numbers first as pandas would on its own.
    rows = [trial("w", "X", 10.0 + i, seed=i, hparams={"opt": v}) for i, v in enumerate([9, "b", 10])]
    assert stats.sensitivity(pd.DataFrame(rows), hparam="opt")["value"].tolist() == [10, 9, "b"]


def test_seeds_needed_small_sample_term_is_z_squared_over_two():
    assert stats.seeds_needed(1.2, sd=0.15) == 6 and stats.seeds_needed(1.2, sd=0.3) == 19


def test_one_replicate_and_one_permutation_are_allowed():
    trials = seeded_runs({"A": [1.0, 2.0, 3.0], "B": [2.0, 3.0, 1.0]})
    assert stats.time_ci(trials, workload="w", submission="A", n_boot=1).n_units == 3
    assert stats.score_ci(trials, n_boot=1).shape == (2, 6)


def test_paired_test_exact_p_values_count_the_observed_sign_vector():
    # 3 pairs, A faster on all, ranks 1, 2, 3: stat 6; the 8 sign vectors give sums 6, 4, 2, 0, 0, -2, -4, -6.
    trials = seeded_runs({"A": [10.0, 10.0, 10.0], "B": [11.0, 13.0, 20.0]})
    greater = stats.paired_test(trials, workload="w", a="A", b="B")
    assert (greater.p_value, greater.statistic, greater.exact) == (1 / 8, 6.0, True)
    assert stats.paired_test(trials, workload="w", a="A", b="B", alternative="less").p_value == 1.0
    assert stats.paired_test(trials, workload="w", a="A", b="B", alternative="two-sided").p_value == 2 / 8
    one = stats.paired_test(seeded_runs({"A": [10.0], "B": [12.0]}), workload="w", a="A", b="B")
    assert (one.p_value, one.n_used) == (0.5, 1)


def test_paired_test_monte_carlo_p_adds_the_observed_vector():
    # 17 pairs, A faster on every one: no random sign vector of 100 reaches the observed sum, so p = 1 / 101.
    trials = seeded_runs({"A": [10.0] * 17, "B": [10.0 + i for i in range(1, 18)]})
    res = stats.paired_test(trials, workload="w", a="A", b="B", n_perm=100)
    assert not res.exact and res.p_value == pytest.approx(1 / 101, abs=0) and res.statistic == 153.0


def test_paired_test_without_informative_pairs():
    trials = seeded_runs({"A": [10.0, 20.0, INF], "B": [10.0, 20.0, INF]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inf - inf for the both-missed pair is handled silently
        res = stats.paired_test(trials, workload="w", a="A", b="B")
    assert res == stats.PairedTest(p_value=1.0, speedup=1.0, statistic=0.0, n_pairs=3, n_used=0, n_a_only=0,
                                   n_b_only=0, n_both_missed=1, exact=True)


def test_paired_test_zero_time_is_silent_and_unknown_cells_are_named():
    trials = seeded_runs({"A": [0.0, 10.0], "B": [5.0, 20.0]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # log(0) = -inf by rule
        assert stats.paired_test(trials, workload="w", a="A", b="B").n_used == 2
    with pytest.raises(UsageError, match="^no trials of 'Z' on 'w'$"):
        stats.paired_test(trials, workload="w", a="A", b="Z")


def test_paired_test_uses_the_measure():
    trials = seeded_runs({"A": [10.0, 10.0], "B": [20.0, 20.0]}).assign(steps_to_target=[50.0, 50.0, 10.0, 10.0])
    assert stats.paired_test(trials, workload="w", a="A", b="B", by="steps").speedup == pytest.approx(0.2)


def test_paired_functions_take_the_seeds_found_once():
    trials = seeded_runs({"A": [10.0, 12.0, 9.0, INF], "B": [20.0, 18.0, INF, INF], "C": [5.0, 6.0, 7.0, 8.0]})
    seeds = stats.values_per_seed(trials, workload="w", by="time")
    assert sorted(seeds) == ["A", "B", "C"] and list(seeds["B"]) == [20.0, 18.0, INF, INF]
    for b in ("B", "C"):  # trials is not read when the seeds are given: None stands for it
        assert stats.paired_test(None, workload="w", a="A", b=b, per_seed=seeds) == stats.paired_test(
            trials, workload="w", a="A", b=b)
        assert stats.paired_log_sd(None, workload="w", a="A", b=b, per_seed=seeds) == pytest.approx(
            stats.paired_log_sd(trials, workload="w", a="A", b=b))
    for fn in (stats.paired_test, stats.paired_log_sd):
        with pytest.raises(UsageError, match="no trials of 'D' on 'w'"):
            fn(None, workload="w", a="A", b="D", per_seed=seeds)
