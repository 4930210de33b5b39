"""What went wrong with recorded trials, said the same way by ``run``, ``show``, ``score``, ``status`` and the report.

A failed trial's record keeps its reason in ``error`` (the whole traceback of an ``error`` or ``oom``, one line for a
divergence or a timeout); its last line names the exception and its message, which is what a summary shows. The
whole record and traceback are printed by ``optbench show RUN_ID``.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FAILED = ("error", "oom", "timeout", "diverged")  # outcomes of a trial that ended before its budget for a fault
REASON_CHARS = 200  # a reason shown in a summary line or a table cell; `show` prints the whole text


# Where a traceback's (last) exception starts: ``Type: message`` or a bare ``Type`` at the start of a line, the type
# possibly dotted (``torch.OutOfMemoryError``); a message's own lines rarely start with one word and a colon.
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(: |$)")


def reason_line(error: Any, *, limit: int = REASON_CHARS) -> str:
    """The one line that says why a trial failed: for a stored traceback, its last exception's type and message
    (a message of several lines joined into one); for a one-line reason, that line; shortened to ``limit``
    characters; ``""`` when none was stored."""
    if not isinstance(error, str):
        return ""
    lines = [line.rstrip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    starts = [i for i, line in enumerate(lines) if _EXCEPTION_LINE.match(line) and not line.startswith("Traceback")]
    text = " ".join(line.strip() for line in lines[starts[-1] if starts else -1:])
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def show_command(run_id: str, results_dir: Path | None = None) -> str:
    """The command that prints a trial's record and whole reason, with ``--results-dir`` unless it is the default."""
    from optbench.store.paths import results_dir as default_results

    where = "" if results_dir is None or Path(results_dir) == default_results() else \
        f" --results-dir {shlex.quote(str(results_dir))}"
    return f"optbench show {run_id}{where}"


def failure_note(records: Iterable[Mapping[str, Any]], results_dir: Path | None = None) -> str | None:
    """One line counting the failed trials by outcome, with the command that shows why; None when none failed.

    e.g. ``3 trials failed (2 error, 1 oom); see why with 'optbench show RUN_ID', e.g. 'optbench show 2026...'``
    (naming the latest failed trial; ``results_dir`` is added to it unless it is the default).
    """
    failed = [r for r in records if r.get("outcome") in FAILED]
    if not failed:
        return None
    counts = Counter(str(r["outcome"]) for r in failed)
    kinds = ", ".join(f"{counts[o]} {o}" for o in FAILED if counts[o])
    latest = max(failed, key=lambda r: str(r.get("created_at", "")))
    plural = "s" if len(failed) != 1 else ""
    return (f"{len(failed)} trial{plural} failed ({kinds}); see why with 'optbench show RUN_ID', "
            f"e.g. '{show_command(str(latest['run_id']), results_dir)}'")


# A first stretch this many times slower per step than the median of the later ones, and at least this many timed
# seconds beyond what the later pace would have taken, is compilation or another one-off warm-up (heavyball's
# compiled steps, torch.compile): timed, as in AlgoPerf, unless --warmup-steps takes it off the clock.
SLOW_START_RATIO = 5.0
SLOW_START_SECONDS = 1.0
WARMUP_HINT_STEPS = 10  # the --warmup-steps suggested at most: compilation happens in the first few steps


def slow_start(steps: Iterable[Any], timed_seconds: Iterable[Any], *, budget_spent: bool = False) -> str | None:
    """A note when a trial's first stretch of steps was much slower than the rest, with the ``--warmup-steps`` hint.

    Args:
      steps, timed_seconds: cumulative step counts and timed seconds at points of the trial, in order (its
        evaluation rows, from step 0; or the ends of its stretches).
      budget_spent: the trial missed after spending its seconds budget (:func:`spent_seconds`): then a first
        stretch that took at least half of it is noted too, as possibly compilation, even with no later stretch to
        compare it with (a compiled optimizer's first steps can eat a whole budget).
    Returns:
      e.g. ``the first 100 steps took 31.2 s timed (31x the later 0.01 s per step): compilation or warm-up, which
      is timed; --warmup-steps 10 runs that many steps untimed (then undone) before the clock starts``; None
      otherwise.
    """
    import math
    import statistics

    points = [(int(s), float(t)) for s, t in zip(steps, timed_seconds)
              if s is not None and t is not None and math.isfinite(float(s)) and math.isfinite(float(t))]
    rates = [((t1 - t0) / (s1 - s0), s1 - s0, t1 - t0)
             for (s0, t0), (s1, t1) in zip(points, points[1:]) if s1 > s0]
    if not rates:
        return None
    first, n, seconds = rates[0]
    what = "the first step" if n == 1 else f"the first {n} steps"
    hint = (f"--warmup-steps {min(n, WARMUP_HINT_STEPS)} runs that many steps untimed (then undone) before the "
            "clock starts")
    later = statistics.median(r for r, _, _ in rates[1:]) if len(rates) > 1 else 0.0
    if later > 0 and first >= SLOW_START_RATIO * later and seconds - n * later >= SLOW_START_SECONDS:
        return (f"{what} took {seconds:.3g} s timed ({first / later:.0f}x the later {later:.3g} s per step): "
                f"compilation or warm-up, which is timed; {hint}")
    total = points[-1][1] - points[0][1]
    if budget_spent and seconds >= SLOW_START_SECONDS and seconds >= 0.5 * total:
        return (f"{what} took {seconds:.3g} s timed, {seconds / total:.0%} of the seconds the trial spent before "
                f"its budget ran out: if that was compilation or warm-up (a compiled optimizer's first steps), {hint}")
    return None


def spent_seconds(rec: Mapping[str, Any]) -> bool:
    """Whether a trial missed its target after spending its seconds budget."""
    limit = rec.get("max_seconds")
    return (rec.get("outcome") == "missed" and isinstance(limit, (int, float)) and limit > 0
            and float(rec.get("total_timed_seconds") or 0.0) >= limit)
