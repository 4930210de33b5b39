"""The trial runner: trains one (workload, submission, hyperparameters, seed) trial to its target or its budget.

The runner owns the clock (timed: data loading + update steps; untimed: evaluation, logging, checkpointing), the
evaluation schedule, stopping, and the translation of every failure into an outcome recorded as data: a NaN or
exploding loss is ``diverged``, an exception in plugin code ``error`` (traceback kept), running out of memory
``oom``, exceeding the wall-clock limit ``timeout`` (even inside a step that never returns), spending the budget
``missed``, Ctrl-C ``interrupted``. Bad user input is a :class:`~optbench.errors.UsageError` raised before anything
runs: :func:`optbench.engine.prepared.prepare` validates every value once, and the runner consumes the
:class:`~optbench.engine.prepared.PreparedTrial` it returns.

The loop itself, and what one step does, is :class:`optbench.engine.loop.TrialLoop`; the record a trial leaves is
built by :func:`optbench.engine.record.record_of`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from optbench.api import Submission, Workload
from optbench.engine import checkpoints
from optbench.engine.backends import TrialSettings
from optbench.engine.load import LoadMeter
from optbench.engine.loop import Observer, Stop, TrialLoop, TrialTimeout, classify, derive_seed
from optbench.engine.prepared import PreparedTrial, TrialConfig, prepare, resolve_device, resolve_size
from optbench.engine.record import record_of
from optbench.errors import TrialAborted, UsageError
from optbench.parallel import distributed
from optbench.parallel.distributed import Group, PeerFailed
from optbench.parallel.executors import preempted
from optbench.plugins.registry import Loaded
from optbench.store.records import EvalRow, TrialRecord, trial_path
from optbench.store.writer import write_trial

__all__ = ["TrialConfig", "PreparedTrial", "TrialResult", "prepare", "resolve_device", "resolve_size", "run_trial",
           "run_prepared", "derive_seed"]


@dataclass(frozen=True, kw_only=True)
class TrialResult:
    """A finished trial: its record, evaluation rows, where the file went, and a note when it went elsewhere."""

    record: TrialRecord
    rows: list[EvalRow]
    path: Path | None  # None on the ranks other than 0 of a data-parallel trial (rank 0 writes)
    note: str | None = None


@contextlib.contextmanager
def deadline(seconds: float | None, *, error: type[BaseException] = TrialTimeout) -> Iterator[None]:
    """Raise ``error`` (:class:`TrialTimeout`) into the enclosed code once ``seconds`` of wall clock have passed.

    A step that never returns (a plugin that sleeps, spins in Python or waits on a lock) is interrupted by SIGALRM
    wherever it is, not only between steps. Signals reach only the main thread; elsewhere (and on platforms
    without ``setitimer``) the loop's check between steps is the fallback. One deadline at a time: an inner one
    replaces an outer one's timer.
    """
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise error()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_trial(workload: Loaded[Workload], submission: Loaded[Submission], cfg: TrialConfig, *,
              results_dir: Path, observer: Observer | None = None) -> TrialResult:
    """Prepare and run one trial (the library's one-call entry point); see :func:`run_prepared`.

    Raises:
      UsageError: bad input (unknown size or hyperparameter, a value out of bounds, unavailable device, missing
        data), before anything trains.
    """
    return run_prepared(prepare(workload, submission, cfg, results_dir=results_dir), observer=observer)


_TRIALS_STARTED = 0  # trials this process has run: names each trial's failure flag among the ranks


def run_prepared(prep: PreparedTrial, *, observer: Observer | None = None) -> TrialResult:
    """Run one prepared trial and write its Parquet file; every failure of the trial becomes its outcome.

    Set-up errors a user can fix (missing data, a required hyperparameter) raise :class:`UsageError` before
    training; from the first step on, anything a plugin raises, ``SystemExit`` included, is the outcome
    ``error`` (or ``oom``), the wall-clock deadline is ``timeout``, and Ctrl-C records the trial as
    ``interrupted`` before stopping the command. The result is always written: if the results directory fails,
    to a rescue directory named in :attr:`TrialResult.note`.

    Under torchrun every rank calls this with the same trial; rank 0 alone writes the result (the others return
    it with ``path`` None). A rank whose trial fails tells the others, which stop at their next collective; rank 0
    records the failing rank's outcome. The process group cannot be used again, so a next trial of the same process
    raises :class:`TrialAborted` on every rank (the sweep engine starts one torchrun per trial, so this happens
    only under a torchrun started by hand).

    Args:
      prep: the trial, validated by :func:`optbench.engine.prepared.prepare`.
      observer: optional progress receiver.
    Returns:
      The written record, its evaluation rows and the file's path.
    """
    global _TRIALS_STARTED
    _TRIALS_STARTED += 1
    if prep.owns_checkpoint and prep.resume:
        done = checkpoints.finished_result(prep.checkpoint)
        if done is not None:  # finished, then killed before its checkpoint was discarded: do not train it again
            checkpoints.discard(prep.checkpoint)
            return _recorded(done)
    wall_start = time.perf_counter()
    here = distributed.world()
    group = _join_group(prep, here)
    observer = observer if here.is_main else None
    with LoadMeter.for_trial(prep.device) as load:  # the machine's load meanwhile, recorded beside the times
        ended = _train(prep, observer=observer, group=group, wall_start=wall_start)
    if group is not None and ended.outcome in ("error", "oom", "timeout", "interrupted") and not Group.broken:
        group.fail(ended.outcome, ended.reason)  # the peers stop at their next collective
    rows = ended.loop.state.rows if ended.loop is not None else []
    record = record_of(prep, ended.outcome, ended.reason, ended.loop, group, load=load.result)
    began = ended.loop is not None and ended.loop.began  # resumed or started afresh: the checkpoint is this run's
    path, note = _write_settling_checkpoint(prep, record, rows, trained=began) if here.is_main else (None, None)
    if ended.interrupted:
        raise KeyboardInterrupt
    if group is not None and Group.broken:
        group.finished_recording(wait=not here.is_main)  # the launcher must not tear rank 0 down mid-write
    return TrialResult(record=record, rows=rows, path=path, note=note)


def _join_group(prep: PreparedTrial, here: distributed.World) -> Group | None:
    """The process group of a trial on several torchrun ranks (None for one process).

    Raises:
      TrialAborted: an earlier trial of this process broke the group (a rank failed): it cannot be reused.
    """
    if here.size == 1:
        return None
    if Group.broken:
        raise TrialAborted(f"not running {prep.title}: an earlier trial of this command failed on one rank, and "
                           "its process group cannot be reused; run the remaining trials again")
    if prep.device.startswith("cuda"):
        torch.cuda.set_device(torch.device(prep.device))
    return Group(here, torch.device(prep.device), trial_index=_TRIALS_STARTED)


@dataclass(frozen=True)
class _Ended:
    """How a trial's training ended: its outcome, the reason, and the loop (None when set-up failed)."""

    outcome: str
    reason: str | None
    loop: TrialLoop | None
    interrupted: bool = False  # Ctrl-C here: recorded, then re-raised to stop the command


def _train(prep: PreparedTrial, *, observer: Observer | None, group: Group | None, wall_start: float) -> _Ended:
    """Set up and run the loop (resumed from the trial's checkpoint when there is one) under the trial's torch
    settings; every way it ends is an outcome, except bad input found before the first step (a :class:`UsageError`:
    a checkpoint that cannot be resumed is one, and is kept) and a preemption (re-raised for submitit to requeue the
    task)."""
    loop: TrialLoop | None = None
    try:
        with deadline(prep.timeout), TrialSettings(device=torch.device(prep.device), deterministic=prep.deterministic,
                                                   tf32=prep.tf32):
            task = prep.workload.obj.setup(prep.size, device=torch.device(prep.device), data_dir=prep.data_dir)
            loop = TrialLoop(prep=prep, task=task, observer=observer, wall_start=wall_start, group=group)
            with loop.watch_compiles():
                loop.begin()
                return _Ended(*loop.run(), loop)
    except Stop as stop:
        return _Ended(stop.outcome, stop.reason, loop)
    except TrialTimeout:
        return _Ended("timeout", f"wall-clock limit of {prep.timeout:g} s exceeded", loop)
    except PeerFailed as peer:
        return _Ended(peer.outcome, f"rank {peer.rank} of {distributed.world().size}: {peer.reason or peer.outcome}",
                      loop)
    except checkpoints.UnusableCheckpoint:
        raise  # the command stops in one line; the checkpoint stays as it was
    except UsageError:
        if loop is None or not loop.state.counters.step:
            raise  # found in set-up, before any training: bad input, nothing to record
        return _Ended("error", _traceback(), loop)
    except KeyboardInterrupt:
        return _Ended("interrupted", "stopped by the user (Ctrl-C)", loop, interrupted=True)
    except BaseException as exc:  # plugin code failed (SystemExit too): the trial's outcome, not a crash
        if preempted():
            raise  # submitit's preemption exit: the task is requeued and resumes from the trial's checkpoint
        return _Ended(_failure_outcome(prep, exc, wall_start), _traceback(), loop)


def _failure_outcome(prep: PreparedTrial, exc: BaseException, wall_start: float) -> str:
    """``oom`` or ``error`` for what a plugin raised; ``timeout`` past the deadline, whatever ended the trial (the
    deadline's exception can come back wrapped: torch re-raises errors from inside its C++ calls as RuntimeError)."""
    outcome = classify(exc)
    if prep.timeout is not None and time.perf_counter() - wall_start >= prep.timeout:
        outcome = "timeout"
    if prep.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return outcome


def _write_settling_checkpoint(prep: PreparedTrial, record: TrialRecord, rows: list[EvalRow], *,
                               trained: bool) -> tuple[Path, str | None]:
    """Write the result (rank 0), and settle the trial's own checkpoint around it: a finished trial's checkpoint is
    marked finishing before the write and discarded after it; an interrupted trial's keeps a note of its record,
    deleted once the resumed trial finishes. A checkpoint the trial never got to resume (``trained`` False: the
    deadline or Ctrl-C came during set-up or the load) is left as it was, with its notes."""
    final = (prep.owns_checkpoint and record.outcome != "interrupted" and trained and prep.checkpoint.exists())
    if final:
        checkpoints.finishing(prep.checkpoint, trial_path(prep.results_dir, record))
    path, note = _write(prep, record, rows)
    if final:
        checkpoints.discard(prep.checkpoint)  # the result is written: nothing left to resume
    elif prep.owns_checkpoint and note is None:
        if record.outcome == "interrupted":  # superseded by the trial's final result, once it is resumed and finishes
            checkpoints.note_interrupted(prep.checkpoint, path)
        elif not prep.checkpoint.exists():  # finished without ever saving one (interrupted before the first, rerun)
            checkpoints.retire_interrupted(prep.checkpoint)
    return path, note


def _recorded(path: Path) -> TrialResult:
    """The result already written at ``path``, as :func:`run_prepared` returns it."""
    from optbench.store.reader import read_trial

    meta, frame = read_trial(path)
    rows = [EvalRow(**{k: row[k] for k in EvalRow.__dataclass_fields__}) for row in frame.to_dict("records")]
    return TrialResult(record=TrialRecord(**meta), rows=rows, path=path)


def _traceback() -> str:
    """The current exception's traceback, with the home folder written as ``~`` (results carry no user names)."""
    return traceback.format_exc().replace(str(Path.home()), "~")


def rescue_dirs() -> list[Path]:
    """Where a result goes when its results directory cannot be written, in order of preference."""
    from optbench.store import paths

    return [paths.data_dir() / "rescued-results", Path(tempfile.gettempdir()) / f"optbench-rescued-{os.getuid()}"]


def _write(prep: PreparedTrial, record: TrialRecord, rows: list[EvalRow]) -> tuple[Path, str | None]:
    """Write the result; never lose it silently: on failure, write it to a rescue directory and say where."""
    try:
        return write_trial(prep.results_dir, record, rows), None
    except (OSError, ValueError) as exc:
        first = exc
    for root in rescue_dirs():
        try:
            path = write_trial(root, record, rows)
        except (OSError, ValueError):
            continue
        return path, f"could not write to {str(prep.results_dir)!r} ({first}); the result was kept at {str(path)!r}"
    raise UsageError(f"could not write the result of {prep.title} to {str(prep.results_dir)!r} ({first}) "
                     f"nor to any rescue directory; outcome {record.outcome}, best {record.best_metric}")
