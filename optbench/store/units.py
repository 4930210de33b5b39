"""The unit of scoring: which trials a leaderboard may compare, and the name each is ranked under.

A workload at one size (the workload key, ``"linreg/tiny"``) is one unit as long as its trials are comparable:

* Only benchmark results are ranked: trials of ``optbench run``, ``optbench tune`` and imported AlgoPerf logs
  (:data:`~optbench.store.records.RANKED_KINDS`). A research recipe (``cbs``, ``lr-sweep``, ...) varies on purpose
  what a benchmark holds fixed, and prints its own tables; its trials are left out, and counted in a note.
* Trials of one workload key whose fixed settings differ (the target, or the configured global batch size) are
  never pooled into one cell: each setting is its own unit, named after what differs (``"linreg/tiny (batch 32)"``,
  ``"linreg/tiny (target 0.01)"``), and a note names the split. A file from before ``base_batch_size`` was recorded
  has its own setting, "batch not recorded".

Every command that scores (``score``, ``score --ci``, ``score --sensitivity``, ``report``) takes its trials from
:func:`scoring_units` through :meth:`optbench.store.reader.ResultSet.scoring_trials`, so all of them rank the same
units; the report's research sections read every trial on purpose (:meth:`~optbench.store.reader.ResultSet.all_trials`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optbench.store.records import RANKED_KINDS, RESEARCH_KINDS

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

NOT_RECORDED = "not recorded"  # the batch size of a file written before base_batch_size existed


def workload_key(frame: pd.DataFrame) -> pd.Series:
    """``"<workload>/<size>"`` of each row: a workload at one size, the unit of scoring before any split."""
    return frame["workload"].astype(str) + "/" + frame["size"].astype(str)


def with_workload_key(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``workload`` = ``workload_key`` ("linreg/tiny"): every trial, none split or left out."""
    return frame.assign(workload=frame["workload_key"])


@dataclass(frozen=True, kw_only=True, eq=False)
class Units:
    """What :func:`scoring_units` found.

    Attributes:
      trials: the ranked trials, ``workload`` = the unit each is ranked under.
      left_out: study kind -> trials left out (research recipes), in :data:`RESEARCH_KINDS` order.
      splits: workload key -> (what differs, e.g. ``"batch sizes"``, and the units it became), for each key whose
        trials differ in a fixed setting.
    """

    trials: pd.DataFrame
    left_out: dict[str, int]
    splits: dict[str, tuple[str, tuple[str, ...]]]

    def notes(self) -> list[str]:
        """One line each: the research trials left out, and the workloads split into units (when there are any)."""
        return [text for text in (self._left_out_note(), self._split_note()) if text]

    def nothing_ranked(self) -> str:
        """Why there is no leaderboard when every trial is a research trial (one line)."""
        return f"no trial to rank: {self._left_out_note()}"

    def evals(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Evaluation rows of ranked trials with ``workload`` = their trial's unit (rows of other runs dropped)."""
        unit = dict(zip(self.trials["run_id"], self.trials["workload"]))
        kept = frame[frame["run_id"].isin(unit)]
        return kept.assign(workload=kept["run_id"].map(unit))

    def _left_out_note(self) -> str | None:
        n = sum(self.left_out.values())
        if not n:
            return None
        kinds = ", ".join(f"{kind}: {count}" for kind, count in self.left_out.items())
        return (f"{n} research trial{'' if n == 1 else 's'} left out of the leaderboard ({kinds}); their recipes "
                "print their own tables")

    def _split_note(self) -> str | None:
        if not self.splits:
            return None
        parts = [f"{key} holds trials of different {what}, scored apart as {', '.join(units)}"
                 for key, (what, units) in self.splits.items()]
        return "; ".join(parts)


def scoring_units(trials: pd.DataFrame) -> Units:
    """The comparable trials of a trials table (with ``workload_key``, as the reader returns it), each named by its
    unit (see the module's docstring)."""
    ranked = trials["study_kind"].isin(RANKED_KINDS)
    counts = trials.loc[~ranked, "study_kind"].value_counts()
    order = [k for k in RESEARCH_KINDS if k in counts.index] + sorted(k for k in counts.index
                                                                      if k not in RESEARCH_KINDS)
    kept = trials[ranked]
    names, splits = _unit_names(kept)
    return Units(trials=kept.assign(workload=names), left_out={str(k): int(counts[k]) for k in order},
                 splits=splits)


def _unit_names(trials: pd.DataFrame) -> tuple[pd.Series, dict[str, tuple[str, tuple[str, ...]]]]:
    """Each trial's unit, and the workload keys that were split (what differs, the units made)."""
    names = trials["workload_key"].astype(object)
    splits: dict[str, tuple[str, tuple[str, ...]]] = {}
    for key, group in trials.groupby("workload_key", sort=True):
        settings = {"batch": group["base_batch_size"].map(_batch), "target": group["target"].map(_number)}
        differ = [label for label, values in settings.items() if values.nunique() > 1]
        if not differ:
            continue
        unit = {i: f"{key} (" + ", ".join(f"{label} {settings[label][i]}" for label in differ) + ")"
                for i in group.index}
        names.loc[group.index] = [unit[i] for i in group.index]
        what = " and ".join({"batch": "batch sizes", "target": "targets"}[label] for label in differ)
        ordered = group.sort_values(["base_batch_size", "target"], na_position="first", kind="stable").index
        splits[str(key)] = (what, tuple(dict.fromkeys(unit[i] for i in ordered)))  # by batch size, then target
    return names, splits


def _batch(value: Any) -> str:
    """A configured batch size as a unit's name shows it; :data:`NOT_RECORDED` for a file from before the field."""
    return NOT_RECORDED if value is None or (isinstance(value, float) and math.isnan(value)) else str(int(value))


def _number(value: float) -> str:
    """A target as short as ``:g`` writes it, unless that would merge two different targets (then exact)."""
    short = f"{float(value):g}"
    return short if float(short) == float(value) else repr(float(value))
