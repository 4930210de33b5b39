"""``import algoperf`` on damaged logs (issue 8): bad numbers, undecodable names and an unwritable store are a
skipped trial or one usage line, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.scoring.algoperf_import import import_algoperf
from optbench.cli import main
from optbench.errors import UsageError
from optbench.store.reader import read_results

from .test_algoperf_import import write_log

GOOD = [(1, 10.0, 0.0), (500, 100.0, 31.0)]


def _tree(tmp_path: Path, bad_csv: str | None = None, *, meta: dict | None = None) -> Path:
    """wmt_jax/trial_1 is a good log; trial_2 is ``bad_csv`` (raw text) or a good log with ``meta``."""
    root = tmp_path / "logs"
    write_log(root / "wmt_jax" / "trial_1", "bleu", GOOD)
    bad = root / "wmt_jax" / "trial_2"
    if bad_csv is not None:
        bad.mkdir(parents=True)
        (bad / "eval_measurements.csv").write_text(bad_csv)
    else:
        write_log(bad, "bleu", GOOD, meta=meta)
    return root


def _csv(step: str, seconds: str, metric: str = "31.0") -> str:
    return f"global_step,score,validation/bleu\n1,10.0,0.0\n{step},{seconds},{metric}\n"


@pytest.mark.parametrize("step,seconds,needle", [
    ("abc", "100", "global_step 'abc' is not a whole number in [0, 2**63)"),
    ("1e30", "100", "global_step '1e+30' is not a whole number"),
    ("99999999999999999999", "100", "global_step '99999999999999999999' is not a whole number"),
    ("inf", "100", "global_step 'inf' is not a whole number"),
    ("2.5", "100", "global_step '2.5' is not a whole number"),
    ("-3", "100", "global_step '-3' is not a whole number"),
    ("500", "nan", "score 'nan' is not a finite number"),
    ("500", "inf", "score 'inf' is not a finite number"),
    ("500", "1e400", "score 'inf' is not a finite number"),
    ("500", "", "score 'nan' is not a finite number"),
    ("500", "soon", "score 'soon' is not a finite number"),
])
def test_bad_numbers_skip_the_trial(tmp_path, step, seconds, needle):
    results = tmp_path / "results"
    out = import_algoperf(_tree(tmp_path, _csv(step, seconds)), results_dir=results)
    assert len(out.written) == 1 and len(out.skipped) == 1
    assert "trial_2" in out.skipped[0] and needle in out.skipped[0], out.skipped
    r = CliRunner().invoke(main, ["import", "algoperf", str(tmp_path / "logs"), "--results-dir", str(results)])
    assert r.exit_code == 0 and "imported 1 AlgoPerf trials" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("metric,outcome", [("1e308", "reached"), ("inf", "reached"), ("nan", "diverged"),
                                           ("-inf", "diverged")])
def test_extreme_metric_values_are_results(tmp_path, metric, outcome):
    results = tmp_path / "results"
    import_algoperf(_tree(tmp_path, _csv("500", "100", metric)), results_dir=results)
    loaded = read_results(results)
    assert loaded.problems == [] and sorted(loaded.trials["outcome"]) == sorted(["reached", outcome])
    r = CliRunner().invoke(main, ["import", "algoperf", str(tmp_path / "logs"), "--results-dir", str(results)])
    assert r.exit_code == 0, r.output


def test_huge_but_finite_seconds_import(tmp_path):
    results = tmp_path / "results"
    import_algoperf(_tree(tmp_path, _csv("500", "1e300")), results_dir=results)
    t = read_results(results).trials.set_index("trial")
    assert t.loc["2", "time_to_target"] == 1e300


@pytest.mark.parametrize("seed", ["abc", 2**70, 10**400, -1, 1.5, True, [3], float("inf")])
def test_bad_rng_seed_skips_the_trial(tmp_path, seed):
    out = import_algoperf(_tree(tmp_path, meta={"rng_seed": seed}), results_dir=tmp_path / "results")
    assert len(out.written) == 1 and "rng_seed" in out.skipped[0] and "trial_2" in out.skipped[0]


def test_hparams_nested_past_the_decoder_are_ignored_not_a_crash(tmp_path):
    root = _tree(tmp_path, meta={})
    (root / "wmt_jax" / "trial_2" / "hparams.json").write_text("[" * 100_000 + "]" * 100_000)
    out = import_algoperf(root, results_dir=tmp_path / "results")
    assert len(out.written) == 2  # the trial is imported; its unreadable hyperparameters are left out


def test_whole_float_rng_seed_is_the_seed(tmp_path):
    import_algoperf(_tree(tmp_path, meta={"rng_seed": 7.0}), results_dir=tmp_path / "results")
    assert 7 in read_results(tmp_path / "results").trials["seed"].tolist()


def test_undecodable_folder_names_are_skipped(tmp_path):
    root = _tree(tmp_path)
    for odd in (b"/sub\xff/wmt_jax/trial_1", b"/wmt\xff_jax/trial_1"):  # a submission, a workload
        write_log(Path(os.fsdecode(os.fsencode(root) + odd)), "bleu", GOOD)
    results = tmp_path / "results"
    out = import_algoperf(root, results_dir=results)
    assert len(out.written) == 2 and len(out.skipped) == 2
    for problem in out.skipped:
        assert "not valid UTF-8" in problem and "\\udcff" in problem and problem.encode("utf-8")  # printable
    assert len(read_results(results).trials) == 2
    r = CliRunner().invoke(main, ["import", "algoperf", str(root), "--results-dir", str(results)])
    assert r.exit_code == 0 and "imported 2 AlgoPerf trials" in r.output, r.output


def test_undecodable_submission_option_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="--submission .* is not valid UTF-8"):
        import_algoperf(_tree(tmp_path), results_dir=tmp_path / "results", submission=os.fsdecode(b"sub\xff"))
    assert not (tmp_path / "results").exists() or not any((tmp_path / "results").rglob("*.parquet"))


def test_unwritable_results_dir_fails_before_importing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError, match="results directory .* is not writable"):
        import_algoperf(_tree(tmp_path), results_dir=blocker / "results")
    r = CliRunner().invoke(main, ["import", "algoperf", str(tmp_path / "logs"), "--results-dir",
                                    str(blocker / "results")])
    assert r.exit_code == 2 and r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1
