"""Research recipes run through the one sweep engine: what that promises, end to end.

1. A recipe run again on its results directory records no new trial, trains nothing ("0 to run"), and writes the
   same table (cbs, lr-sweep, seesaw).
2. Two processes running one recipe on one results directory at once train each trial once and both print the
   full table.
3. A recipe killed with SIGKILL mid-sweep and run again completes the sweep with each trial once, resuming the
   trial it was killed in from its checkpoint.
4. ``--jobs 2`` and ``--executor local`` (submitit) give the serial run's table; ``--nproc 2`` trains each trial on
   two gloo ranks.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from optbench.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = ["--device", "cpu", "--target", "0.9", "--eval-every", "10", "-o", "schedule=constant", "--seed", "0",
        "--no-extend-grid"]
CBS = ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8,16", "--lrs", "0.01,0.03", "--max-steps", "40",
       *FAST]
LR_SWEEP = ["lr-sweep", "-w", "linreg", "-s", "sgd", "--batch-size", "8", "--lrs", "0.01,0.03", "--max-steps", "40",
            *FAST]
SEESAW = ["seesaw", "-w", "linreg", "-s", "sgd", "--seed", "0", "--twin-steps", "40", "--device", "cpu",
          "--target", "0.9", "--eval-every", "10"]
TABLES = {"cbs": ("cbs.md", "cbs.csv"), "lr-sweep": ("lr-sweep.md",), "seesaw": ("seesaw.md",)}


# ------------------------------------------------------------------------------------------------ helpers


def _parquets(root: Path) -> list[Path]:
    return sorted(Path(root).rglob("*.parquet"))


def _meta(path: Path) -> dict:
    import pyarrow.parquet as pq

    return json.loads(pq.read_schema(path).metadata[b"optbench"])


def _per_trial(root: Path) -> collections.Counter:
    """How many result files each (submission, study, trial, seed) has."""
    return collections.Counter((m["submission"], m["study"], m["trial"], m["seed"])
                               for m in map(_meta, _parquets(root)))


def _snapshot(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every result file: its run id and its bytes."""
    return {str(p): (_meta(p)["run_id"], p.read_bytes()) for p in _parquets(root)}


def _tables(root: Path, recipe: str) -> dict[str, bytes]:
    folder = root / "recipes" / recipe
    return {name: (folder / name).read_bytes() for name in TABLES[recipe]}


def _table_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def _cli(args: list[str]):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    return r


def _command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "optbench", *args]


def _env() -> dict[str, str]:
    # One intra-op thread per process: these processes share two cores with each other (and other work).
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_command(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


# ------------------------------------------------------------------------- 1. a re-run trains nothing


@pytest.mark.parametrize(("recipe", "args", "trials"), [("cbs", CBS, 4), ("lr-sweep", LR_SWEEP, 2),
                                                        ("seesaw", SEESAW, 2)], ids=["cbs", "lr-sweep", "seesaw"])
def test_a_recipe_run_again_records_nothing_and_writes_the_same_table(tmp_path, recipe, args, trials):
    root = tmp_path / "results"
    first = _cli([*args, "--results-dir", str(root)])
    assert f"{trials} trials planned, 0 already recorded, {trials} to run" in first.stderr
    results, tables = _snapshot(root), _tables(root, recipe)
    assert len(results) == trials and len({run_id for run_id, _ in results.values()}) == trials
    assert set(_per_trial(root).values()) == {1}

    second = _cli([*args, "--results-dir", str(root)])
    assert f"{trials} trials planned, {trials} already recorded, 0 to run" in second.stderr
    assert _snapshot(root) == results  # the same files, run ids and bytes: nothing trained, nothing rewritten
    assert _tables(root, recipe) == tables  # byte for byte
    assert _table_lines(second.stdout) == _table_lines(first.stdout) != []
    if recipe == "cbs":  # the table says something: steps to target at each batch size
        assert "| 8 | 0.01 (low edge) | 20 |" in tables["cbs.md"].decode()  # 0.03 was worse: an edge
        assert "| 16 | 0.01 | 10 |" in tables["cbs.md"].decode()  # 0.01 and 0.03 tie at 16: a plateau
    assert not list(root.rglob("*.claim"))


# --------------------------------------------------------------- 2. two processes at once: each trial once

CONCURRENT = ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8,16", "--lrs", "0.001,0.003", "--max-steps",
              "600", "--eval-every", "100", "--target", "1e-9", "--device", "cpu", "-o", "schedule=constant",
              "--seed", "0"]


def _csv_trials(path: Path) -> list[str]:
    """The trials a recipe's cbs.csv lists (batch size, lr, seed)."""
    return sorted(",".join(line.split(",")[:3]) for line in path.read_text().splitlines()[1:])


def test_two_concurrent_runs_of_one_recipe_train_each_trial_once(tmp_path):
    root = tmp_path / "results"
    # The same sweep on one results directory; each process writes its tables to its own --out, so that what each
    # one wrote can be told apart.
    procs = [subprocess.Popen(_command([*CONCURRENT, "--results-dir", str(root), "--out", str(tmp_path / f"out{i}")]),
                              cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=300))
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    for (out, err), p in zip(outs, procs):
        assert p.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    counts = _per_trial(root)
    assert len(counts) == 4 and set(counts.values()) == {1}, counts  # each trial trained once
    assert not list(root.rglob("*.claim"))
    every = _csv_trials(tmp_path / "out0" / "cbs.csv") + _csv_trials(tmp_path / "out1" / "cbs.csv")
    for i, (out, err) in enumerate(outs):  # each printed and wrote the full table: all four trials
        assert "have no result yet" not in err, (f"process {i}", err, out)
        assert len(_csv_trials(tmp_path / f"out{i}" / "cbs.csv")) == 4, (f"process {i}", every)
        assert _table_lines(out) == _table_lines((tmp_path / f"out{i}" / "cbs.md").read_text())
        assert [line.split("|")[1].strip() for line in _table_lines(out)[2:]] == ["8", "16"], out
    for name in ("cbs.md", "cbs.csv"):
        assert (tmp_path / "out0" / name).read_bytes() == (tmp_path / "out1" / name).read_bytes(), name


# ---------------------------------------------------------------- 3. killed mid-sweep, then run again

KILLED = ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8,16", "--lrs", "0.001,0.003", "--max-steps", "1500",
          "--eval-every", "100", "--target", "1e-9", "--device", "cpu", "-o", "schedule=constant",
          "--checkpoint-every", "0.05", "--resume", "--seed", "0"]


def _wait_for(predicate, proc: subprocess.Popen, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if predicate():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_a_recipe_killed_mid_sweep_completes_when_run_again_resuming_its_checkpoint(tmp_path):
    root = tmp_path / "results"
    args = [*KILLED, "--results-dir", str(root)]
    checkpoints = root / ".checkpoints"

    def midway() -> bool:  # one trial finished, another checkpointed and not finished
        return bool(_parquets(root)) and any(checkpoints.glob("*.pt"))

    for attempt in range(4):  # a kill that lands just as the checkpointed trial ends leaves nothing to resume
        proc = subprocess.Popen(_command(args), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            reached = _wait_for(midway, proc, time.monotonic() + 240)
            if proc.poll() is not None:
                pytest.fail(f"the sweep ended before it could be killed (rc {proc.returncode}): "
                            f"{proc.stderr.read()[-2000:]}")
            assert reached, "no result and checkpoint within 240 s"
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
        if any(checkpoints.glob("*.pt")) and len(_parquets(root)) < 4:
            break
    else:
        pytest.fail("never killed the sweep with a checkpoint left")
    assert list(root.rglob("*.claim")), "the killed process's claim should be left behind (stale)"
    done_before = _snapshot(root)

    again = _run(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    counts = _per_trial(root)
    assert len(counts) == 4 and set(counts.values()) == {1}, counts
    after = _snapshot(root)
    assert all(after[p] == v for p, v in done_before.items())  # finished results kept as they were
    resumed = [m for m in map(_meta, _parquets(root)) if m["resumes"] >= 1]
    assert resumed, [(_meta(p)["study"], _meta(p)["trial"], _meta(p)["resumes"]) for p in _parquets(root)]
    assert all(m["total_steps"] == 1500 and m["outcome"] == "missed" for m in map(_meta, _parquets(root)))
    assert f"4 trials planned, {len(done_before)} already recorded, {4 - len(done_before)} to run" in again.stderr
    assert not list(root.rglob("*.claim"))
    assert not list(checkpoints.glob("*.pt"))  # a finished trial's own checkpoint is removed
    assert "have no result yet" not in again.stderr, again.stderr
    assert _csv_trials(root / "recipes" / "cbs" / "cbs.csv") == ["16,0.001,0", "16,0.003,0", "8,0.001,0", "8,0.003,0"]


# ------------------------------------------------------------- 4. where the trials run does not change the table

SERIAL_CBS = ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "8,16", "--lrs", "0.01,0.03", "--max-steps", "60",
              *FAST]
SERIAL_LR = ["lr-sweep", "-w", "linreg", "-s", "sgd", "-s", "adamw", "--batch-size", "8", "--lrs", "0.01,0.1",
             "--max-steps", "60", *FAST]


@pytest.fixture(scope="module")
def serial_tables(tmp_path_factory):
    """The serial runs' tables (in this process), made once for the module."""
    out = {}
    for recipe, args in (("cbs", SERIAL_CBS), ("lr-sweep", SERIAL_LR)):
        root = tmp_path_factory.mktemp("serial") / "results"
        _cli([*args, "--results-dir", str(root)])
        out[recipe] = _tables(root, recipe)
    return out


def test_serial_tables_say_something(serial_tables):
    cbs = serial_tables["cbs"]["cbs.md"].decode()
    assert "| 8 | 0.01 (low edge) | 20 |" in cbs and "| 16 | 0.01 | 10 |" in cbs
    assert "| 0.01 | 20 | 10 |" in serial_tables["lr-sweep"]["lr-sweep.md"].decode()


@pytest.mark.parametrize("recipe", ["cbs", "lr-sweep"])
def test_two_worker_processes_give_the_serial_table(tmp_path, serial_tables, recipe):
    args = SERIAL_CBS if recipe == "cbs" else SERIAL_LR
    root = tmp_path / "results"
    r = _run([*args, "--jobs", "2", "--results-dir", str(root)], tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "to run in 2 worker processes" in r.stderr, r.stderr
    assert _tables(root, recipe) == serial_tables[recipe]
    assert set(_per_trial(root).values()) == {1}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["cbs", "lr-sweep"])
def test_submitit_local_tasks_give_the_serial_table(tmp_path, serial_tables, recipe):
    pytest.importorskip("submitit")
    args = SERIAL_CBS if recipe == "cbs" else SERIAL_LR
    root = tmp_path / "results"
    r = _run([*args, "--executor", "local", "--results-dir", str(root)], tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "as local tasks" in r.stderr, r.stderr
    assert _tables(root, recipe) == serial_tables[recipe]
    assert set(_per_trial(root).values()) == {1}
    assert not list(root.rglob("*.claim"))


@pytest.mark.slow
def test_a_recipe_trains_each_trial_on_two_gloo_ranks(tmp_path):
    root = tmp_path / "results"
    args = ["cbs", "-w", "linreg", "-s", "sgd", "--batch-sizes", "16", "--lrs", "0.01,0.03", "--max-steps", "40",
            *FAST, "--nproc", "2", "--results-dir", str(root)]
    r = _run(args, tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "each on 2 processes (torchrun)" in r.stderr, r.stderr
    metas = [_meta(p) for p in _parquets(root)]
    assert len(metas) == 2, [m["trial"] for m in metas]
    assert all(m["world_size"] == 2 and m["dist_backend"] == "gloo" for m in metas), metas
    assert set(_per_trial(root).values()) == {1}
    assert len(_table_lines((root / "recipes" / "cbs" / "cbs.md").read_text())) == 3
