"""How torch runs a trial (issue 24, item 6; gpu-review B3, D1, D2, E2, E4): ``--deterministic`` and ``--tf32`` are
applied for the trial's duration, restored after it and recorded; ``--compile`` builds one graph for every batch size
and records its recompilations and compile seconds; ``tune --jobs N`` gives each worker its own GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from optbench.engine.backends import CUBLAS_WORKSPACE, TrialSettings, matmul_precision
from optbench.engine.prepared import TrialConfig
from optbench.engine.runner import run_trial
from optbench.errors import UsageError
from optbench.parallel import executors
from optbench.plugins.registry import load_submission, load_workload

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def _flags() -> dict:
    return {"algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn": (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark),
            "flash": torch.backends.cuda.flash_sdp_enabled(), "efficient": torch.backends.cuda.mem_efficient_sdp_enabled(),
            "matmul": torch.backends.cuda.matmul.allow_tf32, "conv": torch.backends.cudnn.allow_tf32}


def test_deterministic_is_in_force_during_the_trial_and_undone_after(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    before = _flags()
    with TrialSettings(device=CPU, deterministic=True, tf32=True):
        inside = _flags()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
    assert inside["algorithms"] and inside["cudnn"] == (True, False)
    assert not inside["flash"] and not inside["efficient"]  # attention on the math kernel only
    assert (inside["matmul"], inside["conv"]) == (before["matmul"], before["conv"])  # a CPU trial: TF32 untouched
    assert _flags() == before


@pytest.mark.parametrize("tf32,mode", [(True, "tf32"), (False, "ieee")])
def test_tf32_is_set_explicitly_on_cuda_and_undone_after(tf32, mode):
    before = _flags()
    with TrialSettings(device=CUDA, deterministic=False, tf32=tf32):
        inside = _flags()
        newer = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
                 torch.backends.cudnn.rnn.fp32_precision)
        torch.get_float32_matmul_precision()  # consistent settings: no "mix of the legacy and new APIs" error
    assert (inside["matmul"], inside["conv"]) == (tf32, tf32)
    assert newer == (mode, mode, mode) or (not tf32 and newer[0] == "ieee")  # torch 2.9+'s view of the same
    assert not inside["algorithms"] and _flags() == before


def test_matmul_precision_as_recorded():
    assert matmul_precision("cuda:0", True) == "tf32" and matmul_precision("cuda", False) == "fp32"
    assert matmul_precision("cpu", True) == "fp32"  # CPU matmuls are always full fp32


def _run(tmp: Path, **cfg):
    return run_trial(load_workload("linreg"), load_submission("adamw"),
                     TrialConfig(device="cpu", max_steps=6, **cfg), results_dir=tmp).record


WATCHING = '''
import json, os, torch
class Watching(torch.optim.SGD):
    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, lr=lr)
    def step(self, closure=None):
        with open(os.environ["OPTBENCH_TEST_FLAGS"], "w") as fh:
            json.dump({"deterministic": torch.are_deterministic_algorithms_enabled(),
                       "flash": torch.backends.cuda.flash_sdp_enabled()}, fh)
        return super().step()
'''


def test_the_trial_runs_under_its_settings_and_records_them(tmp_path, monkeypatch):
    import json

    plugin = tmp_path / "watching.py"
    plugin.write_text(WATCHING)
    flags = tmp_path / "flags.json"
    monkeypatch.setenv("OPTBENCH_TEST_FLAGS", str(flags))
    record = run_trial(load_workload("linreg"), load_submission(f"{plugin}:Watching"),
                       TrialConfig(device="cpu", max_steps=3, deterministic=True), results_dir=tmp_path).record
    assert json.loads(flags.read_text()) == {"deterministic": True, "flash": False}
    assert record.deterministic and record.matmul_precision == "fp32" and record.compile_seconds is None
    assert not torch.are_deterministic_algorithms_enabled()  # the next trial of the process starts as before
    plain = _run(tmp_path)
    assert not plain.deterministic and plain.recompiles is None


def test_the_settings_are_checked_like_every_option(tmp_path):
    from optbench.engine.prepared import prepare

    for bad in ({"deterministic": "yes"}, {"tf32": 1}):
        with pytest.raises(UsageError, match="must be true or false"):
            prepare(load_workload("linreg"), load_submission("adamw"), TrialConfig(device="cpu", **bad),
                    results_dir=tmp_path)


def test_one_compiled_graph_serves_two_batch_sizes_in_each_trial(tmp_path):
    # batch 10 in micro-batches of 4, 4 and 2: two batch sizes through the compiled model. Marked dynamic, the first
    # graph takes both (no recompilation); a second trial of the process compiles afresh (Dynamo's in-memory cache is
    # cleared per trial), so that both pay alike and both record it.
    first = _run(tmp_path, compile=True, batch_size=10, micro_batch_size=4)
    second = _run(tmp_path, compile=True, batch_size=10, micro_batch_size=4, seed=1)
    for record in (first, second):
        assert record.compiled and record.recompiles == 0, record.recompiles
        assert record.compile_seconds > 0.0


NEW_FIELDS = ("deterministic", "matmul_precision", "compile_seconds", "recompiles")


def _rewritten(path: Path, **changes) -> Path:
    """``path``'s result with its metadata changed (``None`` removes a field), as another writer left it."""
    import json

    import pyarrow.parquet as pq

    meta = json.loads(pq.read_schema(path).metadata[b"optbench"])
    for key, value in changes.items():
        if value is None:
            meta.pop(key)
        else:
            meta[key] = value
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"optbench": json.dumps(meta).encode()}), path)
    return path


def test_results_from_before_these_fields_read_with_defaults_and_bad_values_are_refused(tmp_path):
    from optbench.store.checks import summarize
    from optbench.store.reader import read_trial
    from optbench.store.writer import write_trial
    from tests.test_results import _record, _row

    recorded = _record(compiled=True, deterministic=True, matmul_precision="tf32", compile_seconds=12.5,
                       recompiles=1)
    meta, _ = read_trial(write_trial(tmp_path / "new", recorded, [_row(0, 1.0)]))
    assert [meta[k] for k in NEW_FIELDS] == [True, "tf32", 12.5, 1]
    old = _rewritten(write_trial(tmp_path / "old", _record(), [_row(0, 1.0)]), **dict.fromkeys(NEW_FIELDS))
    meta, _ = read_trial(old)
    assert [meta[k] for k in NEW_FIELDS] == [False, "", None, None]
    for field, bad, needle in (("matmul_precision", "tf16", "matmul_precision"),
                               ("compile_seconds", -1.0, "negative"), ("recompiles", -2, "negative")):
        path = _rewritten(write_trial(tmp_path / field, _record(), [_row(0, 1.0)]), **{field: bad})
        _, problem = summarize(path)
        assert isinstance(problem, str) and needle in problem, problem


# ----- tune --jobs N on several GPUs ------------------------------------------------------------------------------
def test_each_worker_gets_its_own_gpu():
    assert executors.gpu_assignments(2, ["0", "1"]) == ["0", "1"]
    assert executors.gpu_assignments(4, ["0", "1"]) == ["0", "1", "0", "1"]  # more workers than GPUs: shared
    assert executors.gpu_assignments(2, ["0", "1", "2", "3"], per_worker=2) == ["0,1", "2,3"]  # --nproc 2 each
    assert executors.gpu_assignments(3, ["GPU-a", "GPU-b"]) == ["GPU-a", "GPU-b", "GPU-a"]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert executors.visible_gpus() == ["3", "5"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert executors.visible_gpus() == ["0", "1"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert executors.visible_gpus() == []


def worker_gpu(job):
    """A job function for the pool: which GPUs its worker sees, and which worker it is."""
    import time

    time.sleep(0.2)  # long enough that the two workers both take jobs
    return {"gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}


def test_pool_workers_see_one_gpu_each_with_two_gpus_faked(monkeypatch):
    monkeypatch.setattr(executors, "visible_gpus", lambda: ["0", "1"])
    seen: dict[int, object] = {}
    executors.Pool(2).run([{}] * 4, "tests.test_torch_settings:worker_gpu", lambda k, v, r: seen.update({k: v}))
    by_worker = {}
    for value in seen.values():
        by_worker.setdefault(value["pid"], set()).add(value["gpus"])
    assert len(seen) == 4 and all(len(g) == 1 for g in by_worker.values())  # a worker keeps its GPU
    assert set().union(*by_worker.values()) == {"0", "1"} and len(by_worker) == 2  # and no two share one
