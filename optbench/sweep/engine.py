"""The one sweep engine: every command that runs trials (``run``, ``tune``, each research recipe) hands it a plan.

A *plan* is a list of :class:`Planned` trials, each fully specified by plain values (plugin specs and a
:class:`~optbench.engine.prepared.TrialConfig`), so that it can be prepared again in any process: a pool worker, a
torchrun rank, a submitit task on a cluster node. :func:`run_plan`

1. prepares (validates) every trial before any of them trains, and proves the results directory writable;
2. records the plan under ``<results>/.plans/`` (``optbench status`` counts what is still pending);
3. skips every trial whose result is already recorded (matched by its identity digest; an interrupted result does
   not count), and refuses one recorded under another budget;
4. hands the rest to an executor (:mod:`optbench.parallel.executors`: inline, process pool, submitit) as JSON
   jobs. Each job claims its trial first (:mod:`optbench.sweep.claims`), so any number of processes working on one
   plan train each trial once; a trial with ``nproc`` > 1 then runs on that many torchrun ranks
   (:func:`optbench.parallel.launch.call`). Checkpoints and ``resume`` work per trial as for a single run;
5. returns an :class:`Outcome` per planned trial: where its result is (run now, found recorded, or written by
   another process meanwhile) or why it has none. Recipes read their analysis from those results, so a re-run of
   a finished sweep trains nothing and prints the same tables.

Nothing here prints: progress goes to a :class:`Reporter` the command layer passes in.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from optbench.engine.prepared import PreparedTrial, TrialConfig, check_data, check_destination, prepare, trial_identity
from optbench.errors import UsageError
from optbench.options import option, options_of
from optbench.parallel.executors import EXECUTORS, ClusterOptions
from optbench.sweep import claims

PLANS_DIR = ".plans"  # under the results directory: what each sweep planned, for `optbench status`
JOB_FN = "optbench.sweep.engine:run_job"  # what every executor runs, by import path (no pickled objects)
MAX_JOBS = 1024  # worker processes of one sweep
MAX_NPROC = 1024  # processes of one data-parallel trial


@dataclass(frozen=True, kw_only=True)
class Planned:
    """One trial of a plan.

    Attributes:
      workload, submission: plugin specs (registered name, ``module:Attr`` or ``file.py:Attr``).
      config: every setting of the trial, as given (validated when prepared).
      tags: the planner's coordinates of the trial (batch size, learning rate, shape...), JSON values, for its
        analysis; not part of the trial's identity.
    """

    workload: str
    submission: str
    config: TrialConfig
    tags: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Execution:
    """Where and how a plan's trials run: the same options, with the same meaning, for every command that runs
    trials (declared once: the command line is generated from these fields).

    Attributes:
      jobs: trials at once in worker processes (1: in this process, one after another).
      nproc: processes per trial, data-parallel through torchrun (one per GPU, or gloo processes on CPU).
      executor, partition, gpus_per_task, cpus_per_task, time_limit, array_parallelism, slurm_args, wait: run each
        trial as a submitit task instead (:class:`optbench.parallel.executors.ClusterOptions`).
    """

    jobs: int = option(1, "--jobs", "Trials run at once in worker processes (their timed seconds get noisier).",
                       kind="int", low=1, high=MAX_JOBS, show_default=True)
    nproc: int = option(1, "--nproc", "Processes to train each trial with, data-parallel (starts torchrun: one per "
                        "GPU, or gloo processes on CPU).", kind="int", low=1, high=MAX_NPROC, show_default=True)
    executor: str | None = option(
        None, "--executor", "Run each trial as a submitit task: a SLURM job array, or local processes (same code "
        "path); preempted or timed-out tasks are requeued and resume from their checkpoints.", kind="choice",
        choices=EXECUTORS)
    partition: str | None = option(None, "--partition", "SLURM partition [default: the cluster's].", kind="text")
    gpus_per_task: int = option(0, "--gpus-per-task", "GPUs per task; a trial spans them, data-parallel.",
                                kind="int", low=0, high=64, show_default=True)
    cpus_per_task: int = option(1, "--cpus-per-task", "CPU cores per task.", kind="int", low=1, high=1024,
                                show_default=True)
    time_limit: int = option(60, "--time-limit", "Time limit per task; a task reaching it is requeued and resumes.",
                             kind="int", low=1, high=10**6, metavar="MINUTES", show_default=True)
    array_parallelism: int = option(256, "--array-parallelism", "Tasks of the job array running at once.",
                                    kind="int", low=1, high=10**6, show_default=True)
    slurm_args: tuple[str, ...] = option((), "--slurm-arg", "Another sbatch parameter (repeatable), e.g. "
                                         "account=mylab or qos=high.", kind="text", multiple=True, metavar="KEY=VALUE")
    wait: bool | None = option(None, "--wait", "Wait for the tasks to end [default: wait for local, return after "
                               "submitting to SLURM].", kind="switch")

    def checked(self) -> Execution:
        """Every field validated against its option (one line naming the flag)."""
        for name, opt in options_of(Execution).items():
            opt.check(getattr(self, name))
        return self

    @property
    def cluster(self) -> ClusterOptions | None:
        """The submitit options, when ``executor`` is set."""
        if self.executor is None:
            return None
        from optbench.parallel.executors import parse_slurm_args

        return ClusterOptions(executor=self.executor, partition=self.partition, gpus_per_task=self.gpus_per_task,
                              cpus_per_task=self.cpus_per_task, time_limit=self.time_limit,
                              array_parallelism=self.array_parallelism, extra=parse_slurm_args(self.slurm_args),
                              wait=(self.executor == "local") if self.wait is None else self.wait)


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """What became of one planned trial.

    Attributes:
      planned: the trial as planned; prep: as prepared (validated).
      status: ``ran`` (trained now), ``recorded`` (its result was already there), ``elsewhere`` (another process
        holds or finished it meanwhile), ``crashed`` (no result: ``reason``), ``submitted`` (to a cluster, not
        waited for).
      path: its result file (None unless ran or recorded, or finished elsewhere).
      note: set when the result had to be kept outside the results directory (the path then says where).
    """

    planned: Planned
    prep: PreparedTrial
    status: str
    path: Path | None = None
    reason: str = ""
    note: str | None = None

    def read(self) -> tuple[dict[str, Any], Any]:
        """The result's record and evaluation rows (a DataFrame), read from its file."""
        from optbench.store.reader import read_trial

        if self.path is None:
            raise ValueError(f"{self.prep.title} has no result ({self.status})")
        return read_trial(self.path)


@dataclass(frozen=True, kw_only=True)
class SweepResult:
    """Every planned trial's :class:`Outcome`, in plan order."""

    outcomes: tuple[Outcome, ...]

    def with_status(self, *statuses: str) -> list[Outcome]:
        return [o for o in self.outcomes if o.status in statuses]

    def results(self) -> list[Outcome]:
        """The outcomes that have a result file (ran, recorded, or finished elsewhere)."""
        return [o for o in self.outcomes if o.path is not None]


class Reporter(Protocol):
    """Receives a sweep's progress (the command layer prints it). All calls are made in this process."""

    def note(self, text: str) -> None: ...

    def done(self, outcome: Outcome) -> None: ...

    def observer(self, prep: PreparedTrial) -> Any: ...  # a progress receiver for a trial run in this process


# ------------------------------------------------------------------------------------------------- preparing


class _Plugins:
    """Plugins loaded once per plan and spec (a plugin file edited between two runs of a library caller is loaded
    again), with the submission variants recipes ask for."""

    def __init__(self) -> None:
        self.loaded: dict[tuple[str, str, str], Any] = {}

    def workload(self, spec: str) -> Any:
        from optbench.plugins.registry import load_workload

        key = ("w", spec, "")
        if key not in self.loaded:
            self.loaded[key] = load_workload(spec)
        return self.loaded[key]

    def submission(self, spec: str, variant: str | None) -> Any:
        from optbench.plugins.registry import load_submission
        from optbench.plugins.variants import apply_variant

        key = ("s", spec, variant or "")
        if key not in self.loaded:
            base = self.submission(spec, None) if variant else load_submission(spec)
            self.loaded[key] = apply_variant(base, variant) if variant else base
        return self.loaded[key]


def prepare_planned(p: Planned, results_dir: Path, plugins: _Plugins | None = None) -> PreparedTrial:
    """``p`` prepared (every value validated; plugins loaded through ``plugins``, a cache shared by one plan)."""
    plugins = plugins or _Plugins()
    return prepare(plugins.workload(p.workload), plugins.submission(p.submission, p.config.variant), p.config,
                   results_dir=results_dir)


def job_of(p: Planned, prep: PreparedTrial, nproc: int = 1) -> dict[str, Any]:
    """The JSON job of one trial: what any process needs to prepare it again and check it is the same trial."""
    return {"workload": p.workload, "submission": p.submission, "config": p.config.to_json(),
            "results_dir": str(prep.results_dir), "identity": prep.identity(), "nproc": nproc}


def _prep_of(job: Mapping[str, Any]) -> PreparedTrial:
    planned = Planned(workload=job["workload"], submission=job["submission"],
                      config=TrialConfig.from_json(job["config"]))
    prep = prepare_planned(planned, Path(job["results_dir"]))
    if prep.identity() != job["identity"]:  # another code version or plugin on this machine: never mix them up
        raise RuntimeError(f"{prep.title} prepares to another trial here than where it was planned")
    return prep


# ------------------------------------------------------------------------------------------------- the job


def run_job(job: Mapping[str, Any], observer: Any = None) -> dict[str, Any] | None:
    """Claim one trial and train it (in this process, or on ``nproc`` torchrun ranks); None when another process
    holds it or has finished it. Runs in whatever process the executor gives it.

    A results directory that can no longer hold claims (removed or made unwritable mid-sweep) does not stop the
    trial: it trains unclaimed and the runner keeps its result in a rescue directory, saying where; nothing
    computed is lost."""
    from optbench.parallel.launch import call

    results_dir, identity = Path(job["results_dir"]), job["identity"]
    try:
        claim = claims.try_claim(results_dir, identity)
        if claim is None:
            return None
    except OSError:
        claim = None
    try:
        if job["nproc"] > 1:
            value = call("optbench.sweep.engine:train", job, nproc=job["nproc"])
        else:
            value = train(job, observer=observer)
        if claim is not None and value.get("path"):
            with contextlib.suppress(OSError):  # the result counts; a claims folder gone with its directory not
                claim.done(Path(value["path"]))
        return value
    finally:
        if claim is not None:
            with contextlib.suppress(OSError):
                claim.release()


def train(job: Mapping[str, Any], observer: Any = None) -> dict[str, Any]:
    """Prepare and run one trial in this process (one rank of it under torchrun); the result file's path."""
    from optbench.engine.runner import run_prepared
    from optbench.parallel.distributed import world

    prep = _prep_of(job)
    if not world().is_main:  # rank 0 alone reports progress and writes the live logs
        result = run_prepared(prep, observer=None)
        return {"path": None if result.path is None else str(result.path), "note": result.note}
    from optbench.engine.sinks import Observers, make_sinks

    sinks = make_sinks(prep)  # --log: live curves beside the results, off the clock; a failing sink only warns
    try:
        result = run_prepared(prep, observer=Observers(observer, sinks) if sinks is not None else observer)
    finally:
        if sinks is not None:
            sinks.close()
    return {"path": None if result.path is None else str(result.path), "note": result.note}


# ------------------------------------------------------------------------------------------------- the store


def record_identity(rec: Mapping[str, Any]) -> str:
    """The identity digest of a recorded trial (the same as its :meth:`PreparedTrial.identity`)."""
    return trial_identity(workload=rec["workload"], size=rec["size"], submission=rec["submission"],
                          study=rec["study"], trial=rec["trial"], seed=int(rec["seed"]), hparams=rec["hparams"],
                          max_steps=_int_or_none(rec["max_steps"]), max_seconds=_float_or_none(rec["max_seconds"]),
                          target=float(rec["target"]))


def _without_budget(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return (rec["workload"], rec["size"], rec["submission"], rec["study"], rec["trial"], int(rec["seed"]),
            rec["hparams"], float(rec["target"]))


def _int_or_none(x: Any) -> int | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else int(x)


def _float_or_none(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def recorded(results_dir: Path) -> tuple[dict[str, Path], dict[tuple[Any, ...], tuple[Any, Any]]]:
    """The finished trials under ``results_dir``: identity -> result file, and the budget each trial (keyed without
    its budget) was recorded under. Footers only; interrupted results are not finished (a re-run resumes them)."""
    from optbench.store.reader import read_results

    found = read_results(Path(results_dir))
    by_identity: dict[str, Path] = {}
    budgets: dict[tuple[Any, ...], tuple[Any, Any]] = {}
    for rec, path in zip(found.trials.to_dict("records"), found.paths):
        if rec["outcome"] == "interrupted":
            continue
        by_identity[record_identity(rec)] = path
        budgets[_without_budget(rec)] = (_int_or_none(rec["max_steps"]), _float_or_none(rec["max_seconds"]))
    return by_identity, budgets


def write_plan(results_dir: Path, preps: Sequence[PreparedTrial]) -> Path:
    """Record a plan (one JSON file per plan, named by its content), so that ``optbench status`` can tell pending
    trials from the results directory alone."""
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


# ------------------------------------------------------------------------------------------------- running


def prepare_plan(plan: Sequence[Planned], results_dir: Path, outputs: Sequence[Path] = ()) -> list[PreparedTrial]:
    """Every trial of ``plan`` prepared, its data present, its destination and the sweep's ``outputs`` folders
    (a recipe's tables) writable, before any trains.

    Raises:
      UsageError: an empty plan, or any trial's bad value, missing dataset or unwritable folder.
    """
    from optbench.store.fsutil import ensure_writable_dir

    if not plan:
        raise UsageError("the plan has no trial")
    plugins = _Plugins()
    preps = [prepare_planned(p, results_dir, plugins) for p in plan]
    for name, size in {(p.workload.name, p.size.name): p for p in preps}.items():
        check_data(size.size, size.data_dir)
    check_destination(results_dir, preps)
    for folder in outputs:
        ensure_writable_dir(Path(folder), what="--out directory")
    return preps


def run_plan(plan: Sequence[Planned], *, results_dir: Path, execution: Execution = Execution(),
             reporter: Reporter | None = None, wait: bool = False, outputs: Sequence[Path] = ()) -> SweepResult:
    """Run every trial of ``plan`` that is not recorded yet (see the module docstring); one outcome per trial.

    With ``wait``, trials another live process holds are waited for (and taken over when their owner dies), so
    that every trial has a result when this returns: what a recipe, whose tables need all of them, asks for.
    ``outputs``: folders the caller writes to afterwards, proven writable with everything else before any trial.

    Raises:
      UsageError: bad input, found before any trial trains; a trial recorded under another budget.
    """
    results_dir = Path(results_dir)
    execution = execution.checked()
    if execution.cluster is not None:
        from optbench.parallel.executors import check_available

        check_available(execution.cluster)  # a login node without sbatch answers at once
    sweep = _Sweep(plan, prepare_plan(plan, results_dir, outputs), results_dir, execution, reporter)
    write_plan(results_dir, sweep.preps)
    todo = sweep.skip_recorded()
    sweep.note(_plan_line(len(plan), len(plan) - len(todo), len(todo), execution))
    sweep.report([i for i in range(len(plan)) if i not in set(todo)])
    sweep.execute(todo)
    if wait:
        sweep.await_others()
    return SweepResult(outcomes=sweep.final())


class _Sweep:
    """One call of :func:`run_plan`: the prepared plan and what became of each trial so far."""

    def __init__(self, plan: Sequence[Planned], preps: Sequence[PreparedTrial], results_dir: Path,
                 execution: Execution, reporter: Reporter | None) -> None:
        self.plan, self.preps, self.results_dir = list(plan), list(preps), results_dir
        self.execution, self.reporter = execution, reporter
        self.outcomes: list[Outcome | None] = [None] * len(plan)

    def note(self, text: str) -> None:
        if self.reporter:
            self.reporter.note(text)

    def report(self, indices: Sequence[int]) -> None:
        for i in indices:
            if self.reporter and self.outcomes[i] is not None:
                self.reporter.done(self.outcomes[i])  # type: ignore[arg-type]

    def skip_recorded(self) -> list[int]:
        """File the trials whose result is recorded; the indices of the others (to run). Under a torchrun started
        by hand nothing is skipped: the ranks must agree on what they train."""
        finished, budgets = ({}, {}) if _ranks_by_hand() else recorded(self.results_dir)
        todo = []
        for i, (p, prep) in enumerate(zip(self.plan, self.preps)):
            path = finished.get(prep.identity())
            if path is not None:
                self.outcomes[i] = Outcome(planned=p, prep=prep, status="recorded", path=path)
                continue
            other = budgets.get(_without_budget({
                "workload": prep.workload.obj.name, "size": prep.size.name, "submission": prep.submission.label,
                "study": prep.study, "trial": prep.trial, "seed": prep.seed, "hparams": prep.hparams_json,
                "target": prep.target}))
            if other is not None:
                raise UsageError(f"{self.results_dir} already holds {prep.submission.label} {prep.study} trial "
                                 f"{prep.trial} with another budget {other}; use another --results-dir to run under "
                                 "a different budget")
            todo.append(i)
        return todo

    def execute(self, todo: Sequence[int]) -> None:
        """Hand the trials ``todo`` to the executor; each is filed as it ends."""
        if not todo:
            return
        nproc = _nproc(self.execution)
        jobs = [job_of(self.plan[i], self.preps[i], nproc) for i in todo]

        def done(k: int, value: Any, reason: str | None) -> None:
            i = todo[k]
            self.outcomes[i] = _outcome(self.plan[i], self.preps[i], value, reason, self.results_dir)
            self.report([i])

        if _ranks_by_hand():  # every rank of a torchrun started by hand trains every trial, unclaimed
            _executor(Execution(), self.preps, todo, self.reporter).run(jobs, "optbench.sweep.engine:train", done)
        else:
            _executor(self.execution, self.preps, todo, self.reporter).run(jobs, JOB_FN, done)

    def await_others(self, poll: float = 0.5) -> None:
        """Wait for the trials another process holds: file each once its result appears; run again (claimed
        afresh) those whose owner ended without one."""
        pending = [i for i, o in enumerate(self.outcomes) if o is not None and o.status == "elsewhere" and
                   o.path is None]
        if pending:
            self.note(f"waiting for {len(pending)} trials another process is training")
        while pending:
            time.sleep(poll)
            retry = []
            for i in pending:
                identity = self.preps[i].identity()
                path = claims.result_of(self.results_dir, identity)
                if path is not None:
                    self.outcomes[i] = replace(self.outcomes[i], path=path)  # type: ignore[arg-type]
                    self.report([i])
                elif not claims.claimed_elsewhere(self.results_dir, identity):
                    retry.append(i)
            self.execute(retry)
            pending = [i for i in pending if self.outcomes[i].path is None  # type: ignore[union-attr]
                       and self.outcomes[i].status == "elsewhere"]  # type: ignore[union-attr]

    def final(self) -> tuple[Outcome, ...]:
        """Every outcome; trials never filed were submitted to a cluster without waiting."""
        return tuple(o if o is not None else Outcome(planned=self.plan[i], prep=self.preps[i], status="submitted")
                     for i, o in enumerate(self.outcomes))


def _ranks_by_hand() -> bool:
    """Whether this command itself runs on several torchrun ranks (``torchrun -m optbench run ...``): then every
    rank trains every planned trial together, as one data-parallel trial at a time, without claims or skips."""
    from optbench.parallel.distributed import world

    return world().size > 1


def _nproc(execution: Execution) -> int:
    """Processes per trial: ``nproc``, or on a cluster the task's GPUs (a trial spans them, data-parallel)."""
    gpus = execution.cluster.gpus_per_task if execution.cluster is not None else 0
    return max(execution.nproc, gpus)


def _plan_line(planned: int, skipped: int, todo: int, execution: Execution) -> str:
    line = f"{planned} trial{'s' if planned != 1 else ''} planned, {skipped} already recorded, {todo} to run"
    if execution.cluster is not None:
        return line + f" as {execution.cluster.executor} tasks"
    if execution.jobs > 1 and todo > 1:
        line += f" in {min(execution.jobs, todo)} worker processes"
    if execution.nproc > 1:
        line += f", each on {execution.nproc} processes (torchrun)"
    return line


def _executor(execution: Execution, preps: Sequence[PreparedTrial], todo: Sequence[int],
              reporter: Reporter | None) -> Any:
    from optbench.parallel import executors

    if execution.cluster is not None:
        logs = executors.logs_dir(preps[0].results_dir)

        def submitted(jobs: Sequence[Any]) -> None:
            if reporter:
                reporter.note(f"submitted {len(jobs)} tasks ({execution.executor} job "
                              f"{jobs[0].job_id.split('_')[0]}); logs in {logs}")

        return executors.Submitit(execution.cluster, logs=logs, on_submit=submitted)
    if execution.jobs > 1:
        return executors.Pool(execution.jobs, gpus_per_worker=execution.nproc)
    observer: Callable[[int], Mapping[str, Any]] | None = None
    if reporter is not None and execution.nproc == 1:
        observer = lambda k: {"observer": reporter.observer(preps[todo[k]])}  # noqa: E731
    return executors.Inline(kwargs_for=observer)


def _outcome(p: Planned, prep: PreparedTrial, value: Any, reason: str | None, results_dir: Path) -> Outcome:
    """File one job's return: trained by this sweep, held or finished by another process, or crashed.

    ``value`` is :func:`run_job`'s return (its result file; None when another process held the trial), or, from a
    submitit task whose return is never unpickled, ``{"task": True}``: then the claims say what the task left."""
    if reason is not None:
        return Outcome(planned=p, prep=prep, status="crashed", reason=reason)
    if isinstance(value, Mapping) and value.get("path"):
        return Outcome(planned=p, prep=prep, status="ran", path=Path(value["path"]), note=value.get("note"))
    by_task = isinstance(value, Mapping) and bool(value.get("task"))
    path = claims.result_of(results_dir, prep.identity())
    if path is not None:
        return Outcome(planned=p, prep=prep, status="ran" if by_task else "elsewhere", path=path)
    if claims.claimed_elsewhere(results_dir, prep.identity()):
        return Outcome(planned=p, prep=prep, status="elsewhere")
    if by_task:
        return Outcome(planned=p, prep=prep, status="crashed", reason="its task ended without a result; see its "
                       f"log in {results_dir / '.submitit'}")
    return Outcome(planned=p, prep=prep, status="elsewhere", reason="another process held it and left no result")
