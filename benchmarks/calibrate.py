"""Calibrate a workload's targets: which metric values do the baselines reach, and when, at a given size?

    python benchmarks/calibrate.py --workload linreg --size tiny --opt adamw --opt sgd --opt nadamw --seeds 3
    python benchmarks/calibrate.py --workload wikitext --size tiny --data-dir DIR --targets 5.5,5.0,4.9,4.8

For each submission (defaults, plus any ``-o KEY=VALUE``) and seed, runs the whole budget with the target disabled
(unreachable in the metric's direction) and prints the curve's milestones: the median step at which each candidate
target is first met. A good target is met by the tuned baselines at roughly half the budget and missed by a clearly worse
learning rate, so it sits on the steep, learning-rate-sensitive part of the curve.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import tempfile
from pathlib import Path

from optbench.api import Goal, reached
from optbench.plugins.hparams import parse_assignments
from optbench.plugins.registry import Loaded, load_submission, load_workload
from optbench.engine.runner import TrialConfig, run_trial


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", default="linreg")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--opt", action="append", default=None)
    ap.add_argument("-o", "--opt-arg", action="append", default=[])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--targets", default="0.2,0.1,0.05,0.02,0.01")
    args = ap.parse_args()
    wl = load_workload(args.workload)
    size = wl.obj.sizes[args.size]
    goal = wl.obj.metric.goal
    # Same workload with an unreachable target, so every run spends the whole budget and the curve is complete.
    never = float("-inf") if goal is Goal.MIN else float("inf")
    probe = copy.copy(wl.obj)
    probe.sizes = {**wl.obj.sizes, args.size: dataclasses.replace(size, target=never)}
    loaded = Loaded(name=args.workload, obj=probe, origin=wl.origin)
    targets = [float(t) for t in args.targets.split(",")]
    hp = parse_assignments(args.opt_arg)
    print(f"{args.workload}/{args.size} ({wl.obj.metric.name}, {goal.value}): budget {size.budget}, eval every {size.eval_every}, batch {size.batch_size}")
    op = "<=" if goal is Goal.MIN else ">="
    print("submission      " + "".join(f"  {op} {t:<8g}" for t in targets) + "  final")
    for name in args.opt or ["adamw", "sgd", "nadamw"]:
        firsts: dict[float, list[float]] = {t: [] for t in targets}
        finals = []
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_trial(loaded, load_submission(name), TrialConfig(size=args.size, seed=seed, hparams=hp,
                                                                    data_dir=args.data_dir),
                              results_dir=Path(tmp))
            finals.append(r.rows[-1].metric_value)
            for t in targets:
                hit = next((row.step for row in r.rows if reached(row.metric_value, t, goal)), float("inf"))
                firsts[t].append(hit)
        cells = "".join(f"  {statistics.median(firsts[t]):<11g}" for t in targets)  # inf: not reached
        print(f"{name:<16}{cells}  {statistics.median(finals):.4g}")


if __name__ == "__main__":
    main()
