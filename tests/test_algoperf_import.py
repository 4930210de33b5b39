"""Importing AlgoPerf's per-trial logs: layout, targets and directions, time to target, scores, bad input."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from optbench.scoring.algoperf_import import import_algoperf, load_targets, resolve_target
from optbench.errors import UsageError
from optbench.store.reader import read_results
from optbench.scoring.profiles import leaderboard

COLUMNS = ["accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time", "global_step",
           "preemption_count", "score", "total_duration", "train/loss", "validation/{m}", "validation/num_examples"]


def write_log(path: Path, metric: str, rows: list[tuple[int, float, float]], *, hparams: dict | None = None,
              meta: dict | None = None) -> None:
    """An eval_measurements.csv as AlgoPerf's logger writes it: (global_step, score seconds, metric) per eval."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "eval_measurements.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([c.format(m=metric) for c in COLUMNS])
        for step, seconds, value in rows:
            w.writerow([0.5, 0.01, seconds, step, 0, seconds, seconds + 7.0, 1.0, value, 3000])
    if hparams is not None:
        (path / "hparams.json").write_text(json.dumps(hparams))
    if meta is not None:
        (path / "meta_data_0.json").write_text(json.dumps(meta))


# wmt: BLEU, larger is better, target 30.8491. criteo1tb: loss, smaller is better, target 0.123735.
WMT = {  # (submission, study) -> per trial: rows
    ("fast", 0): [[(1, 10, 0.0), (500, 100, 30.9), (900, 200, 31.2)], [(1, 10, 0.0), (500, 120, 29.0)]],
    ("fast", 1): [[(1, 10, 0.0), (500, 140, 30.8491)], [(1, 10, 0.0), (400, 90, 31.0)]],
    ("slow", 0): [[(1, 10, 0.0), (500, 300, 31.0)], [(1, 10, 0.0), (500, 200, 25.0), (600, 250, float("nan"))]],
    ("slow", 1): [[(1, 10, 0.0), (500, 260, 30.0), (800, 400, 30.9)], [(1, 10, 0.0), (500, 100, 20.0)]],
}
CRITEO = {
    ("fast", 0): [[(1, 5, 0.2), (50, 60, 0.1237), (80, 90, 0.12)]],
    ("slow", 0): [[(1, 5, 0.2), (50, 60, 0.1238), (80, 120, 0.1236)]],
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """<root>/<submission>/external_tuning/study_<k>/<workload>_jax/trial_<n>/ with hparams and meta data."""
    root = tmp_path / "algoperf_logs"
    for table, workload, metric in ((WMT, "wmt", "bleu"), (CRITEO, "criteo1tb", "loss")):
        for (sub, k), trials in table.items():
            for n, rows in enumerate(trials, start=1):
                write_log(root / sub / "external_tuning" / f"study_{k}" / f"{workload}_jax" / f"trial_{n}", metric,
                          rows, hparams={"learning_rate": 0.001 * n}, meta={"rng_seed": 100 * k + n,
                                                                            "gpu_model_name": "V100",
                                                                            "gpu_count": 8})
    return root


def test_published_targets_and_directions():
    v05, v06 = load_targets("v0.5"), load_targets("v0.6")
    expected = {"criteo1tb": ("loss", "min", 0.123735), "fastmri": ("ssim", "max", 0.723653),
                "imagenet_resnet": ("accuracy", "max", 1 - 0.22569), "imagenet_vit": ("accuracy", "max", 1 - 0.22691),
                "librispeech_conformer": ("wer", "min", 0.085884),
                "librispeech_deepspeech": ("wer", "min", 0.119936),
                "ogbg": ("mean_average_precision", "max", 0.28098), "wmt": ("bleu", "max", 30.8491)}
    for table in (v05, v06):
        for name, (metric, goal, target) in expected.items():
            t = table[name]
            assert (t.metric, t.goal) == (metric, goal) and t.target == pytest.approx(target, abs=1e-9)
            assert t.source.startswith("github.com/mlcommons/algorithmic-efficiency/blob/")
    assert "finewebedu_lm" not in v05
    assert (v06["finewebedu_lm"].metric, v06["finewebedu_lm"].goal, v06["finewebedu_lm"].target) == (
        "ppl", "min", 22.432)


def test_import_computes_time_to_target_per_trial(tree, results):
    out = import_algoperf(tree, results_dir=results, rules="v0.5")
    assert len(out.written) == 10 and not out.skipped
    t = read_results(results).trials.set_index(["workload", "submission", "study", "trial"]).sort_index()
    assert set(t["size"]) == {"algoperf-v0.5"}
    assert t.loc[("wmt", "fast", "study-0", "1"), "time_to_target"] == 100  # first eval with BLEU >= 30.8491
    assert t.loc[("wmt", "fast", "study-0", "1"), "steps_to_target"] == 500
    assert t.loc[("wmt", "fast", "study-1", "1"), "time_to_target"] == 140  # exactly at the target counts
    assert t.loc[("wmt", "fast", "study-0", "2"), "outcome"] == "missed"
    assert t.loc[("wmt", "slow", "study-0", "2"), "outcome"] == "diverged"  # ends in NaN
    assert t.loc[("wmt", "slow", "study-1", "1"), "time_to_target"] == 400
    assert t.loc[("criteo1tb", "fast", "study-0", "1"), "time_to_target"] == 60  # loss 0.1237 <= 0.123735
    assert t.loc[("criteo1tb", "slow", "study-0", "1"), "time_to_target"] == 120  # 0.1238 is above the target
    row = t.loc[("wmt", "fast", "study-0", "1")]
    assert row["metric_name"] == "validation/bleu" and row["metric_goal"] == "max" and row["target"] == 30.8491
    assert json.loads(row["hparams"]) == {"learning_rate": 0.001} and row["seed"] == 1
    assert row["device_name"] == "8x V100" and row["workload_origin"].startswith("algoperf-import (jax")
    assert row["best_metric"] == 31.2 and row["total_steps"] == 900 and row["total_timed_seconds"] == 200
    assert set(t["study_kind"]) == {"algoperf"}  # ranked, not a research recipe's trial
    # What the trials of each study differ in: wmt's two trials per study their learning rate; criteo1tb's one trial
    # per study nothing.
    assert set(t.loc["wmt", "varies"]) == {"learning_rate"} and set(t.loc["criteo1tb", "varies"]) == {""}
    evals = read_results(results).evals
    one = evals[evals["run_id"] == row["run_id"]].sort_values("step")
    assert list(one["timed_seconds"]) == [10, 100, 200] and one["examples"].isna().all()


def test_imported_results_score_like_algoperf(tree, results):
    import_algoperf(tree, results_dir=results)
    trials = read_results(results).scoring_trials()
    board = leaderboard(trials, by="time", algoperf=True)
    # wmt: fast = median(best of study 0 = 100, best of study 1 = 90) = 95; slow = median(300, 400) = 350.
    # criteo1tb: fast 60, slow 120.
    assert board.times.loc["wmt/algoperf-v0.6", "fast"] == 95
    assert board.times.loc["wmt/algoperf-v0.6", "slow"] == 350
    assert board.times.loc["criteo1tb/algoperf-v0.6", "slow"] == 120
    taus = np.linspace(1, 4, 100)  # AlgoPerf: rho on 100 points, trapezoid, / (4 - 1)
    ratios = np.array([350 / 95, 2.0])
    rho = (ratios[:, None] <= taus).mean(axis=0)
    expected = np.sum((rho[1:] + rho[:-1]) / 2 * np.diff(taus)) / 3
    assert board.scores["slow"] == pytest.approx(expected)
    assert board.scores["fast"] == pytest.approx(1.0)
    with pytest.raises(UsageError, match="examples"):
        leaderboard(trials, by="examples")  # AlgoPerf logs no example counts: refused, not guessed


def test_reimport_is_idempotent_and_targets_can_be_overridden(tree, results):
    first = import_algoperf(tree, results_dir=results)
    again = import_algoperf(tree, results_dir=results)
    assert sorted(first.written) == sorted(again.written) and len(list(results.rglob("*.parquet"))) == 10
    other = results.parent / "other"
    import_algoperf(tree, results_dir=other, targets=["wmt=28.5"])
    t = read_results(other).trials.set_index(["workload", "submission", "study", "trial"])
    assert t.loc[("wmt", "fast", "study-0", "2"), "time_to_target"] == 120
    assert (t.xs("wmt")["target"] == 28.5).all()


def test_layout_without_studies_names_the_submission_after_the_folder(tmp_path, results):
    root = tmp_path / "my_experiment"
    write_log(root / "mnist_pytorch" / "trial_1", "accuracy", [(1, 3.0, 0.1), (2000, 20.0, 0.975)])
    write_log(root / "mnist_pytorch" / "trial_2", "accuracy", [(1, 3.0, 0.1), (2000, 20.0, 0.9)])
    import_algoperf(root, results_dir=results)
    t = read_results(results).trials.sort_values("trial")
    assert set(t["submission"]) == {"my_experiment"} and set(t["study"]) == {"study-0"}
    assert list(t["outcome"]) == ["reached", "missed"] and t["time_to_target"].iloc[0] == 20
    import_algoperf(root, results_dir=results.parent / "named", submission="nadamw")
    assert set(read_results(results.parent / "named").trials["submission"]) == {"nadamw"}


def test_variant_workloads_need_a_target(tmp_path, results):
    root = tmp_path / "logs"
    write_log(root / "imagenet_resnet_silu_jax" / "trial_1", "accuracy", [(1, 1.0, 0.001), (10, 50.0, 0.8)])
    with pytest.raises(UsageError, match="variant of 'imagenet_resnet'.*--target imagenet_resnet_silu=VALUE"):
        import_algoperf(root, results_dir=results)
    import_algoperf(root, results_dir=results, targets=["imagenet_resnet_silu=0.75"])
    t = read_results(results).trials
    assert t["metric_goal"].iloc[0] == "max" and t["time_to_target"].iloc[0] == 50


def test_unreadable_logs_are_skipped_and_none_readable_is_an_error(tmp_path, results):
    root = tmp_path / "logs"
    write_log(root / "wmt_jax" / "trial_1", "bleu", [(1, 1.0, 0.0), (10, 50.0, 31.0)])
    bad = root / "wmt_jax" / "trial_2"
    bad.mkdir(parents=True)
    (bad / "eval_measurements.csv").write_text("global_step,score\n1,2.0\n")  # no validation/bleu
    out = import_algoperf(root, results_dir=results)
    assert len(out.written) == 1 and "validation/bleu" in out.skipped[0]
    only_bad = tmp_path / "only_bad"
    (only_bad / "wmt_jax" / "trial_1").mkdir(parents=True)
    (only_bad / "wmt_jax" / "trial_1" / "eval_measurements.csv").write_text("global_step,score\n1,2.0\n")
    with pytest.raises(UsageError, match="could be read"):
        import_algoperf(only_bad, results_dir=results)


@pytest.mark.parametrize("kwargs,needle", [
    ({"rules": "v0.4"}, "unknown AlgoPerf rules"),
    ({"targets": ["wmt"]}, "WORKLOAD=NUMBER"),
    ({"targets": ["wmt=inf"]}, "WORKLOAD=NUMBER"),
])
def test_bad_options_are_usage_errors(tree, results, kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        import_algoperf(tree, results_dir=results, **kwargs)


def test_empty_or_missing_directory_is_a_usage_error(tmp_path, results):
    with pytest.raises(UsageError, match="not a directory"):
        import_algoperf(tmp_path / "missing", results_dir=results)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no AlgoPerf logs"):
        import_algoperf(tmp_path / "empty", results_dir=results)


def test_finewebedu_needs_rules_v06():
    assert resolve_target("finewebedu_lm", load_targets("v0.6"), {}).target == 22.432
    with pytest.raises(UsageError, match="no published AlgoPerf target"):
        resolve_target("finewebedu_lm", load_targets("v0.5"), {})


def test_cli_import_then_score(tree, results):
    from optbench.cli import App
    from optbench.cli.tuning import add_commands

    @click.group(cls=App)
    def main() -> None:
        pass

    add_commands(main)
    r = CliRunner().invoke(main, ["import", "algoperf", str(tree), "--results-dir", str(results), "--rules", "v0.5"])
    assert r.exit_code == 0, r.output
    assert "imported 10 AlgoPerf trials" in r.output
    bad = CliRunner().invoke(main, ["import", "algoperf", str(tree), "--results-dir", str(results),
                                    "--target", "wmt:31"])
    assert bad.exit_code == 2 and "error: --target expects WORKLOAD=NUMBER" in bad.output
    assert math.isfinite(read_results(results).trials["time_to_target"].dropna().min())


def test_read_log_sorts_by_step_keeps_the_later_of_a_repeated_step_and_drops_unknown_steps(tmp_path):
    from optbench.scoring.algoperf_import import TargetSpec, TrialLog, read_log

    folder = tmp_path / "wmt_jax" / "trial_1"
    folder.mkdir(parents=True)
    (folder / "eval_measurements.csv").write_text(
        "global_step,score,validation/bleu\n"
        "200,20.0,10.0\n"
        "100,10.0,5.0\n"
        ",12.0,6.0\n"  # a row without a step: not an evaluation
        "200,25.0,11.0\n"  # step 200 again after a preemption: this later row counts
        "300,30.0,nan\n")
    log = TrialLog(csv=folder / "eval_measurements.csv", workload="wmt", framework="jax", study="study-0",
                   trial="1", submission="x")
    parsed = read_log(log, TargetSpec(metric="bleu", goal="max", target=30.0, source="test"))
    assert parsed.steps.tolist() == [100, 200, 300] and str(parsed.steps.dtype) == "int64"
    assert parsed.seconds.tolist() == [10.0, 25.0, 30.0]
    assert parsed.metric.tolist()[:2] == [5.0, 11.0] and math.isnan(parsed.metric[2])
    assert parsed.logged == {"global_step": [100.0, 200.0, 300.0], "score": [10.0, 25.0, 30.0],
                             "validation/bleu": [5.0, 11.0, None]}  # the kept rows of every column


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=8), st.lists(
    st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), min_size=3, max_size=3), max_size=5))
def test_metrics_json_is_what_json_dumps_writes(logged):
    from optbench.scoring.algoperf_import import metrics_json

    rows = [{k: logged[k][i] for k in sorted(logged)} for i in range(3)]
    assert metrics_json(logged, 3) == [json.dumps(r) for r in rows]
