"""A trial killed with SIGKILL and resumed from its checkpoint ends bit-identical to one never interrupted."""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from optbench.store.reader import read_trial
from optbench.store.writer import write_trial

ROOT = Path(__file__).resolve().parents[2]
TRIAL = ["run", "-w", "linreg", "-s", "adamw", "--device", "cpu", "--eval-every", "50", "--quiet"]
SHORT = ["--max-steps", "600"]
LONG = ["--max-steps", "80000", "-o", "lr=1e-6"]  # long enough to be killed twenty times (too slow to reach the target)
SAME = ["step", "examples", "tokens", "train_loss", "metric_value", "learning_rate", "batch_size"]


def start(results: Path, *extra: str, steps: list[str] = SHORT) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "optbench", *TRIAL, *steps, "--results-dir", str(results), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def rows_and_record(results: Path) -> tuple[list[tuple], dict]:
    (path,) = [p for p in results.rglob("*.parquet") if ".checkpoints" not in p.parts]
    table = pq.read_table(path, columns=SAME)
    rows = [tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)  # NaN == NaN, exactly
            for row in zip(*(table.column(c).to_pylist() for c in SAME))]
    return rows, json.loads(pq.read_schema(path).metadata[b"optbench"])


def kill_after_a_checkpoint(results: Path, *, delay: float, steps: list[str] = SHORT, every: str = "0.02") -> bool:
    """Start the resumable trial, SIGKILL it ``delay`` s after it wrote its first checkpoint (a new one, when it
    resumed from an earlier incarnation's); False if it finished first."""
    ckpts = results / ".checkpoints"

    def stamp() -> tuple:
        return tuple(sorted((p.name, p.stat().st_mtime_ns) for p in ckpts.glob("*.pt"))) if ckpts.is_dir() else ()

    before = stamp()
    proc = start(results, "--checkpoint-every", every, "--resume", steps=steps)
    deadline = time.monotonic() + 120
    while proc.poll() is None and stamp() in ((), before):
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no checkpoint appeared")
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def finish(results: Path, steps: list[str] = SHORT) -> None:
    proc = start(results, "--checkpoint-every", "0.02", "--resume", steps=steps)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> list[tuple]:
    results = tmp_path_factory.mktemp("whole")
    proc = start(results)
    assert proc.wait(timeout=240) == 0
    return rows_and_record(results)[0]


def test_one_kill_then_resume_is_bit_identical(tmp_path: Path, uninterrupted: list[tuple]) -> None:
    assert kill_after_a_checkpoint(tmp_path, delay=0.3)
    assert not [p for p in tmp_path.rglob("*.parquet")]  # killed: nothing written but the checkpoint
    finish(tmp_path)
    rows, record = rows_and_record(tmp_path)
    assert rows == uninterrupted
    assert record["resumes"] == 1 and record["lost_seconds"] >= 0.0 and record["schema_version"] == 2
    assert not list((tmp_path / ".checkpoints").glob("*"))  # a finished trial leaves no checkpoint behind


@pytest.mark.slow
def test_twenty_kills_at_random_points_then_resume_is_bit_identical(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    assert start(whole, steps=LONG).wait(timeout=600) == 0
    killed = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    # Checkpoints every 0.3 s of timed work, kills up to 0.3 s after one: the work past it is lost, and counted.
    while kills < 20 and kill_after_a_checkpoint(killed, delay=rng.uniform(0.0, 0.3), steps=LONG, every="0.3"):
        kills += 1
    if not list(killed.rglob("*.parquet")):
        finish(killed, steps=LONG)
    rows, record = rows_and_record(killed)
    assert rows == rows_and_record(whole)[0]
    assert kills == 20 and record["resumes"] == 20  # every kill came after a resume and a new checkpoint
    assert record["lost_seconds"] > 0.0


def test_a_foreign_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    """Another seed's checkpoint put where this trial's goes: refused, not loaded."""
    other = tmp_path / "other"
    assert kill_after_a_checkpoint(other, delay=0.0) or True
    (ckpt,) = (other / ".checkpoints").glob("*.pt")
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload

    mine = prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(device="cpu", seed=1, max_steps=600, eval_every_steps=50, resume=True),
                   results_dir=tmp_path)
    mine.checkpoint.parent.mkdir(parents=True)
    shutil.copy(ckpt, mine.checkpoint)
    done = subprocess.run([sys.executable, "-m", "optbench", *TRIAL, *SHORT, "--seed", "1", "--resume", "--results-dir",
                           str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "belongs to another trial" in done.stderr and "seed" in done.stderr


def test_an_unreadable_checkpoint_is_refused_in_one_line(tmp_path: Path) -> None:
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload

    prep = prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(device="cpu", max_steps=600, eval_every_steps=50, resume=True), results_dir=tmp_path)
    prep.checkpoint.parent.mkdir(parents=True)
    prep.checkpoint.write_bytes(b"not a checkpoint")
    done = subprocess.run([sys.executable, "-m", "optbench", *TRIAL, *SHORT, "--resume", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "cannot be read" in done.stderr and done.stderr.count("\n") == 1


def test_version_one_files_stay_readable(tmp_path: Path) -> None:
    """A schema-1 result (no resumes, lost_seconds) reads with the new fields at their defaults."""
    from tests.test_results import _record, _row

    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    meta = json.loads(pq.read_schema(path).metadata[b"optbench"])
    meta["schema_version"] = 1
    for key in ("resumes", "lost_seconds", "micro_batch_size", "world_size"):
        meta.pop(key)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"optbench": json.dumps(meta).encode()}), path)
    record, _ = read_trial(path)
    assert record["schema_version"] == 1 and record["resumes"] == 0 and record["lost_seconds"] == 0.0
    assert record["world_size"] == 1


def test_a_kill_between_the_result_and_the_checkpoint_cleanup_does_not_run_the_trial_twice(tmp_path: Path) -> None:
    from optbench.engine import checkpoints
    from optbench.engine.prepared import TrialConfig, prepare
    from optbench.plugins.registry import load_submission, load_workload
    from optbench.engine.runner import run_prepared

    prep = prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(device="cpu", max_steps=30, checkpoint_every=1e-4, resume=True), results_dir=tmp_path)
    first = run_prepared(prep)
    # The state a kill leaves just after the result was written: checkpoint and finishing note still there.
    prep.checkpoint.write_bytes(b"stale")
    checkpoints.finishing(prep.checkpoint, first.path)
    again = run_prepared(prep)
    assert again.path == first.path and again.record.run_id == first.record.run_id
    assert len(list(tmp_path.rglob("*.parquet"))) == 1 and not prep.checkpoint.exists()


def test_a_checkpoint_folder_blocked_by_a_file_is_one_line_before_training(tmp_path: Path) -> None:
    (tmp_path / ".checkpoints").write_text("a file where the checkpoints go")
    done = subprocess.run([sys.executable, "-m", "optbench", *TRIAL, *SHORT, "--checkpoint-every", "1",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and ".checkpoints" in done.stderr
    assert not list(tmp_path.rglob("*.parquet"))
