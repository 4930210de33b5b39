"""Starting a data-parallel ``optbench run``: ``--nproc N`` re-runs the same command under torchrun.

``optbench run --nproc 2 ARGS`` is ``python -m torch.distributed.run --standalone --nproc_per_node 2 -m optbench run
ARGS``: torchrun picks a free local port, starts N copies of the command with RANK/WORLD_SIZE/LOCAL_RANK set, and
each copy trains its share of every batch (:mod:`optbench.parallel.distributed`). Only rank 0 prints and writes.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence


def rank() -> int:
    """This process's torchrun rank (0 outside torchrun), read without importing torch (the rank's environment is
    checked fully when the trial starts, :func:`optbench.parallel.distributed.world`)."""
    raw = os.environ.get("RANK", "0")
    return int(raw) if raw.isdigit() else 0


def without_nproc(args: Sequence[str]) -> list[str]:
    """``args`` without ``--nproc N`` / ``--nproc=N`` (the copies torchrun starts must not start torchrun)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """The torchrun command line that runs ``optbench ARGS`` on ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "optbench", *args]


def torchrun(nproc: int, args: Sequence[str]) -> int:
    """Run ``optbench ARGS`` under torchrun on ``nproc`` processes; returns its exit code."""
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # torchrun's default is 1
    return subprocess.call(torchrun_command(nproc, args), env=env)


@contextlib.contextmanager
def quiet_unless_main(rank: int) -> Iterator[None]:
    """Silence standard output on ranks other than 0 (rank 0 reports for all); errors still reach stderr."""
    if rank == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield
