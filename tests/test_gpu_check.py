"""benchmarks/gpu_check.py's --cpu dry run: the prepared GPU check's logic runs in the default suite, so it cannot
rot between GPU runs. One full dry run (about a minute on 2 shared cores) is checked for its JSON and Markdown
summaries; a planted failing section must make the exit code non-zero and leave the other sections running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
SECTIONS = ["sync_audit", "harness", "optimizer_cost", "mfu", "loss_memory", "memory_plan", "compile", "resume", "nccl"]


def dry_run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(SCRIPT), "--cpu", str(out), *extra], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    return dry_run(out), out


def test_the_dry_run_passes_every_section_it_can_run(full: tuple[Any, Path]) -> None:
    proc, out = full
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert [s["section"] for s in report["sections"]] == SECTIONS
    status = {s["section"]: s["status"] for s in report["sections"]}
    cuda_only = {"loss_memory": "skipped", "memory_plan": "skipped"}  # CUDA memory figures
    assert status == {**{name: "pass" for name in SECTIONS}, **cuda_only}, report["sections"]
    assert report["failed"] == [] and report["environment"]["mode"] == "cpu dry run"
    for s in report["sections"]:
        assert set(s) == {"section", "status", "seconds", "figures", "error"}
    by = {s["section"]: s["figures"] for s in report["sections"]}
    assert all(n == 0 for n in by["sync_audit"]["syncs"].values()) and len(by["sync_audit"]["syncs"]) == 5
    assert by["sync_audit"]["control"].startswith("3 seen")  # not blind: a planted .item() per step is seen
    assert by["harness"]["ratio"] > 0
    assert set(by["optimizer_cost"]["paper_ms"]) == {"adamw", "soap", "shampoo", "muon"}
    assert by["mfu"]["paper"]["N"] > 100_000_000 and by["mfu"]["paper"]["T"] == 1024  # GPT-2 small's shape
    assert by["compile"]["compiled"] and by["compile"]["compile_seconds"] > 0
    assert by["resume"]["plain"]["resumes"] == 1 and by["resume"]["plain"]["rel_diff"] == 0
    assert by["nccl"]["group"]["backend"] == "gloo" and by["nccl"]["trial"]["outcome"] in ("reached", "missed")
    lines = [json.loads(line) for line in (out / "gpu_check.jsonl").read_text().splitlines()]
    assert [x["section"] for x in lines] == SECTIONS
    md = (out / "gpu_check.md").read_text()
    assert md.startswith("# optbench GPU check (cpu dry run)")
    for name in SECTIONS:
        assert f"| {name} | " in md
    assert "every promise checked held" in md


def test_the_mfu_formula_is_palms(full: tuple[Any, Path]) -> None:
    """6N + 12·L·H·Q·T per token (N: the blocks' matrices and the tied head), the records' own count, over the
    H200's dense bf16 peak that optbench.engine.flops uses too."""
    from optbench.engine.flops import PEAK_TFLOPS

    _, out = full
    mfu = {s["section"]: s["figures"] for s in json.loads((out / "gpu_check.json").read_text())["sections"]}["mfu"]
    paper = mfu["paper"]
    assert paper["N"] == 12 * 12 * 768**2 + 50257 * 768  # GPT-2 small less embeddings' lookups, norms and biases
    assert paper["flops_per_token"] == 6 * paper["N"] + 12 * 12 * 12 * 64 * 1024
    assert mfu["peak_flops"] == PEAK_TFLOPS["H200"] * 1e12


def test_a_failing_section_fails_the_run_and_the_rest_still_run(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, "--plant-failure", "--sections", "mfu")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(s["section"], s["status"]) for s in report["sections"]] == [("planted", "fail"), ("mfu", "pass")]
    assert report["failed"] == ["planted"] and "planted failure" in report["sections"][0]["error"]
    assert "failed: planted" in (tmp_path / "gpu_check.md").read_text()


def test_a_spent_budget_skips_the_remaining_sections(tmp_path: Path) -> None:
    proc = dry_run(tmp_path, "--budget", "0", "--sections", "mfu,nccl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [s["status"] for s in report["sections"]] == ["skipped", "skipped"]
    assert "budget" in report["sections"][0]["error"]
