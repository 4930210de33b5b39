"""Data parallel with torchrun: two gloo processes train the same trial as one process does.

Each test starts a real ``torchrun --standalone`` (through ``optbench run --nproc 2``) on the CPU and compares the
curve rank 0 wrote with the single-process curve of the same trial. SOAP is compared by its losses, for the reason
measured in test_accumulation (its eigenbases are arbitrary where its factors are rank-deficient).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from tests.workloads.test_lm import markov_corpus, write_tokens

ROOT = Path(__file__).resolve().parents[2]
FAULTY = ROOT / "tests" / "plugins" / "faulty.py"
E2E = ROOT / "tests" / "plugins" / "e2e_workloads.py"
COMMON = ["--device", "cpu", "--batch-size", "32", "--max-steps", "20", "--eval-every", "5", "--quiet"]


def optbench(args: list[str], *, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "optbench", *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def curves(results: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """submission -> (record, eval rows as (step, examples, train_loss, metric_value)) of every file."""
    out = {}
    for f in sorted(results.rglob("*.parquet")):
        record = json.loads(pq.read_schema(f).metadata[b"optbench"])
        rows = pq.read_table(f, columns=["step", "examples", "train_loss", "metric_value"]).to_pandas()
        out[record["submission"]] = (record, rows.to_numpy(dtype=float))
    return out


def compare(one: np.ndarray, two: np.ndarray, *, rtol: float) -> None:
    assert one.shape == two.shape
    assert np.array_equal(one[:, :2], two[:, :2])  # the same steps and examples
    gap = np.abs(one[:, 2:] - two[:, 2:]) / np.maximum(np.abs(one[:, 2:]), 1e-12)
    assert np.nanmax(gap) <= rtol, float(np.nanmax(gap))


def test_two_gloo_ranks_train_linreg_as_one_process(tmp_path: Path) -> None:
    args = ["run", "-w", "linreg", "-s", "adamw", "-s", "soap", *COMMON]
    single = optbench([*args, "--results-dir", str(tmp_path / "one")])
    assert single.returncode == 0, single.stderr
    double = optbench([*args, "--nproc", "2", "--results-dir", str(tmp_path / "two")])
    assert double.returncode == 0, double.stderr[-2000:]
    one, two = curves(tmp_path / "one"), curves(tmp_path / "two")
    assert set(two) == {"adamw", "soap"} and len(list((tmp_path / "two").rglob("*.parquet"))) == 2  # rank 0 only
    compare(one["adamw"][1], two["adamw"][1], rtol=1e-5)
    compare(one["soap"][1], two["soap"][1], rtol=2e-2)
    assert double.stdout.count("adamw seed 0") == 1  # rank 1 prints nothing
    record = two["adamw"][0]
    assert (record["world_size"], record["dist_backend"], record["accumulation_steps"]) == (2, "gloo", 1)
    assert len(record["device_names"].split(",")) == 2 and one["adamw"][0]["world_size"] == 1


@pytest.mark.slow
def test_two_gloo_ranks_train_the_lm_as_one_process(tmp_path: Path) -> None:
    corpus = markov_corpus(40_000, vocab=512)
    data = write_tokens(tmp_path / "data", "wikitext103", train=corpus[:32_000], val=corpus[32_000:], vocab=512)
    for sub, extra, rtol in (("adamw", [], 1e-5), ("soap", ["-o", "max_precond_dim=64"], 1e-3)):
        args = ["run", "-w", f"{E2E}:wikitext", "-s", sub, *extra, "--data-dir", str(data), *COMMON]
        single = optbench([*args, "--results-dir", str(tmp_path / sub / "one")])
        assert single.returncode == 0, single.stderr
        double = optbench([*args, "--nproc", "2", "--results-dir", str(tmp_path / sub / "two")])
        assert double.returncode == 0, double.stderr[-2000:]
        compare(curves(tmp_path / sub / "one")[sub][1], curves(tmp_path / sub / "two")[sub][1], rtol=rtol)


def test_a_raising_rank_ends_the_trial_on_both_ranks_as_an_error(tmp_path: Path) -> None:
    # rank 1 raises in its third step; one stretch holds the whole budget (--sync-every 1000), so rank 0 stopping
    # within a step of it (its recorded steps) shows the failure seen within steps, not at the stretch end
    start = time.monotonic()
    done = optbench(["run", "-w", "linreg", "-s", f"{FAULTY}:RaisingOnRank1", "--nproc", "2", "--device", "cpu",
                     "--max-steps", "50", "--sync-every", "1000", "--quiet", "--results-dir", str(tmp_path)],
                    timeout=120)
    assert time.monotonic() - start < 90  # both processes ended: torchrun returned
    assert done.returncode == 0, done.stderr[-3000:]  # the failure is the trial's outcome, recorded as data
    assert "Traceback" not in done.stderr
    (record, rows), = curves(tmp_path).values()
    assert record["outcome"] == "error" and "rank 1 of 2" in record["error"]
    assert "rank 1 broke on purpose" in record["error"]
    assert "rank 1 broke on purpose" in done.stdout  # rank 0's summary of the trial
    assert 2 <= record["total_steps"] <= 4, record["total_steps"]  # step 3 failed on rank 1: rank 0 stopped by 4


# ----- NCCL-style waits, on one gloo process -------------------------------------------------------------------
# On NCCL, Group.wait only orders the streams: a collective that a dead peer never joins does not stop the host,
# and no wait looks at the store. A world of one gloo process whose group takes NCCL's waits (its collectives
# complete at once) is that situation on a CPU: the only place a peer's failure can be seen within a stretch is the
# check each micro-batch starts with.


@pytest.fixture
def nccl_style_group(monkeypatch):
    """A real :class:`Group` over an in-process gloo world of one, waiting as on NCCL (no polling of the store)."""
    import torch
    import torch.distributed as dist

    from optbench.parallel.distributed import Group, World

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    monkeypatch.setattr(Group, "broken", False)
    try:
        group = Group(World(rank=0, size=1), torch.device("cpu"), trial_index=1)
        group.backend = "nccl"  # Group.wait: work.wait() only; Group.sync on a CPU: one look at the store
        yield group
    finally:
        dist.destroy_process_group()


def _fail_peer_after(loop, group, steps: int) -> None:
    """Post a peer's failure (as rank 1's Group.fail would) when the loop's updater has taken ``steps`` steps."""
    inner = loop.state.updater.step
    taken = [0]

    def step(*args, **kwargs):
        out = inner(*args, **kwargs)
        taken[0] += 1
        if taken[0] == steps:
            group.store.set(group.key, json.dumps({"rank": 1, "outcome": "error", "reason": "gone"}))
        return out

    loop.state.updater.step = step


@pytest.mark.parametrize("micro", [None, 8])
def test_a_peer_failure_is_seen_at_the_next_step_not_at_the_stretch_end(tmp_path, nccl_style_group, micro):
    from optbench.parallel.distributed import PeerFailed
    from tests.scale.helpers import make_loop

    loop = make_loop("linreg", "adamw", tmp=tmp_path, max_steps=200, sync_every=1000, batch_size=32,
                     micro_batch_size=micro)
    loop.group = loop.stepper.group = nccl_style_group
    loop.state.clock.waiter = nccl_style_group.sync
    _fail_peer_after(loop, nccl_style_group, steps=5)
    with pytest.raises(PeerFailed) as failed:
        loop.run()
    assert failed.value.rank == 1 and failed.value.outcome == "error"
    assert loop.state.counters.step == 5  # stopped at the first micro-batch of step 6, 195 steps before the stretch end


def test_after_a_rank_failed_the_next_trial_runs_in_a_fresh_group(tmp_path: Path) -> None:
    # each trial of a sweep starts its own torchrun ranks: a group broken by one trial's failing rank cannot stop
    # the next trial, which fails on its own (the same plugin) and is recorded on its own
    done = optbench(["run", "-w", "linreg", "-s", f"{FAULTY}:RaisingOnRank1", "--seed", "0", "--seed", "1",
                     "--nproc", "2", "--device", "cpu", "--max-steps", "50", "--quiet",
                     "--results-dir", str(tmp_path)], timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(pq.read_schema(f).metadata[b"optbench"]) for f in tmp_path.rglob("*.parquet")]
    assert sorted(r["seed"] for r in records) == [0, 1]
    assert all(r["outcome"] == "error" and "rank 1 of 2" in r["error"] for r in records)
