"""Executors: where a sweep's jobs run. One interface, three kinds; none knows what a job does.

A *job* is a JSON-able mapping, handed to a *job function* named by its import path (``package.module:function``),
so that every kind can start it in another process (a spawned pool worker, a submitit task on a cluster node)
without pickling live objects. The sweep engine above passes its own function; nothing here imports it back. Each
job's return value, or why it has none, comes back through ``done(index, value, reason)``:

- :class:`Inline` runs the jobs in this process, one after another (a progress bar can be drawn; Ctrl-C stops).
- :class:`Pool` runs them in ``jobs`` spawned worker processes sharing the cores, and on a machine with GPUs each
  worker on its own GPU(s) (``CUDA_VISIBLE_DEVICES``, round robin when there are more workers than GPUs); a dead
  worker fails only the jobs in flight (reported, not recorded: a re-run retries them) and the queue continues in
  a fresh pool.
- :class:`Submitit` submits one task per job as a SLURM job array, or as local processes through the same code
  path (submitit, facebookincubator/submitit). A preempted or timed-out task is requeued (:meth:`Task.checkpoint`)
  and the job starts again; the trial's own checkpoint holds its progress. submitit's pickled results are never
  read (the house rule: nothing from disk is unpickled): each task's value reaches ``done`` as ``{"task": True}``
  and the caller looks at what the task left on disk.

A job that trains on several processes starts them itself (:func:`optbench.parallel.launch.call`), so that each
kind runs a data-parallel trial the same way.
"""

from __future__ import annotations

import importlib
import os
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from optbench.errors import UsageError

Done = Callable[[int, Any, "str | None"], None]
EXECUTORS = ("slurm", "local")
DIED = "its worker process died (this trial or one running beside it)"


def resolve(path: str) -> Callable[..., Any]:
    """The function named ``package.module:function``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


class Executor(Protocol):
    """Runs ``fn(job)`` for every job and reports each through ``done``."""

    def run(self, jobs: Sequence[Mapping[str, Any]], fn: str, done: Done) -> None: ...


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _failure(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Inline:
    """The jobs in this process, in order. ``kwargs_for(index)`` adds live keyword arguments (a progress bar) that
    could not travel to another process. A usage error or Ctrl-C stops the whole run; any other exception of a job
    (a harness failure: the trial's own failures are outcomes) is that job's reason."""

    def __init__(self, *, kwargs_for: Callable[[int], Mapping[str, Any]] | None = None) -> None:
        self.kwargs_for = kwargs_for

    def run(self, jobs: Sequence[Mapping[str, Any]], fn: str, done: Done) -> None:
        call = resolve(fn)
        for k, job in enumerate(jobs):
            try:
                value = call(job, **(self.kwargs_for(k) if self.kwargs_for else {}))
            except UsageError:
                raise
            except Exception as exc:
                done(k, None, _failure(exc))
                continue
            done(k, value, None)


def _init_worker(threads: int, gpus: Any = None) -> None:
    """Worker start-up: share the cores between the workers instead of each taking them all, and take the next GPU
    assignment from ``gpus`` (a queue of ``CUDA_VISIBLE_DEVICES`` values, one per worker; None without GPUs)
    before anything initialises CUDA, so that ``--device cuda`` (or ``auto``) in this worker is its own GPU."""
    if gpus is not None:
        try:
            os.environ["CUDA_VISIBLE_DEVICES"] = gpus.get(timeout=30)
        except Exception:  # no assignment left (never expected): the worker sees every GPU, as without a queue
            pass
    import torch

    torch.set_num_threads(threads)


def visible_gpus() -> list[str]:
    """The GPUs this process may hand out, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs)."""
    import torch

    count = torch.cuda.device_count()
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return listed[:count]
    return [str(i) for i in range(count)]


def gpu_assignments(workers: int, gpus: Sequence[str], per_worker: int = 1) -> list[str]:
    """``CUDA_VISIBLE_DEVICES`` of each worker: worker k takes ``per_worker`` consecutive GPUs from k * per_worker,
    wrapping around (several workers share a GPU only when there are more workers than GPUs)."""
    per = max(1, min(per_worker, len(gpus)))
    return [",".join(gpus[(k * per + j) % len(gpus)] for j in range(per)) for k in range(workers)]


def _call(fn: str, job: Mapping[str, Any]) -> Any:
    return resolve(fn)(job)


class Pool:
    """At most ``workers`` jobs in flight in spawned processes, so that when a worker dies we know which jobs were
    running: a dead worker breaks the whole pool, every job in flight fails (those that had finished keep their
    value), and the queued jobs continue in a fresh pool. On a usage error the running jobs finish and queued
    ones are dropped. Where GPUs are visible each worker sees only its own ``gpus_per_worker`` of them
    (:func:`gpu_assignments`): a trial on ``cuda`` there is alone on its GPU unless workers outnumber GPUs."""

    def __init__(self, workers: int, *, gpus_per_worker: int = 1) -> None:
        self.workers, self.gpus_per_worker = workers, gpus_per_worker

    def run(self, jobs: Sequence[Mapping[str, Any]], fn: str, done: Done) -> None:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        workers = max(1, min(self.workers, len(jobs)))
        queue = deque(enumerate(jobs))
        threads = max(1, cores() // workers)
        context = multiprocessing.get_context("spawn")
        while queue:
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker,
                                       initargs=(threads, self._gpu_queue(context, workers)))
            running: dict[Any, int] = {}
            try:
                broken = False
                while (queue or running) and not broken:
                    broken = _fill(pool, queue, running, workers, fn)
                    if not running:
                        break
                    ready, _ = wait(list(running), return_when=FIRST_COMPLETED)
                    for fut in ready:
                        broken |= _collect(fut, running.pop(fut), done)
                if running:  # the pool broke: its other futures complete at once, with a value or the error
                    ready, _ = wait(list(running))
                    for fut in ready:
                        _collect(fut, running.pop(fut), done)
            finally:
                pool.shutdown(wait=True, cancel_futures=True)

    def _gpu_queue(self, context: Any, workers: int) -> Any:
        """A queue holding each worker's ``CUDA_VISIBLE_DEVICES`` (None when no GPU is visible)."""
        gpus = visible_gpus()
        if not gpus:
            return None
        queue = context.Queue()
        for assignment in gpu_assignments(workers, gpus, self.gpus_per_worker):
            queue.put(assignment)
        return queue


def _fill(pool: Any, queue: deque[tuple[int, Mapping[str, Any]]], running: dict[Any, int], workers: int,
          fn: str) -> bool:
    """Submit queued jobs until ``workers`` are in flight; True when the pool broke meanwhile (the job that could
    not be submitted goes back to the front of the queue, for the next pool)."""
    from concurrent.futures.process import BrokenProcessPool

    while queue and len(running) < workers:
        k, job = queue.popleft()
        try:
            running[pool.submit(_call, fn, job)] = k
        except BrokenProcessPool:
            queue.appendleft((k, job))
            return True
    return False


def _collect(fut: Any, k: int, done: Done) -> bool:
    """Report one completed future; True when its pool is broken (a worker died)."""
    from concurrent.futures.process import BrokenProcessPool

    try:
        value = fut.result()
    except BrokenProcessPool:
        done(k, None, DIED)
        return True
    except UsageError:
        raise
    except Exception as exc:
        done(k, None, _failure(exc))
        return False
    done(k, value, None)
    return False


# ------------------------------------------------------------------------------------------------ submitit


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """Where and how submitit tasks run.

    Attributes:
      executor: ``slurm`` (sbatch job array) or ``local`` (submitit's local processes, same code path).
      partition: SLURM partition (None: the cluster's default).
      gpus_per_task: GPUs of each task (a trial spans them, data-parallel).
      cpus_per_task: CPU cores of each task.
      time_limit: minutes per task; a task that reaches it is requeued and resumes.
      array_parallelism: tasks of the array running at once.
      extra: more sbatch parameters (``--slurm-arg key=value``), e.g. ``{"account": "lab"}``.
      wait: block until every task has ended (default for ``local``).
    """

    executor: str = "slurm"
    partition: str | None = None
    gpus_per_task: int = 0
    cpus_per_task: int = 1
    time_limit: int = 60
    array_parallelism: int = 256
    extra: Mapping[str, str] = field(default_factory=dict)
    wait: bool = False


def logs_dir(results_dir: Path) -> Path:
    """Where submitit writes the tasks' logs and its own bookkeeping (a dot-folder the results readers skip)."""
    return Path(results_dir) / ".submitit"


_PREEMPTED = False  # set in a task process when submitit's signal handler asks for a checkpoint


def preempted() -> bool:
    """Whether this process is being preempted (the runner then leaves the trial to its checkpoint)."""
    return _PREEMPTED


class Task:
    """submitit's callable for one job: ``task(job)`` runs ``fn(job)``; ``checkpoint(job)`` requeues it."""

    def __init__(self, fn: str) -> None:
        self.fn = fn

    def __call__(self, job: Mapping[str, Any]) -> str:
        value = resolve(self.fn)(job)
        return "done" if value is not None else "elsewhere"  # a short string: nobody needs to unpickle it

    def checkpoint(self, job: Mapping[str, Any]) -> Any:
        """Called by submitit on preemption or time-out: the same job again; the trial's own checkpoint on disk
        holds its progress (the state at this instant, mid-step, is not saved)."""
        import submitit

        global _PREEMPTED
        _PREEMPTED = True
        return submitit.helpers.DelayedSubmission(self, job)


def check_available(opts: ClusterOptions) -> None:
    """Stop before planning when the executor cannot run here (one line, exit code 2).

    Raises:
      UsageError: submitit is not installed, the executor is unknown, or SLURM's sbatch is not on this machine.
    """
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise UsageError("--executor needs submitit: pip install 'optbench[cluster]'") from None
    if opts.executor not in EXECUTORS:
        raise UsageError(f"unknown executor {opts.executor!r}; use one of {', '.join(EXECUTORS)}")
    if opts.executor == "slurm":
        import shutil

        if shutil.which("sbatch") is None:
            raise UsageError("--executor slurm: no sbatch on this machine (not a SLURM login node); "
                             "use --executor local to run the same tasks here")


class Submitit:
    """One submitit task per job, as one job array; with ``wait`` each job is reported when every task has ended
    (``{"task": True}``; nothing is unpickled), else none is (the caller counts them as submitted)."""

    def __init__(self, opts: ClusterOptions, *, logs: Path, poll: float = 0.5,
                 on_submit: Callable[[Sequence[Any]], None] | None = None) -> None:
        self.opts, self.logs, self.poll, self.on_submit = opts, Path(logs), poll, on_submit
        self.jobs: list[Any] = []  # submitit's job handles, once submitted

    def _executor(self) -> Any:
        import submitit

        check_available(self.opts)
        executor = submitit.AutoExecutor(folder=self.logs, cluster=self.opts.executor)
        # One process per task: a job that spans several GPUs starts its own torchrun ranks on them.
        params: dict[str, Any] = dict(timeout_min=self.opts.time_limit, nodes=1, tasks_per_node=1,
                                      cpus_per_task=self.opts.cpus_per_task, gpus_per_node=self.opts.gpus_per_task)
        if self.opts.executor == "slurm":
            params.update(slurm_array_parallelism=self.opts.array_parallelism,
                          slurm_additional_parameters=dict(self.opts.extra))
            if self.opts.partition:
                params["slurm_partition"] = self.opts.partition
        executor.update_parameters(**params)
        return executor

    def run(self, jobs: Sequence[Mapping[str, Any]], fn: str, done: Done) -> None:
        if not jobs:
            return
        self.jobs = list(self._executor().map_array(Task(fn), [dict(j) for j in jobs]))
        if self.on_submit is not None:
            self.on_submit(self.jobs)
        if not self.opts.wait:
            return
        wait_for(self.jobs, poll=self.poll)
        for k in range(len(self.jobs)):
            done(k, {"task": True}, None)


def wait_for(jobs: Sequence[Any], *, poll: float = 0.5) -> None:
    """Block until every submitit job has ended (their pickled results are never read)."""
    while not all(j.done() for j in jobs):
        time.sleep(poll)


def parse_slurm_args(items: Sequence[str]) -> dict[str, str]:
    """``--slurm-arg key=value`` options as sbatch parameters; a malformed or repeated key is a usage error."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--slurm-arg {item!r}: expected KEY=VALUE, e.g. account=mylab")
        if key in out:
            raise UsageError(f"--slurm-arg {key} given twice")
        out[key] = value
    return out
