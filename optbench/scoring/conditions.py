"""Whether times compare: trials ranked by time must have run under comparable conditions, or their times measure
the machines as much as the optimizers (steps, examples and tokens do not depend on the machine).

:func:`time_warning` reads the conditions each result records (``device_name``, and the load fields of
:mod:`optbench.engine.load`) and returns one line when, on some workload, the trials compared ran

* on different devices (``device_name``), or
* under very different loads: their load per CPU (``load_average / cpu_count``, the trial itself included) differs by
  more than :data:`LOAD_GAP`, or, for CPU trials, the share of the wall time one trial's thread ran is less than
  :data:`SHARE_RATIO` of another's (on a GPU the host thread's share depends on how the optimizer synchronises, so
  it is not compared there).

Files from before these fields (no load recorded) are left out of the load comparison. Pure functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from optbench.store.records import finite_or_none

LOAD_GAP = 0.5  # load per CPU: one trial had half the machine's CPUs busy with other work that another did not
SHARE_RATIO = 0.75  # one CPU trial's thread got less than 3/4 of the CPU time another's got


def load_per_cpu(row: Mapping[str, Any]) -> float | None:
    """The trial's mean load average per available CPU (None when either was not recorded)."""
    load, cpus = finite_or_none(row.get("load_average")), finite_or_none(row.get("cpu_count"))
    return load / cpus if load is not None and cpus else None


def _differences(rows: list[Mapping[str, Any]]) -> list[str]:
    """What differs among the trials of one workload: devices, load per CPU, CPU share (empty: comparable)."""
    out = []
    devices = sorted({str(r.get("device_name") or "") for r in rows} - {""})
    if len(devices) > 1:
        out.append("devices " + " vs ".join(devices))
    loads = [x for x in map(load_per_cpu, rows) if x is not None]
    if loads and max(loads) - min(loads) > LOAD_GAP:
        out.append(f"load per CPU {min(loads):.2f} to {max(loads):.2f}")
    shares = [x for x in (finite_or_none(r.get("cpu_share")) for r in rows if r.get("device") == "cpu") if x is not None]
    if shares and min(shares) < SHARE_RATIO * max(shares):
        out.append(f"CPU share {min(shares):.0%} to {max(shares):.0%}")
    return out


def time_warning(trials: Iterable[Mapping[str, Any]], *, key: str = "workload") -> str | None:
    """One line saying which workloads' compared trials ran on different devices or under very different loads
    (see the module docstring), pointing to ``--by steps``; None when every workload's trials are comparable.

    Args:
      trials: one mapping per compared trial (a trials table's records), with ``device_name``, ``device`` and the
        load fields where recorded.
      key: the field that groups trials that are compared with each other (the scoring unit).
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in trials:
        groups.setdefault(str(row.get(key, "")), []).append(row)
    found = [f"{name}: {', '.join(diffs)}" for name, rows in sorted(groups.items())
             if (diffs := _differences(rows))]
    if not found:
        return None
    return ("warning: ranked by time, trials ran on different devices or under very different loads ("
            + "; ".join(found) + "): times measure the machines as much as the optimizers; compare with --by steps")
