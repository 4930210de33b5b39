"""Calibrate the linreg targets: which excess risk do the baselines reach, and when, at a given size?

    python benchmarks/calibrate_linreg.py --size tiny --opt adamw --opt sgd --opt nadamw --seeds 3

For each submission (defaults, plus any ``-o KEY=VALUE``) and seed, runs the whole budget with the target disabled
(target = 0, unreachable) and prints the excess risk curve's milestones: the step at which each candidate target is
first met. A good target is met by the tuned baselines at roughly half the budget and missed by a clearly worse
learning rate, so it sits on the steep, learning-rate-sensitive part of the curve.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from optbench.hparams import parse_assignments
from optbench.registry import Loaded, load_submission, load_workload
from optbench.runner import TrialConfig, run_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--opt", action="append", default=None)
    ap.add_argument("-o", "--opt-arg", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", default="0.2,0.1,0.05,0.02,0.01")
    args = ap.parse_args()
    wl = load_workload("linreg")
    size = wl.obj.sizes[args.size]
    # Same workload with an unreachable target, so every run spends the whole budget and the curve is complete.
    sizes = {**wl.obj.sizes, args.size: dataclasses.replace(size, target=0.0)}
    probe = type(wl.obj)()
    probe.sizes = sizes
    loaded = Loaded(name="linreg", obj=probe, origin=wl.origin)
    targets = [float(t) for t in args.targets.split(",")]
    hp = parse_assignments(args.opt_arg)
    print(f"linreg/{args.size}: budget {size.budget}, eval every {size.eval_every}, batch {size.batch_size}")
    print("submission      " + "".join(f"  <= {t:<8g}" for t in targets) + "  final")
    for name in args.opt or ["adamw", "sgd", "nadamw"]:
        firsts: dict[float, list[float]] = {t: [] for t in targets}
        finals = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_trial(loaded, load_submission(name), TrialConfig(size=args.size, seed=seed, hparams=hp),
                              results_dir=Path(tmp))
            finals.append(r.rows[-1].metric_value)
            for t in targets:
                hit = next((row.step for row in r.rows if row.metric_value <= t), float("inf"))
                firsts[t].append(hit)
        cells = "".join(f"  {statistics.median(firsts[t]):<11g}" for t in targets)
        print(f"{name:<16}{cells}  {statistics.median(finals):.4g}")


if __name__ == "__main__":
    main()
