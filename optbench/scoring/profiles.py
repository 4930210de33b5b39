"""Scoring: time-to-target, AlgoPerf's aggregation rule, performance profiles and the benchmark score.

Pure functions on pandas DataFrames (no I/O). The pipeline, one step per function::

    trials (one row per trial)
      -> study_values   best trial per (workload, submission, study), by the chosen measure itself
      -> aggregate      median over studies per (workload, submission); a study that never reached counts as +inf
      -> ratios         r = t / min over submissions (or / t of a reference submission); r > r_max -> inf
      -> scores         area under rho_s(tau) = #{w: r_ws <= tau} / n_workloads over [1, r_max], over (r_max - 1)

Deliberate departures from AlgoPerf's ``scoring/`` code (see docs/reference algoperf.md, "Bugs to not repeat"):

* the best trial of a study is the one with the smallest *measure* (seconds, steps, ...), not the earliest eval index;
* the metric direction comes from the ``metric_goal`` column each result carries, never from the metric's name;
* the number of workloads, studies and trials is read from the table, not hard-coded;
* the integral is exact for the step-shaped profile by default (``algoperf=True`` reproduces the 100-point
  trapezoid); and a ``reference`` submission makes a score independent of which other submissions are scored.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  Dolan & More, "Benchmarking optimization software with performance profiles", Math. Programming 91 (2002).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from optbench.errors import UsageError
from optbench.store.records import GOALS, OUTCOMES, meets

# measure name -> column of the trials table / column of the evals table
TRIAL_MEASURES = {
    "time": "time_to_target",
    "steps": "steps_to_target",
    "examples": "examples_to_target",
    "tokens": "tokens_to_target",
    # model FLOPs x examples + optimizer FLOPs x steps (optbench.engine.flops): hardware-independent, like tokens,
    # and the one measure that charges a dearer optimizer step (SOAP, Shampoo, Muon) for its cost
    "flops": "flops_to_target",
}
EVAL_MEASURES = {"time": "timed_seconds", "steps": "step", "examples": "examples", "tokens": "tokens"}
TRIAL_COLUMNS = ("workload", "submission", "study", "trial", "seed", "outcome", "metric_goal", "target")
ALGOPERF_TAU_POINTS = 100  # AlgoPerf's num_points in score_submissions.py

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy >= 2 renamed trapz


def _measure(by: str, table: dict[str, str]) -> str:
    if by not in table:
        raise UsageError(f"unknown measure {by!r}; choose one of: {', '.join(table)}")
    return table[by]


def _check_goal(goal: str) -> str:
    if goal not in GOALS:
        raise UsageError(f"metric goal must be 'min' or 'max', got {goal!r}")
    return goal


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UsageError(f"{what} lack column(s): {', '.join(missing)}")


# --------------------------------------------------------------------------------------------- time-to-target


def time_to_target_from_evals(evals: pd.DataFrame, *, target: float, goal: str, by: str = "time") -> float:
    """The measure at the first evaluation of one run that meets the target (AlgoPerf's time-to-target).

    Evaluations are taken in step order. A NaN metric never meets the target.

    Args:
      evals: the eval rows of ONE run (columns ``step``, ``metric_value`` and the measure's column).
      target: the validation target.
      goal: ``"min"`` (reached when ``metric <= target``) or ``"max"`` (``metric >= target``), as the workload
        declared it; never inferred from a metric name.
      by: ``"time"`` (``timed_seconds``), ``"steps"``, ``"examples"`` or ``"tokens"``.
    Returns:
      The measure at the first hit, or NaN when no evaluation meets the target.
    Raises:
      UsageError: unknown ``by``/``goal``, missing columns, rows of several runs, or a hit without the measure.
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.1: time-to-result on the validation set.
    """
    col = _measure(by, EVAL_MEASURES)
    _check_goal(goal)
    _require(evals, ("step", "metric_value", col), "evals")
    if "run_id" in evals.columns and evals["run_id"].nunique() > 1:
        raise UsageError("time_to_target_from_evals expects the evals of one run; group by run_id first")
    ordered = evals.sort_values("step", kind="stable")
    values = ordered["metric_value"].to_numpy(dtype=float)
    hits = meets(values, target, goal)  # NaN compares False: never a hit
    if not hits.any():
        return float("nan")
    out = float(ordered[col].to_numpy(dtype=float)[int(np.argmax(hits))])
    if np.isnan(out):
        raise UsageError(f"the run reached its target but recorded no {col!r}; choose another measure")
    return out


def trial_times_from_evals(evals: pd.DataFrame, *, by: str = "time") -> pd.DataFrame:
    """Recompute every run's time-to-target from its eval rows (target and goal read from each row).

    Args:
      evals: eval rows of any number of runs (``run_id``, ``workload``, ``submission``, ``study``, ``trial``,
        ``step``, ``metric_value``, ``metric_goal``, ``target`` and the measure's column).
      by: the measure, as in :func:`time_to_target_from_evals`.
    Returns:
      One row per run: ``run_id, workload, submission, study, trial`` and the trials-table column for the measure
      (e.g. ``time_to_target``), NaN where the run never reached its target.
    Raises:
      UsageError: missing columns, or a run whose rows disagree on target or goal.
    """
    out_col = TRIAL_MEASURES[by] if by in TRIAL_MEASURES else _measure(by, EVAL_MEASURES)
    keys = ["run_id", "workload", "submission", "study", "trial"]
    _require(evals, keys + ["metric_goal", "target"], "evals")
    rows = []
    for run_id, run in evals.groupby("run_id", sort=True):
        if run["metric_goal"].nunique() != 1 or run["target"].nunique() != 1:
            raise UsageError(f"run {run_id!r}: eval rows disagree on metric_goal or target")
        value = time_to_target_from_evals(
            run, target=float(run["target"].iloc[0]), goal=str(run["metric_goal"].iloc[0]), by=by
        )
        rows.append({k: run[k].iloc[0] for k in keys} | {out_col: value})
    return pd.DataFrame(rows, columns=keys + [out_col])


# ------------------------------------------------------------------------------------------------ aggregation


def trial_values(trials: pd.DataFrame, *, by: str = "time") -> pd.DataFrame:
    """Validate the trials table and add a ``value`` column: the measure where the trial reached, else +inf.

    Args:
      trials: the trials table (see :func:`aggregate`).
      by: ``"time"``, ``"steps"``, ``"examples"`` or ``"tokens"``.
    Returns:
      A copy of ``trials`` with ``value`` (float; +inf for every outcome but reached).
    Raises:
      UsageError: missing columns, unknown outcomes or goals, a workload mixing targets, a reached trial without
        the measure, negative measures, or an empty table.
    """
    col = _measure(by, TRIAL_MEASURES)
    _require(trials, TRIAL_COLUMNS + (col,), "trials")
    if trials.empty:
        raise UsageError("no trials to score")
    unknown = sorted(set(trials["outcome"]) - set(OUTCOMES))
    if unknown:
        raise UsageError(f"unknown outcome(s) {', '.join(map(str, unknown))}; expected one of {', '.join(OUTCOMES)}")
    for goal in trials["metric_goal"].unique():
        _check_goal(goal)
    # Times of different targets are not comparable: refuse to mix them (a provenance check AlgoPerf lacks).
    per_workload = trials.groupby("workload")[["metric_goal", "target"]].nunique()
    mixed = per_workload.index[(per_workload > 1).any(axis=1)].tolist()
    if mixed:
        raise UsageError(f"workload(s) {', '.join(mixed)} mix trials with different targets or metric goals")
    measure = trials[col].to_numpy(dtype=float)
    reached = (trials["outcome"] == "reached").to_numpy()
    if np.isnan(measure[reached]).any():
        bad = sorted(trials.loc[reached & np.isnan(measure), "workload"].unique())
        raise UsageError(f"--by {by}: reached trials of {', '.join(bad)} recorded no {col}; choose another measure")
    if (measure[reached] < 0).any():
        raise UsageError(f"negative {col} in the trials table")
    return trials.assign(value=np.where(reached, measure, np.inf))


def study_values(trials: pd.DataFrame, *, by: str = "time") -> pd.Series:
    """Best trial of each study, chosen by the measure itself (a trial that did not reach counts as +inf).

    AlgoPerf picks the trial whose target-hitting eval has the smallest eval *index*, which is wrong when trials
    evaluate at different rates; here the smallest time (or steps, examples, tokens) wins.

    Args:
      trials: the trials table (see :func:`aggregate`).
      by: ``"time"``, ``"steps"``, ``"examples"`` or ``"tokens"``.
    Returns:
      A float Series indexed by (workload, submission, study); +inf for a study none of whose trials reached.
    """
    table = trial_values(trials, by=by)
    return table.groupby(["workload", "submission", "study"], sort=True)["value"].min()


def aggregate(trials: pd.DataFrame, *, by: str = "time") -> pd.DataFrame:
    """AlgoPerf's per-workload result of a submission: best trial per study, then the median over studies.

    A study none of whose trials reached the target contributes +inf, which takes part in the median (so the
    median of [10, inf, inf] is inf and of [10, 12, inf] is 12).

    Args:
      trials: one row per trial with columns ``workload, submission, study, trial, seed, outcome, metric_goal,
        target`` and the measure's column (``time_to_target`` etc.; used only where ``outcome == "reached"``).
      by: ``"time"`` (seconds of timed work), ``"steps"``, ``"examples"`` or ``"tokens"``.
    Returns:
      A DataFrame indexed by (workload, submission) with ``value`` (the median; inf = missed), ``n_studies``,
      ``n_studies_reached``, ``n_trials`` and one count column per outcome (``reached``, ``missed``, ...).
    Raises:
      UsageError: missing columns, unknown outcomes or goals, mixed targets on a workload, no trials.
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.3 (external tuning: best of the trials of a study, median
      over studies).
    """
    table = trial_values(trials, by=by)
    best = table.groupby(["workload", "submission", "study"], sort=True)["value"].min()
    cells = best.groupby(level=["workload", "submission"])
    out = pd.DataFrame({
        "value": cells.median(),  # inf participates: pandas' median keeps +inf like numpy's
        "n_studies": cells.size(),
        "n_studies_reached": cells.agg(lambda v: int(np.isfinite(v).sum())),
    })
    keyed = table.groupby(["workload", "submission"], sort=True)
    out["n_trials"] = keyed.size()
    counts = keyed["outcome"].value_counts().unstack(fill_value=0).reindex(columns=list(OUTCOMES), fill_value=0)
    return _misses_by_budget(out.join(counts.astype(int)), table)


def _misses_by_budget(out: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``out`` with ``missed_steps`` and ``missed_seconds``: per cell, the misses the step budget and the seconds
    budget ended (``stopped_by``; a miss by seconds depends on the machine, one by steps does not). A file from before
    ``stopped_by`` counts in neither."""
    stopped = table["stopped_by"] if "stopped_by" in table.columns else pd.Series("", index=table.index)
    missed = table["outcome"] == "missed"
    for budget in ("steps", "seconds"):
        n = (missed & (stopped == budget)).groupby([table["workload"], table["submission"]], sort=True).sum()
        out[f"missed_{budget}"] = n.reindex(out.index, fill_value=0).astype(int)
    return out


# ----------------------------------------------------------------------------------- ratios, profiles, scores


def _check_r_max(r_max: float) -> float:
    if not np.isfinite(r_max) or r_max <= 1:
        raise UsageError(f"r_max must be a finite number > 1, got {r_max}")
    return float(r_max)


def ratios_from_times(times: np.ndarray, *, r_max: float = 4.0, reference: int | None = None) -> np.ndarray:
    """Performance ratios from a (..., workloads, submissions) array of times (inf = missed).

    ``r = t / min_s t`` per workload, or ``t / t_reference`` when ``reference`` (a submission column index) is
    given. Rules: a ratio above ``r_max`` becomes inf; a workload whose denominator is inf (nobody reached, or the
    reference missed) gets inf for everyone; ``0 / 0`` is 1 (two submissions reaching at step 0 tie).

    Args:
      times: float array, shape (..., W, S); leading axes (e.g. bootstrap replicates) are carried along.
      r_max: the largest ratio that still earns credit (AlgoPerf: 4).
      reference: index along the last axis of the reference submission, or None for the per-workload best.
    Returns:
      Ratios, same shape as ``times``; values in [0, r_max] or inf (below 1 only in reference mode).
    References:
      Dolan & More 2002, section 2; Dahl et al. 2023, section 4.4.
    """
    r_max = _check_r_max(r_max)
    times = np.asarray(times, dtype=float)
    denom = times.min(axis=-1, keepdims=True) if reference is None else times[..., reference : reference + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = times / denom  # (..., W, S) / (..., W, 1)
    r = np.where((times == 0) & (denom == 0), 1.0, r)
    r = np.where(np.isinf(denom) | np.isnan(r) | (r > r_max), np.inf, r)
    return r


def scores_from_ratios(ratios: np.ndarray, *, r_max: float = 4.0, algoperf: bool = False) -> np.ndarray:
    """Benchmark scores: area under each submission's performance profile on [1, r_max], over (r_max - 1).

    Exact (default): rho_s is a step function, so the area is a sum; a workload with ratio r <= r_max contributes
    ``(r_max - max(r, 1)) / (r_max - 1) / W`` and one with r = inf contributes 0. Ratios below 1 (faster than a
    reference) earn the full share and no more: the profile starts at tau = 1.

    ``algoperf=True`` reproduces AlgoPerf's ``compute_leaderboard_score``: rho evaluated at 100 linearly spaced
    tau in [1, r_max], integrated with the trapezoid rule, divided by r_max - 1. It differs from the exact value by
    up to about half a grid step per workload ((r_max - 1) / 99 / 2 in tau).

    Args:
      ratios: shape (..., W, S), as returned by :func:`ratios_from_times`.
      r_max: upper end of the tau range.
      algoperf: use AlgoPerf's discretised integral instead of the exact one.
    Returns:
      Scores in [0, 1], shape (..., S).
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.4 (B_s); Dolan & More 2002.
    """
    r_max = _check_r_max(r_max)
    ratios = np.asarray(ratios, dtype=float)
    if algoperf:
        taus = np.linspace(1.0, r_max, ALGOPERF_TAU_POINTS)
        rho = (ratios[..., None] <= taus).mean(axis=-3)  # (..., W, S, T) -> (..., S, T)
        return _trapezoid(rho, x=taus, axis=-1) / (r_max - 1.0)
    share = np.where(np.isfinite(ratios), (r_max - np.maximum(ratios, 1.0)) / (r_max - 1.0), 0.0)
    return np.clip(share, 0.0, 1.0).mean(axis=-2)


def profile_curve(ratios: pd.DataFrame, taus: Sequence[float] | np.ndarray) -> pd.DataFrame:
    """Performance profiles rho_s(tau) = fraction of workloads with ratio <= tau, for plotting.

    Args:
      ratios: workloads x submissions DataFrame of ratios (``Leaderboard.ratios``).
      taus: the tau values at which to evaluate the profiles.
    Returns:
      DataFrame indexed by tau (named ``tau``) with one column per submission.
    References:
      Dolan & More 2002, definition of the performance profile.
    """
    taus = np.asarray(taus, dtype=float)
    r = ratios.to_numpy(dtype=float)  # (W, S)
    rho = (r[:, :, None] <= taus).mean(axis=0).T  # (T, S)
    return pd.DataFrame(rho, index=pd.Index(taus, name="tau"), columns=ratios.columns)


@dataclass(frozen=True, kw_only=True, eq=False)
class Leaderboard:
    """A scored set of results.

    Attributes:
      scores: benchmark score per submission in [0, 1], best first.
      times: workloads x submissions aggregated measure (inf = missed or not run).
      ratios: workloads x submissions performance ratios (inf beyond ``r_max`` or missed).
      cells: the :func:`aggregate` table (value and outcome counts per (workload, submission)).
      outcomes: submissions x outcome counts summed over workloads.
      by: the measure scored (``"time"``, ``"steps"``, ``"examples"``, ``"tokens"``).
      r_max: upper end of the tau range.
      reference: the reference submission, or None (ratios to the per-workload best).
      algoperf: whether AlgoPerf's discretised integral was used.
      unreached: workloads where no submission reached the target (all ratios inf; still in the denominator).
      undefined: workloads where the reference missed (ratios undefined, set to inf for every submission).
    """

    scores: pd.Series
    times: pd.DataFrame
    ratios: pd.DataFrame
    cells: pd.DataFrame
    outcomes: pd.DataFrame
    by: str
    r_max: float
    reference: str | None
    algoperf: bool
    unreached: tuple[str, ...]
    undefined: tuple[str, ...]

    def profile(self, taus: Sequence[float] | np.ndarray | None = None) -> pd.DataFrame:
        """rho_s(tau) for every submission; by default at 100 points on [1, r_max]."""
        taus = np.linspace(1.0, self.r_max, ALGOPERF_TAU_POINTS) if taus is None else taus
        return profile_curve(self.ratios, taus)

    def table(self) -> pd.DataFrame:
        """One row per submission, best first: score, workloads with credit (finite ratio), outcome counts."""
        out = pd.DataFrame({"score": self.scores, "workloads_scored": np.isfinite(self.ratios).sum(axis=0)})
        return out.join(self.outcomes).loc[self.scores.index]


def leaderboard(
    trials: pd.DataFrame,
    *,
    by: str = "time",
    r_max: float = 4.0,
    reference: str | None = None,
    algoperf: bool = False,
    workloads: Sequence[str] | None = None,
) -> Leaderboard:
    """Score every submission in ``trials``.

    Rules, beyond :func:`aggregate`, :func:`ratios_from_times` and :func:`scores_from_ratios`:

    * a submission with no trials on a workload counts as a miss there (time inf);
    * a workload nobody reached gives every submission ratio inf there and still counts in the denominator, so a
      score is always "fraction of the benchmark" and a hard workload cannot be dropped by failing it. Listed in
      ``Leaderboard.unreached``;
    * with a ``reference``, ratios are ``t / t_reference``: a submission's score depends only on its own results
      and the reference's, so adding a submission changes no other score. A workload the reference missed has no
      defined ratio; it gets inf for everyone (the denominator stays the full workload count, keeping scores
      comparable across leaderboards with the same reference) and is listed in ``Leaderboard.undefined``.

    Args:
      trials: the trials table (see :func:`aggregate`).
      by: measure to score on.
      r_max: ratios above this earn nothing (AlgoPerf: 4).
      reference: submission to normalise by, or None for the per-workload best.
      algoperf: use AlgoPerf's 100-point trapezoid integral instead of the exact area.
      workloads: the workload set (e.g. to count a workload nobody ran); default: those in ``trials``.
    Returns:
      The :class:`Leaderboard`.
    Raises:
      UsageError: bad input, an unknown reference, ``r_max <= 1``.
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.4; Dolan & More 2002.
    """
    cells = aggregate(trials, by=by)
    times = cells["value"].unstack("submission")
    if workloads is not None:
        times = times.reindex(list(workloads))
    times = times.astype(float).fillna(np.inf)  # a submission with no trials on a workload: a miss
    subs = list(times.columns)
    if reference is not None and reference not in subs:
        raise UsageError(f"reference submission {reference!r} has no trials; submissions: {', '.join(subs)}")
    ref = None if reference is None else subs.index(reference)
    r = ratios_from_times(times.to_numpy(), r_max=r_max, reference=ref)
    ratios = pd.DataFrame(r, index=times.index, columns=times.columns)
    scores = pd.Series(scores_from_ratios(r, r_max=r_max, algoperf=algoperf), index=pd.Index(subs, name="submission"))
    order = sorted(subs, key=lambda s: (-scores[s], s))  # best first, ties by name (deterministic)
    outcomes = cells[list(OUTCOMES)].groupby(level="submission").sum().reindex(subs, fill_value=0)
    unreached = tuple(times.index[np.isinf(times.to_numpy()).all(axis=1)])
    undefined = () if reference is None else tuple(times.index[np.isinf(times[reference].to_numpy())])
    return Leaderboard(
        scores=scores[order].rename("score"), times=times, ratios=ratios, cells=cells, outcomes=outcomes,
        by=by, r_max=float(r_max), reference=reference, algoperf=algoperf, unreached=unreached, undefined=undefined,
    )


RUN_STUDY = re.compile(r"seed\d+")  # the study `optbench run` names (prepared.py: f"seed{seed}")
TUNE_STUDY = re.compile(r"study-\d+")  # the study `optbench tune` names (tuning.py: f"study-{k}")


def pooled_run_and_tune(trials: pd.DataFrame) -> list[tuple[str, str]]:
    """(workload, submission) cells holding both ``run`` studies (``seed<N>``) and ``tune`` studies (``study-<k>``).

    :func:`aggregate` takes one median over all studies of a cell, so a single-seed run at fixed hyperparameters
    and the best of a tuning study would be pooled as if they were alike.

    Args:
      trials: a trials table with ``workload``, ``submission`` and ``study`` (workload as scored, e.g. with size).
    Returns:
      The mixed cells, sorted; empty when none.
    """
    kinds = trials.assign(
        _run=trials["study"].astype(str).str.fullmatch(RUN_STUDY.pattern),
        _tune=trials["study"].astype(str).str.fullmatch(TUNE_STUDY.pattern),
    ).groupby(["workload", "submission"], sort=True)[["_run", "_tune"]].any()
    mixed = kinds[kinds["_run"] & kinds["_tune"]]
    return [(str(w), str(s)) for w, s in mixed.index]


def parse_hparams(text: str) -> dict:
    """Decode one ``hparams`` JSON cell into a dict.

    Raises:
      UsageError: the cell is not a JSON object.
    """
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise UsageError(f"hparams cell is not valid JSON: {str(text)[:60]!r}") from None
    if not isinstance(value, dict):
        raise UsageError(f"hparams cell is not a JSON object: {str(text)[:60]!r}")
    return value
