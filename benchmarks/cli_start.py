"""How long a user waits for commands that train nothing, in two checkouts: ``optbench --help`` and the bad-input
path of ``optbench run`` (one line, exit code 2, before anything loads), timed as whole processes.

    python benchmarks/cli_start.py OLD_CHECKOUT NEW_CHECKOUT [--repeats 9]

Each command runs as ``python -m optbench ...`` with the checkout's folder first on ``sys.path`` (the same
interpreter for both), the two checkouts alternating, and the median of the repeats is printed with the ratio
new/old. Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = {"--help": ["--help"], "bad input": ["run", "--max-steps", "nan"]}


def once(checkout: Path, args: list[str]) -> float:
    """Seconds one ``python -m optbench ARGS`` takes, started in ``checkout`` (its package is imported)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "optbench", *args], cwd=checkout, capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--repeats", type=int, default=9)
    opts = parser.parse_args()
    for name, args in COMMANDS.items():
        times: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(opts.repeats):
            for label in ("old", "new"):  # alternating, so drift in the machine's load hits both alike
                times[label].append(once(getattr(opts, label), args))
        old, new = statistics.median(times["old"]), statistics.median(times["new"])
        print(f"{name:10s} old {old * 1000:7.0f} ms  new {new * 1000:7.0f} ms  new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
