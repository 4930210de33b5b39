"""A checkpoint is never lost to a failed resume (issue 24, item 3; gpu-review B2).

A checkpoint written on another device type (its generator states are CUDA's), or by a trial on another number of
devices, cannot be resumed here: the resume is refused in one line before anything trains, and the file stays
byte-identical, ready to be resumed where it was written. The random state saved is the trial's own device's only.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from optbench.engine import checkpoints
from optbench.engine.prepared import PreparedTrial, TrialConfig, prepare
from optbench.engine.runner import run_prepared
from optbench.plugins.registry import load_submission, load_workload
from tests.scale.helpers import make_loop, resumed_twin

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["run", "-w", "linreg", "-s", "adamw", "--device", "cpu", "--max-steps", "40", "--eval-every", "20",
        "--resume", "--quiet"]
CUDA_GENERATOR_STATE = torch.zeros(16, dtype=torch.uint8)  # a CUDA (Philox) generator's state: seed and offset


def _prep(results: Path) -> PreparedTrial:
    """The trial ``ARGS`` runs, as ``prepare`` makes it (its checkpoint under ``results/.checkpoints``)."""
    return prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(device="cpu", max_steps=40, eval_every_steps=20, resume=True), results_dir=results)


def _checkpoint(results: Path, tmp: Path, edit=None) -> tuple[PreparedTrial, bytes]:
    """Write the trial's checkpoint after 10 steps (``edit`` changes the saved dict first); returns its bytes."""
    prep = _prep(results)
    loop = make_loop("linreg", "adamw", tmp=tmp, max_steps=40, eval_every_steps=20)
    for _ in range(10):
        loop.step()
    prep.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoints.save(loop.state, prep.checkpoint, prep.checkpoint_key())
    if edit is not None:
        saved = torch.load(prep.checkpoint, map_location="cpu", weights_only=True)
        edit(saved)
        torch.save(saved, prep.checkpoint)
    return prep, prep.checkpoint.read_bytes()


def _claims_a_cuda_generator(saved: dict) -> None:
    saved["state"]["data_gen"] = CUDA_GENERATOR_STATE.clone()


def _has_a_cuda_rng(saved: dict) -> None:
    saved["state"]["cuda_rng"] = CUDA_GENERATOR_STATE.clone()


def _written_on_cuda(saved: dict) -> None:
    saved["key"]["device_type"] = "cuda"
    _claims_a_cuda_generator(saved)


def _written_on_two_gpus(saved: dict) -> None:
    saved["key"].update(device_type="cuda", device_count=2)


FOREIGN = {
    "a generator state of another device type": (_claims_a_cuda_generator, "data_gen generator state"),
    "a CUDA device generator on a CPU trial": (_has_a_cuda_rng, "saved on a CUDA device"),
    "a key naming another device type": (_written_on_cuda, "device_type: cpu here, cuda saved"),
    "a key naming more devices": (_written_on_two_gpus, "device_count: 1 here, 2 saved"),
}


@pytest.mark.parametrize("case", list(FOREIGN))
def test_a_foreign_checkpoint_is_refused_and_kept_byte_identical(tmp_path, case):
    edit, needle = FOREIGN[case]
    results = tmp_path / "results"
    prep, before = _checkpoint(results, tmp_path, edit)
    with pytest.raises(checkpoints.UnusableCheckpoint) as refused:
        run_prepared(prep)
    message = str(refused.value)
    assert "\n" not in message and needle in message and "it was kept" in message, message
    assert prep.checkpoint.read_bytes() == before  # not discarded, not rewritten
    assert not list(results.rglob("*.parquet"))  # nothing recorded: the trial never started


def test_on_the_command_line_the_refusal_is_one_line_exit_2_and_the_file_stays(tmp_path):
    results = tmp_path / "results"
    prep, before = _checkpoint(results, tmp_path, _claims_a_cuda_generator)
    done = subprocess.run([sys.executable, "-m", "optbench", *ARGS, "--results-dir", str(results)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "cannot be resumed here" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert prep.checkpoint.read_bytes() == before
    assert not list(results.rglob("*.parquet"))


def test_a_matching_checkpoint_still_resumes_and_is_then_discarded(tmp_path):
    results = tmp_path / "results"
    prep, _ = _checkpoint(results, tmp_path)
    result = run_prepared(prep)
    assert result.record.resumes == 1 and result.record.total_steps == 40
    assert not prep.checkpoint.exists()  # finished: nothing left to resume


def test_the_key_records_the_device_type_and_count(tmp_path):
    key = _prep(tmp_path).checkpoint_key()
    assert (key["device_type"], key["device_count"]) == ("cpu", 1)


def test_the_random_state_saved_is_the_trial_devices_only(tmp_path, monkeypatch):
    loop = make_loop("linreg", "adamw", tmp=tmp_path, max_steps=5)
    assert "cuda_rng" not in loop.state.state_dict()  # a CPU trial saves no GPU's generator, GPUs visible or not
    asked = []

    def every_gpu():
        raise AssertionError("saved every visible GPU's generator")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", every_gpu)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device="cuda": asked.append(device) or torch.ones(16))
    loop.state.device = torch.device("cuda:1")  # as if the trial ran on the second GPU
    sd = loop.state.state_dict()
    assert asked == [torch.device("cuda:1")] and torch.equal(sd["cuda_rng"], torch.ones(16))


def test_a_resume_cut_short_by_the_deadline_keeps_the_checkpoint(tmp_path, monkeypatch):
    # the wall-clock deadline (or anything else) ending the trial while its checkpoint loads: the trial is recorded
    # as it ended, but the checkpoint it never resumed stays for the next run
    from optbench.engine.loop import TrialTimeout

    results = tmp_path / "results"
    prep, before = _checkpoint(results, tmp_path)

    def slow_load(*args, **kwargs):
        raise TrialTimeout()

    monkeypatch.setattr(checkpoints, "load", slow_load)
    result = run_prepared(dataclasses.replace(prep, timeout=60.0))
    assert result.record.outcome == "timeout"
    assert prep.checkpoint.read_bytes() == before


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
def test_a_resumed_trial_continues_bit_for_bit_on_its_device(tmp_path, device):
    # the GPU check of B2/B3 where a GPU is visible: a CUDA trial's state saved, loaded on the host
    # (weights_only, map_location cpu) into a fresh loop, continues exactly as the uninterrupted trial (--deterministic)
    prep = prepare(load_workload("linreg"), load_submission("adamw"),
                   TrialConfig(device=device, deterministic=True, max_steps=30, resume=True), results_dir=tmp_path)
    whole, second = resumed_twin(prep, steps=30, cut=15)
    for a, b in zip(whole.state.model.parameters(), second.state.model.parameters()):
        assert a.device.type == device and torch.equal(a, b)
    assert second.state.counters.step == 30 and second.state.counters.resumes == 1
