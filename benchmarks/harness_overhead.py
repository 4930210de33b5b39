"""How much does the harness add to a training step? The runner's timed seconds per step vs a bare PyTorch loop.

    python benchmarks/harness_overhead.py [--steps 1000] [--repeats 5] [--size tiny]

Both do the same work on linreg (draw a batch, forward, backward, AdamW step with its schedule, zero_grad); the
runner adds the stretch clock (on the CPU a stretch is one step: the loss is read after every step, where reading
costs nothing), the micro-batch plan, counters, the divergence check and the progress callbacks. Runs alternate in one process (bare, harness, bare, ...) and the medians are compared, since
step times on shared machines drift by 10-20%. Evaluation is excluded on both sides (evaluation is untimed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from optbench.api import TrialInfo
from optbench.plugins.registry import load_submission, load_workload
from optbench.engine.runner import TrialConfig, run_trial


def bare(steps: int, size_name: str) -> float:
    """Seconds per step of a plain loop doing the same work as a trial."""
    wl = load_workload("linreg").obj
    size = wl.sizes[size_name]
    task = wl.setup(size, device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    model = task.init_model(gen)
    sub = load_submission("adamw").obj
    info = TrialInfo(workload="linreg", size=size_name, step_hint=size.step_hint, max_steps=steps,
                     batch_size=size.batch_size, device="cpu", seed=0)
    opt = sub.create(model, dict(sub.defaults), info)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = task.next_batch(size.batch_size, gen)
        loss = task.loss(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss.detach())
    return (time.perf_counter() - t0) / steps


def harness(steps: int, size_name: str) -> float:
    """Timed seconds per step of a real trial (target unreachable within ``steps``: lr tiny, eval only at the end)."""
    with tempfile.TemporaryDirectory() as tmp:
        r = run_trial(load_workload("linreg"), load_submission("adamw"),
                      TrialConfig(size=size_name, max_steps=steps, eval_every_steps=steps, hparams={"lr": 1e-6}),
                      results_dir=Path(tmp))
    return r.record.total_timed_seconds / r.record.total_steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", default="tiny")
    args = ap.parse_args()
    bare(50, args.size), harness(50, args.size)  # warm caches outside the measurement
    b, h = [], []
    for _ in range(args.repeats):
        b.append(bare(args.steps, args.size))
        h.append(harness(args.steps, args.size))
    mb, mh = statistics.median(b), statistics.median(h)
    print(f"linreg/{args.size}, {args.steps} steps x {args.repeats} alternating repeats, torch threads "
          f"{torch.get_num_threads()}")
    print(f"bare loop      {mb * 1e6:8.1f} us/step")
    print(f"optbench trial {mh * 1e6:8.1f} us/step (timed seconds)")
    print(f"ratio          {mh / mb:8.3f}")


if __name__ == "__main__":
    main()
