"""Issue 21 item 3, results in steps do not depend on the machine: every result records the machine's load and which
budget ended a miss, targets say where they came from, recipes measure steps without a seconds budget, and
``score --by time`` warns when the trials it compares ran on different devices or under very different loads."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.engine.load import LoadMeter, gpu_reader
from optbench.parallel.executors import cores
from optbench.engine.runner import TrialConfig, run_trial
from optbench.plugins.registry import load_submission, load_workload
from optbench.scoring.conditions import LOAD_GAP, time_warning
from optbench.store.records import TRIAL_COLUMNS, outcome_text
from optbench.store.writer import write_trial
from tests.test_results import _record, _row

LOAD_FIELDS = ("load_average", "cpu_count", "cpu_share", "gpu_utilization")
MY_FIELDS = ("stopped_by", *LOAD_FIELDS)


def _run(results: Path, opt: str = "adamw", **cfg):
    return run_trial(load_workload("linreg"), load_submission(opt), TrialConfig(**cfg), results_dir=results)


def _read(result) -> pd.Series:
    """The trial's metadata as pandas reads the file (repeated on every row)."""
    return pd.read_parquet(result.path).iloc[0]


# ------------------------------------------------------------------------------------------ recorded on every result
def test_a_real_trial_records_the_machines_load(results: Path) -> None:
    row = _read(_run(results, max_steps=40))
    assert all(f in row.index for f in LOAD_FIELDS)
    assert row["cpu_count"] == cores() >= 1
    assert math.isfinite(row["load_average"]) and row["load_average"] >= 0  # Linux has a load average
    assert 0 < row["cpu_share"] <= 1
    assert row["gpu_utilization"] is None or math.isnan(row["gpu_utilization"])  # a CPU trial: no GPU reading


def test_which_budget_ended_a_trial_and_where_its_target_came_from(results: Path) -> None:
    reached = _run(results).record
    assert reached.outcome == "reached" and reached.stopped_by == "" and reached.target_kind != "user"
    by_steps = _read(_run(results, max_steps=20, target=1e-9))
    assert by_steps["outcome"] == "missed" and by_steps["stopped_by"] == "steps"
    assert by_steps["target_kind"] == "user" and by_steps["target"] == 1e-9
    by_seconds = _run(results, hparams={"lr": 1e-4}, max_steps=10**7, max_seconds=0.05).record
    assert by_seconds.outcome == "missed" and by_seconds.stopped_by == "seconds"
    assert outcome_text(by_seconds.outcome, by_seconds.stopped_by) == "missed (seconds)"


def test_run_prints_a_user_target_and_the_budget_that_ended_a_miss(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "sgd", "--max-steps", "10", "--target", "1e-9",
                                    "--device", "cpu", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "missed (steps)" in res.output and "target 1e-09 from --target" in res.output


def test_readme_results_lists_these_fields() -> None:
    section = (Path(__file__).parents[1] / "README.md").read_text().split("## Results")[1].split("\n## ")[0]
    for field in MY_FIELDS:
        assert field in TRIAL_COLUMNS and f"`{field}`" in section, field


# --------------------------------------------------------------------------------------------------- the meter
def test_meter_averages_gpu_samples_and_survives_a_failing_reader() -> None:
    readings = iter([40.0, 60.0])  # two samples in the thread, then the reader fails (the driver went away)
    deadline = time.monotonic() + 10
    with LoadMeter(gpu=lambda: next(readings), period=0.01) as meter:
        while meter.gpu is not None and time.monotonic() < deadline:
            time.sleep(0.005)
    assert meter.gpu is None  # the failing read stopped the sampling, without an error
    assert meter.result is not None and meter.result.gpu_utilization == 50.0  # the mean of what was sampled


def test_no_gpu_reading_off_cuda_or_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    assert gpu_reader("cpu") is None

    def no_nvml(device=None):
        raise ModuleNotFoundError("pynvml does not seem to be installed")

    monkeypatch.setattr(torch.cuda, "utilization", no_nvml)
    assert gpu_reader("cuda:0") is None
    with LoadMeter.for_trial("cpu") as meter:
        pass
    assert meter.result.gpu_utilization is None and meter.result.cpu_count == cores()


# ---------------------------------------------------------------------------------------- score --by time warns
def _store(root: Path, devices: tuple[str, str], loads: tuple[float, float] = (1.0, 1.0)) -> Path:
    for i, (sub, device, load) in enumerate(zip(("sgd", "adamw"), devices, loads)):
        write_trial(root, _record(run_id=f"r{i}", submission=sub, device_name=device, load_average=load, cpu_count=2,
                                  cpu_share=0.9, time_to_target=1.0 + i), [_row(0, 1.0), _row(100, 0.05)])
    return root


def _score(root: Path, by: str) -> tuple[str, str]:
    res = CliRunner().invoke(main, ["score", "--results-dir", str(root), "--by", by])
    assert res.exit_code == 0, res.output
    return res.stdout, res.stderr


def test_score_by_time_warns_when_devices_differ(tmp_path: Path) -> None:
    root = _store(tmp_path, ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-40GB"))
    out, err = _score(root, "time")
    warning = [line for line in err.splitlines() if "different devices" in line]
    assert len(warning) == 1 and "--by steps" in warning[0] and "A100" in warning[0] and "warning" not in out
    assert "different devices" not in _score(root, "steps")[1]  # steps do not depend on the machine


def test_score_by_time_warns_under_very_different_loads_only(tmp_path: Path) -> None:
    assert "load per CPU" in _score(_store(tmp_path / "a", ("cpu", "cpu"), loads=(0.5, 4.0)), "time")[1]
    assert "warning" not in _score(_store(tmp_path / "b", ("cpu", "cpu"), loads=(1.0, 1.4)), "time")[1]


def test_time_warning_rules() -> None:
    base = {"workload": "linreg/tiny", "device": "cpu", "device_name": "cpu", "cpu_count": 2, "cpu_share": 0.9}
    assert time_warning([{**base, "load_average": 1.0}, {**base, "load_average": 1.0 + 2 * LOAD_GAP - 0.01}]) is None
    assert "load per CPU 0.50 to 1.05" in time_warning([{**base, "load_average": 1.0},
                                                         {**base, "load_average": 2.1}])
    assert "CPU share 50% to 90%" in time_warning([base, {**base, "cpu_share": 0.5}])
    gpu = {**base, "device": "cuda:0", "device_name": "H100"}
    assert time_warning([gpu, {**gpu, "cpu_share": 0.2}]) is None  # a GPU trial's host share is not compared
    old = {**base, "load_average": math.nan, "cpu_count": None, "cpu_share": None}  # a file from before the fields
    assert time_warning([old, {**base, "load_average": 3.0}]) is None
    other = {**base, "workload": "lm/tiny", "device_name": "H100"}
    assert time_warning([base, other]) is None  # different workloads are never compared with each other


# ------------------------------------------------------------------------------------- misses and recipe budgets
def test_score_table_says_which_budget_ended_each_miss(tmp_path: Path) -> None:
    for i, stopped in enumerate(("steps", "seconds", "seconds", "")):
        write_trial(tmp_path, _record(run_id=f"m{i}", submission="sgd", study=f"seed{i}", seed=i, outcome="missed",
                                      stopped_by=stopped, time_to_target=None, steps_to_target=None,
                                      examples_to_target=None, tokens_to_target=None),
                    [_row(0, 1.0), _row(100, 0.5)])
    out, _ = _score(tmp_path, "steps")
    assert "1 out of steps, 2 out of seconds, 1 budget" in " ".join(out.split())


def test_recipes_measuring_steps_have_no_seconds_budget_unless_given() -> None:
    from optbench.recipes.budgets import UNBOUNDED_SECONDS
    from optbench.recipes.curvature import CurvatureSpec, plan_curvature
    from optbench.recipes.seesaw import SeesawSpec, plan_seesaw
    from optbench.recipes.shapes import ShapeSpec, plan_shapes

    plans = {"curvature": lambda b: plan_curvature(CurvatureSpec(lrs=(0.5,)), b),
             "seesaw": lambda b: plan_seesaw(SeesawSpec(seeds=(0,)), b),
             "shapes": lambda b: plan_shapes(ShapeSpec(shapes=1, lrs=(0.01,), no_references=True), b)}
    for name, plan in plans.items():
        assert {p.config.max_seconds for p in plan(TrialConfig())} == {UNBOUNDED_SECONDS}, name
        assert {p.config.max_seconds for p in plan(TrialConfig(max_seconds=30.0))} == {30.0}, name


def test_a_recipe_says_when_trials_ran_out_of_seconds(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8", "--lrs", "1e-4",
                                    "--seed", "0", "--max-steps", "1000000", "--max-seconds", "0.05",
                                    "--device", "cpu", "--results-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "missed (seconds)" in res.stdout
    assert "1 of 1 trials ran out of their seconds budget" in " ".join(res.stderr.split())


def test_recipe_tables_tell_a_seconds_miss_from_a_steps_miss(tmp_path: Path) -> None:
    from optbench.recipes.cbs import CbsRun, sensitivity_markdown

    res = CliRunner().invoke(main, ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8", "--lrs", "1e-4",
                                    "--seed", "0", "--max-steps", "1000000", "--max-seconds", "0.05",
                                    "--device", "cpu", "--results-dir", str(tmp_path), "--no-extend-grid"])
    assert res.exit_code == 0, res.output
    assert "0/1 (1 out of seconds)" in (tmp_path / "recipes" / "cbs" / "cbs.md").read_text()

    def run(lr: float, stopped_by: str) -> CbsRun:
        return CbsRun(batch_size=8, lr=lr, seed=0, steps_to_target=None, examples_to_target=None, outcome="missed",
                      stopped_by=stopped_by)

    table = sensitivity_markdown({"sgd": [run(0.1, "seconds"), run(0.3, "steps")]})
    assert "| 0.1 | missed (seconds) |" in table and "| 0.3 | missed |" in table


def test_run_full_budget_scores_at_the_budget_and_says_so(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["run", "-w", "linreg", "-s", "adamw", "--max-steps", "1200", "--eval-every", "100",
                                    "--full-budget", "--device", "cpu", "--results-dir", str(tmp_path), "--quiet"])
    assert res.exit_code == 0, res.output
    (path,) = tmp_path.rglob("*.parquet")
    rec = pd.read_parquet(path).iloc[0]
    assert rec["target_kind"] == "budget" and rec["total_steps"] == 1200  # it went on past the target
    assert rec["outcome"] == "reached" and rec["steps_to_target"] < 1200  # ... and says when it first got there


def test_the_report_page_warns_of_very_different_loads_too(tmp_path: Path) -> None:
    from optbench.report.sections import page_warnings
    from optbench.store.reader import read_results
    from optbench.store.units import scoring_units

    loaded = read_results(_store(tmp_path / "a", ("cpu", "cpu"), loads=(0.5, 4.0)))
    assert any("load per CPU" in w for w in page_warnings(loaded, scoring_units(loaded.trials)))
    calm = read_results(_store(tmp_path / "b", ("cpu", "cpu"), loads=(1.0, 1.4)))
    assert not any("load" in w for w in page_warnings(calm, scoring_units(calm.trials)))
