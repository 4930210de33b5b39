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

import errno
import functools
import json
import math
import os
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION
from optbench.store.fsutil import AtomicBatch, atomic_file, clean_stale_temporaries, is_dir, is_valid_text, printable

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

# "interrupted": stopped by Ctrl-C; scored as not reached, and a re-run of the same tune runs the trial again.
OUTCOMES = ("reached", "missed", "diverged", "error", "oom", "timeout", "interrupted")
GOALS = ("min", "max")  # a metric's direction, as TrialRecord.metric_goal and optbench.api.Goal spell it


# The direction of a metric in one place (beside optbench.api.reached, which tests one value against a target).
def goal_sign(goal: str) -> float:
    """+1 for ``"min"``, -1 for ``"max"``: ``sign * metric`` is smaller for the better of two values."""
    if goal not in GOALS:
        raise ValueError(f"metric goal must be 'min' or 'max', got {goal!r}")
    return 1.0 if goal == "min" else -1.0


def better(a: float, b: float, goal: str) -> bool:
    """Whether metric value ``a`` is strictly better than ``b`` for a metric with direction ``goal``."""
    return goal_sign(goal) * a < goal_sign(goal) * b


def best(values: Sequence[float], goal: str) -> float | None:
    """The best of the finite ``values`` in direction ``goal``; None when none is finite."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return None
    return min(finite) if goal_sign(goal) > 0 else max(finite)


def meets(values: Any, target: float, goal: str) -> Any:
    """Element-wise :func:`optbench.api.reached` on a numpy array: ``<=`` for min, ``>=`` for max; NaN never."""
    return values <= target if goal_sign(goal) > 0 else values >= target


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
    micro_batch_size: int | None = None  # examples per forward/backward pass on one process (None: its whole share)
    accumulation_steps: int = 1  # passes per update on the busiest process at the configured batch size
    world_size: int = 1  # processes training the trial (torchrun ranks)
    dist_backend: str = ""  # "gloo" or "nccl" under torchrun, "" for one process
    device_names: str = ""  # every rank's device model, comma-separated in rank order
    sync_every: int = 1  # steps between reads of the training losses (the seconds budget may overshoot by this)
    resumes: int = 0  # times the trial was resumed from a checkpoint (schema 2)
    lost_seconds: float = 0.0  # timed seconds computed past the last checkpoint before each interruption (schema 2)
    step_hint: int | None = None  # the schedule's horizon in steps (--step-hint; schema 2)
    base_batch_size: int | None = None  # the configured global batch size; per-step batch sizes (Seesaw) start
    # from it and are in the eval rows' batch_size (None: a file from before this field)
    diagnostics: bool = False  # sharpness and noise scale measured at every evaluation (in metrics_json)


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


def _check_text(meta: Mapping[str, Any], metrics_json: Sequence[str], steps: Sequence[int]) -> None:
    """Refuse text that is not valid Unicode (lone surrogates: undecodable bytes of a file name or log)."""
    texts = [(f"trial field {k!r}", v) for k, v in meta.items() if isinstance(v, str)]
    texts += [(f"metrics_json of the evaluation at step {step}", text) for step, text in zip(steps, metrics_json)]
    for where, text in texts:
        if not is_valid_text(text):
            raise ValueError(f"{where} is not valid UTF-8 text (undecodable bytes?): {printable(text)}")


def write_trial(root: Path, record: TrialRecord, rows: Sequence[EvalRow], *, batch: AtomicBatch | None = None) -> Path:
    """Write one trial atomically.

    Args:
      root: the results directory (created if needed).
      record: the trial's metadata.
      rows: its evaluations, in order (may be empty for a trial that failed before its first eval).
      batch: write it as part of this :class:`optbench.store.fsutil.AtomicBatch` (it appears at the batch's commit,
        with one flush to disk for the whole batch); by default the file is flushed and renamed now.
    Returns:
      The path of the file (written now, or at the batch's commit).
    Raises:
      ValueError: a text field holds undecodable bytes (surrogate escapes); the message names the field. Nothing
        is written then.
    """
    return write_trial_columns(root, record, {c: [getattr(r, c) for r in rows] for c in EVAL_COLUMNS}, batch=batch)


def write_trial_columns(root: Path, record: TrialRecord, columns: Mapping[str, Sequence[Any]], *,
                        batch: AtomicBatch | None = None) -> Path:
    """:func:`write_trial` with the evaluations given column by column (every :data:`EVAL_COLUMNS` name, values
    of the :class:`EvalRow` field types, equal lengths; numpy arrays do): a converter of whole logs need not build
    one EvalRow per evaluation."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {c: getattr(record, c) for c in TRIAL_COLUMNS}  # every field is a scalar: no deep copy (asdict)
    _check_text(meta, columns["metrics_json"], columns["step"])
    path = trial_path(root, record)
    n = len(columns["step"])
    schema = _schema()
    arrays = [pa.array(columns[c], type=schema.field(c).type) for c in EVAL_COLUMNS]
    # A trial column holds one value n times: a one-row batch of them, taken n times in one call.
    one = pa.RecordBatch.from_pylist([meta], schema=_trial_schema())
    arrays += one.take(pa.array([0] * n, type=pa.int64())).columns
    table = pa.Table.from_arrays(arrays, schema=schema).replace_schema_metadata({"optbench": json.dumps(meta)})
    with (batch.open(path) if batch is not None else atomic_file(path)) as fh:
        # LZ4 (pyarrow writes Parquet's LZ4_RAW) and no dictionary pages: the codec folds the repeated trial
        # columns. A 100-evaluation trial of 57 columns is written in 0.8 ms against 4.1 ms with zstd (whose
        # per-column set-up dominates files this small), at 17% more bytes (33 against 28 KB); DuckDB, polars and
        # pandas read it. Statistics stay: they let readers skip files by value.
        pq.write_table(table, fh, compression="lz4", use_dictionary=False)
    return path


@functools.cache
def _trial_schema() -> Any:
    import pyarrow as pa

    return pa.schema([_schema().field(c) for c in TRIAL_COLUMNS])


@functools.cache
def _schema() -> Any:
    import pyarrow as pa

    types = {"int": pa.int64(), "float": pa.float64(), "str": pa.string(), "bool": pa.bool_()}
    out = []
    for f in (*fields(EvalRow), *fields(TrialRecord)):
        base = f.type if isinstance(f.type, str) else f.type.__name__
        out.append(pa.field(f.name, types[base.split("|")[0].strip()]))
    return pa.schema(out)


# ---------------------------------------------------------------------------------------------------- reading

_INT64 = 2**63
_NON_NEGATIVE = ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "total_steps",
                 "total_timed_seconds")  # scoring refuses negative or non-finite measures: not ours then
_FINITE = ("target", *_NON_NEGATIVE)


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
    if type(version) is not int or version not in READABLE_SCHEMA_VERSIONS:
        raise ValueError(f"schema version {printable(repr(version))[:40]} is not supported "
                         f"(this optbench reads {' and '.join(map(str, READABLE_SCHEMA_VERSIONS))})")
    out: dict[str, Any] = {}
    for f in fields(TrialRecord):
        if f.name not in meta and f.default is MISSING:
            raise ValueError(f"field {f.name!r} is missing")
        out[f.name] = _check_value(f.name, meta.get(f.name, f.default))
    if out["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome {out['outcome']!r} is not one of {', '.join(OUTCOMES)}")
    if out["outcome"] == "reached" and (out["time_to_target"] is None or out["steps_to_target"] is None):
        raise ValueError("a reached trial without time_to_target or steps_to_target")  # scoring needs both
    if out["metric_goal"] not in GOALS:
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


# ------------------------------------------------------------------------------------------ summaries (footers)

# Parquet types each EvalRow column may have on disk: the reader casts them to the written type without loss.
_EVAL_KINDS = {"int": ("integer", "null"), "float": ("floating", "integer", "null"), "str": ("string", "null"),
               "bool": ("boolean", "null")}


def _eval_schema() -> Any:
    import pyarrow as pa

    schema = _schema()
    return pa.schema([schema.field(c) for c in EVAL_COLUMNS])


def _kind(arrow_type: Any) -> str:
    import pyarrow.types as t

    for name, test in (("integer", t.is_integer), ("floating", t.is_floating), ("boolean", t.is_boolean),
                       ("null", t.is_null)):
        if test(arrow_type):
            return name
    return "string" if t.is_string(arrow_type) or t.is_large_string(arrow_type) else str(arrow_type)


# Columns a file must have: every EvalRow column, and the TrialRecord columns of fields without a default (a field
# added later with a default is absent from older files, which stay readable).
_REQUIRED = (*(f.name for f in fields(TrialRecord) if f.default is MISSING), *EVAL_COLUMNS)


def check_schema(schema: Any) -> dict[str, Any]:
    """The checked metadata of a result file, from its Arrow schema (the Parquet footer) alone.

    Raises:
      ValueError: no ``optbench`` metadata, metadata :func:`check_meta` refuses, a missing column, or an
        evaluation column whose type does not cast to its :class:`EvalRow` type; the message says which.
    """
    raw = (schema.metadata or {}).get(b"optbench")
    if raw is None:
        raise ValueError("not an optbench result (no 'optbench' metadata)")
    meta = check_meta(_read_json(raw))
    names = set(schema.names)
    missing = [c for c in (*TRIAL_COLUMNS, *EVAL_COLUMNS) if c in _REQUIRED and c not in names]
    if missing:
        raise ValueError(f"missing columns {', '.join(missing)}")
    for column in EVAL_COLUMNS:
        kind = _kind(schema.field(column).type)
        if kind not in _EVAL_KINDS[_EVAL_TYPES[column]]:
            raise ValueError(f"evaluation columns of the wrong type ({column!r} is {kind})")
    return meta


def _eval_types() -> dict[str, str]:
    return {f.name: (f.type if isinstance(f.type, str) else f.type.__name__).split("|")[0].strip()
            for f in fields(EvalRow)}


_EVAL_TYPES = _eval_types()


def _stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
    """What identifies one version of a file: an atomic rewrite (a new inode) or any edit changes it."""
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def summarize(path: Path) -> tuple[tuple[int, int, int, int] | None, dict[str, Any] | str]:
    """One file's stat key and either its checked metadata or why it is not a trial, from its footer only.

    The file is opened once and its key taken from that open file, so the key always belongs to the bytes read
    (a writer replacing the file meanwhile gives a new inode, never a mismatched entry).
    """
    import pyarrow.parquet as pq

    try:
        with open(path, "rb") as fh:
            key = _stat_key(os.fstat(fh.fileno()))
            try:
                schema = pq.read_schema(fh)
            except Exception as exc:  # pyarrow raises several types for damaged files
                return key, f"not a readable Parquet file ({type(exc).__name__}: {printable(str(exc))})"
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    try:
        return key, check_schema(schema)
    except ValueError as exc:
        return key, str(exc)


# ------------------------------------------------------------------------------------------------ summary cache

CACHE_DIR = ".optbench-cache"  # hidden: never listed as results, never inside a trial folder
CACHE_FILE = "summaries.arrow"
_CACHE_FORMAT = "optbench-summaries-1"


def _cache_tag() -> str:
    """What a cache must have been written for: its format, the schema version and the trial fields."""
    from optbench import __version__

    return json.dumps([_CACHE_FORMAT, SCHEMA_VERSION, __version__, TRIAL_COLUMNS])


def _load_cache(root: Path) -> dict[str, tuple[tuple[int, ...], str, bool]]:
    """relative path -> (stat key, metadata JSON or problem, is_problem); {} when absent, foreign or damaged."""
    import pyarrow.ipc as ipc

    try:
        with ipc.open_file(root / CACHE_DIR / CACHE_FILE) as reader:
            if (reader.schema.metadata or {}).get(b"tag", b"").decode() != _cache_tag():
                return {}
            table = reader.read_all()
        cols = [table.column(c).to_pylist() for c in ("path", "size", "mtime_ns", "ctime_ns", "ino", "entry",
                                                      "problem")]
    except Exception:  # missing, half-copied, another format: a cache is only ever a shortcut
        return {}
    return {p: ((s, m, c, i), e, bool(b)) for p, s, m, c, i, e, b in zip(*cols)}


def _save_cache(root: Path, entries: dict[str, tuple[tuple[int, ...], str, bool]]) -> None:
    """Replace the cache atomically with ``entries``; any failure (read-only store, full disk) is ignored."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    keys = list(entries)
    values = [entries[k] for k in keys]
    table = pa.table({
        "path": pa.array(keys, pa.string()),
        **{name: pa.array([v[0][i] for v in values], pa.int64())
           for i, name in enumerate(("size", "mtime_ns", "ctime_ns", "ino"))},
        "entry": pa.array([v[1] for v in values], pa.string()),
        "problem": pa.array([v[2] for v in values], pa.bool_()),
    }).replace_schema_metadata({"tag": _cache_tag()})
    try:
        with atomic_file(root / CACHE_DIR / CACHE_FILE) as fh:
            with ipc.new_file(fh, table.schema, options=ipc.IpcWriteOptions(compression="zstd")) as writer:
                writer.write_table(table)
    except Exception:  # noqa: BLE001  the cache is optional: reading results must not fail because of it
        pass


_TRIAL_KEYS = frozenset(TRIAL_COLUMNS)


def _cached_value(hit: tuple[tuple[int, ...], str, bool]) -> dict[str, Any] | str | None:
    """A cache entry's metadata (or problem), or None when the entry is not a whole record of this version.

    Entries hold what :func:`check_meta` returned for the file, keyed by the file's identity: a memo, so the
    fields are not checked again (that would cost more than the rest of a warm read); an entry that is not an
    object with exactly the current fields (a damaged or foreign cache) is never used.
    """
    if hit[2]:
        return hit[1]
    try:
        meta = json.loads(hit[1])
    except (ValueError, RecursionError):
        return None
    return meta if isinstance(meta, dict) and meta.keys() == _TRIAL_KEYS else None


def _summaries(root: Path, files: list[tuple[Path, os.stat_result]], *,
               cache: bool) -> list[dict[str, Any] | str]:
    """Each file's checked metadata or problem, from the cache where its entry still matches the file (same size,
    times and inode as listed), else read from its footer; the cache is then rewritten if anything changed."""
    cached = _load_cache(root) if cache else {}
    fresh: dict[str, tuple[tuple[int, ...], str, bool]] = {}
    out: list[dict[str, Any] | str] = []
    prefix = "" if str(root) == "." else str(root).rstrip(os.sep) + os.sep
    for path, st in files:
        name = str(path)
        rel = name[len(prefix):] if name.startswith(prefix) else path.relative_to(root).as_posix()
        hit = cached.get(rel)
        value = _cached_value(hit) if hit is not None and _stat_key(st) == hit[0] else None
        if value is None:
            key, value = summarize(path)
            if key is not None and is_valid_text(rel):
                entry = value if isinstance(value, str) else json.dumps(value)
                fresh[rel] = (key, entry, isinstance(value, str))
        else:
            fresh[rel] = hit  # type: ignore[assignment]
        out.append(value)
    if cache and fresh != cached:
        _save_cache(root, fresh)
    return out


# ------------------------------------------------------------------------------------------------------ reading


def result_files(root: Path, problems: list[str]) -> list[Path]:
    """The ``*.parquet`` regular files under ``root``, sorted; hidden names (temporaries) are never results, and
    neither is anything under the summary cache's folder.

    Other entries with a result's name (a FIFO would block a reader forever) are appended to ``problems``;
    directories are skipped silently (their contents are still searched).
    """
    return [path for path, _ in _listing(Path(root), problems)]


_MISSING_ERRNOS = (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP)  # what pathlib's is_dir() calls "no"


def _listing(root: Path, problems: list[str]) -> list[tuple[Path, os.stat_result]]:
    """:func:`result_files` with each file's stat (taken once: it is also the file's key in the summary cache)."""
    found = []
    cache = str(root / CACHE_DIR) + os.sep
    try:
        for path in sorted(root.rglob("*.parquet")):
            if path.name.startswith(".") or str(path).startswith(cache):
                continue
            try:
                st: os.stat_result | None = path.stat()
            except OSError as exc:
                if exc.errno not in _MISSING_ERRNOS:
                    raise
                st = None
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if st is None or not stat.S_ISREG(st.st_mode):  # a FIFO or a socket would block or fail the reader
                problems.append(f"{printable(str(path))}: not a regular file")
                continue
            found.append((path, st))
    except OSError as exc:
        problems.append(f"{printable(str(root))}: cannot list every file ({exc.strerror or exc})")
    return found


# The trial's fields that every eval row carries in ResultSet.evals (taken from the trial's metadata).
EVAL_KEYS = ("run_id", "workload", "size", "submission", "study", "trial", "seed", "metric_goal", "target")


def _read_eval_tables(paths: Sequence[Path], problems: list[str]) -> tuple[Any, list[int]]:
    """The EvalRow columns of ``paths`` as one Arrow table, and for each row the index of its file.

    One multi-threaded, column-pruned ``pyarrow.dataset`` scan; if any file fails it (damaged data pages behind an
    intact footer), the files are read one by one and each one that fails is added to ``problems``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    schema = _eval_schema()
    names = [str(p) for p in paths]
    try:
        table = ds.dataset(names, schema=schema, format="parquet").to_table(
            columns=[*EVAL_COLUMNS, "__filename"], use_threads=True)
        index = pc.index_in(table.column("__filename"), value_set=pa.array(names)).to_numpy().tolist()
        return table.drop_columns(["__filename"]), index
    except Exception:  # noqa: BLE001  find the file(s) to blame below
        pass
    tables, index = [], []
    for i, path in enumerate(paths):
        try:
            one = ds.dataset([str(path)], schema=schema, format="parquet").to_table(columns=list(EVAL_COLUMNS))
        except Exception as exc:  # noqa: BLE001  ArrowInvalid, OSError, ...: one bad file, the rest still count
            problems.append(f"{printable(str(path))}: evaluation rows unreadable ({type(exc).__name__}), "
                            "curves left out")
            continue
        tables.append(one)
        index += [i] * one.num_rows
    return (pa.concat_tables(tables) if tables else schema.empty_table()), index


def read_trial(path: Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read one trial file; raise ``ValueError`` with the reason if it is not a valid optbench result.

    Returns:
      The checked metadata (see :func:`check_meta`) and the file's rows with the :class:`EvalRow` columns cast to
      their types.
    """
    _, value = summarize(Path(path))
    if isinstance(value, str):
        raise ValueError(value)
    problems: list[str] = []
    table, _ = _read_eval_tables([Path(path)], problems)
    if problems:
        raise ValueError(problems[0].split(": ", 1)[1])
    return value, table.to_pandas()


def _deduplicate(root: Path, read: list[tuple[Path, dict[str, Any]]],
                 problems: list[str]) -> list[tuple[Path, dict[str, Any]]]:
    """One entry per run id (a copied file is the same trial, not another); the copy at its own path wins."""
    by_id: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for item in read:
        by_id.setdefault(item[1]["run_id"], []).append(item)
    kept = []
    for run_id, items in by_id.items():
        if len(items) > 1:
            home = trial_path(root, TrialRecord(**items[0][1]))
            items.sort(key=lambda item: item[0] != home)  # stable: otherwise the first in path order
            for path, _ in items[1:]:
                problems.append(f"{printable(str(path))}: duplicate of run {printable(run_id)!r} "
                                f"({printable(str(items[0][0]))}), not counted")
        kept.append(items[0])
    return kept


def with_workload_key(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` as scoring wants it: a workload is a workload at one size, ``workload`` = ``workload_key``
    ("linreg/tiny"). The one place where that rename happens."""
    return frame.assign(workload=frame["workload_key"])


class ResultSet:
    """What :func:`read_results` found: one row per trial, the files they came from, and the files it skipped.

    ``trials`` comes from the files' footers alone; evaluation rows are read only when asked for (:attr:`evals`,
    or :meth:`evals_of` for some runs), in one column-pruned multi-threaded scan. A file whose rows turn out to be
    unreadable then is added to ``problems`` and its curve left out; its trial still counts.
    """

    def __init__(self, *, trials: pd.DataFrame, paths: Sequence[Path], problems: list[str]) -> None:
        self.trials = trials
        self.paths = tuple(paths)  # paths[i] holds trials.iloc[i]
        self.problems = problems
        self._evals: pd.DataFrame | None = None

    @property
    def evals(self) -> pd.DataFrame:
        """Every evaluation: the :class:`EvalRow` columns plus :data:`EVAL_KEYS` and ``workload_key``."""
        if self._evals is None:
            self._evals = self._read_evals(range(len(self.paths)))
        return self._evals

    def evals_of(self, run_ids: Sequence[str]) -> pd.DataFrame:
        """The evaluations of ``run_ids`` only (reads just their files unless every evaluation is loaded)."""
        wanted = set(run_ids)
        if self._evals is not None:
            return self._evals[self._evals["run_id"].isin(wanted)].reset_index(drop=True)
        rows = [i for i, r in enumerate(self.trials["run_id"]) if r in wanted]
        return self._read_evals(rows)

    def scoring_trials(self) -> pd.DataFrame:
        """The trials table with ``workload`` = ``workload_key`` (see :func:`with_workload_key`)."""
        return with_workload_key(self.trials)

    def _read_evals(self, rows: Sequence[int]) -> pd.DataFrame:
        import numpy as np
        import pandas as pd

        rows = list(rows)
        table, index = _read_eval_tables([self.paths[i] for i in rows], self.problems)
        frame = table.to_pandas()
        order = np.argsort(np.asarray(index, dtype=np.int64), kind="stable")  # file by file, rows as written
        frame = frame.iloc[order].reset_index(drop=True)
        source = self.trials[list(EVAL_KEYS)].iloc[[rows[index[i]] for i in order]].reset_index(drop=True)
        if frame.empty:
            frame = pd.DataFrame(columns=list(EVAL_COLUMNS))
            source = pd.DataFrame(columns=list(EVAL_KEYS))
        out = pd.concat([frame, source], axis=1)
        out["workload_key"] = out["workload"].astype(str) + "/" + out["size"].astype(str)
        return out


def read_results(root: Path, *, cache: bool = True) -> ResultSet:
    """Every trial under ``root``; files that are damaged, foreign or duplicated are listed in ``problems``.

    Never raises for what is in the folder: any file is either a trial or a problem. Temporaries that killed
    writers left behind are removed first (:func:`optbench.store.fsutil.clean_stale_temporaries`); those of live writers
    are kept, and no temporary is ever read. Only footers are read (see :class:`ResultSet`); with ``cache``, a
    file whose size, times and inode match its entry in ``<root>/.optbench-cache/`` is not opened at all. The
    cache is a shortcut, never the source of truth: deleting it is harmless.

    Returns:
      ``trials`` has the :class:`TrialRecord` columns plus ``workload_key`` ("<workload>/<size>", the unit of
      scoring); ``evals`` has the :class:`EvalRow` columns plus :data:`EVAL_KEYS` and workload_key (taken from the
      trial's metadata).
    """
    import pandas as pd

    root = Path(root)
    problems: list[str] = []
    read: list[tuple[Path, dict[str, Any]]] = []
    if is_dir(root):
        clean_stale_temporaries(root)
        files = _listing(root, problems)
        for (path, _), value in zip(files, _summaries(root, files, cache=cache)):
            if isinstance(value, str):
                problems.append(f"{printable(str(path))}: {value}")
            else:
                read.append((path, value))
    read = _deduplicate(root, read, problems)
    trials = pd.DataFrame([meta for _, meta in read], columns=list(TRIAL_COLUMNS))
    trials["workload_key"] = trials["workload"] + "/" + trials["size"]
    for col in ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "best_metric",
                "target", "total_timed_seconds"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    return ResultSet(trials=trials, paths=[path for path, _ in read], problems=problems)
