"""The scale benchmarks run at a tiny size on the CPU, so that they cannot rot before a GPU runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def script(name: str, *args: str) -> str:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_gpu_step_benchmark_runs_on_the_cpu() -> None:
    out = script("gpu_step.py", "--size", "tiny", "--device", "cpu", "--steps", "2", "--repeats", "1",
                 "--opts", "adamw,muon", "--cost-steps", "1", "--cost-rounds", "1")
    assert "| optbench trial loop |" in out and "harness/bare steps/s ratio:" in out
    assert "muon" in out.split("submission")[-1]


def test_loss_memory_benchmark_shows_the_chunks_save_memory() -> None:
    out = script("loss_memory.py", "--tokens", "4096", "--vocab", "20000", "--d-model", "8", "--device", "cpu")
    ratio = float(out.rsplit("ratio:", 1)[1])
    assert ratio < 0.5  # 4096 x 20000 fp32 logits (0.3 GB) and their gradient vs ~1,700-row chunks
