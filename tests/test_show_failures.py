"""Seeing failures: a trial that fails in construction leaves a whole record pandas reads; `optbench show` prints a
trial's record and traceback; `score`, `status` and the report count failed trials and say how to see why; a slow
first stretch gets the --warmup-steps hint; Ctrl-C says what was recorded and how to go on. Real CLI runs on linreg."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest
from click.testing import CliRunner

from optbench.cli import main
from optbench.store.failures import failure_note, reason_line, slow_start, spent_seconds
from optbench.store.reader import read_results

PLUGIN = textwrap.dedent('''
    import time
    import torch

    class Broken(torch.optim.SGD):
        def __init__(self, params, lr=0.1):
            raise ValueError("bad constructor argument")

    class SlowStart(torch.optim.SGD):
        def __init__(self, params, lr=0.1):
            super().__init__(params, lr=lr)
            self.steps = 0

        def step(self, closure=None):
            self.steps += 1
            if self.steps == 1:
                time.sleep(1.5)  # as a compiled optimizer's first step
            return super().step(closure)

    class CtrlC(torch.optim.SGD):
        def __init__(self, params, lr=0.1):
            super().__init__(params, lr=lr)
            self.steps = 0

        def step(self, closure=None):
            self.steps += 1
            if self.steps == 3:
                raise KeyboardInterrupt
            return super().step(closure)
''')


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "plugins.py"
    path.write_text(PLUGIN)
    return path


def _run(plugin, results, name, *extra):
    return CliRunner().invoke(main, ["run", "-w", "linreg", "-s", f"{plugin}:{name}", "--max-steps", "30",
                                     "--quiet", "--results-dir", str(results), *extra])


def test_a_constructor_error_leaves_a_whole_record_that_show_score_status_and_report_explain(plugin, tmp_path):
    results = tmp_path / "results"
    res = _run(plugin, results, "Broken", "--seed", "0", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert "whole reason: optbench show " in res.output
    files = sorted(results.rglob("*.parquet"))
    assert len(files) == 2
    frame = pd.read_parquet(files[0])  # a plain pandas read: one row, the trial's columns there
    assert len(frame) == 1 and frame["outcome"][0] == "error"
    assert frame["error"][0].strip().endswith("ValueError: bad constructor argument")
    assert frame["step"].isna().all()  # no evaluation: the evaluation columns are null
    loaded = read_results(results)
    assert len(loaded.trials) == 2 and loaded.evals.empty  # the null row is no evaluation

    run_id = loaded.trials["run_id"][0]
    shown = CliRunner().invoke(main, ["show", run_id[:-3], "--results-dir", str(results)])
    assert shown.exit_code == 0, shown.output
    assert "outcome     error: ValueError: bad constructor argument" in shown.output
    assert "Traceback (most recent call last)" in shown.output and 'raise ValueError("bad constructor' in shown.output

    for prefix, what in (("2", "ambiguous"), ("nope", "no trial with run id")):
        bad = CliRunner().invoke(main, ["show", prefix, "--results-dir", str(results)])
        assert bad.exit_code == 2 and what in bad.output and len(bad.output.strip().splitlines()) == 1

    score = CliRunner().invoke(main, ["score", "--results-dir", str(results), "--format", "json"])
    assert score.exit_code == 0, score.output
    assert "2 trials failed (2 error); see why with 'optbench show RUN_ID'" in score.stderr
    assert score.stdout.lstrip().startswith("{")  # the note stays off a machine-readable stdout

    status = CliRunner().invoke(main, ["status", "--results-dir", str(results)])
    assert status.exit_code == 0 and "2 trials failed (2 error)" in status.output
    assert f"{run_id}  linreg/tiny plugins.py:Broken" in status.output and "bad constructor argument" in status.output


@pytest.mark.slow
def test_the_report_lists_failed_trials_with_their_reasons(plugin, tmp_path):
    pytest.importorskip("matplotlib")
    results = tmp_path / "results"
    assert _run(plugin, results, "Broken").exit_code == 0
    res = CliRunner().invoke(main, ["report", "--results-dir", str(results), "--out", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<h2>Failed trials</h2>" in page and "ValueError: bad constructor argument" in page
    assert "1 trial failed (1 error); see why with 'optbench show RUN_ID'" in res.stderr


def test_the_report_section_of_failed_trials(plugin, tmp_path):
    from optbench.report.sections import failures_html

    results = tmp_path / "results"
    assert _run(plugin, results, "Broken").exit_code == 0
    trials = read_results(results).all_trials()
    page = failures_html(trials)
    assert "<h2>Failed trials</h2>" in page and "ValueError: bad constructor argument" in page
    assert trials["run_id"][0] in page and "1 trial failed (1 error)" in page
    assert failures_html(trials.assign(outcome="reached")) == ""


def test_a_slow_first_stretch_gets_the_warmup_steps_hint(plugin, tmp_path):
    res = _run(plugin, tmp_path / "results", "SlowStart", "--eval-every", "10", "-o", "lr=0.01")
    assert res.exit_code == 0, res.output
    assert "the first 10 steps took" in res.output and "--warmup-steps 10" in res.output
    run_id = read_results(tmp_path / "results").trials["run_id"][0]
    shown = CliRunner().invoke(main, ["show", run_id, "--results-dir", str(tmp_path / "results")])
    assert "--warmup-steps" in shown.output


def test_a_seconds_budget_eaten_by_the_first_step_gets_the_hint_too(plugin, tmp_path):
    res = _run(plugin, tmp_path / "results", "SlowStart", "--max-seconds", "1", "-o", "lr=0.01")
    assert res.exit_code == 0, res.output
    assert "missed" in res.output and "the first step took" in res.output and "--warmup-steps 1 " in res.output


def test_slow_start_rule():
    # 10 steps in 5 s, then 0.01 s per step: flagged; an even pace, or a short first stretch (< 1 s extra): not.
    assert "--warmup-steps 10" in slow_start([0, 10, 20, 30], [0.0, 5.0, 5.1, 5.2])
    assert slow_start([0, 10, 20, 30], [0.0, 0.1, 0.2, 0.3]) is None
    assert slow_start([0, 10, 20, 30], [0.0, 0.5, 0.51, 0.52]) is None
    assert slow_start([0, 10], [0.0, 5.0]) is None  # nothing to compare with
    assert "--warmup-steps 10 " in slow_start([0, 100, 200, 300], [0.0, 30.0, 31.0, 32.0])  # at most 10 suggested
    # a seconds budget eaten by the first stretch: noted only when the trial missed on that budget
    eaten = slow_start([0, 20], [0.0, 60.5], budget_spent=True)
    assert eaten.startswith("the first 20 steps took 60.5 s timed, 100% of the seconds") and "--warmup-steps 10" in eaten
    assert slow_start([0, 20, 40], [0.0, 50.0, 60.5], budget_spent=True) is not None
    assert slow_start([0, 20, 40], [0.0, 20.0, 60.5], budget_spent=True) is None  # under half: nothing to say
    assert spent_seconds({"outcome": "missed", "max_seconds": 60.0, "total_timed_seconds": 60.5})
    assert not spent_seconds({"outcome": "missed", "max_seconds": None, "total_timed_seconds": 60.5})
    assert not spent_seconds({"outcome": "reached", "max_seconds": 60.0, "total_timed_seconds": 60.5})


def test_reason_and_note_helpers():
    assert reason_line("Traceback ...\n  File x\nRuntimeError: boom\n\n") == "RuntimeError: boom"
    # a message of several lines: the exception's type stays in the one line
    tb = "Traceback ...\n  File x\n    raise E\ntorch.OutOfMemoryError: CUDA out of memory.\nTried to allocate 1 GiB\n"
    assert reason_line(tb) == "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 1 GiB"
    assert reason_line("wall-clock limit of 5 s exceeded") == "wall-clock limit of 5 s exceeded"
    assert reason_line(None) == "" and len(reason_line("x" * 500)) == 200
    assert failure_note([{"outcome": "reached", "run_id": "a"}]) is None
    note = failure_note([{"outcome": "oom", "run_id": "a", "created_at": "1"},
                         {"outcome": "diverged", "run_id": "b", "created_at": "2"}], "/some dir")
    assert note.startswith("2 trials failed (1 oom, 1 diverged)")
    assert "optbench show b --results-dir '/some dir'" in note


@pytest.mark.parametrize("flags, then", [
    ((), "it starts again from step 0 (no checkpoint was saved"),
    (("--checkpoint-every", "0.0001"), "add --resume to continue it from its checkpoint"),
    (("--checkpoint-every", "0.0001", "--resume"), "it continues from its checkpoint"),
])
def test_ctrl_c_says_the_trial_was_recorded_and_how_to_go_on(plugin, tmp_path, flags, then):
    results = tmp_path / "results"
    res = _run(plugin, results, "CtrlC", "-o", "lr=0.01", *flags)
    assert res.exit_code == 130
    assert "was recorded as 'interrupted'" in res.stderr and "run the same command again" in res.stderr
    assert then in res.stderr and "aborted" not in res.output
    assert read_results(results).trials["outcome"].tolist() == ["interrupted"]
