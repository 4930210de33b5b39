"""Where a sweep stands, from the results directory alone: trials done, failed, running, interrupted and pending.

The sources, each written by the component that owns it: result files (done, or failed: error, oom, timeout,
diverged), claims held by live processes (running, ``.claims/``), checkpoints of trials with no result
(interrupted and resumable, ``.checkpoints/``), ``interrupted`` results, and the plans tunes leave in ``.plans/``
(pending: planned, with none of the above). Trials are matched by the identity digest of
:func:`optbench.sweep.engine.record_identity`, computed from a result's own record.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optbench.sweep.claims import claimed_elsewhere, claims_dir
from optbench.engine.prepared import checkpoint_path
from optbench.sweep.engine import record_identity
from optbench.store.failures import FAILED, failure_note, reason_line

STATES = ("done", "failed", "running", "interrupted", "pending")


@dataclass(frozen=True, kw_only=True)
class Line:
    """One (workload/size, submission) of the sweep and its trials' counts per state."""

    workload: str
    submission: str
    counts: dict[str, int]


def _plans(results_dir: Path) -> dict[str, tuple[str, str]]:
    """identity -> (workload/size, submission) of every planned trial."""
    from optbench.sweep.engine import PLANS_DIR

    out: dict[str, tuple[str, str]] = {}
    for path in sorted((results_dir / PLANS_DIR).glob("*.json")):
        try:
            entries = json.loads(path.read_text())
            for e in entries:
                out[str(e["identity"])] = (f"{e['workload']}/{e['size']}", str(e["submission"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a damaged plan only loses its pending count
    return out


def sweep_status(results_dir: Path) -> list[Line]:
    """The counts per state of every (workload/size, submission) known to the results directory."""
    from optbench.store.reader import read_results

    return _lines(Path(results_dir), read_results(Path(results_dir)).trials.to_dict("records"))


def _lines(results_dir: Path, records: list[dict]) -> list[Line]:
    """:func:`sweep_status` of the trials ``records`` read from ``results_dir``."""
    state: dict[str, str] = {}
    where: dict[str, tuple[str, str]] = _plans(results_dir)
    for rec in records:
        ident = record_identity(rec)
        where.setdefault(ident, (f"{rec['workload']}/{rec['size']}", rec["submission"]))
        outcome = rec["outcome"]
        new = "interrupted" if outcome == "interrupted" else ("failed" if outcome in FAILED else "done")
        if state.get(ident) in ("done", "failed") and new == "interrupted":
            continue  # a resumed trial's earlier interruption: its final result counts
        state[ident] = new
    for ident in where:
        if state.get(ident) in ("done", "failed"):
            continue
        if claimed_elsewhere(results_dir, ident):
            state[ident] = "running"
        elif checkpoint_path(results_dir, ident).exists():
            state[ident] = "interrupted"
        else:
            state.setdefault(ident, "pending")
    groups: dict[tuple[str, str], Counter] = {}
    for ident, key in where.items():
        groups.setdefault(key, Counter())[state.get(ident, "pending")] += 1
    return [Line(workload=w, submission=s, counts={k: groups[(w, s)].get(k, 0) for k in STATES})
            for (w, s) in sorted(groups)]


def print_status(results_dir: Path) -> None:
    """``optbench status``: the table of :func:`sweep_status`."""
    from rich.table import Table

    from optbench.console import console, escape

    from optbench.store.reader import read_results

    records = read_results(Path(results_dir)).trials.to_dict("records")
    lines = _lines(Path(results_dir), records)
    table = Table(title=escape(f"trials under {results_dir}"))
    for col in ("workload", "submission", *STATES):
        table.add_column(col, justify="left" if col in ("workload", "submission") else "right")
    for line in lines:
        table.add_row(escape(line.workload), escape(line.submission), *(str(line.counts[k]) for k in STATES))
    out = console()
    out.print(table)
    total = Counter()
    for line in lines:
        total.update(line.counts)
    out.print(", ".join(f"{total[k]} {k}" for k in STATES)
              + ("; interrupted trials resume with 'optbench run --resume' or by re-running the tune"
                 if total["interrupted"] else ""))
    if not lines and not claims_dir(results_dir).exists():
        out.print("no trials, plans or claims here yet")
    _print_failures(out, records, results_dir)


SHOWN_FAILURES = 5  # failed trials listed by run id under the table (the note counts them all)


def _print_failures(out: Any, records: list[dict], results_dir: Path) -> None:
    """How many trials failed, how to see why, and the latest few with their reasons."""
    from optbench.console import escape

    note = failure_note(records, results_dir)
    if note is None:
        return
    out.print(escape(note), soft_wrap=True)
    failed = sorted((r for r in records if r["outcome"] in FAILED), key=lambda r: str(r["created_at"]))
    for r in failed[-SHOWN_FAILURES:]:
        out.print(escape(f"  {r['run_id']}  {r['workload']}/{r['size']} {r['submission']} seed {r['seed']}: "
                         f"{r['outcome']}" + (f": {reason_line(r['error'])}" if reason_line(r["error"]) else "")),
                  soft_wrap=True)
