"""The results store: one Parquet file per trial, written atomically; readers that survive foreign or corrupt files.

Layout: ``<results>/<workload>-<size>/<submission>/<run_id>.parquet``. Each file holds one row per evaluation
(:class:`EvalRow`) with the trial's metadata (:class:`TrialRecord`) repeated on every row, so a plain
``pandas.read_parquet`` of any file is self-describing. The same metadata is also stored as JSON under the Parquet
key ``optbench`` (with the schema version), which is how a file is recognised as ours. See README, "Results".

Writes go to a hidden temporary file in the destination folder, are fsync'ed, then renamed over the final name
(``os.replace`` is atomic on POSIX), so a trial killed at any moment leaves either a whole file or none; readers
only look at ``*.parquet`` names, never at the temporaries, and remove those whose writer is dead. A reader never
fails on what it finds: a damaged, foreign or copied file is listed as a problem and not counted.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench import SCHEMA_VERSION
from optbench.fsutil import atomic_file, clean_stale_temporaries, is_dir, is_valid_text, printable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# "interrupted": stopped by Ctrl-C; scored as not reached, and a re-run of the same tune runs the trial again.
OUTCOMES = ("reached", "missed", "diverged", "error", "oom", "timeout", "interrupted")


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


def trial_dir(root: Path, *, workload: str, size: str, submission: str) -> Path:
    """The folder under ``root`` that holds the results of ``submission`` on ``workload``/``size``."""
    return Path(root) / f"{_safe(workload)}-{_safe(size)}" / _safe(submission)


def trial_path(root: Path, record: TrialRecord) -> Path:
    """Where ``record``'s file goes under ``root``."""
    return trial_dir(root, workload=record.workload, size=record.size, submission=record.submission) / (
        f"{record.run_id}.parquet")


def _check_text(record: TrialRecord, rows: Sequence[EvalRow]) -> None:
    """Refuse text that is not valid Unicode (lone surrogates: undecodable bytes of a file name or log)."""
    texts = [(f"trial field {k!r}", v) for k, v in asdict(record).items() if isinstance(v, str)]
    texts += [(f"metrics_json of the evaluation at step {r.step}", r.metrics_json) for r in rows]
    for where, text in texts:
        if not is_valid_text(text):
            raise ValueError(f"{where} is not valid UTF-8 text (undecodable bytes?): {printable(text)}")


def write_trial(root: Path, record: TrialRecord, rows: Sequence[EvalRow]) -> Path:
    """Write one trial atomically.

    Args:
      root: the results directory (created if needed).
      record: the trial's metadata.
      rows: its evaluations, in order (may be empty for a trial that failed before its first eval).
    Returns:
      The path of the written file.
    Raises:
      ValueError: a text field holds undecodable bytes (surrogate escapes); the message names the field. Nothing
        is written then.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    _check_text(record, rows)
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


# ---------------------------------------------------------------------------------------------------- reading

_INT64 = 2**63
_NON_NEGATIVE = ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "total_steps",
                 "total_timed_seconds")  # scoring refuses negative or non-finite measures: not ours then
_FINITE = ("target", *_NON_NEGATIVE)
_GOALS = ("min", "max")


def _field_types() -> dict[str, tuple[str, bool]]:
    """TrialRecord field -> (base type name, whether None is allowed), from the dataclass annotations."""
    out = {}
    for f in fields(TrialRecord):
        parts = [p.strip() for p in str(f.type).split("|")]
        out[f.name] = (parts[0], "None" in parts[1:])
    return out


_TYPES = _field_types()


def _as_float(value: float) -> float:
    try:
        return float(value)
    except OverflowError:  # an integer beyond float range (JSON allows any); copysign would convert it again
        return math.inf if value > 0 else -math.inf


def _check_value(name: str, value: Any) -> Any:
    """``value`` of field ``name`` as the reader returns it; ``ValueError`` if it has the wrong type or range."""
    base, optional = _TYPES[name]
    if value is None:
        if optional:
            return None
        raise ValueError(f"field {name!r} is null")
    if base == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and -_INT64 <= value < _INT64
    elif base == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok:
            value = _as_float(value)
    elif base == "bool":
        ok = isinstance(value, bool)
    else:
        ok = isinstance(value, str) and is_valid_text(value)
    if not ok:
        raise ValueError(f"field {name!r} is not a valid {base}: {printable(repr(value))[:80]}")
    if name in _FINITE and not math.isfinite(value):
        raise ValueError(f"field {name!r} is not finite: {value!r}")
    if name in _NON_NEGATIVE and value < 0:
        raise ValueError(f"field {name!r} is negative: {value!r}")
    return value


def check_meta(meta: Any) -> dict[str, Any]:
    """The ``optbench`` metadata of a result file, checked field by field (every type, range and vocabulary).

    Raises:
      ValueError: not a JSON object, another schema version, a missing field, or a field of the wrong type, out of
        range, an unknown outcome or goal, or hparams that are not a JSON object; the message says which.
    """
    if not isinstance(meta, dict):
        raise ValueError(f"'optbench' metadata is a JSON {type(meta).__name__}, not an object")
    version = meta.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ValueError(f"schema version {printable(repr(version))[:40]} is not supported "
                         f"(this optbench reads {SCHEMA_VERSION})")
    out: dict[str, Any] = {}
    for f in fields(TrialRecord):
        if f.name not in meta and f.default is MISSING:
            raise ValueError(f"field {f.name!r} is missing")
        out[f.name] = _check_value(f.name, meta.get(f.name, f.default))
    if out["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome {out['outcome']!r} is not one of {', '.join(OUTCOMES)}")
    if out["outcome"] == "reached" and (out["time_to_target"] is None or out["steps_to_target"] is None):
        raise ValueError("a reached trial without time_to_target or steps_to_target")  # scoring needs both
    if out["metric_goal"] not in _GOALS:
        raise ValueError(f"metric_goal {out['metric_goal']!r} is not 'min' or 'max'")
    try:
        hparams = json.loads(out["hparams"])
    except (ValueError, RecursionError):
        hparams = None
    if not isinstance(hparams, dict):
        raise ValueError("field 'hparams' is not a JSON object")
    return out


def _read_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ValueError(f"'optbench' metadata is not valid JSON ({type(exc).__name__})") from None


def _eval_schema() -> Any:
    import pyarrow as pa

    schema = _schema()
    return pa.schema([schema.field(c) for c in EVAL_COLUMNS])


def read_trial(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read one trial file; raise ``ValueError`` with the reason if it is not a valid optbench result.

    Returns:
      The checked metadata (see :func:`check_meta`) and the file's rows with the :class:`EvalRow` columns cast to
      their types.
    """
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for damaged files
        raise ValueError(f"not a readable Parquet file ({type(exc).__name__}: {printable(str(exc))})") from None
    raw = (table.schema.metadata or {}).get(b"optbench")
    if raw is None:
        raise ValueError("not an optbench result (no 'optbench' metadata)")
    meta = check_meta(_read_json(raw))
    missing = [c for c in (*TRIAL_COLUMNS, *EVAL_COLUMNS) if c not in table.column_names]
    if missing:
        raise ValueError(f"missing columns {', '.join(missing)}")
    try:
        evals = table.select(list(EVAL_COLUMNS)).cast(_eval_schema()).to_pandas()
    except Exception as exc:  # ArrowInvalid, ArrowNotImplementedError, ...: a column of another type
        raise ValueError(f"evaluation columns of the wrong type ({type(exc).__name__})") from None
    return meta, evals


def result_files(root: Path, problems: list[str]) -> list[Path]:
    """The ``*.parquet`` regular files under ``root``, sorted; hidden names (temporaries) are never results.

    Other entries with a result's name (a FIFO would block a reader forever) are appended to ``problems``;
    directories are skipped silently (their contents are still searched).
    """
    found = []
    try:
        for path in sorted(root.rglob("*.parquet")):
            if path.name.startswith(".") or path.is_dir():
                continue
            if not path.is_file():  # a FIFO or a socket would block or fail the Parquet reader
                problems.append(f"{printable(str(path))}: not a regular file")
                continue
            found.append(path)
    except OSError as exc:
        problems.append(f"{printable(str(root))}: cannot list every file ({exc.strerror or exc})")
    return found


def _deduplicate(root: Path, read: list[tuple[Path, dict[str, Any], pd.DataFrame]],
                 problems: list[str]) -> list[tuple[Path, dict[str, Any], pd.DataFrame]]:
    """One entry per run id (a copied file is the same trial, not another); the copy at its own path wins."""
    by_id: dict[str, list[tuple[Path, dict[str, Any], pd.DataFrame]]] = {}
    for item in read:
        by_id.setdefault(item[1]["run_id"], []).append(item)
    kept = []
    for run_id, items in by_id.items():
        home = trial_path(root, TrialRecord(**items[0][1]))
        items.sort(key=lambda item: item[0] != home)  # stable: otherwise the first in path order
        kept.append(items[0])
        for path, _, _ in items[1:]:
            problems.append(f"{printable(str(path))}: duplicate of run {printable(run_id)!r} "
                            f"({printable(str(items[0][0]))}), not counted")
    return kept


def read_results(root: Path) -> Loaded:
    """Every trial under ``root``; files that are damaged, foreign or duplicated are listed in ``problems``.

    Never raises for what is in the folder: any file is either a trial or a problem. Temporaries that killed
    writers left behind are removed first (:func:`optbench.fsutil.clean_stale_temporaries`); those of live writers
    are kept, and no temporary is ever read.

    Returns:
      ``trials`` has the :class:`TrialRecord` columns plus ``workload_key`` ("<workload>/<size>", the unit of
      scoring); ``evals`` has the :class:`EvalRow` columns plus run_id, workload_key, submission, study, trial,
      seed, metric_goal and target (taken from the trial's metadata).
    """
    import pandas as pd

    root = Path(root)
    problems: list[str] = []
    read = []
    if is_dir(root):
        clean_stale_temporaries(root)
        for path in result_files(root, problems):
            try:
                meta, frame = read_trial(path)
            except ValueError as exc:
                problems.append(f"{printable(str(path))}: {exc}")
                continue
            read.append((path, meta, frame))
    read = _deduplicate(root, read, problems)
    keep = ["run_id", "workload", "size", "submission", "study", "trial", "seed", "metric_goal", "target"]
    trials = pd.DataFrame([meta for _, meta, _ in read], columns=list(TRIAL_COLUMNS))
    trials["workload_key"] = trials["workload"] + "/" + trials["size"]
    frames = [frame.assign(**{k: meta[k] for k in keep}) for _, meta, frame in read if len(frame)]
    evals = (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*EVAL_COLUMNS, *keep]))
    evals["workload_key"] = evals["workload"].astype(str) + "/" + evals["size"].astype(str)
    for col in ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "best_metric",
                "target", "total_timed_seconds"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    return Loaded(trials=trials, evals=evals, problems=problems)
