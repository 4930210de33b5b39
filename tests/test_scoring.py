"""Behaviour tests of optbench.scoring.profiles: hand-computed profiles, scores and AlgoPerf's aggregation rule."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from optbench.scoring import profiles as scoring
from optbench.errors import UsageError

INF = math.inf


def trial(workload: str, submission: str, t: float, *, study: int = 0, trial_id: int = 0, seed: int = 0,
          outcome: str | None = None, goal: str = "min", target: float = 0.5) -> dict:
    """One trials-table row; ``t = inf`` is a miss (time NaN, as the results store writes it)."""
    reached = math.isfinite(t)
    return dict(
        workload=workload, submission=submission, study=f"s{study}", trial=f"t{trial_id}", seed=seed,
        outcome=outcome or ("reached" if reached else "missed"),
        time_to_target=t if reached else math.nan, steps_to_target=10 * t if reached else math.nan,
        examples_to_target=math.nan, tokens_to_target=math.nan, metric_goal=goal, target=target,
        best_metric=0.4 if reached else 0.7, hparams=json.dumps({"lr": 0.1}),
    )


def table(times: dict[str, dict[str, float]]) -> pd.DataFrame:
    """One study, one trial per (workload, submission)."""
    return pd.DataFrame([trial(w, s, t) for w, row in times.items() for s, t in row.items()])


# 3 submissions x 3 workloads, one study each. Ties (A = C on w1) and misses (B on w2, A on w3).
THREE = {
    "w1": {"A": 10.0, "B": 22.0, "C": 10.0},
    "w2": {"A": 30.0, "B": INF, "C": 60.0},
    "w3": {"A": INF, "B": 50.0, "C": 250.0},
}
# Ratios (best per workload: w1 10, w2 30, w3 50; r_max 4, ratios above 4 -> inf):
#   w1: A 1,   B 2.2, C 1       (A and C tie: equal ratios)
#   w2: A 1,   B inf, C 2
#   w3: A inf, B 1,   C 5 -> inf
# Exact score: each workload with finite r contributes (4 - r) / 3 / 3:
#   A: (1 + 1 + 0) / 3                     = 2/3
#   B: ((4 - 2.2)/3 + 0 + 1) / 3 = 1.6 / 3 = 8/15
#   C: (1 + (4 - 2)/3 + 0) / 3             = 5/9
EXPECTED = {"A": 2 / 3, "B": 8 / 15, "C": 5 / 9}


def test_ratios_and_exact_scores_by_hand():
    board = scoring.leaderboard(table(THREE))
    expected_ratios = pd.DataFrame(
        {"A": [1.0, 1.0, INF], "B": [2.2, INF, 1.0], "C": [1.0, 2.0, INF]}, index=["w1", "w2", "w3"]
    )
    np.testing.assert_allclose(board.ratios.loc[["w1", "w2", "w3"], ["A", "B", "C"]], expected_ratios)
    assert list(board.scores.index) == ["A", "C", "B"]  # best first
    for s, v in EXPECTED.items():
        assert board.scores[s] == pytest.approx(v, abs=1e-12)
    assert board.unreached == () and board.undefined == ()


def test_profile_by_hand():
    # rho_A = 2/3 everywhere; rho_B jumps 1/3 -> 2/3 at 2.2; rho_C jumps 1/3 -> 2/3 at 2 (r <= tau counts).
    rho = scoring.leaderboard(table(THREE)).profile([1.0, 2.0, 2.1, 2.2, 4.0])
    np.testing.assert_allclose(rho["A"], [2 / 3] * 5)
    np.testing.assert_allclose(rho["B"], [1 / 3, 1 / 3, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(rho["C"], [1 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3])


def test_exact_area_equals_fine_riemann_sum_of_profile():
    board = scoring.leaderboard(table(THREE))
    taus = np.linspace(1, 4, 300_001)
    rho = board.profile(taus).to_numpy()  # (T, S)
    riemann = rho[:-1].mean(axis=0)  # left sum / (4 - 1) on a uniform grid
    np.testing.assert_allclose(riemann, board.scores[board.ratios.columns], atol=1e-4)


def test_algoperf_mode_matches_direct_trapezoid_and_differs_from_exact():
    trials = table(THREE)
    exact = scoring.leaderboard(trials).scores
    algo = scoring.leaderboard(trials, algoperf=True).scores
    # AlgoPerf's recipe written out directly: 100 linear taus in [1, 4], trapezoid, / (4 - 1).
    ratios = scoring.leaderboard(trials).ratios
    taus = np.linspace(1, 4, 100)
    for s in ratios.columns:
        rho = [(ratios[s] <= tau).mean() for tau in taus]
        direct = np.sum((np.array(rho[1:]) + np.array(rho[:-1])) / 2 * np.diff(taus)) / 3
        assert algo[s] == pytest.approx(direct, abs=1e-12)
    # B's jump at 2.2 is off the grid: the trapezoid misses by at most half a grid step (3/99/2) / 3 workloads / 3.
    assert algo["A"] == pytest.approx(exact["A"], abs=1e-12)  # a flat profile is integrated exactly
    assert algo["B"] != pytest.approx(exact["B"], abs=1e-6)
    assert abs(algo["B"] - exact["B"]) < (3 / 99 / 2) / 3 / 3 + 1e-12


def test_workload_nobody_reached_counts_in_denominator():
    trials = table(THREE | {"w4": {"A": INF, "B": INF, "C": INF}})
    board = scoring.leaderboard(trials)
    assert board.unreached == ("w4",)
    assert np.isinf(board.ratios.loc["w4"]).all()
    for s, v in EXPECTED.items():  # every score scaled by 3/4
        assert board.scores[s] == pytest.approx(v * 3 / 4)


def test_submission_without_trials_on_a_workload_is_a_miss():
    trials = table(THREE)
    trials = trials[~((trials["workload"] == "w2") & (trials["submission"] == "B"))]  # B never ran w2
    board = scoring.leaderboard(trials)
    assert math.isinf(board.times.loc["w2", "B"])
    assert board.scores["B"] == pytest.approx(EXPECTED["B"])
    assert board.cells.loc[("w1", "B"), "n_trials"] == 1


def test_reference_mode_scores_do_not_depend_on_other_submissions():
    # Reference A: w1: B 2.2, C 1; w2: B inf, C 2; w3: A missed -> undefined -> inf for everyone.
    # B: (1.8/3) / 3 = 0.2; C: (1 + 2/3) / 3 = 5/9; A: (1 + 1) / 3 = 2/3.
    before = scoring.leaderboard(table(THREE), reference="A")
    assert before.undefined == ("w3",)
    assert before.scores["B"] == pytest.approx(0.2)
    assert before.scores["C"] == pytest.approx(5 / 9)
    assert before.scores["A"] == pytest.approx(2 / 3)
    fast = {"w1": 1.0, "w2": 1.0, "w3": 1.0}
    grown = table({w: row | {"D": fast[w]} for w, row in THREE.items()})
    after = scoring.leaderboard(grown, reference="A")
    for s in "ABC":
        assert after.scores[s] == pytest.approx(before.scores[s], abs=0)
    assert after.scores["D"] == pytest.approx(2 / 3)  # faster than the reference earns full credit, no more
    # Without a reference the same addition changes the others' scores (AlgoPerf's set dependence).
    assert scoring.leaderboard(grown).scores["A"] < scoring.leaderboard(table(THREE)).scores["A"]


def test_unknown_reference_and_bad_r_max_are_usage_errors():
    with pytest.raises(UsageError, match="reference"):
        scoring.leaderboard(table(THREE), reference="Z")
    with pytest.raises(UsageError, match="r_max"):
        scoring.leaderboard(table(THREE), r_max=1.0)


def test_r_max_cut_off():
    # With r_max 2.1, B's 2.2 on w1 earns nothing; C's 2 still earns (2.1 - 2) / 1.1.
    board = scoring.leaderboard(table(THREE), r_max=2.1)
    assert math.isinf(board.ratios.loc["w1", "B"])
    assert board.scores["B"] == pytest.approx(1 / 3)
    assert board.scores["C"] == pytest.approx((1 + 0.1 / 1.1) / 3)


def test_best_trial_by_time_not_by_eval_index():
    # Study s0 has two trials that reach the target (min-loss, target 0.5):
    #   t0 evaluates every 20 s: losses 0.8 @20 s, 0.45 @40 s       -> hits at eval index 1, at 40 s
    #   t1 evaluates every 5 s:  0.9, 0.8, 0.7, 0.6, 0.48 @25 s, ... -> hits at eval index 4, at 25 s
    # AlgoPerf's rule (earliest eval index) picks t0 -> 40 s; the right answer is t1 -> 25 s.
    def evals(trial_id: str, period: float, losses: list[float]) -> pd.DataFrame:
        n = len(losses)
        return pd.DataFrame(dict(
            run_id=f"r-{trial_id}", workload="w", submission="X", study="s0", trial=trial_id,
            step=np.arange(1, n + 1) * 100, timed_seconds=np.arange(1, n + 1) * period, examples=np.nan,
            tokens=np.nan, metric_value=losses, metric_goal="min", target=0.5,
        ))
    ev = pd.concat([evals("t0", 20.0, [0.8, 0.45, 0.3]), evals("t1", 5.0, [0.9, 0.8, 0.7, 0.6, 0.48, 0.4])])
    times = scoring.trial_times_from_evals(ev, by="time").set_index("trial")["time_to_target"]
    assert times.to_dict() == {"t0": 40.0, "t1": 25.0}
    trials = pd.DataFrame([trial("w", "X", times[t], trial_id=i) for i, t in enumerate(["t0", "t1"])])
    assert scoring.aggregate(trials).loc[("w", "X"), "value"] == 25.0


def test_median_over_studies_with_inf():
    rows = [
        # X: study bests 25 (min of 40, 25), inf (both missed), 35  -> median 35
        trial("w", "X", 40.0, study=0, trial_id=0), trial("w", "X", 25.0, study=0, trial_id=1),
        trial("w", "X", INF, study=1, trial_id=0), trial("w", "X", INF, study=1, trial_id=1, outcome="diverged"),
        trial("w", "X", INF, study=2, trial_id=0, outcome="oom"), trial("w", "X", 35.0, study=2, trial_id=1),
        # Y: study bests 20 and inf -> median (20 + inf) / 2 = inf
        trial("w", "Y", 20.0, study=0), trial("w", "Y", INF, study=1, outcome="timeout"),
    ]
    cells = scoring.aggregate(pd.DataFrame(rows))
    x, y = cells.loc[("w", "X")], cells.loc[("w", "Y")]
    assert x["value"] == 35.0 and math.isinf(y["value"])
    assert (x["n_studies"], x["n_studies_reached"], x["n_trials"]) == (3, 2, 6)
    assert (x["reached"], x["missed"], x["diverged"], x["oom"], x["timeout"], x["error"]) == (3, 1, 1, 1, 0, 0)
    assert (y["n_studies"], y["n_studies_reached"], y["timeout"]) == (2, 1, 1)


def test_aggregate_by_steps_uses_steps_column():
    rows = [trial("w", "X", 40.0, trial_id=0), trial("w", "X", 25.0, trial_id=1)]
    assert scoring.aggregate(pd.DataFrame(rows), by="steps").loc[("w", "X"), "value"] == 250.0
    with pytest.raises(UsageError, match="tokens"):  # reached but no token count recorded
        scoring.aggregate(pd.DataFrame(rows), by="tokens")


@pytest.mark.parametrize(
    ("goal", "values", "expected"),
    [
        ("min", [1.0, 0.6, 0.5, 0.3], 30.0),  # first value <= 0.5 is at step 3 (boundary counts)
        ("max", [0.2, np.nan, 0.5, 0.9], 30.0),  # first value >= 0.5; NaN never counts
        ("max", [0.7, 0.6, 0.55, 0.4], 10.0),  # the same series read as "max" hits at once
        ("min", [0.7, 0.6, 0.55, np.nan], math.nan),  # never reached
    ],
)
def test_time_to_target_from_evals_both_directions(goal, values, expected):
    ev = pd.DataFrame(dict(step=[1, 2, 3, 4], timed_seconds=[10.0, 20.0, 30.0, 40.0], metric_value=values))
    ev = ev.iloc[::-1]  # rows out of order: step order decides "first"
    got = scoring.time_to_target_from_evals(ev, target=0.5, goal=goal)
    assert (math.isnan(got) and math.isnan(expected)) or got == expected
    if not math.isnan(expected):
        assert scoring.time_to_target_from_evals(ev, target=0.5, goal=goal, by="steps") == expected / 10


def test_direction_is_never_guessed_from_names():
    ev = pd.DataFrame(dict(step=[1, 2], timed_seconds=[1.0, 2.0], metric_value=[0.9, 0.3]))
    ev = ev.assign(metric_name="val_accuracy")  # the name says "accuracy" ...
    assert scoring.time_to_target_from_evals(ev, target=0.5, goal="min") == 2.0  # ... the declared goal wins
    with pytest.raises(UsageError, match="goal"):
        scoring.time_to_target_from_evals(ev, target=0.5, goal="lower")


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda df: df.drop(columns=["outcome"]), "outcome"),
        (lambda df: df.assign(outcome="crashed"), "unknown outcome"),
        (lambda df: df.assign(target=np.arange(len(df), dtype=float)), "different targets"),
        (lambda df: df.iloc[:0], "no trials"),
    ],
)
def test_bad_trials_tables_are_usage_errors(mutate, message):
    with pytest.raises(UsageError, match=message):
        scoring.leaderboard(mutate(table(THREE)))


def test_unknown_measure_is_a_usage_error():
    with pytest.raises(UsageError, match="measure"):
        scoring.aggregate(table(THREE), by="wallclock")


def test_vectorised_ratios_carry_leading_axes_and_zero_ties():
    times = np.array([[[0.0, 0.0, 3.0], [2.0, 4.0, INF]]])  # (1, W=2, S=3)
    r = scoring.ratios_from_times(times, r_max=4.0)
    np.testing.assert_array_equal(r, [[[1.0, 1.0, INF], [1.0, 2.0, INF]]])
    np.testing.assert_allclose(scoring.scores_from_ratios(r), [[1.0, (1 + 2 / 3) / 2, 0.0]])
