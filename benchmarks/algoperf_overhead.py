"""What does running an AlgoPerf submission file through the adapter cost per step? Timed seconds per step of
tests/plugins/algoperf_subs/nadamw/submission.py (``-s algoperf:...``) against the built-in ``nadamw``, same update,
same schedule, same hyperparameters, same workload.

    python benchmarks/algoperf_overhead.py [--steps 300] [--lm-steps 100] [--repeats 5] [--threads 1]

Both run as real trial loops on the CPU (the LM's tiny size on generated tokens, vocabulary 512); the learning rate
is tiny so that no trial reaches its target, and the evaluation falls only at the end (untimed on both sides). The
adapter adds: the AlgoPerf batch dict, data_selection, the per-step random key, train_state and eval_results, the
view's model_fn/loss_fn split, LambdaLR's scheduler step. Variants alternate (built-in, AlgoPerf, built-in, ...) and
the medians of the repeats are compared, since step times on a shared machine drift.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from optbench.engine.loop import TrialLoop
from optbench.engine.prepared import TrialConfig, prepare
from optbench.plugins.registry import load_submission, load_workload

SUB = Path(__file__).resolve().parents[1] / "tests" / "plugins" / "algoperf_subs" / "nadamw" / "submission.py"
VARIANTS = {"nadamw": {"lr": 1e-6}, f"algoperf:{SUB}": {"learning_rate": 1e-6}}
VOCAB = 512


def task_of(workload: str, prep):
    if workload == "lm":
        from optbench_workloads import lm

        tokens = np.random.default_rng(0).integers(0, VOCAB, 60_000)
        return lm.LMTask(prep.size, torch.device("cpu"), train=tokens[:50_000], val=tokens[50_000:],
                         vocab_size=VOCAB)
    return prep.workload.obj.setup(prep.size, device=torch.device("cpu"), data_dir=None)


def per_step(workload: str, spec: str, steps: int) -> tuple[float, float]:
    """(timed seconds, CPU seconds of this process) per step of one trial loop of ``steps`` steps (the CPU
    seconds include the two evaluations; on a machine other processes share, they show the work done, where the
    wall clock also counts the time the process waited for a core)."""
    name = "wikitext" if workload == "lm" else workload
    with tempfile.TemporaryDirectory() as tmp:
        prep = prepare(load_workload(name), load_submission(spec),
                       TrialConfig(device="cpu", hparams=VARIANTS[spec], max_steps=steps, eval_every_steps=steps),
                       results_dir=Path(tmp))
        if workload == "lm":
            prep = dataclasses.replace(prep, size=dataclasses.replace(
                prep.size, options={**prep.size.options, "val_sequences": 4}))
        loop = TrialLoop(prep=prep, task=task_of(workload, prep), observer=None, wall_start=time.perf_counter())
        loop.begin()
        cpu = time.process_time()
        loop.run()
        cpu = time.process_time() - cpu
        return loop.state.clock.timed / loop.state.counters.step, cpu / loop.state.counters.step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=300, help="steps per linreg trial")
    ap.add_argument("--lm-steps", type=int, default=100, help="steps per LM trial")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP barriers on a busy machine)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--workload", action="append", choices=("linreg", "lm"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    for workload in args.workload or ["linreg", "lm"]:
        for spec in VARIANTS:
            per_step(workload, spec, 5)  # warm caches outside the measurement
        steps = args.lm_steps if workload == "lm" else args.steps
        times: dict[str, list[tuple[float, float]]] = {spec: [] for spec in VARIANTS}
        for _ in range(args.repeats):
            for spec in VARIANTS:
                times[spec].append(per_step(workload, spec, steps))
        print(f"{workload}: {steps} steps x {args.repeats} alternating repeats, torch threads "
              f"{torch.get_num_threads()}; medians, us/step")
        print(f"  {'':26s}{'timed':>10s}{'CPU':>10s}")
        medians = {s: [statistics.median(t[i] for t in times[s]) for i in (0, 1)] for s in VARIANTS}
        (built_in, ours) = medians.values()
        print(f"  {'built-in nadamw':26s}{built_in[0] * 1e6:10.1f}{built_in[1] * 1e6:10.1f}")
        print(f"  {'AlgoPerf file (adapter)':26s}{ours[0] * 1e6:10.1f}{ours[1] * 1e6:10.1f}")
        print(f"  {'ratio':26s}{ours[0] / built_in[0]:10.3f}{ours[1] / built_in[1]:10.3f}")


if __name__ == "__main__":
    main()
