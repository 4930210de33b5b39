"""The harness's step against a bare PyTorch loop on the LM, and the optimizers' step cost, on a GPU (or the CPU).

    python benchmarks/gpu_step.py                      # the `small` LM on CUDA: bf16 autocast, SDPA attention
    python benchmarks/gpu_step.py --size tiny --device cpu --steps 50 --repeats 5     # the CPU figures
    python benchmarks/gpu_step.py --size tiny --device cpu --steps 2 --repeats 1 --opts adamw   # the test's run

Part 1, harness overhead: the same steps (draw a batch from the resident token file, forward under autocast,
chunked cross-entropy, backward, AdamW with its schedule, zero_grad) run by a bare loop that synchronises only at
its ends, and by an optbench trial loop (:class:`optbench.engine.runner.TrialLoop`: stretches of ``--sync-every`` steps,
losses read at each stretch's end). Runs alternate (bare, harness, bare, ...) in one process; the table gives the
medians of steps per second, their ratio (goal >= 0.98) and the peak device memory of each (CUDA only).

Part 2, optimizer step cost: SOAP, Shampoo and Muon against AdamW through benchmarks/step_cost.py's interleaved
rounds (its 4 x 128 GPT in float32), on the same device.

Data: a synthetic token stream (the benchmark measures speed, not learning), so nothing needs preparing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optbench.engine.prepared import TrialConfig, prepare
from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.loop import TrialLoop, derive_seed
from optbench_workloads.lm import LMTask


def task_for(size_name: str, device: torch.device) -> tuple[LMTask, object]:
    """The LM task of ``size_name`` on a synthetic corpus of 2M tokens, and the prepared trial's size."""
    prep = prepare(load_workload("wikitext"), load_submission("adamw"), TrialConfig(size=size_name),
                   results_dir=Path(tempfile.gettempdir()))
    vocab = int(prep.size.options["vocab"])
    tokens = np.random.default_rng(0).integers(0, vocab, 2_000_000, dtype=np.int64)
    return LMTask(prep.size, device, train=tokens, val=tokens[:200_000], vocab_size=vocab), prep.size


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare(size_name: str, device: torch.device, steps: int) -> tuple[float, float]:
    """Steps per second and peak memory (GiB) of a plain loop doing the trial's work."""
    task, size = task_for(size_name, device)
    model = task.init_model(torch.Generator().manual_seed(derive_seed(0, "init")))
    sub = load_submission("adamw").obj
    prep = prepare(load_workload("wikitext"), load_submission("adamw"), TrialConfig(size=size_name,
                   device=str(device)), results_dir=Path(tempfile.gettempdir()))
    opt = sub.create(model, prep.hparams, prep.info)
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu").manual_seed(0)
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        batch = task.next_batch(size.batch_size, gen)
        task.loss(model, batch).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    sync(device)
    return steps / (time.perf_counter() - start), peak(device)


def harness(size_name: str, device: torch.device, steps: int, sync_every: int | None) -> tuple[float, float]:
    """Steps per second (of timed seconds) and peak memory of an optbench trial loop doing the same steps."""
    task, _ = task_for(size_name, device)
    prep = prepare(load_workload("wikitext"), load_submission("adamw"),
                   TrialConfig(size=size_name, device=str(device), max_steps=steps, eval_every_steps=10**9,
                               sync_every=sync_every), results_dir=Path(tempfile.gettempdir()))
    loop = TrialLoop(prep=prep, task=task, observer=None, wall_start=time.perf_counter())
    reset_peak(device)
    loop.run()  # evaluations at step 0 and at the budget: untimed, so outside the measured seconds
    assert loop.state.counters.step == steps
    return steps / loop.state.clock.timed, peak(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="small")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sync-every", type=int, default=None)
    ap.add_argument("--opts", default="adamw,soap,shampoo,muon", help="submissions of part 2 ('' skips it)")
    ap.add_argument("--cost-steps", type=int, default=10)
    ap.add_argument("--cost-rounds", type=int, default=5)
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"# {name}, torch {torch.__version__}, LM size {args.size}, {args.steps} steps x {args.repeats} repeats")
    bare(args.size, device, max(1, args.steps // 10))  # warm caches and kernels outside the measurement
    harness(args.size, device, max(1, args.steps // 10), args.sync_every)
    b_rates, h_rates, b_peak, h_peak = [], [], 0.0, 0.0
    for _ in range(args.repeats):
        rate, mem = bare(args.size, device, args.steps)
        b_rates.append(rate)
        b_peak = max(b_peak, mem)
        rate, mem = harness(args.size, device, args.steps, args.sync_every)
        h_rates.append(rate)
        h_peak = max(h_peak, mem)
    b, h = statistics.median(b_rates), statistics.median(h_rates)
    print("| variant | steps/s (median) | peak memory GiB |")
    print("|---|---|---|")
    gib = (lambda x: f"{x:.2f}") if device.type == "cuda" else (lambda x: "n/a (CPU)")
    print(f"| bare PyTorch loop | {b:.2f} | {gib(b_peak)} |")
    print(f"| optbench trial loop | {h:.2f} | {gib(h_peak)} |")
    print(f"harness/bare steps/s ratio: {h / b:.3f}")
    opts = [o for o in args.opts.split(",") if o]
    if opts:
        sys.stdout.flush()
        cost = [sys.executable, str(Path(__file__).resolve().parent / "step_cost.py"), "--device", str(device),
                "--steps", str(args.cost_steps), "--rounds", str(args.cost_rounds), "--warmup", "2"]
        subprocess.run([*cost, *(x for o in opts for x in ("--opt", o))], check=True)


if __name__ == "__main__":
    main()
