"""``optbench import algoperf``: AlgoPerf's per-trial logs into optbench's results store.

AlgoPerf's ``submission_runner.py`` writes one folder per trial::

    <experiment_dir>/[<experiment_name>/][study_<k>/]<workload>_<framework>/trial_<n>/
        eval_measurements.csv    one row per evaluation
        hparams.json             the trial's hyperparameters (absent under self-tuning)
        meta_data_<i>.json       rng_seed, git commit, CPU/GPU names, workload properties

``eval_measurements.csv`` has the columns ``global_step``, ``score`` (accumulated submission time: the timed
seconds AlgoPerf scores), ``accumulated_submission_time``, ``accumulated_eval_time``, ``total_duration``,
``preemption_count`` and ``train/``, ``validation/``, ``test/`` metrics (``validation/accuracy``,
``validation/wer``, ``validation/bleu``...). Targets are not in the logs: they come from
``algoperf_targets.json`` (AlgoPerf's ``validation_target_value`` per workload and rules version, each with its
source) or ``--target WORKLOAD=VALUE``.

Each trial becomes one optbench trial (:class:`~optbench.results.TrialRecord` + one
:class:`~optbench.results.EvalRow` per evaluation) with ``timed_seconds = score``, size ``algoperf-<rules>``, and
origins marked ``algoperf-import``. Its run id is a hash of the log's path and bytes, so importing the same tree
again rewrites the same files instead of adding duplicates. Examples and tokens are not logged by AlgoPerf: they are
left empty, so ``optbench score --by examples`` refuses imported results while ``--by time`` and ``--by steps``
work. ``optbench score --algoperf`` then applies AlgoPerf's discretisation of the profile integral.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  mlcommons/algorithmic-efficiency: algoperf/logger_utils.py (log layout), scoring/performance_profile.py.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optbench.errors import UsageError
from optbench.fsutil import ensure_writable_dir, is_valid_text, printable

RULES = ("v0.5", "v0.6")
TARGETS_FILE = "algoperf_targets.json"
FRAMEWORK = re.compile(r"^(?P<workload>.+)_(?P<framework>jax|pytorch)$")
TRIAL_DIR = re.compile(r"^trial_(\d+)$")
STUDY_DIR = re.compile(r"^study_(\d+)$")
RULESET_DIRS = {"external_tuning", "self_tuning"}  # layout of AlgoPerf's submissions repository
TIME_COLUMNS = ("score", "accumulated_submission_time")
IMPORT_THREADS = 4  # logs converted at once (see import_algoperf)


@dataclass(frozen=True, kw_only=True)
class TargetSpec:
    """The validation target of one AlgoPerf workload: metric (log column ``validation/<metric>``), direction."""

    metric: str
    goal: str
    target: float
    source: str


@dataclass(frozen=True, kw_only=True)
class ImportResult:
    """What was imported: one path per trial written, and the logs skipped (with why)."""

    written: tuple[Path, ...]
    skipped: tuple[str, ...]


def load_targets(rules: str) -> dict[str, TargetSpec]:
    """AlgoPerf's published targets for ``rules`` (``v0.5`` or ``v0.6``), from the packaged JSON file."""
    from importlib import resources

    if rules not in RULES:
        raise UsageError(f"unknown AlgoPerf rules {rules!r}; choose one of: {', '.join(RULES)}")
    raw = json.loads(resources.files("optbench").joinpath(TARGETS_FILE).read_text())
    return {name: TargetSpec(metric=e["metric"], goal=e["goal"], target=float(e["target"]), source=e["source"])
            for name, e in raw["rules"][rules].items()}


def parse_target_overrides(items: Sequence[str]) -> dict[str, float]:
    """``["wmt=31.0"]`` -> ``{"wmt": 31.0}``; a malformed item is a usage error."""
    out: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise UsageError(f"--target expects WORKLOAD=NUMBER, got {item!r}")
        out[name.strip()] = number
    return out


def resolve_target(workload: str, table: Mapping[str, TargetSpec], overrides: Mapping[str, float]) -> TargetSpec:
    """The target of ``workload``: the published one, or ``--target`` (a variant such as ``imagenet_resnet_silu``
    takes its metric and direction from the longest known prefix, ``imagenet_resnet``)."""
    known = table.get(workload)
    if known is None:
        base = max((k for k in table if workload.startswith(k + "_")), key=len, default=None)
        if base is None or workload not in overrides:
            hint = f" (a variant of {base!r}: give its target)" if base else ""
            raise UsageError(f"no published AlgoPerf target for workload {workload!r}{hint}; pass --target "
                             f"{workload}=VALUE (known: {', '.join(sorted(table))})")
        known = table[base]
    if workload in overrides:
        return TargetSpec(metric=known.metric, goal=known.goal, target=overrides[workload], source="--target")
    return known


# ------------------------------------------------------------------------------------------------------ layout


@dataclass(frozen=True, kw_only=True)
class TrialLog:
    """Where one trial's log sits and what its path says."""

    csv: Path
    workload: str
    framework: str
    study: str
    trial: str
    submission: str


def find_logs(root: Path, *, submission: str | None = None) -> list[TrialLog]:
    """Every ``eval_measurements.csv`` under ``root`` in AlgoPerf's layout.

    The submission name is ``submission`` when given, else the folders between ``root`` and the study/workload
    folders (ruleset folders such as ``external_tuning`` left out), else the name of ``root`` itself.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{str(root)!r} is not a directory")
    logs = []
    for csv in sorted(root.rglob("eval_measurements.csv")):
        parts = csv.relative_to(root).parts[:-1]
        if len(parts) < 2 or not TRIAL_DIR.match(parts[-1]):
            continue
        m = FRAMEWORK.match(parts[-2])
        workload, framework = (m["workload"], m["framework"]) if m else (parts[-2], "unknown")
        above = parts[:-2]
        study = next((f"study-{STUDY_DIR.match(p)[1]}" for p in reversed(above) if STUDY_DIR.match(p)), "study-0")
        prefix = [p for p in above if not STUDY_DIR.match(p) and p not in RULESET_DIRS]
        name = submission or "/".join(prefix) or root.resolve().name
        logs.append(TrialLog(csv=csv, workload=workload, framework=framework, study=study,
                             trial=TRIAL_DIR.match(parts[-1])[1], submission=name))
    if not logs:
        raise UsageError(f"no AlgoPerf logs under {str(root)!r} (expected <workload>_<framework>/trial_<n>/"
                         "eval_measurements.csv)")
    return logs


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not JSON, or nested past the decoder's depth
        return {}
    return value if isinstance(value, dict) else {}


def _meta(trial_dir: Path) -> dict[str, Any]:
    """The first ``meta_data_<i>.json`` of a trial (its seed and machine), or {}."""
    files = sorted(trial_dir.glob("meta_data_*.json"))
    return _read_json(files[0]) if files else {}


# -------------------------------------------------------------------------------------------------- conversion


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def read_log(log: TrialLog, spec: TargetSpec) -> Any:
    """The log as a DataFrame sorted by step (a step logged twice after a preemption keeps its last row).

    Raises:
      ValueError: unreadable CSV or missing columns (the caller reports the file as skipped).
    """
    import numpy as np
    import pandas as pd

    try:
        df = pd.read_csv(log.csv)
    except Exception as exc:  # pandas raises several types for damaged files
        raise ValueError(f"unreadable CSV ({type(exc).__name__}: {exc})") from None
    time_col = next((c for c in TIME_COLUMNS if c in df.columns), None)
    metric_col = f"validation/{spec.metric}"
    missing = [c for c in ("global_step", metric_col) if c not in df.columns] + ([] if time_col else ["score"])
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    steps = pd.to_numeric(df["global_step"], errors="coerce")
    _check_numbers(df["global_step"], steps, "global_step", whole=True)
    # The rows to keep, found on one numpy array (a log is read per trial: pandas' per-call cost adds up): steps
    # known, in stable step order, and of a step logged twice the later row.
    v = steps.to_numpy(dtype=float)
    idx = np.flatnonzero(~np.isnan(v))
    idx = idx[np.argsort(v[idx], kind="stable")]
    idx = idx[np.append(v[idx][1:] != v[idx][:-1], True)] if len(idx) else idx
    if not len(idx):
        raise ValueError("no evaluations")
    df = df.take(idx).reset_index(drop=True)
    seconds = pd.to_numeric(df[time_col], errors="coerce")
    _check_numbers(df[time_col], seconds, time_col, whole=False, required=True)
    return df.assign(global_step=v[idx].astype("int64"), _time=seconds.astype(float),
                     _metric=pd.to_numeric(df[metric_col], errors="coerce"))


def _check_numbers(raw: Any, values: Any, column: str, *, whole: bool, required: bool = False) -> None:
    """Every value of ``column`` a finite number >= 0 (a whole one below 2**63 when ``whole``: it becomes an int64);
    empty cells pass unless ``required``. Raises ValueError naming the first bad cell: the trial is skipped, not
    guessed at."""
    import numpy as np

    v = values.to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(v) | (v < 0)
        if whole:
            bad |= (v >= 2.0**63) | (np.isfinite(v) & (v != np.round(v)))
    bad &= raw.notna().to_numpy() | required
    if bad.any():
        what = "a whole number in [0, 2**63)" if whole else "a finite number >= 0"
        cell = printable(str(raw.to_numpy()[bad.argmax()]))[:40]
        raise ValueError(f"{column} {cell!r} is not {what}")


def _finite_column(series: Any) -> list[float | None]:
    """:func:`_finite` of every cell of one column; a numeric column is converted at once, not cell by cell."""
    if series.dtype.kind in "biuf":
        return [v if math.isfinite(v) else None for v in series.to_numpy(dtype=float).tolist()]
    return [_finite(v) for v in series.tolist()]


def _rows(df: Any) -> list[Any]:
    """One EvalRow per log row; every logged column goes into metrics_json (a finite number, else null)."""
    from optbench.results import EvalRow

    metrics = {str(k): _finite_column(df[k]) for k in df.columns if not str(k).startswith("_")}

    def col(name: str) -> list[float]:
        values = metrics.get(name) or [None] * len(df)
        return [math.nan if v is None else v for v in values]

    names = sorted(metrics)
    eval_s, wall_s, loss = col("accumulated_eval_time"), col("total_duration"), col("train/loss")
    steps, seconds = df["global_step"].tolist(), df["_time"].tolist()
    values = df["_metric"].to_numpy(dtype=float).tolist()
    return [EvalRow(
        step=int(steps[i]), examples=None, tokens=None,  # type: ignore[arg-type]  # not logged
        timed_seconds=float(seconds[i]), eval_seconds=eval_s[i], wall_seconds=wall_s[i], train_loss=loss[i],
        metric_value=values[i], learning_rate=math.nan, batch_size=None,  # type: ignore[arg-type]
        metrics_json=json.dumps({k: metrics[k][i] for k in names}))
        for i in range(len(df))]


def _outcome(df: Any, spec: TargetSpec) -> tuple[str, Any]:
    """(outcome, first row meeting the target or None); a log ending in a NaN/inf metric is ``diverged``."""
    from optbench.results import meets

    values = df["_metric"].to_numpy(dtype=float)
    hits = meets(values, spec.target, spec.goal)  # NaN compares False: never a hit (as optbench.api.reached)
    if hits.any():
        return "reached", df.iloc[int(hits.argmax())]
    return ("missed" if math.isfinite(values[-1]) else "diverged"), None


def _seed(value: Any, *, default: int) -> int:
    """``rng_seed`` of the meta data: a whole number in [0, 2**63), or ``default`` where the log has none."""
    if value is None:
        return default
    # Integers are checked as integers: a float conversion of 10**400 would raise OverflowError.
    whole = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value == int(value))
    if isinstance(value, bool) or not whole or not 0 <= int(value) < 2**63:
        raise ValueError(f"rng_seed {printable(repr(value))[:40]} is not a whole number in [0, 2**63)")
    return int(value)


def to_record(log: TrialLog, df: Any, spec: TargetSpec, *, rules: str, root: Path) -> tuple[Any, list[Any]]:
    """The optbench (record, rows) of one AlgoPerf trial."""
    from optbench import SCHEMA_VERSION, __version__
    from optbench.results import TrialRecord
    from optbench.results import best as best_metric

    rows = _rows(df)
    outcome, hit = _outcome(df, spec)
    best = best_metric(df["_metric"].tolist(), spec.goal)
    rel = log.csv.relative_to(root).as_posix()
    digest = hashlib.sha256(os.fsencode(rel) + b"\0" + log.csv.read_bytes()).hexdigest()
    meta, hparams = _meta(log.csv.parent), _read_json(log.csv.parent / "hparams.json")
    seed = _seed(meta.get("rng_seed"), default=int(digest[16:24], 16) >> 1)
    gpu = str(meta.get("gpu_model_name") or "")
    created = datetime.fromtimestamp(log.csv.stat().st_mtime, tz=timezone.utc)
    record = TrialRecord(
        schema_version=SCHEMA_VERSION, run_id=f"algoperf-{digest[:16]}",
        created_at=created.isoformat(timespec="seconds"), workload=log.workload, size=f"algoperf-{rules}",
        workload_origin=f"algoperf-import ({log.framework}; target from {spec.source})",
        submission=log.submission, submission_origin=f"algoperf-import ({Path(rel).parent.as_posix()})",
        hparams=json.dumps(hparams, sort_keys=True, default=str),
        seed=seed,
        study=log.study, trial=log.trial, outcome=outcome, metric_name=f"validation/{spec.metric}",
        metric_goal=spec.goal, target=spec.target,
        time_to_target=float(hit["_time"]) if hit is not None else None,
        steps_to_target=int(hit["global_step"]) if hit is not None else None,
        examples_to_target=None, tokens_to_target=None, best_metric=best,
        total_steps=int(df["global_step"].iloc[-1]), total_timed_seconds=float(df["_time"].iloc[-1]),
        max_steps=None, max_seconds=None, error=None,
        optbench_version=f"algoperf-import (optbench {__version__})", code_hash="",
        git_commit=str(meta.get("git_commit_hash") or ""), torch_version=log.framework,
        python_version=str(meta.get("python_version") or ""), device="cuda" if gpu else "unknown",
        device_name=f"{meta.get('gpu_count', '')}x {gpu}".strip() if gpu else "unknown",
        cpu_model=str(meta.get("cpu_model_name") or ""),
    )
    return record, rows


def _decodable(logs: list[TrialLog], root: Path) -> tuple[list[TrialLog], list[str]]:
    """The logs whose folder names are valid UTF-8, and a skip reason for each other one (its names would become
    the workload, submission or study of a result, where undecodable bytes cannot go)."""
    good, skipped = [], []
    for log in logs:
        if is_valid_text(str(log.csv.relative_to(root))) and is_valid_text(log.submission):
            good.append(log)
        else:
            skipped.append(f"{printable(str(log.csv))}: folder names are not valid UTF-8 text")
    return good, skipped


def import_algoperf(root: Path, *, results_dir: Path, rules: str = "v0.6", targets: Sequence[str] = (),
                    submission: str | None = None) -> ImportResult:
    """Import every trial log under ``root`` into the results store.

    Args:
      root: an AlgoPerf experiment directory (or a folder of them).
      results_dir: optbench's results directory.
      rules: AlgoPerf rules version whose targets apply (``v0.5`` or ``v0.6``).
      targets: ``WORKLOAD=VALUE`` overrides (needed for workloads without a published target).
      submission: the submission name for every trial (default: from the folder names).
    Returns:
      The :class:`ImportResult`.
    Raises:
      UsageError: not a directory, no logs, unknown rules, a malformed ``--target``, a workload without a target,
        or no log that could be read.
    """
    from optbench.results import write_trial

    table, overrides = load_targets(rules), parse_target_overrides(targets)
    if submission is not None and not is_valid_text(submission):
        raise UsageError(f"--submission {printable(submission)!r} is not valid UTF-8 text")
    ensure_writable_dir(Path(results_dir), what="results directory")  # before any log is read
    found = find_logs(root, submission=submission)
    logs, skipped = _decodable(found, Path(root))
    specs = {log.workload: resolve_target(log.workload, table, overrides) for log in logs}  # all checked first
    def one(log: TrialLog) -> Path | str:
        """The written result of one log, or why it was skipped."""
        try:
            df = read_log(log, specs[log.workload])
            record, rows = to_record(log, df, specs[log.workload], rules=rules, root=Path(root))
            return write_trial(Path(results_dir), record, rows)
        except (ValueError, OSError) as exc:  # a damaged log, or names/bytes write_trial refuses
            return f"{printable(str(log.csv))}: {exc if isinstance(exc, ValueError) else exc.strerror or exc}"

    # Threads: the CSV parser, Parquet encoder and fsync release the GIL, so the logs' reads, encodes and flushes
    # to disk overlap. Results come back in log order; on Ctrl-C the logs not yet started are cancelled (every
    # file already written is whole: write_trial is atomic).
    pool = ThreadPoolExecutor(max_workers=IMPORT_THREADS)
    try:
        done = list(pool.map(one, logs))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    written = [d for d in done if isinstance(d, Path)]
    skipped += [d for d in done if isinstance(d, str)]
    if not written:
        raise UsageError(f"none of the {len(found)} AlgoPerf logs could be read; first problem: {skipped[0]}")
    return ImportResult(written=tuple(written), skipped=tuple(skipped))
