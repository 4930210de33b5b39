"""Tuning effort: how many trials a study needed before its first reach (the question behind AlgoPerf's two rulesets,
how much search a method needs, not only how fast its best trial is).

Trials of a study are taken in the order they were planned (the trial index of ``optbench tune``, else creation
time); a study that never reached counts as needing more than it ran (+inf), and the median over studies carries its
order-statistic interval (:mod:`optbench.scoring.order`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from optbench.errors import UsageError
from optbench.scoring.order import check_level, median_order_interval


def _trial_order(study: pd.DataFrame) -> pd.DataFrame:
    """A study's trials in the order they were planned: by trial index when every trial id is a number (``tune``'s
    ``0, 1, ...``), else by creation time when recorded, else as given."""
    ids = pd.to_numeric(study["trial"], errors="coerce")
    if ids.notna().all():
        return study.assign(_order=ids).sort_values("_order", kind="stable")
    if "created_at" in study.columns and study["created_at"].notna().all():
        return study.sort_values("created_at", kind="stable")
    return study


def trials_to_first_reach(trials: pd.DataFrame) -> pd.Series:
    """Per (workload, submission, study): how many trials the study ran up to and including its first that reached
    the target (inf when none did), the trials in the order they were planned (:func:`_trial_order`)."""
    missing = [c for c in ("workload", "submission", "study", "trial", "outcome") if c not in trials.columns]
    if missing:
        raise UsageError(f"trials lack column(s): {', '.join(missing)}")
    out = {}
    for key, study in trials.groupby(["workload", "submission", "study"], sort=True):
        reached = (_trial_order(study)["outcome"] == "reached").to_numpy()
        out[key] = float(np.argmax(reached) + 1) if reached.any() else math.inf
    index = pd.MultiIndex.from_tuples(list(out), names=["workload", "submission", "study"])
    return pd.Series(list(out.values()), index=index, dtype=float, name="trials_to_reach")


def tuning_effort(trials: pd.DataFrame, *, level: float = 0.9) -> pd.DataFrame:
    """Tuning effort per workload and submission: the median over studies of the trials a study needed before its
    first reach (:func:`trials_to_first_reach`; inf = a study that never reached counts as needing more than it
    had), with its order-statistic interval over studies (:func:`median_order_interval`). The question behind
    AlgoPerf's two rulesets: how much search a method needs, not only how fast its best trial is.

    Returns:
      DataFrame indexed by (workload, submission) with ``estimate, low, high, level, requested, n`` (studies),
      ``reached`` (studies that reached) and ``trials`` (the most trials any study ran).
    """
    check_level(level)
    per_study = trials_to_first_reach(trials)
    sizes = trials.groupby(["workload", "submission", "study"], sort=True).size()
    rows = {}
    for (w, s), values in per_study.groupby(level=["workload", "submission"], sort=True):
        ci = median_order_interval(values.to_numpy(), level=level)
        rows[(w, s)] = {"estimate": ci.estimate, "low": ci.low, "high": ci.high, "level": ci.level,
                        "requested": level, "n": ci.n_units, "reached": int(np.isfinite(values).sum()),
                        "trials": int(sizes.loc[(w, s)].max())}
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index = pd.MultiIndex.from_tuples(out.index, names=["workload", "submission"])
    return out
