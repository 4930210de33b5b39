"""Recognising and validating one result file from its Parquet footer alone: the ``optbench`` metadata field by
field (type, range, vocabulary) and the column types. Every refusal is a ``ValueError`` whose one-line message
says what is wrong; the reader (:mod:`optbench.store.reader`) lists it as the file's problem and goes on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from optbench import READABLE_SCHEMA_VERSIONS
from optbench.store.fsutil import is_valid_text, printable
from optbench.store.records import (EVAL_COLUMNS, GOALS, MATMUL_PRECISIONS, OUTCOMES, STOPPED_BY, TARGET_KINDS,
                                    TRIAL_COLUMNS, EvalRow, TrialRecord)
from optbench.store.writer import arrow_schema

_INT64 = 2**63
_NON_NEGATIVE = ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "total_steps",
                 "total_timed_seconds",  # scoring refuses negative or non-finite measures: not ours then
                 "compile_seconds", "recompiles", "model_flops_per_example", "optimizer_flops_per_step",
                 "flops_to_target", "total_flops", "mfu", "optimizer_share", "load_average", "cpu_count",
                 "cpu_share", "gpu_utilization")
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
    if out["matmul_precision"] not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision {printable(repr(out['matmul_precision']))[:40]} is not tf32 or fp32")
    if out["stopped_by"] not in STOPPED_BY:
        raise ValueError(f"stopped_by {printable(repr(out['stopped_by']))[:40]} is not steps or seconds")
    if out["target_kind"] not in TARGET_KINDS:
        raise ValueError(f"target_kind {printable(repr(out['target_kind']))[:40]} is not one of "
                         f"{', '.join(k for k in TARGET_KINDS if k)}")
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


# Parquet types each EvalRow column may have on disk: the reader casts them to the written type without loss.
_EVAL_KINDS = {"int": ("integer", "null"), "float": ("floating", "integer", "null"), "str": ("string", "null"),
               "bool": ("boolean", "null")}


def eval_schema() -> Any:
    """The evaluation columns of :func:`optbench.store.writer.arrow_schema`: what the reader casts rows to."""
    import pyarrow as pa

    schema = arrow_schema()
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


def stat_key(st: os.stat_result) -> tuple[int, int, int, int]:
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
            key = stat_key(os.fstat(fh.fileno()))
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
