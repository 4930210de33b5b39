"""Starting a data-parallel trial: ``--nproc N`` runs each trial on N torchrun processes of this machine.

:func:`call` runs a job function on the ranks: ``python -m torch.distributed.run --standalone --nproc_per_node N -m
optbench.parallel.launch FN JOB OUT``. torchrun picks a free local port and starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; each runs ``FN(job)`` and trains its share of every batch
(:mod:`optbench.parallel.distributed`); rank 0 alone prints and writes the result, and hands its return value back
in ``OUT``. One torchrun per trial: a trial whose rank failed leaves its process group behind with its processes,
and the next trial starts a fresh one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


INTERRUPTED = 130  # the exit code of ranks stopped by Ctrl-C


def rank() -> int:
    """This process's torchrun rank (0 outside torchrun), read without importing torch (the rank's environment is
    checked fully when the trial starts, :func:`optbench.parallel.distributed.world`)."""
    raw = os.environ.get("RANK", "0")
    return int(raw) if raw.isdigit() else 0


@contextlib.contextmanager
def quiet_unless_main(rank: int) -> Iterator[None]:
    """Silence standard output on ranks other than 0 (rank 0 reports for all); errors still reach stderr."""
    if rank == 0:
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


def call(fn: str, job: Mapping[str, Any], *, nproc: int) -> Any:
    """``fn(job)`` on ``nproc`` torchrun processes of this machine; rank 0's return value comes back.

    ``fn`` is a ``package.module:function`` path and ``job`` JSON-able: both reach the ranks as a file, never as a
    pickle. Every rank runs ``fn(job)`` (the trial runner splits each batch over them); rank 0 writes the value.

    Raises:
      KeyboardInterrupt: the ranks were interrupted (Ctrl-C reaches them with this process).
      RuntimeError: the ranks ended without rank 0 writing a value.
    """
    import json
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="optbench-ranks-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "value.json"
        job_file.write_text(json.dumps(dict(job)))
        env = dict(os.environ)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))  # torchrun's default is 1
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "optbench.parallel.launch", fn, str(job_file), str(out_file)]
        code = subprocess.call(cmd, env=env)
        if out_file.exists():
            return json.loads(out_file.read_text())
    if code == INTERRUPTED:
        raise KeyboardInterrupt
    raise RuntimeError(f"its {nproc} torchrun processes exited with code {code} before rank 0 recorded a result")



def _rank_main(argv: Sequence[str]) -> int:
    """One torchrun rank of :func:`call`: ``fn(job)``, rank 0 writing the value; the exit code."""
    import json
    from pathlib import Path

    from optbench.errors import UsageError
    from optbench.parallel.distributed import leave
    from optbench.parallel.executors import resolve

    fn, job_file, out_file = argv
    code = 0
    try:
        with quiet_unless_main(rank()):
            value = resolve(fn)(json.loads(Path(job_file).read_text()))
        if rank() == 0:
            tmp = Path(out_file).with_suffix(".tmp")
            tmp.write_text(json.dumps(value))
            tmp.replace(out_file)  # the parent never reads half a value
    except KeyboardInterrupt:
        code = INTERRUPTED
    except UsageError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        code = 2
    leave(code)
    return code


if __name__ == "__main__":  # pragma: no cover - run by torchrun as the ranks of call()
    sys.exit(_rank_main(sys.argv[1:]))
