"""optbench.scoring.profiles at the edges its hand-computed tests miss: the exact r_max cut-off, sorted outputs, dtypes,
every Leaderboard field, the error messages (they are the user's only clue), and runs of a single evaluation.
Each test kills mutmut survivors of optbench/scoring/profiles.py (benchmarks/mutation.py; docs/TESTING.md)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from optbench.scoring import profiles as scoring
from optbench.errors import UsageError
from tests.test_scoring import THREE, table, trial

INF = math.inf


def evals(run_id: str, steps: list[int], values: list[float], *, target: float = 0.5, goal: str = "min",
          trial_id: str = "t0") -> pd.DataFrame:
    """Eval rows of one run; timed_seconds = step / 10, examples = step * 4."""
    return pd.DataFrame(dict(
        run_id=run_id, workload="w", submission="X", study="s0", trial=trial_id, step=steps,
        timed_seconds=[s / 10 for s in steps], examples=[s * 4 for s in steps], tokens=np.nan,
        metric_value=values, metric_goal=goal, target=target,
    ))


# ------------------------------------------------------------------------------------------ ratios and scores


def test_a_ratio_of_exactly_r_max_keeps_its_finite_value():
    r = scoring.ratios_from_times(np.array([[10.0, 40.0, 40.1]]), r_max=4.0)
    np.testing.assert_array_equal(r, [[1.0, 4.0, INF]])


def test_r_max_just_above_one_is_allowed():
    r = scoring.ratios_from_times(np.array([[10.0, 12.0, 20.0]]), r_max=1.5)
    np.testing.assert_allclose(r, [[1.0, 1.2, INF]])
    np.testing.assert_allclose(scoring.scores_from_ratios(r, r_max=1.5), [1.0, 0.6, 0.0])


def test_ratios_raise_no_floating_point_warnings():
    # 0/0, x/0 and inf/inf are all handled by rule; numpy must not warn about them on the way.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = scoring.ratios_from_times(np.array([[0.0, 0.0], [0.0, 5.0], [INF, INF]]), r_max=4.0)
    np.testing.assert_array_equal(r, [[1.0, 1.0], [1.0, INF], [INF, INF]])


def test_ratios_beyond_r_max_passed_in_directly_earn_nothing():
    # scores_from_ratios accepts any ratios; one beyond r_max must not subtract from the score.
    np.testing.assert_allclose(scoring.scores_from_ratios(np.array([[1.0, 6.0], [1.0, 1.0]]), r_max=4.0),
                               [1.0, 0.5])


def test_algoperf_scores_carry_leading_axes():
    r = scoring.ratios_from_times(np.array([[10.0, 22.0], [30.0, 45.0]]), r_max=4.0)
    stacked = np.stack([r, r[:, ::-1]])  # (B=2, W=2, S=2)
    got = scoring.scores_from_ratios(stacked, algoperf=True)
    assert got.shape == (2, 2)
    np.testing.assert_allclose(got[0], scoring.scores_from_ratios(r, algoperf=True))
    np.testing.assert_allclose(got[1], scoring.scores_from_ratios(r[:, ::-1], algoperf=True))


def test_profile_curve_index_is_float_tau():
    ratios = pd.DataFrame({"A": [1.0, 2.5], "B": [INF, 1.0]}, index=["w1", "w2"])
    curve = scoring.profile_curve(ratios, [1, 2, 3])  # integer taus come back as float
    assert curve.index.name == "tau" and curve.index.dtype == np.float64
    assert curve.index.tolist() == [1.0, 2.0, 3.0]
    assert curve["A"].tolist() == [0.5, 0.5, 1.0] and curve["B"].tolist() == [0.5, 0.5, 0.5]


# ----------------------------------------------------------------------------------------------- leaderboard


def test_leaderboard_fields():
    board = scoring.leaderboard(table(THREE), r_max=4)
    assert board.by == "time" and board.r_max == 4.0 and isinstance(board.r_max, float)
    assert board.reference is None and board.algoperf is False
    assert board.scores.name == "score" and board.scores.index.name == "submission"
    assert board.outcomes.loc["A"].to_dict() == {o: {"reached": 2, "missed": 1}.get(o, 0) for o in scoring.OUTCOMES}
    assert board.outcomes.loc["B", "missed"] == 1 and board.outcomes.loc["C", "reached"] == 3
    ref = scoring.leaderboard(table(THREE), reference="A", algoperf=True)
    assert ref.reference == "A" and ref.algoperf is True


def test_leaderboard_table_rows():
    tab = scoring.leaderboard(table(THREE)).table()
    assert list(tab.index) == ["A", "C", "B"]
    assert list(tab.columns) == ["score", "workloads_scored", *scoring.OUTCOMES]
    # finite ratios per submission: A on w1, w2; B on w1, w3; C on w1, w2 (its 5 on w3 is cut off)
    assert tab["workloads_scored"].to_dict() == {"A": 2, "C": 2, "B": 2}
    assert tab.loc["A", "score"] == pytest.approx(2 / 3) and tab.loc["B", "missed"] == 1


def test_leaderboard_by_steps_scores_steps():
    # By time A is faster; by steps (recorded independently) B is, so the measure must reach aggregate.
    rows = [trial("w", "A", 10.0), trial("w", "B", 20.0)]
    rows[0]["steps_to_target"], rows[1]["steps_to_target"] = 400.0, 100.0
    trials = pd.DataFrame(rows)
    assert list(scoring.leaderboard(trials).scores.index) == ["A", "B"]
    board = scoring.leaderboard(trials, by="steps")
    assert board.by == "steps" and list(board.scores.index) == ["B", "A"]
    assert board.times.loc["w"].to_dict() == {"A": 400.0, "B": 100.0}


def test_leaderboard_workloads_adds_a_workload_nobody_ran():
    board = scoring.leaderboard(table(THREE), workloads=["w1", "w2", "w3", "w9"])
    assert list(board.times.index) == ["w1", "w2", "w3", "w9"]
    assert np.isinf(board.times.loc["w9"]).all() and "w9" in board.unreached
    assert board.scores["A"] == pytest.approx(2 / 3 * 3 / 4)


def test_unknown_reference_lists_the_submissions():
    with pytest.raises(UsageError, match=r"'Z' has no trials; submissions: A, B, C$"):
        scoring.leaderboard(table(THREE), reference="Z")


def test_default_profile_grid_is_100_points_on_1_to_r_max():
    board = scoring.leaderboard(table(THREE), r_max=3.0)
    curve = board.profile()
    np.testing.assert_allclose(curve.index.to_numpy(), np.linspace(1.0, 3.0, 100))


# ----------------------------------------------------------------------------------------------- aggregation


def test_aggregate_and_study_values_are_sorted_and_counts_are_int():
    rows = [trial("w2", "B", 5.0, study=1), trial("w2", "A", 7.0, study=0), trial("w1", "B", 3.0, study=1),
            trial("w1", "B", 4.0, study=0), trial("w1", "A", INF, study=0)]
    trials = pd.DataFrame(rows)
    cells = scoring.aggregate(trials)
    assert list(cells.index) == [("w1", "A"), ("w1", "B"), ("w2", "A"), ("w2", "B")]
    for col in scoring.OUTCOMES:
        assert cells[col].dtype == np.int64, col
    best = scoring.study_values(trials)
    assert list(best.index) == [("w1", "A", "s0"), ("w1", "B", "s0"), ("w1", "B", "s1"), ("w2", "A", "s0"),
                                ("w2", "B", "s1")]


def test_study_values_measure():
    rows = [trial("w", "X", 10.0, trial_id=0), trial("w", "X", 20.0, trial_id=1)]
    rows[0]["steps_to_target"], rows[1]["steps_to_target"] = 900.0, 50.0
    trials = pd.DataFrame(rows)
    assert scoring.study_values(trials).tolist() == [10.0]  # default: time
    assert scoring.study_values(trials, by="steps").tolist() == [50.0]


# -------------------------------------------------------------------------------------------- time to target


def test_time_to_target_names_the_missing_column():
    with pytest.raises(UsageError, match=r"^evals lack column\(s\): timed_seconds$"):
        scoring.time_to_target_from_evals(pd.DataFrame(dict(step=[1], metric_value=[0.1])), target=0.5, goal="min")


def test_time_to_target_refuses_exactly_two_runs():
    ev = pd.concat([evals("r1", [1, 2], [0.9, 0.4]), evals("r2", [1, 2], [0.9, 0.4])])
    with pytest.raises(UsageError, match="^time_to_target_from_evals expects the evals of one run; group by"):
        scoring.time_to_target_from_evals(ev, target=0.5, goal="min")


def test_time_to_target_ties_on_step_keep_row_order():
    # Rows logged newest first, two rows per step (a re-logged eval), both meeting the target: the first of the
    # two in row order is the one reported. Only a stable sort guarantees that (numpy's default quicksort swaps
    # equal keys in an array this long).
    n = 50
    steps = [s for s in range(n, 0, -1) for _ in range(2)]
    ev = pd.DataFrame(dict(step=steps, timed_seconds=np.arange(2 * n, dtype=float), metric_value=0.1))
    assert scoring.time_to_target_from_evals(ev, target=0.5, goal="min") == 98.0  # rows 98, 99 are step 1


def test_a_hit_without_the_measure_names_the_column():
    ev = evals("r", [1, 2], [0.9, 0.4]).assign(tokens=np.nan)
    with pytest.raises(UsageError, match=r"recorded no 'tokens'; choose another measure"):
        scoring.time_to_target_from_evals(ev, target=0.5, goal="min", by="tokens")


def test_trial_times_one_row_runs_sorted_by_run_id_with_columns():
    ev = pd.concat([evals("r2", [5], [0.1], trial_id="t2"), evals("r1", [3], [0.2], trial_id="t1")])
    out = scoring.trial_times_from_evals(ev)  # default: time
    assert list(out.columns) == ["run_id", "workload", "submission", "study", "trial", "time_to_target"]
    assert out["run_id"].tolist() == ["r1", "r2"] and out["trial"].tolist() == ["t1", "t2"]
    assert out["time_to_target"].tolist() == [0.3, 0.5]
    by_examples = scoring.trial_times_from_evals(ev, by="examples")
    assert by_examples["examples_to_target"].tolist() == [12.0, 20.0]


def test_trial_times_of_no_runs_keeps_the_columns():
    out = scoring.trial_times_from_evals(evals("r", [1], [0.1]).iloc[:0], by="steps")
    assert list(out.columns) == ["run_id", "workload", "submission", "study", "trial", "steps_to_target"]
    assert out.empty


def test_trial_times_rejects_a_run_with_two_targets_naming_it():
    ev = evals("r7", [1, 2], [0.9, 0.4]).assign(target=[0.5, 0.6])  # same goal, different targets
    with pytest.raises(UsageError, match=r"^run 'r7': eval rows disagree on metric_goal or target$"):
        scoring.trial_times_from_evals(ev)


def test_trial_times_bad_input_messages():
    with pytest.raises(UsageError, match=r"^unknown measure 'wallclock'; choose one of: time, steps"):
        scoring.trial_times_from_evals(evals("r", [1], [0.1]), by="wallclock")
    with pytest.raises(UsageError, match=r"^evals lack column\(s\): run_id$"):
        scoring.trial_times_from_evals(evals("r", [1], [0.1]).drop(columns=["run_id"]))


# --------------------------------------------------------------------------------------------- parse_hparams


@pytest.mark.parametrize(("text", "what"), [("{" + "x" * 80, "not valid JSON"), ("[" + "1," * 40 + "1]", "not a JSON object")])
def test_parse_hparams_quotes_the_first_60_characters(text, what):
    with pytest.raises(UsageError) as err:
        scoring.parse_hparams(text)
    assert str(err.value) == f"hparams cell is {what}: {text[:60]!r}"


# ------------------------------------------------------------------------------------- trial_values' messages


def test_trial_values_default_measure_is_time_and_small_measures_are_fine():
    rows = [trial("w", "A", 0.5), trial("w", "B", 2.0)]
    rows[0]["time_to_target"] = 0.0  # reached at once: zero is a valid measure, only negatives are refused
    values = scoring.trial_values(pd.DataFrame(rows))
    assert values["value"].tolist() == [0.0, 2.0]
    assert scoring.trial_values(pd.DataFrame([trial("w", "A", 0.5)]))["value"].tolist() == [0.5]


def test_default_r_max_is_four():
    np.testing.assert_array_equal(scoring.ratios_from_times(np.array([[10.0, 40.0, 45.0]])), [[1.0, 4.0, INF]])


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda df: df.drop(columns=["outcome", "target"]), r"^trials lack column\(s\): outcome, target$"),
    (lambda df: df.iloc[:0], r"^no trials to score$"),
    (lambda df: df.assign(outcome=["crashed", "lost"] + ["reached"] * (len(df) - 2)),
     r"^unknown outcome\(s\) crashed, lost; expected one of reached, missed, "),
    (lambda df: df.assign(target=[0.5, 0.6, 0.5] * 3),  # exactly two targets on every workload
     r"^workload\(s\) w1, w2, w3 mix trials with different targets or metric goals$"),
    (lambda df: df.assign(time_to_target=-1.0), r"^negative time_to_target in the trials table$"),
])
def test_trials_table_messages(mutate, message):
    with pytest.raises(UsageError, match=message):
        scoring.trial_values(mutate(table(THREE)))


def test_reached_without_the_measure_names_only_those_workloads():
    # steps_to_target is NaN for every miss (w2's B, w3's A) and also for w1's and w3's reached trials here.
    df = table(THREE)
    df.loc[df["workload"].isin(["w1", "w3"]), "steps_to_target"] = np.nan
    with pytest.raises(UsageError, match=r"^--by steps: reached trials of w1, w3 recorded no steps_to_target; "):
        scoring.trial_values(df, by="steps")
    only_w1 = table(THREE)
    only_w1.loc[only_w1["workload"] == "w1", "steps_to_target"] = np.nan
    with pytest.raises(UsageError, match=r"reached trials of w1 recorded"):  # not w2, w3: their NaNs are misses
        scoring.trial_values(only_w1, by="steps")
