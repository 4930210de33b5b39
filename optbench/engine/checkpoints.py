"""Checkpoints of a trial's whole state, refused unless they belong to the same trial and code, and the record of
what an interruption cost.

A checkpoint file holds ``{"format": 1, "key": ..., "state": TrialState.state_dict()}``: tensors and plain values
only, written atomically and loaded with ``torch.load(..., weights_only=True)``. The key names the trial (workload,
size, submission and their versions, merged hyperparameters, seed, study, trial) and the engine's version
(:meth:`optbench.engine.prepared.PreparedTrial.checkpoint_key`); a checkpoint whose key differs is refused with a one-line
reason, never loaded. Beside it, ``<name>.progress`` holds the timed seconds the trial had reached (rewritten at most
ten times a second of wall clock): after a kill, the timed seconds past the checkpoint are the work lost, added up in
the trial's counters and recorded on its result. A checkpoint that cannot be resumed (unreadable, another trial's,
another device type's or device count's, a generator state that does not fit) is refused in one line
(:class:`UnusableCheckpoint`, a usage error: the command stops before training) and left exactly as it was: hours
of training are never discarded because a resume failed. A trial stopped by Ctrl-C is recorded as ``interrupted`` and noted
in ``<name>.interrupted``; when it is resumed and finishes, its final result supersedes that record, which is
deleted, so a resumed trial counts once in ``score``, ``report`` and ``status``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from optbench.errors import UsageError
from optbench.store.fsutil import atomic_file
from optbench.engine.state import TrialState

FORMAT = 1
HEARTBEAT_EVERY = 0.1  # seconds of wall clock between progress notes (each one small atomic write)


class UnusableCheckpoint(UsageError):
    """The trial's checkpoint cannot be resumed here; it is kept untouched (the message says why and what to do)."""


def progress_path(path: Path) -> Path:
    return path.with_name(path.name + ".progress")


def save(state: TrialState, path: Path, key: dict[str, Any]) -> None:
    """Write ``state`` under ``key`` atomically (the previous checkpoint stays whole until the rename)."""
    state.counters.last_checkpoint_timed = state.clock.timed
    with atomic_file(path) as fh:
        torch.save({"format": FORMAT, "key": key, "state": state.state_dict()}, fh)
    note_progress(path, state.clock.timed, force=True)


def load(state: TrialState, path: Path, key: dict[str, Any]) -> None:
    """Resume ``state`` from ``path``: check the key, restore, and count the resume and the seconds it lost.

    Raises:
      UnusableCheckpoint: the file is not a checkpoint of this format, belongs to another trial, code version,
        device type or device count, or holds a state this trial cannot take; the file is left as it was.
    """
    saved = _read(path)
    theirs = saved["key"]
    differ = sorted(k for k in set(key) | set(theirs) if key.get(k) != theirs.get(k))
    if differ:
        raise UnusableCheckpoint(f"checkpoint {str(path)!r} belongs to another trial or code version (differs in "
                                 f"{_differences(differ, key, theirs)}); it was kept: run the code and trial that "
                                 "wrote it, or delete it to start afresh")
    try:
        state.load_state_dict(saved["state"])
    except Exception as exc:  # ForeignState, a model or updater state that does not fit: nothing to train from
        raise UnusableCheckpoint(f"checkpoint {str(path)!r} cannot be resumed here ({_one_line(exc)}); it was "
                                 "kept: resume it where it was written, or delete it to start afresh") from None
    reached = _progress(path)
    c = state.counters
    c.resumes += 1
    c.lost_seconds += max(0.0, reached - state.clock.timed) if reached is not None else 0.0


def _read(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, checked for the format (a dict with a key dict and a state)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated by a crash outside the atomic rename, or not a checkpoint at all
        raise UnusableCheckpoint(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}); delete it to "
                                 "start the trial afresh") from None
    if (not isinstance(saved, dict) or saved.get("format") != FORMAT or not isinstance(saved.get("key"), dict)
            or not isinstance(saved.get("state"), dict)):
        raise UnusableCheckpoint(f"{str(path)!r} is not an optbench checkpoint of format {FORMAT}; delete it to "
                                 "start afresh")
    return saved


def _differences(names: list[str], mine: dict[str, Any], theirs: dict[str, Any]) -> str:
    """``names``, with both values for the settings of where a trial runs (``device_type: cuda here, cpu saved``)."""
    shown = ("device_type", "device_count", "deterministic", "matmul_precision")
    return ", ".join(f"{n}: {mine.get(n)} here, {theirs.get(n)} saved" if n in shown else n for n in names)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


_last_note: dict[Path, float] = {}


def note_progress(path: Path, timed: float, *, force: bool = False) -> None:
    """Note the timed seconds reached (at most every ``HEARTBEAT_EVERY`` s unless ``force``)."""
    now = time.monotonic()
    if not force and now - _last_note.get(path, -1e9) < HEARTBEAT_EVERY:
        return
    _last_note[path] = now
    with atomic_file(progress_path(path), "w") as fh:
        fh.write(json.dumps({"timed": timed}))


def _progress(path: Path) -> float | None:
    try:
        value = json.loads(progress_path(path).read_text()).get("timed")
    except (OSError, ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def finishing_path(path: Path) -> Path:
    return path.with_name(path.name + ".finishing")


def finishing(path: Path, result: Path) -> None:
    """Note, before the result is written, where it goes: a kill between writing the result and discarding the
    checkpoint must not make a resumed run train the finished trial again (:func:`finished_result`)."""
    with atomic_file(finishing_path(path), "w") as fh:
        fh.write(json.dumps({"result": str(result)}))


def finished_result(path: Path) -> Path | None:
    """The result of a trial that finished but was killed before discarding its checkpoint, if it exists."""
    try:
        result = Path(json.loads(finishing_path(path).read_text())["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if result.is_file() else None


def interrupted_path(path: Path) -> Path:
    return path.with_name(path.name + ".interrupted")


def note_interrupted(path: Path, result: Path) -> None:
    """Note a result recorded as ``interrupted`` for the trial checkpointed at ``path``: when the trial finishes,
    its final result supersedes this one (:func:`retire_interrupted`), so a resumed trial counts once."""
    with atomic_file(interrupted_path(path), "w") as fh:
        fh.write(json.dumps({"results": [*map(str, _interrupted(path)), str(result)]}))


def _interrupted(path: Path) -> list[Path]:
    try:
        listed = json.loads(interrupted_path(path).read_text())["results"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [Path(p) for p in listed if isinstance(p, str)] if isinstance(listed, list) else []


def retire_interrupted(path: Path) -> list[Path]:
    """Delete the ``interrupted`` results the trial at ``path`` left before it finished (its final result, written
    first, carries their resumes and lost seconds), and the note of them; returns the files deleted."""
    gone = []
    for result in _interrupted(path):
        try:
            result.unlink()
            gone.append(result)
        except FileNotFoundError:
            pass
    interrupted_path(path).unlink(missing_ok=True)
    return gone


def discard(path: Path) -> None:
    """Remove a finished trial's checkpoint, its progress and finishing notes, and the interrupted results its
    final one supersedes."""
    retire_interrupted(path)
    for p in (path, progress_path(path), finishing_path(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass
    _last_note.pop(path, None)
