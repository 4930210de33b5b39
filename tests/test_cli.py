"""The command line, in process (click's CliRunner), plus one subprocess check that --help stays light."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from optbench.cli import main

# A GPU the machine does not have: none at all here on CI; with GPUs visible (the GPU check), a hundredth one.
NO_SUCH_GPU = ((["run", "--device", "cuda:99"], "this machine has") if torch.cuda.is_available()
               else (["run", "--device", "cuda"], "no CUDA GPU"))


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_help_does_not_import_torch_or_pandas():
    code = "import sys, optbench.cli; print(sorted(m for m in ('torch', 'pandas', 'pyarrow') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_run_then_score(results):
    r = invoke("run", "--workload", "linreg", "--opt", "adamw", "--results-dir", str(results), "--quiet")
    assert r.exit_code == 0, r.output
    assert "reached linreg/tiny adamw" in r.output
    files = list(results.rglob("*.parquet"))
    assert len(files) == 1
    s = invoke("score", "--results-dir", str(results))
    assert s.exit_code == 0 and "adamw" in s.output  # ratios and scores: tests/test_rules_cli.py, by hand


def test_plain_torch_optimizer_with_cli_keywords(results):
    r = invoke("run", "--opt", "torch.optim:Adagrad", "--opt-arg", "lr=0.05", "--opt-arg", "eps=1e-8",
               "--results-dir", str(results), "--quiet", "--max-steps", "100")
    assert r.exit_code == 0, r.output
    invoke("run", "--opt", "sgd", "--results-dir", str(results), "--quiet")
    out = invoke("score", "--results-dir", str(results), "--format", "json")
    rows = {row["submission"]: row for row in json.loads(out.stdout)["rows"]}
    assert set(rows) == {"torch.optim:Adagrad", "sgd"}
    from optbench.store.reader import read_results

    trials = read_results(results).trials.set_index("submission")
    assert json.loads(trials.loc["torch.optim:Adagrad", "hparams"])["lr"] == 0.05
    assert trials.loc["torch.optim:Adagrad", "submission_origin"].startswith("torch==")


@pytest.mark.parametrize("fmt,needle", [("markdown", "| 1 | adamw |"), ("csv", "rank,submission,score"),
                                        ("latex", r"\begin{tabular}")])
def test_score_formats(results, fmt, needle):
    invoke("run", "--results-dir", str(results), "--quiet", "--max-steps", "200")
    out = invoke("score", "--results-dir", str(results), "--format", fmt)
    assert out.exit_code == 0 and needle in out.output


@pytest.mark.parametrize("args,needle", [
    (["run", "--workload", "linrg"], "did you mean 'linreg'"),
    (["run", "--opt", "adamww"], "did you mean 'adamw'"),
    (["run", "--size", "huge"], "no size 'huge'"),
    (["run", "--opt-arg", "lr"], "KEY=VALUE"),
    (["run", "--opt-arg", "lrr=0.1"], "has no hyperparameter lrr"),
    (["run", "--opt", "no.such.module:Thing"], "failed to import"),
    (["run", "--opt", "tests/plugins/broken_plugin.py:x"], "broken on purpose"),
    (["run", "--opt", "tests/plugins/bad_optimizers.py:not_a_submission"], "does not fit the API"),
    NO_SUCH_GPU,
    (["run", "--max-steps", "0"], "--max-steps"),
    (["run", "--bogus"], "No such option"),
    (["score", "--by", "furlongs"], "furlongs"),
])
def test_bad_input_is_one_line_and_exit_2(results, args, needle):
    r = CliRunner().invoke(main, [*args, "--results-dir", str(results)] if args[0] == "run" else args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], r.output
    assert "Traceback" not in r.output
    assert not results.exists() or not list(results.rglob("*.parquet"))


def test_score_without_results_is_exit_2(tmp_path):
    r = CliRunner().invoke(main, ["score", "--results-dir", str(tmp_path / "none")])
    assert r.exit_code == 2 and "no results" in r.output


def test_score_skips_corrupt_file_and_keeps_the_rest(results):
    invoke("run", "--results-dir", str(results), "--quiet", "--max-steps", "100")
    (results / "junk.parquet").write_bytes(b"PAR1 not really")
    r = invoke("score", "--results-dir", str(results))
    assert r.exit_code == 0 and "skipped" in r.output and "adamw" in r.output


def test_list_shows_workloads_and_submissions():
    r = invoke("list")
    assert r.exit_code == 0
    for needle in ("linreg", "tiny", "excess_risk", "adamw", "sgd", "nadamw", "nesterov"):
        assert needle in r.output


def test_nan_trial_then_next_trial_runs(results):
    r = invoke("run", "--opt", "tests/plugins/bad_optimizers.py:NaNOptimizer", "--opt", "adamw",
               "--results-dir", str(results), "--quiet")
    assert r.exit_code == 0
    assert "diverged" in r.output and "reached" in r.output
    assert len(list(results.rglob("*.parquet"))) == 2


def test_score_sensitivity(results):
    for lr in ("0.003", "0.02"):
        invoke("run", "-o", f"lr={lr}", "--results-dir", str(results), "--quiet")
    out = invoke("score", "--results-dir", str(results), "--sensitivity", "lr", "--format", "markdown")
    assert out.exit_code == 0
    assert "| linreg/tiny | adamw | 0.003 | 1 | 0 |" in out.output and "| 0.02 | 1 | 1 |" in out.output
    bad = CliRunner().invoke(main, ["score", "--results-dir", str(results), "--sensitivity", "zz"])
    assert bad.exit_code == 2 and "no trial sets hyperparameter 'zz'" in bad.output
