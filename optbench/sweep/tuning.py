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

A tune is a planner: :func:`planned_trials` turns the studies into a plan that the one sweep engine
(:mod:`optbench.sweep.engine`) runs like every other command's: a trial already recorded is skipped (so an
interrupted tune resumes by running the same command again), each is claimed before it runs, and the executor is
this process, a pool of workers or submitit tasks.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), sections 4.3 and 5.
  Bousquet et al., "Critical Hyper-Parameters: No Random, No Cry", arXiv:1706.03200 (2017) (quasi-random search).
  Owen, "A randomized Halton algorithm in R", arXiv:1706.02808 (2017) (scrambled Halton).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pragma: no cover - numpy is imported where points are drawn (the CLI stays quick to start)
    import numpy as np

from optbench.api import Budget, Size
from optbench.engine.prepared import (MAX_BUDGET_MULTIPLIER, MAX_PLANNED_TRIALS, MAX_SEED, TrialConfig,
                                      budget_for)
from optbench.errors import UsageError
from optbench.options import bounded_float, bounded_int, option
from optbench.plugins.hparams import SearchSpace, check_keys, load_file, parse_search_space
from optbench.plugins.registry import Loaded
from optbench.sweep.engine import Execution, Outcome, Planned, run_plan

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
      search_space: AlgoPerf-format JSON file; default: each submission's own ``search_space()``.
      trials: trials per study (default 5 external, 1 self-tuning).
      studies: independent studies.
      seed: base seed of the Halton scrambling and of the trials' seeds.
      ruleset: ``"external"`` or ``"self"``.
      budget_multiplier: self-tuning budget factor.
      trial: every trial's settings (size, device, budget, evaluation period, checkpoints...), as for ``run``;
        each trial's hyperparameters, seed, study and trial id come from the plan.
    """

    workload: str = option("linreg", "--workload", "Workload to tune on.", kind="text", short="-w",
                           show_default=True)
    submissions: tuple[str, ...] = option(("adamw",), "--opt", "Submission (repeatable): each is tuned over its own "
                                          "search space.", kind="text", multiple=True, short="-s", show_default=True)
    search_space: Path | None = option(
        None, "--search-space", "AlgoPerf-format search-space JSON, or a JSON list of fixed configurations (trial i "
        "uses configuration i) [default: the submission's own search space].", kind="file")
    trials: int | None = option(None, "--trials", "Trials per study [default: 5; self-tuning: 1].", kind="int",
                                low=1, high=MAX_PLANNED_TRIALS)
    studies: int = option(DEFAULT_STUDIES, "--studies", "Independent studies.", kind="int", low=1,
                          high=MAX_PLANNED_TRIALS, show_default=True)
    seed: int = option(0, "--seed", "Base seed: Halton scrambling per study and a distinct seed per trial derive "
                       "from it.", kind="int", low=0, high=MAX_SEED, show_default=True)
    ruleset: str = option("external", "--ruleset", "external: tune over the search space; self: the submission's "
                          "defaults, longer budget.", kind="choice", choices=RULESETS, show_default=True)
    budget_multiplier: float = option(SELF_TUNING_MULTIPLIER, "--budget-multiplier", "Budget factor of the "
                                      "self-tuning ruleset (AlgoPerf v0.6: 1.5).", kind="float",
                                      high=MAX_BUDGET_MULTIPLIER, show_default=True)
    trial: TrialConfig = field(default_factory=TrialConfig)


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
    import numpy as np
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


# ----------------------------------------------------------------------------------------------------- running


def planned_trials(spec: TuneSpec, cells: Sequence[PlannedTrial]) -> list[Planned]:
    """The tune as a plan for the sweep engine: every cell of :func:`plan` (``cells``) as a trial with the spec's settings, the
    self-tuning ruleset's longer budget, and ``resume`` on (a re-run continues interrupted trials)."""
    from optbench.engine.prepared import resolve_size

    base = replace(spec.trial, resume=True, study_kind="tune")
    if spec.ruleset == "self":
        w = _workload(spec.workload)
        size = resolve_size(w.obj, base.size)
        budget = effective_budget(size, {"max_steps": base.max_steps, "max_seconds": base.max_seconds},
                                  ruleset="self", multiplier=spec.budget_multiplier)
        base = replace(base, max_steps=budget.max_steps, max_seconds=budget.max_seconds)
    out = []
    for k, c in enumerate(cells):
        varies = tuple(sorted(c.hparams))
        cfg = replace(base, hparams=dict(c.hparams), seed=c.seed, study=c.study, trial=c.trial, varies=varies)
        out.append(Planned(workload=spec.workload, submission=c.submission, config=cfg,
                           tags={"index": k}))
    return out


def _workload(spec: str) -> Loaded[Any]:
    from optbench.plugins.registry import load_workload

    return load_workload(spec)


class _Filing:
    """Files the engine's outcomes as a tune's: finished, crashed, skipped (recorded or another process's), and
    passes them on to a tune's :class:`Reporter`."""

    def __init__(self, cells: Sequence[PlannedTrial], reporter: Reporter | None) -> None:
        self.cells, self.reporter = list(cells), reporter
        self.finished: list[tuple[PlannedTrial, TrialDone]] = []
        self.crashed: list[tuple[PlannedTrial, str]] = []
        self.elsewhere: list[PlannedTrial] = []

    def note(self, text: str) -> None:
        if self.reporter:
            self.reporter.note(text)

    def observer(self, prep: Any) -> None:
        return None

    def done(self, outcome: Outcome) -> None:
        cell = self.cells[outcome.planned.tags["index"]]
        if outcome.status == "ran" and outcome.path is not None:
            done = _done_from(outcome.path)
            self.finished.append((cell, done))
            if self.reporter:
                self.reporter.finished(cell, done)
        elif outcome.status == "crashed":
            self.crashed.append((cell, outcome.reason))
            if self.reporter:
                self.reporter.crashed(cell, outcome.reason)
        elif outcome.status == "elsewhere":
            self.elsewhere.append(cell)


def _done_from(path: Path) -> TrialDone:
    """A finished trial's summary, read from its result file's metadata (footer only)."""
    from optbench.store.reader import read_trial

    rec, _ = read_trial(path)
    return TrialDone(outcome=rec["outcome"], time_to_target=rec["time_to_target"],
                     steps_to_target=rec["steps_to_target"], best_metric=rec["best_metric"],
                     metric_name=rec["metric_name"], path=path)


def tune(spec: TuneSpec, *, results_dir: Path, execution: Execution = Execution(),
         reporter: Reporter | None = None) -> TuneResult:
    """Run a tuning study through the sweep engine: plan every trial, skip those already recorded, run the rest
    where ``execution`` says (each claimed first, so any number of ``tune`` processes on one study split the work
    and each trial runs exactly once).

    Raises:
      UsageError: bad input (checked before any trial runs), or a result in the store with the same identity but
        another budget (mixing budgets inside one study would corrupt its result).
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4.3.
    """
    from optbench.plugins.registry import load_submission

    if execution.cluster is not None:
        from optbench.parallel.executors import check_available

        check_available(execution.cluster)  # before planning: a login node without sbatch answers at once
    subs = [load_submission(name) for name in dict.fromkeys(spec.submissions)]
    if not subs:
        raise UsageError("name at least one submission with --opt")
    cells = plan(spec, subs)
    trials = planned_trials(spec, cells)
    filing = _Filing(cells, reporter)
    result = run_plan(trials, results_dir=results_dir, execution=execution, reporter=filing)
    if filing.elsewhere:
        filing.note(f"{len(filing.elsewhere)} trials were claimed or finished by another process meanwhile")
    skipped = [filing.cells[o.planned.tags["index"]] for o in result.with_status("recorded")]
    return TuneResult(planned=tuple(cells), skipped=tuple(skipped) + tuple(filing.elsewhere),
                      finished=tuple(filing.finished), crashed=tuple(filing.crashed),
                      submitted=tuple(filing.cells[o.planned.tags["index"]] for o in result.with_status("submitted")))
