"""The results store: one Parquet file per trial, written atomically; readers that survive foreign or corrupt files.

Layout: ``<results>/<workload>-<size>/<submission>/<run_id>.parquet``. Each file holds one row per evaluation
(:class:`EvalRow`) with the trial's metadata (:class:`TrialRecord`) repeated on every row, so a plain
``pandas.read_parquet`` of any file is self-describing. The same metadata is also stored as JSON under the Parquet
key ``optbench`` (with the schema version), which is how a file is recognised as ours. See README, "Results".

Writes go to a hidden temporary file in the destination folder, are fsync'ed, then renamed over the final name
(``os.replace`` is atomic on POSIX), so a trial killed at any moment leaves either a whole file or none; readers
only look at ``*.parquet`` names, never at the temporaries.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench import SCHEMA_VERSION
from optbench.fsutil import atomic_file

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

OUTCOMES = ("reached", "missed", "diverged", "error", "oom", "timeout")


@dataclass(frozen=True, kw_only=True)
class EvalRow:
    """One evaluation. Counts and seconds are totals since the start of the trial at the eval."""

    step: int
    examples: int
    tokens: int
    timed_seconds: float  # data loading + update steps (the scored clock)
    eval_seconds: float  # untimed evaluation so far
    wall_seconds: float  # everything, for the curious
    train_loss: float  # mean training loss over the steps since the previous eval
    metric_value: float  # the workload's metric (see TrialRecord.metric_name)
    learning_rate: float  # lr of the first parameter group at this step (NaN if none)
    batch_size: int
    metrics_json: str  # every metric the workload reported, as JSON


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """Everything about a trial but its curve. ``*_to_target`` are None when the target was missed."""

    schema_version: int
    run_id: str
    created_at: str  # UTC, ISO 8601
    workload: str
    size: str
    workload_origin: str  # "distribution==version" or the file and hash
    submission: str
    submission_origin: str
    hparams: str  # JSON, merged with defaults
    seed: int
    study: str
    trial: str
    outcome: str
    metric_name: str
    metric_goal: str  # "min" | "max"
    target: float
    time_to_target: float | None
    steps_to_target: int | None
    examples_to_target: int | None
    tokens_to_target: int | None
    best_metric: float | None
    total_steps: int
    total_timed_seconds: float
    max_steps: int | None
    max_seconds: float | None
    error: str | None  # traceback of an error / oom, reason of a divergence or timeout
    optbench_version: str
    code_hash: str
    git_commit: str
    torch_version: str
    python_version: str
    device: str
    device_name: str
    cpu_model: str
    compiled: bool = False  # the model ran under torch.compile


TRIAL_COLUMNS = tuple(f.name for f in fields(TrialRecord))
EVAL_COLUMNS = tuple(f.name for f in fields(EvalRow))


def _safe(name: str) -> str:
    """A file-system-safe version of a plugin name (specs may hold ':' and '/')."""
    return re.sub(r"[^A-Za-z0-9_.=-]+", "_", name).strip("._") or "_"


def trial_path(root: Path, record: TrialRecord) -> Path:
    """Where ``record``'s file goes under ``root``."""
    return root / f"{_safe(record.workload)}-{_safe(record.size)}" / _safe(record.submission) / f"{record.run_id}.parquet"


def write_trial(root: Path, record: TrialRecord, rows: Sequence[EvalRow]) -> Path:
    """Write one trial atomically.

    Args:
      root: the results directory (created if needed).
      record: the trial's metadata.
      rows: its evaluations, in order (may be empty for a trial that failed before its first eval).
    Returns:
      The path of the written file.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = trial_path(root, record)
    n = len(rows)
    columns: dict[str, Any] = {c: [getattr(r, c) for r in rows] for c in EVAL_COLUMNS}
    meta = asdict(record)
    columns.update({c: [meta[c]] * n for c in TRIAL_COLUMNS})
    table = pa.table(columns, schema=_schema())
    table = table.replace_schema_metadata({"optbench": json.dumps(meta)})
    with atomic_file(path) as fh:
        pq.write_table(table, fh, compression="zstd")
    return path


def _schema() -> Any:
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    out = []
    for f in (*fields(EvalRow), *fields(TrialRecord)):
        base = f.type if isinstance(f.type, str) else f.type.__name__
        out.append(pa.field(f.name, types[base.split("|")[0].strip()]))
    return pa.schema(out)


@dataclass(frozen=True, kw_only=True)
class Loaded:
    """What :func:`read_results` found: one row per trial, one row per eval, and the files it skipped (why)."""

    trials: pd.DataFrame
    evals: pd.DataFrame
    problems: list[str]


def read_trial(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read one trial file; raise ``ValueError`` with the reason if it is not a valid optbench result."""
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise ValueError(f"not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    raw = (table.schema.metadata or {}).get(b"optbench")
    if raw is None:
        raise ValueError("not an optbench result (no 'optbench' metadata)")
    meta = json.loads(raw)
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema version {version} is not supported (this optbench reads {SCHEMA_VERSION})")
    missing = [c for c in (*TRIAL_COLUMNS, *EVAL_COLUMNS) if c not in table.column_names]
    if missing:
        raise ValueError(f"missing columns {', '.join(missing)}")
    return meta, table.to_pandas()


def read_results(root: Path) -> Loaded:
    """Every trial under ``root``; files that are damaged or foreign are listed in ``problems``, not fatal.

    Returns:
      ``trials`` has the :class:`TrialRecord` columns plus ``workload_key`` ("<workload>/<size>", the unit of
      scoring); ``evals`` has the :class:`EvalRow` columns plus run_id, workload_key, submission, study, trial,
      seed, metric_goal and target.
    """
    import pandas as pd

    metas: list[dict[str, Any]] = []
    frames: list[pd.DataFrame] = []
    problems: list[str] = []
    for path in sorted(Path(root).rglob("*.parquet")) if Path(root).is_dir() else []:
        try:
            meta, frame = read_trial(path)
        except ValueError as exc:
            problems.append(f"{path}: {exc}")
            continue
        metas.append(meta)
        frames.append(frame)
    trials = pd.DataFrame(metas, columns=list(TRIAL_COLUMNS))
    trials["workload_key"] = trials["workload"] + "/" + trials["size"]
    keep = ["run_id", "submission", "study", "trial", "seed", "metric_goal", "target"]
    evals = (pd.concat([f[[*EVAL_COLUMNS, "workload", "size", *keep]] for f in frames], ignore_index=True)
             if frames else pd.DataFrame(columns=[*EVAL_COLUMNS, "workload", "size", *keep]))
    evals["workload_key"] = evals["workload"].astype(str) + "/" + evals["size"].astype(str)
    for col in ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "best_metric",
                "target", "total_timed_seconds"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    return Loaded(trials=trials, evals=evals, problems=problems)
