"""A stand-in for AlgoPerf's own scorer, for timing only: its pipeline, written here from its description.

AlgoPerf's ``scoring/score_submissions.py`` cannot be installed here (it is not a package on the index), so
``benchmarks/score_scale.py`` times this script instead. It does the work the real scorer does, in the same way
(docs/reference: algoperf.md, "Scoring"): walk ``<submission>/.../study_<k>/<workload>_<framework>/trial_<n>/``,
read every ``eval_measurements.csv`` whole with pandas, keep each trial's columns as arrays in one DataFrame row,
then per workload and study take the trial whose target-hitting evaluation comes first, the median over studies,
ratios to the best submission, rho(tau) on 100 points of [1, 4] and the trapezoid area. It leaves out what the real
scorer adds on top (importing AlgoPerf's workload registry, absl flags, tabulated output), so it is at least as fast
as the real one: a speed-up measured against it is a lower bound.

The real scorer takes each workload's metric and target from AlgoPerf's workload class for the log's framework
(``scoring_utils.get_workload_metrics_and_targets`` imports ``<workload>/<workload>_<framework>/workload.py``
through ``algoperf/workloads/workloads.py``, whose ``algoperf.spec`` imports both ``jax`` and ``torch``), so it
cannot score without importing the frameworks. ``--import-torch`` adds ``import torch`` only (JAX is not installed
here), still less than the real scorer imports; this stand-in takes the targets from optbench's JSON copy.

Usage: ``python benchmarks/algoperf_style_score.py EXPERIMENT_DIR [--import-torch]`` prints each submission's score.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

TARGETS = Path(__file__).resolve().parents[1] / "optbench" / "algoperf_targets.json"
R_MAX, POINTS = 4.0, 100


def experiment_frame(root: Path) -> pd.DataFrame:
    """One row per trial: its path parts and every log column as an array (AlgoPerf's get_experiment_df shape)."""
    rows = []
    for dirpath, _, names in os.walk(root):
        if "eval_measurements.csv" not in names:
            continue
        parts = Path(dirpath).relative_to(root).parts
        study = next((p for p in parts if p.startswith("study_")), "study_0")
        log = pd.read_csv(Path(dirpath) / "eval_measurements.csv")
        row = {"submission": parts[0], "study": study, "workload": re.sub(r"_(jax|pytorch)$", "", parts[-2]),
               "trial": parts[-1]}
        row.update({c: log[c].to_numpy() for c in log.columns})
        rows.append(row)
    return pd.DataFrame(rows)


def workload_times(df: pd.DataFrame, targets: dict) -> pd.DataFrame:
    """Per (submission, workload): median over studies of the time at the first hit of the best trial (inf = miss)."""
    out = {}
    for (sub, workload), group in df.groupby(["submission", "workload"]):
        spec = targets[workload]
        metric = f"validation/{spec['metric']}"
        per_study = []
        for _, study in group.groupby("study"):
            hits = study[metric].apply(lambda x: x <= spec["target"] if spec["goal"] == "min"
                                       else x >= spec["target"])
            reached = hits.apply(np.any)
            if not reached.any():
                per_study.append(np.inf)
                continue
            index = hits[reached].apply(np.argmax)
            best = index.idxmin()  # AlgoPerf: the earliest eval index wins
            per_study.append(float(study.loc[best, "accumulated_submission_time"][index[best]]))
        out[(sub, workload)] = float(np.median(per_study))
    return pd.Series(out).unstack(0)


def scores(times: pd.DataFrame) -> pd.Series:
    """AlgoPerf's leaderboard score: 100-point trapezoid of the performance profile on [1, 4], over 3."""
    ratios = times.div(times.min(axis=1), axis=0)
    ratios = ratios.where(ratios <= R_MAX, np.inf)
    taus = np.linspace(1.0, R_MAX, POINTS)
    rho = np.stack([(ratios <= tau).mean(axis=0).to_numpy() for tau in taus], axis=1)
    return pd.Series(np.trapezoid(rho, taus, axis=1) / (R_MAX - 1.0), index=times.columns)


def main() -> None:
    if "--import-torch" in sys.argv[2:]:
        import torch  # noqa: F401  what AlgoPerf's workload registry imports for _pytorch logs
    targets = json.loads(TARGETS.read_text())["rules"]["v0.6"]
    frame = experiment_frame(Path(sys.argv[1]))
    print(scores(workload_times(frame, targets)).sort_values(ascending=False).to_string())


if __name__ == "__main__":
    main()
