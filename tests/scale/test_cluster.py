"""Tunes through submitit's local executor (the code path SLURM uses), preemption and requeue, and `status`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from optbench.sweep import claims
from optbench.cli import main
from optbench.engine.prepared import TrialConfig, prepare
from optbench.parallel.executors import ClusterOptions, Submitit, logs_dir, wait_for
from optbench.sweep.engine import JOB_FN, Planned, job_of, prepare_planned
from optbench.plugins.registry import load_submission, load_workload
from optbench.sweep.status import sweep_status

pytest.importorskip("submitit")

TUNE = ["tune", "-w", "linreg", "--device", "cpu", "--max-steps", "40", "--executor", "local"]


def invoke(args: list[str]):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    return res.output


def results(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet"))


def test_a_local_executor_tune_runs_is_scored_and_never_runs_twice(tmp_path: Path) -> None:
    args = [*TUNE, "-s", "adamw", "--trials", "2", "--studies", "1", "--results-dir", str(tmp_path)]
    out = invoke(args)
    assert "submitted 2 tasks (local job" in out and "2 trials run" in out
    assert len(results(tmp_path)) == 2 and any((tmp_path / ".submitit").glob("*_log.out"))  # logs beside results
    again = invoke(args)
    assert "0 to run" in again and len(results(tmp_path)) == 2
    assert "adamw" in invoke(["score", "--results-dir", str(tmp_path)])
    (line,) = sweep_status(tmp_path)
    assert line.counts == {"done": 2, "failed": 0, "running": 0, "interrupted": 0, "pending": 0}


@pytest.mark.slow
def test_two_submissions_four_trials_two_studies_on_the_local_executor(tmp_path: Path) -> None:
    out = invoke([*TUNE, "-s", "adamw", "-s", "sgd", "--trials", "4", "--studies", "2", "--results-dir",
                  str(tmp_path)])
    assert "16 trials run" in out and len(results(tmp_path)) == 16
    score = invoke(["score", "--results-dir", str(tmp_path)])
    assert "adamw" in score and "sgd" in score


def rows(path: Path) -> list[tuple]:
    cols = ["step", "examples", "train_loss", "metric_value", "learning_rate"]
    t = pq.read_table(path, columns=cols)
    return [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in r)
            for r in zip(*(t.column(c).to_pylist() for c in cols))]


def preempt(job) -> None:
    """Send SIGUSR2 to the task's process, as SLURM signals a job it preempts: submitit's handler in the task
    checkpoints it and requeues it (the local executor's controller process forwards only its time-out signal)."""
    import os
    import signal

    pid = job._process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert children, "the task process is not running"
    for child in children:
        os.kill(int(child), signal.SIGUSR2)


def test_a_preempted_task_is_requeued_and_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    cfg = TrialConfig(device="cpu", max_steps=1500, eval_every_steps=100, checkpoint_every=0.05, resume=True)
    trials = {}
    for name in ("whole", "preempted"):
        planned = Planned(workload="linreg", submission="adamw", config=cfg)
        prep = prepare_planned(planned, tmp_path / name)
        tasks = Submitit(ClusterOptions(executor="local", time_limit=10), logs=logs_dir(tmp_path / name))
        tasks.run([job_of(planned, prep)], JOB_FN, lambda *done: None)  # returns once submitted (no wait)
        (job,) = tasks.jobs
        trials[name] = (prep, job)
    prep, job = trials["preempted"]
    deadline = time.monotonic() + 120
    while not prep.checkpoint.exists():
        assert time.monotonic() < deadline and not job.done(), "no checkpoint before the task ended"
        time.sleep(0.02)
    time.sleep(0.2)
    preempt(job)
    wait_for([trials["whole"][1], job])
    (whole,), (resumed,) = results(tmp_path / "whole"), results(tmp_path / "preempted")
    record = json.loads(pq.read_schema(resumed).metadata[b"optbench"])
    assert record["resumes"] == 1 and record["outcome"] != "error"
    assert rows(resumed) == rows(whole)
    assert not claims.claimed_elsewhere(tmp_path / "preempted", prep.identity())


def test_status_tells_running_interrupted_and_pending_apart(tmp_path: Path) -> None:
    from optbench.sweep.engine import write_plan

    preps = [prepare(load_workload("linreg"), load_submission("sgd"),
                     TrialConfig(device="cpu", seed=s, max_steps=5, resume=True), results_dir=tmp_path)
             for s in range(4)]
    write_plan(tmp_path, preps)
    held = claims.try_claim(tmp_path, preps[0].identity())  # a live process (this one) runs trial 0
    preps[1].checkpoint.parent.mkdir(parents=True)
    preps[1].checkpoint.write_bytes(b"")  # trial 1 has a checkpoint and no result: interrupted
    from optbench.engine.runner import run_prepared

    run_prepared(preps[2])  # trial 2 is done; trial 3 pending
    (line,) = sweep_status(tmp_path)
    assert line.counts == {"done": 1, "failed": 0, "running": 1, "interrupted": 1, "pending": 1}
    held.release()
    out = invoke(["status", "--results-dir", str(tmp_path)])
    assert "1 done, 0 failed, 0 running, 1 interrupted, 2 pending" in out


def test_slurm_without_sbatch_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, [*TUNE[:-1], "slurm", "-s", "adamw", "--trials", "1", "--studies", "1",
                                    "--results-dir", str(tmp_path)])
    assert res.exit_code == 2 and "no sbatch" in res.output and len(res.output.strip().splitlines()) <= 3


def test_slurm_args_are_parsed_once_each() -> None:
    from optbench.parallel.executors import parse_slurm_args
    from optbench.errors import UsageError

    assert parse_slurm_args(["account=lab", "--qos=high"]) == {"account": "lab", "qos": "high"}
    with pytest.raises(UsageError, match="given twice"):
        parse_slurm_args(["qos=a", "qos=b"])
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_slurm_args(["account"])
