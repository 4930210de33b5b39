"""A synthetic AlgoPerf experiment tree: the 360-trial fixture of issue 11 (8 workloads x 3 submissions x 3 studies
x 5 trials, about 100 evaluations each), in the layout AlgoPerf's ``submission_runner.py`` writes.

Used by ``benchmarks/score_scale.py`` (and runnable alone: ``python benchmarks/algoperf_fixture.py OUT``). The
curves are smooth and seeded: some trials reach their workload's v0.6 target, some miss, so scoring has work to do.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import random
from pathlib import Path

WORKLOADS = {  # name -> (metric, goal, v0.6 target), as in optbench/algoperf_targets.json
    "criteo1tb": ("loss", "min", 0.123735),
    "fastmri": ("ssim", "max", 0.723653),
    "imagenet_resnet": ("accuracy", "max", 0.77431),
    "imagenet_vit": ("accuracy", "max", 0.77309),
    "librispeech_conformer": ("wer", "min", 0.085884),
    "librispeech_deepspeech": ("wer", "min", 0.119936),
    "ogbg": ("mean_average_precision", "max", 0.28098),
    "wmt": ("bleu", "max", 30.8491),
}
COLUMNS = ["accumulated_eval_time", "accumulated_logging_time", "accumulated_submission_time", "global_step",
           "preemption_count", "score", "total_duration", "train/loss", "validation/{m}", "validation/num_examples"]


def _curve(rng: random.Random, goal: str, target: float, evals: int) -> list[float]:
    """A metric that approaches a level near the target: about 60% of trials end beyond it."""
    end = target * (1 + rng.uniform(-0.08, 0.05)) if goal == "min" else target * (1 + rng.uniform(-0.05, 0.08))
    start = end * (3.0 if goal == "min" else 0.2)
    rate = rng.uniform(2.0, 6.0)
    return [end + (start - end) * math.exp(-rate * i / evals) for i in range(evals)]


def make_tree(root: Path, *, submissions: int = 3, studies: int = 3, trials: int = 5, evals: int = 100,
              seed: int = 0) -> int:
    """Write the tree under ``root``; return the number of trials written."""
    rng = random.Random(seed)
    n = 0
    for s in range(submissions):
        for k in range(studies):
            for workload, (metric, goal, target) in WORKLOADS.items():
                for t in range(1, trials + 1):
                    folder = Path(root) / f"sub{s}" / "external_tuning" / f"study_{k}" / f"{workload}_pytorch" / (
                        f"trial_{t}")
                    folder.mkdir(parents=True, exist_ok=True)
                    speed = rng.uniform(0.8, 1.3) * (1 + 0.1 * s)
                    with open(folder / "eval_measurements.csv", "w", newline="") as fh:
                        w = csv.writer(fh)
                        w.writerow([c.format(m=metric) for c in COLUMNS])
                        for i, value in enumerate(_curve(rng, goal, target, evals)):
                            seconds = 30.0 * (i + 1) * speed
                            w.writerow([0.5 * i, 0.01 * i, seconds, 100 * (i + 1), 0, seconds, seconds + 7.0,
                                        1.0 / (i + 1), value, 3000])
                    (folder / "hparams.json").write_text(json.dumps({"learning_rate": 10 ** rng.uniform(-4, -2)}))
                    (folder / "meta_data_0.json").write_text(json.dumps({"rng_seed": rng.randrange(2**31)}))
                    n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    print(make_tree(args.out), "trials under", args.out)


if __name__ == "__main__":
    main()
