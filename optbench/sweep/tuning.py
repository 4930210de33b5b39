"""Tuning studies: AlgoPerf's external-tuning and self-tuning rulesets, each trial an ordinary optbench trial.

External tuning (Dahl et al. 2023, section 4.3): a submission gives a workload-agnostic search space; each of M
*studies* runs N *trials* at points of a quasi-random (scrambled Halton) sequence over it; a study's result is its
fastest trial and the workload result the median over studies (see :mod:`optbench.scoring.profiles`). Self-tuning: no
hyperparameters are given (the submission's defaults), the budget is multiplied (AlgoPerf v0.6: 1.5x) and each study
is a single trial.

Two AlgoPerf bugs are not repeated here:

* AlgoPerf draws the same Halton points in every study; here each study has its own scrambling seed, derived from
  (base seed, study), so studies are independent replicates of the tuning procedure.
* AlgoPerf reuses one seed across the trials of a study; here every trial gets its own seed, derived from (base
  seed, study, trial). The seed does not depend on the submission, so trial (k, i) of two submissions sees the same
  data order and initialisation (common random numbers for paired comparisons).

A trial is identified by (workload, size, submission, study, trial, seed, hyperparameters); a trial whose result is
already in the results store is skipped, so an interrupted tune resumes by running the same command again. Trials
run in this process (``jobs=1``) or in ``jobs`` worker processes (spawn context); each trial writes its Parquet file
atomically when it ends, so a crashed worker loses at most the trials it was running.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), sections 4.3 and 5.
  Bousquet et al., "Critical Hyper-Parameters: No Random, No Cry", arXiv:1706.03200 (2017) (quasi-random search).
  Owen, "A randomized Halton algorithm in R", arXiv:1706.02808 (2017) (scrambled Halton).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from optbench.sweep import claims
from optbench.parallel.executors import ClusterOptions
from optbench.api import Budget, Size
from optbench.errors import UsageError
from optbench.plugins.hparams import SearchSpace, check_keys, load_file, parse_search_space
from optbench.engine.prepared import (MAX_BUDGET_MULTIPLIER, MAX_JOBS, MAX_PLANNED_TRIALS, MAX_SEED, PreparedTrial,
                               TrialConfig, bounded_float, bounded_int, budget_for, prepare)
from optbench.plugins.registry import Loaded

RULESETS = ("external", "self")
DEFAULT_TRIALS = {"external": 5, "self": 1}  # AlgoPerf v0.6: 5 trials x 3 studies; self-tuning: 1 run per study
DEFAULT_STUDIES = 3
SELF_TUNING_MULTIPLIER = 1.5  # AlgoPerf v0.6 (v0.5: 3)


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """What to tune.

    Attributes:
      workload: workload spec (registered name, module:Attr or file.py:Attr).
      submissions: submission specs; each is tuned over its own search space (or ``search_space``).
      size: size preset (default: the workload's default).
      search_space: AlgoPerf-format JSON file; default: each submission's own ``search_space()``.
      trials: trials per study (default 5 external, 1 self-tuning).
      studies: independent studies.
      jobs: worker processes (1: run in this process).
      seed: base seed of the Halton scrambling and of the trials' seeds.
      ruleset: ``"external"`` or ``"self"``.
      budget_multiplier: self-tuning budget factor.
      device, data_dir: as for ``optbench run``.
      overrides: TrialConfig overrides (max_steps, max_seconds, eval_every_steps, batch_size, timeout, ...).
      cluster: run the trials as submitit tasks (SLURM job array or local processes) instead of here.
    """

    workload: str
    submissions: tuple[str, ...]
    size: str | None = None
    search_space: Path | None = None
    trials: int | None = None
    studies: int = DEFAULT_STUDIES
    jobs: int = 1
    seed: int = 0
    ruleset: str = "external"
    budget_multiplier: float = SELF_TUNING_MULTIPLIER
    device: str = "cpu"
    data_dir: Path | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    cluster: ClusterOptions | None = None


@dataclass(frozen=True, kw_only=True)
class PlannedTrial:
    """One cell of a tune: which submission, study, trial, seed and hyperparameters (as given, before defaults)."""

    submission: str
    study: str
    trial: str
    seed: int
    hparams: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class TrialDone:
    """The summary of a finished trial that comes back from a worker."""

    outcome: str
    time_to_target: float | None
    steps_to_target: int | None
    best_metric: float | None
    metric_name: str
    path: Path


@dataclass(frozen=True, kw_only=True)
class TuneResult:
    """What a tune did: trials skipped (already in the store), finished, and crashed (not recorded)."""

    planned: tuple[PlannedTrial, ...]
    skipped: tuple[PlannedTrial, ...]
    finished: tuple[tuple[PlannedTrial, TrialDone], ...]
    crashed: tuple[tuple[PlannedTrial, str], ...]
    submitted: tuple[PlannedTrial, ...] = ()  # sent to a cluster without waiting: their results come later


class Reporter(Protocol):
    """Receives progress of a tune (the CLI prints it)."""

    def note(self, text: str) -> None: ...

    def finished(self, trial: PlannedTrial, done: TrialDone) -> None: ...

    def crashed(self, trial: PlannedTrial, reason: str) -> None: ...


# ------------------------------------------------------------------------------------------------ seeds & points


def _hash_int(text: str, bits: int) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> (64 - bits)


def study_seed(base: int, study: int) -> int:
    """Seed of study ``study``'s Halton scrambling (63 bits), derived from the base seed."""
    return _hash_int(f"optbench-tune-halton:{base}:{study}", 63)


def trial_seed(base: int, study: int, trial: int) -> int:
    """Seed of trial ``trial`` of study ``study`` (31 bits, readable in tables), derived from the base seed.

    Independent of the submission on purpose: trial (k, i) of two submissions shares data order and init.
    """
    return _hash_int(f"optbench-tune-trial:{base}:{study}:{trial}", 31)


def halton_points(n: int, d: int, *, seed: int) -> np.ndarray:
    """``n`` points of a scrambled Halton sequence in the unit cube [0, 1)^d.

    Args:
      n: number of points.
      d: dimensions (>= 1).
      seed: scrambling seed; different seeds give different (equally well spread) point sets.
    Returns:
      Array of shape (n, d).
    References:
      Owen 2017 (arXiv:1706.02808); scipy.stats.qmc.Halton.
    """
    from scipy.stats import qmc

    try:
        sampler = qmc.Halton(d=d, scramble=True, rng=np.random.default_rng(seed))
    except TypeError:  # scipy < 1.15 names the argument ``seed``
        sampler = qmc.Halton(d=d, scramble=True, seed=np.random.default_rng(seed))
    return sampler.random(n)  # (n, d)


# ------------------------------------------------------------------------------------------------------ planning


def resolve_trials(spec: TuneSpec) -> int:
    """Trials per study for ``spec``: its ``trials`` or the ruleset's default; validated."""
    if spec.ruleset not in RULESETS:
        raise UsageError(f"unknown ruleset {spec.ruleset!r}; choose one of: {', '.join(RULESETS)}")
    top = MAX_PLANNED_TRIALS
    n = bounded_int(DEFAULT_TRIALS[spec.ruleset] if spec.trials is None else spec.trials, what="--trials",
                    low=1, high=top)
    studies = bounded_int(spec.studies, what="--studies", low=1, high=top)
    bounded_int(spec.jobs, what="--jobs", low=1, high=MAX_JOBS)
    bounded_int(spec.seed, what="--seed", low=0, high=MAX_SEED)
    total = n * studies * max(1, len(spec.submissions))
    if total > top:  # checked before planning: a billion studies would hang the planner, not fail
        raise UsageError(f"{n} trials x {studies} studies x {len(spec.submissions)} submissions = {total} trials; "
                         f"a tune plans at most {top}")
    if spec.ruleset == "self":
        if n != 1:
            raise UsageError("the self-tuning ruleset runs one trial per study; drop --trials or use --trials 1")
        if spec.search_space is not None:
            raise UsageError("the self-tuning ruleset takes no search space (the submission's defaults are used)")
        bounded_float(spec.budget_multiplier, what="--budget-multiplier", high=MAX_BUDGET_MULTIPLIER)
    return n


def load_space(path: Path | None, submission: Loaded[Any]) -> SearchSpace:
    """The search space from ``path``, else the submission's own; a usage error if neither exists."""
    if path is not None:
        return parse_search_space(load_file(path, what="search space"), source=str(path))
    raw = submission.obj.search_space()
    if raw is None:
        raise UsageError(f"submission {submission.name!r} has no search space of its own; pass --search-space FILE")
    return parse_search_space(raw, source=f"search space of {submission.name!r}")


def _points(space: SearchSpace, *, trials: int, base_seed: int, study: int) -> list[dict[str, Any]]:
    if space.fixed:
        if trials > len(space.fixed):
            raise UsageError(f"--trials {trials} but the search space lists only {len(space.fixed)} configurations")
        return [dict(c) for c in space.fixed[:trials]]  # trial i uses configuration i
    u = halton_points(trials, len(space.dims), seed=study_seed(base_seed, study))
    return [space.point([float(x) for x in row]) for row in u]


def plan(spec: TuneSpec, submissions: Sequence[Loaded[Any]]) -> list[PlannedTrial]:
    """Every trial of the tune, ordered by study, trial, submission (so submissions interleave in time).

    Raises:
      UsageError: bad counts or ruleset, unreadable search space, a hyperparameter a submission does not accept.
    """
    n = resolve_trials(spec)
    out: list[PlannedTrial] = []
    per_sub: dict[str, list[list[dict[str, Any]]]] = {}
    for s in submissions:
        if spec.ruleset == "self":
            per_sub[s.name] = [[{}] for _ in range(spec.studies)]
            continue
        space = load_space(spec.search_space, s)
        # Unknown keys: a usage error now, once per search space, not a crash later (values: when prepared).
        check_keys(s.obj.defaults, space.names or {k for c in space.fixed for k in c}, submission=s.name)
        per_sub[s.name] = [_points(space, trials=n, base_seed=spec.seed, study=k) for k in range(spec.studies)]
    for k in range(spec.studies):
        for i in range(n):
            seed = trial_seed(spec.seed, k, i)
            for s in submissions:
                out.append(PlannedTrial(submission=s.name, study=f"study-{k}", trial=str(i), seed=seed,
                                        hparams=per_sub[s.name][k][i]))
    return out


def effective_budget(size: Size, overrides: Mapping[str, Any], *, ruleset: str, multiplier: float) -> Budget:
    """The budget trials run under: the size's, overridden like ``optbench run``, times the self-tuning factor."""
    base = budget_for(size, max_steps=overrides.get("max_steps"), max_seconds=overrides.get("max_seconds"))
    if ruleset != "self":
        return base
    return Budget(max_steps=None if base.max_steps is None else math.ceil(base.max_steps * multiplier),
                  max_seconds=None if base.max_seconds is None else base.max_seconds * multiplier)


# --------------------------------------------------------------------------------------------------- the store


def recorded_trials(results_dir: Path, *, workload: str, size: str) -> dict[tuple, list[tuple[Any, Any]]]:
    """Trials of ``workload``/``size`` already in the store, by identity key -> their (max_steps, max_seconds).

    Reads only the Parquet footers (the ``optbench`` metadata, checked like every reader checks it), not the data;
    foreign or damaged files are ignored here (``optbench score`` reports them), and so are interrupted trials,
    which a re-run runs again.
    """
    from optbench.store.reader import read_results

    found: dict[tuple, list[tuple[Any, Any]]] = {}
    trials = read_results(Path(results_dir)).trials  # footers only, through the summary cache
    if trials.empty:
        return found
    mine = trials[(trials["workload"] == workload) & (trials["size"] == size) & (trials["outcome"] != "interrupted")]
    for rec in mine.to_dict("records"):
        key = (rec["submission"], rec["study"], rec["trial"], int(rec["seed"]), rec["hparams"])
        found.setdefault(key, []).append((_int_or_none(rec["max_steps"]), _float_or_none(rec["max_seconds"])))
    return found


def _int_or_none(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _float_or_none(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


# ----------------------------------------------------------------------------------------------------- running


def _init_worker(threads: int) -> None:
    """Worker start-up: share the cores between the workers instead of each taking them all."""
    import torch

    torch.set_num_threads(threads)


def run_job(prep: PreparedTrial) -> TrialDone | None:
    """Claim and run one prepared trial (in a worker or in this process); None when another process claimed it or
    finished it meanwhile."""
    from optbench.engine.runner import run_prepared

    with claims.claimed(prep.results_dir, prep.identity()) as claim:
        if claim is None:
            return None
        res = run_prepared(prep)
        claim.done(res.path)
    rec = res.record
    return TrialDone(outcome=rec.outcome, time_to_target=rec.time_to_target, steps_to_target=rec.steps_to_target,
                     best_metric=rec.best_metric, metric_name=rec.metric_name, path=res.path)


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


DIED = "its worker process died (this trial or one running beside it)"


def _record(result: dict, reporter: Reporter | None, p: PlannedTrial, done: TrialDone | None, reason: str = ""
            ) -> None:
    """File a trial under finished (``done`` given), claimed elsewhere (neither) or crashed (``reason``)."""
    if done is not None:
        result["finished"].append((p, done))
        if reporter:
            reporter.finished(p, done)
    elif not reason:
        result["elsewhere"].append(p)
    else:
        result["crashed"].append((p, reason))
        if reporter:
            reporter.crashed(p, reason)


def _run_serial(todo: list[tuple[PlannedTrial, PreparedTrial]], reporter: Reporter | None, result: dict) -> None:
    for p, prep in todo:
        try:
            done = run_job(prep)
        except UsageError:
            raise
        except Exception as exc:  # a harness failure: report it and go on with the other trials
            _record(result, reporter, p, None, f"{type(exc).__name__}: {exc}")
            continue
        _record(result, reporter, p, done)


def _collect(fut: Any, p: PlannedTrial, result: dict, reporter: Reporter | None) -> bool:
    """File one completed future; return True when its pool is broken (a worker died)."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        done = fut.result()
    except BrokenProcessPool:
        _record(result, reporter, p, None, DIED)
        return True
    except UsageError:
        raise
    except Exception as exc:  # a harness failure in the worker: report it, go on
        _record(result, reporter, p, None, f"{type(exc).__name__}: {exc}")
        return False
    _record(result, reporter, p, done)
    return False


def _run_parallel(todo: list[tuple[PlannedTrial, PreparedTrial]], workers: int, reporter: Reporter | None,
                  result: dict) -> None:
    """At most ``workers`` trials in flight, so that when a worker dies we know which trials were running.

    A dead worker breaks the whole pool: every trial in flight then fails (those that had already finished keep
    their result), is reported as crashed and not recorded (the next run of the same tune retries it), and the
    queued trials continue in a fresh pool. Prepared trials travel to the workers as plugin specs plus validated
    values (see :class:`optbench.engine.prepared.PreparedTrial`).
    """
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    queue = deque(todo)
    threads = max(1, cores() // workers)
    while queue:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init_worker, initargs=(threads,))
        running: dict[Any, PlannedTrial] = {}
        try:
            broken = False
            while (queue or running) and not broken:
                while queue and len(running) < workers:
                    p, prep = queue.popleft()
                    running[pool.submit(run_job, prep)] = p
                ready, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in ready:
                    broken |= _collect(fut, running.pop(fut), result, reporter)
            if running:  # the pool broke: its other futures complete at once, with a result or the error
                ready, _ = wait(list(running))
                for fut in ready:
                    _collect(fut, running.pop(fut), result, reporter)
        finally:
            # On a usage error the running trials finish and are recorded; queued ones are dropped.
            pool.shutdown(wait=True, cancel_futures=True)


PLANS_DIR = ".plans"  # under the results directory: what each tune planned, for `optbench status`


def write_plan(results_dir: Path, preps: Sequence[PreparedTrial]) -> Path:
    """Record what a tune planned (one JSON file per plan, named by its content), so that ``optbench status`` can
    tell pending trials from the results directory alone."""
    from optbench.store.fsutil import atomic_file

    entries = [{"identity": p.identity(), "workload": p.workload.obj.name, "size": p.size.name,
                "submission": p.submission.label, "study": p.study, "trial": p.trial, "seed": p.seed}
               for p in preps]
    text = json.dumps(entries, sort_keys=True)
    path = Path(results_dir) / PLANS_DIR / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "w") as fh:
            fh.write(text)
    return path


def _run_on_cluster(todo: list[tuple[PlannedTrial, PreparedTrial]], opts: ClusterOptions, results_dir: Path,
                    device: str, reporter: Reporter | None, result: dict) -> None:
    """Submit the trials as one job array; when waiting, file each by the result its task left (a trial with no
    result and no live claim elsewhere crashed: its task's log says why)."""
    from optbench.parallel import executors as cluster

    jobs = cluster.submit([prep for _, prep in todo], opts, results_dir=results_dir, device=device)
    logs = cluster.logs_dir(results_dir)
    if reporter:
        reporter.note(f"submitted {len(jobs)} tasks ({opts.executor} job {jobs[0].job_id.split('_')[0]}); logs in "
                      f"{logs}")
    if not opts.wait:
        result["submitted"] = [p for p, _ in todo]
        return
    cluster.wait(jobs)
    for p, prep in todo:
        path = claims.result_of(results_dir, prep.identity())
        if path is not None:
            _record(result, reporter, p, _done_from(path))
        elif claims.claimed_elsewhere(results_dir, prep.identity()):
            _record(result, reporter, p, None)
        else:
            _record(result, reporter, p, None, f"its task ended without a result; see the logs in {logs}")


def _done_from(path: Path) -> TrialDone:
    """A finished trial's summary, read from its result file's metadata (footer only)."""
    from optbench.store.reader import read_trial

    rec, _ = read_trial(path)
    return TrialDone(outcome=rec["outcome"], time_to_target=rec["time_to_target"],
                     steps_to_target=rec["steps_to_target"], best_metric=rec["best_metric"],
                     metric_name=rec["metric_name"], path=path)


def tune(spec: TuneSpec, *, results_dir: Path, reporter: Reporter | None = None) -> TuneResult:
    """Run a tuning study: plan every trial, skip those already recorded, run the rest (in parallel if asked).

    Every planned trial is prepared (validated) once, before any runs; each is claimed just before it runs (see
    :mod:`optbench.sweep.claims`), so any number of ``tune`` processes on the same study split the work and each trial
    runs exactly once.

    Args:
      spec: what to tune and how.
      results_dir: the results store (trials are read from and written to it).
      reporter: optional progress receiver.
    Returns:
      The :class:`TuneResult`.
    Raises:
      UsageError: bad input (checked before any trial runs), or a result in the store with the same identity but
        another budget (mixing budgets inside one study would corrupt its result).
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.3.
    """
    from optbench.engine.prepared import check_data, check_destination
    from optbench.plugins.registry import load_submission, load_workload

    if spec.cluster is not None:
        from optbench.parallel.executors import check_available

        check_available(spec.cluster)  # before planning: a login node without sbatch answers at once
    w = load_workload(spec.workload)
    subs = [load_submission(name) for name in dict.fromkeys(spec.submissions)]
    if not subs:
        raise UsageError("name at least one submission with --opt")
    planned = plan(spec, subs)
    # resume=True: a re-run continues every interrupted trial from its checkpoint (finished ones are skipped below)
    base = TrialConfig(size=spec.size, device=spec.device, data_dir=spec.data_dir, resume=True,
                       **{k: v for k, v in spec.overrides.items() if v is not None})
    by_name = {s.name: s for s in subs}
    first = prepare(w, subs[0], base, results_dir=results_dir)  # the size and budget every trial shares
    if spec.ruleset == "self":
        budget = effective_budget(first.size, spec.overrides, ruleset="self", multiplier=spec.budget_multiplier)
        base = replace(base, max_steps=budget.max_steps, max_seconds=budget.max_seconds)
    prepared = [(p, prepare(w, by_name[p.submission], replace(base, hparams=dict(p.hparams), seed=p.seed,
                                                               study=p.study, trial=p.trial),
                            results_dir=results_dir)) for p in planned]
    check_data(first.size, spec.data_dir)
    check_destination(results_dir, [prep for _, prep in prepared])
    write_plan(results_dir, [prep for _, prep in prepared])
    known = recorded_trials(results_dir, workload=w.obj.name, size=first.size.name)
    skipped, todo = [], []
    for p, prep in prepared:
        budgets = known.get((prep.submission.label, p.study, p.trial, p.seed, prep.hparams_json), [])
        if (prep.budget.max_steps, prep.budget.max_seconds) in budgets:
            skipped.append(p)
            continue
        if budgets:
            raise UsageError(f"{results_dir} already holds {p.submission} {p.study} trial {p.trial} with another "
                             f"budget {budgets[0]}; use another --results-dir to tune under a different budget")
        todo.append((p, prep))
    result: dict[str, list] = {"finished": [], "crashed": [], "elsewhere": [], "submitted": []}
    workers = min(spec.jobs, len(todo))
    if reporter:
        threads = max(1, cores() // max(1, workers))
        reporter.note(f"{len(planned)} trials planned, {len(skipped)} already recorded, {len(todo)} to run"
                      + (f" in {workers} worker processes ({threads} torch thread{'s' if threads > 1 else ''} each)"
                         if workers > 1 else ""))
        if workers > 1:
            reporter.note("parallel trials share cores, caches and memory bandwidth: their timed seconds are noisier "
                          "than serial ones (hardware-independent --by steps is unaffected)")
    if spec.cluster is not None and todo:
        _run_on_cluster(todo, spec.cluster, results_dir, spec.device, reporter, result)
    elif spec.jobs > 1 and todo:  # worker processes even for one pending trial: a crash must not end the tune
        _run_parallel(todo, workers, reporter, result)
    elif todo:
        _run_serial(todo, reporter, result)
    if reporter and result["elsewhere"]:
        reporter.note(f"{len(result['elsewhere'])} trials were claimed or finished by another process meanwhile")
    return TuneResult(planned=tuple(planned), skipped=tuple(skipped) + tuple(result["elsewhere"]),
                      finished=tuple(result["finished"]), crashed=tuple(result["crashed"]),
                      submitted=tuple(result["submitted"]))
