"""Tunes on a cluster through submitit: one task per trial as a SLURM job array (or local processes), requeued on
preemption and resumed from the trial's checkpoint.

submitit (facebookincubator/submitit) is the executor researchers already use with SLURM; optbench adds nothing of
a scheduler of its own. Each task runs :class:`TrialTask` on one prepared trial: it claims the trial
(:mod:`optbench.sweep.claims`, so a second submission of the same tune runs nothing twice), runs it with ``resume`` on,
and writes its Parquet file like any trial. When SLURM preempts the task or its time limit nears, submitit calls
:meth:`TrialTask.checkpoint`, which asks for the same task again; the requeued task resumes the trial from its last
checkpoint (``--checkpoint-every``). Logs go to ``<results>/.submitit/``. The Parquet file is the only result that
counts: submitit's own pickled results are never read (the house rule: nothing from disk is unpickled).

With ``gpus_per_task`` above 1 a task starts one process per GPU and the trial runs data-parallel across them
(:mod:`optbench.parallel.distributed`), submitit's torch environment supplying RANK, WORLD_SIZE and the rendezvous address.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench.errors import UsageError
from optbench.engine.prepared import PreparedTrial

EXECUTORS = ("slurm", "local")


@dataclass(frozen=True, kw_only=True)
class ClusterOptions:
    """Where and how a tune's tasks run.

    Attributes:
      executor: ``slurm`` (sbatch job array) or ``local`` (submitit's local processes, same code path).
      partition: SLURM partition (None: the cluster's default).
      gpus_per_task: GPUs of each task (a trial spans them, data-parallel).
      cpus_per_task: CPU cores of each task (per process when a task has several GPUs).
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


class TrialTask:
    """submitit's callable for one trial: ``task(prep)`` claims and runs it; ``checkpoint(prep)`` requeues it.

    Args:
      device: the device as the user gave it (``auto``...), resolved again in the task: the trial was prepared on
        the submitting machine, which may have no GPU.
    """

    def __init__(self, device: str = "auto") -> None:
        self.device = device

    def __call__(self, prep: PreparedTrial) -> str:
        from optbench.engine.prepared import on_this_machine
        from optbench.sweep.tuning import run_job

        if self._tasks() > 1:
            self._export_distributed()
        done = run_job(on_this_machine(prep, self.device))
        return "elsewhere" if done is None else done.outcome  # a short string: nobody needs to unpickle it

    def checkpoint(self, prep: PreparedTrial) -> Any:
        """Called by submitit on preemption or time-out: the same task again; the trial's own checkpoint on disk
        holds its progress (the state at this instant, mid-step, is not saved)."""
        import submitit

        global _PREEMPTED
        _PREEMPTED = True
        return submitit.helpers.DelayedSubmission(self, prep)

    @staticmethod
    def _tasks() -> int:
        """Processes of this task (one per GPU when the task has several)."""
        import os

        return int(os.environ.get("SUBMITIT_LOCAL_NTASKS") or os.environ.get("SLURM_NTASKS") or 1)

    @staticmethod
    def _export_distributed() -> None:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


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


def _executor(opts: ClusterOptions, folder: Path) -> Any:
    import submitit

    check_available(opts)
    executor = submitit.AutoExecutor(folder=folder, cluster=opts.executor)
    tasks = max(1, opts.gpus_per_task)
    params: dict[str, Any] = dict(timeout_min=opts.time_limit, nodes=1, tasks_per_node=tasks,
                                  cpus_per_task=opts.cpus_per_task, gpus_per_node=opts.gpus_per_task)
    if opts.executor == "slurm":
        params.update(slurm_array_parallelism=opts.array_parallelism,
                      slurm_additional_parameters=dict(opts.extra))
        if opts.partition:
            params["slurm_partition"] = opts.partition
    executor.update_parameters(**params)
    return executor


def submit(preps: Sequence[PreparedTrial], opts: ClusterOptions, *, results_dir: Path,
           device: str = "auto") -> list[Any]:
    """Submit one task per prepared trial as one job array; returns submitit's jobs."""
    if not preps:
        return []
    executor = _executor(opts, logs_dir(results_dir))
    return list(executor.map_array(TrialTask(device), list(preps)))


def wait(jobs: Sequence[Any], *, poll: float = 0.5) -> dict[str, int]:
    """Block until every job has ended; returns the count of jobs per final state (``COMPLETED``, ``FAILED``...).
    Never reads the jobs' pickled results: outcomes are in the Parquet files."""
    while not all(job.done() for job in jobs):
        time.sleep(poll)
    states: dict[str, int] = {}
    for job in jobs:
        states[job.state] = states.get(job.state, 0) + 1
    return states


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
