"""Atomic file writes, shared by the results store, checkpoints and dataset preparation."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from optbench.errors import UsageError


@contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a hidden temporary file next to ``path``; on success fsync it and ``os.replace`` it onto ``path``.

    On an exception the temporary file is deleted and ``path`` is left as it was, so a reader never sees a
    half-written file under the final name (the temporary's name starts with "." and ends with ".tmp").

    Args:
      path: the final file; its folder is created if needed.
      mode: ``"wb"`` or ``"w"``.
    Yields:
      The open temporary file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def ensure_writable_dir(path: Path, *, what: str = "results directory") -> Path:
    """Create ``path`` if needed and prove it writable with a probe file, before any work is spent on it.

    A read-only file system, a path below a regular file, a directory without write permission or a full disk all
    fail here, as one :class:`UsageError` naming the path, instead of after a trial has trained.

    Returns:
      ``path``.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".optbench-probe.", suffix=".tmp", dir=path)
        try:
            os.write(fd, b"probe")
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(f"{what} {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path
