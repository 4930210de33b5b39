"""Claims: any number of processes working through one tune split its trials, and each trial runs exactly once.

Before running a planned trial a process claims it by creating ``<results>/.claims/<identity>.claim`` with
``O_CREAT | O_EXCL`` (atomic on POSIX and on NFSv3+), holding JSON that names the owner: a hash of the host name
(results carry no host names, and neither do claims), the PID and the process's start time (so a reused PID is not
mistaken for the owner). When the trial's result is written the claim becomes ``<identity>.done``, naming the
result file, so a process that planned the trial earlier and claims it later sees at once that it is finished.

A claim whose owner is gone (same host, PID not alive or started at another time) is stale: it is removed under a
lock of the claims folder and claimed afresh, so of two processes recovering the same stale claim only one wins. A
claim from another host is never taken over automatically (its owner cannot be checked from here); ``optbench tune``
counts such trials among those claimed by another process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from optbench.store.fsutil import atomic_file, pid_alive

CLAIMS_DIR = ".claims"


def _host() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:16]


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux), "" where it cannot be read."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22 of proc(5), counted after the command name


def _alive(pid: int, started: str) -> bool:
    """Whether the claim's owner still runs: its PID exists and, where known, started when the claim says."""
    return pid_alive(pid) and (not started or _start_time(pid) in ("", started))


def _job() -> str:
    """The scheduler's id of the task this process runs in ("" outside one). SLURM keeps a job's id when it
    requeues it, so a requeued task recognises the claim its preempted incarnation left on another node."""
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or ""


def owner() -> dict[str, object]:
    """What a claim made by this process says about its owner."""
    return {"host": _host(), "pid": os.getpid(), "started": _start_time(os.getpid()), "job": _job()}


def claims_dir(results_dir: Path) -> Path:
    return Path(results_dir) / CLAIMS_DIR


@dataclass(frozen=True)
class Claim:
    """A trial this process holds; :meth:`done` marks it finished, :meth:`release` gives it back."""

    path: Path

    def done(self, result: Path) -> None:
        """Replace the claim by a marker naming the result file (atomic rename)."""
        with atomic_file(self.path.with_suffix(".done"), "w") as fh:
            json.dump({"result": str(result)}, fh)
        self.release()

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def result_of(results_dir: Path, identity: str) -> Path | None:
    """The result file a finished trial's marker names, if the marker and the file exist."""
    marker = claims_dir(results_dir) / f"{identity}.done"
    try:
        result = Path(json.loads(marker.read_text())["result"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return result if result.is_file() else None


def is_done(results_dir: Path, identity: str) -> bool:
    """Whether a process already finished this trial (its marker names a result file that exists)."""
    return result_of(results_dir, identity) is not None


def _stale(path: Path) -> bool:
    """Whether the claim at ``path`` belongs to a process on this host that no longer runs."""
    try:
        info = json.loads(path.read_text())
        host, pid, started = info["host"], int(info["pid"]), str(info.get("started", ""))
    except FileNotFoundError:
        return False  # released meanwhile: the next attempt will create it
    except (OSError, ValueError, KeyError, TypeError):
        # Unreadable: a writer that died between creating and filling it, or garbage. Stale once it is not brand
        # new (a live writer fills it within microseconds).
        import time

        try:
            return time.time() - path.stat().st_mtime > 60
        except OSError:
            return False
    if info.get("job") and info.get("job") == _job() and (host != _host() or pid != os.getpid()):
        return True  # our own task's earlier incarnation, preempted and requeued (maybe on another node)
    return host == _host() and not _alive(pid, started)


def claimed_elsewhere(results_dir: Path, identity: str) -> bool:
    """Whether a live process (here or on another host) holds a claim on this trial."""
    path = claims_dir(results_dir) / f"{identity}.claim"
    return path.exists() and not _stale(path)


def _remove_if_stale(path: Path) -> bool:
    """Remove the claim at ``path`` if its owner is gone; True when it was removed (or had vanished).

    Under an exclusive lock of the claims folder, so that between reading the dead owner and unlinking, no other
    recovering process can unlink it and let a third create a fresh claim that we would then delete.
    """
    import fcntl

    with open(path.parent / ".recover.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not path.exists():
                return True
            if not _stale(path):
                return False
            path.unlink(missing_ok=True)
            return True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def try_claim(results_dir: Path, identity: str) -> Claim | None:
    """Claim trial ``identity``; None when another live process holds it or it is already done."""
    folder = claims_dir(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{identity}.claim"
    for _ in range(3):
        if is_done(results_dir, identity):
            return None
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _remove_if_stale(path):
                return None
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(owner(), fh)
        if is_done(results_dir, identity):  # finished between our check and our claim
            Claim(path).release()
            return None
        return Claim(path)
    return None


@contextlib.contextmanager
def claimed(results_dir: Path, identity: str) -> Iterator[Claim | None]:
    """``with claimed(dir, id) as c:`` run the trial if ``c`` is not None, then ``c.done(path)``; a claim not
    marked done (the trial raised) is released on the way out, so a later run retries it."""
    claim = try_claim(results_dir, identity)
    try:
        yield claim
    finally:
        if claim is not None:
            claim.release()

