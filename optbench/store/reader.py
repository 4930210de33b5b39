"""Reading a results directory: readers that survive foreign or corrupt files, and a cache of file summaries.

A reader never fails on what it finds: a damaged, foreign or copied file is listed as a problem and not counted.
Readers only look at ``*.parquet`` names, never at the writers' temporaries, and remove those whose writer is dead.
Only footers are read for the trial table (:mod:`optbench.store.checks`); evaluation rows are read when asked for.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench import SCHEMA_VERSION
from optbench.store.checks import eval_schema, stat_key, summarize
from optbench.store.fsutil import atomic_file, clean_stale_temporaries, is_dir, is_valid_text, printable
from optbench.store.records import EVAL_COLUMNS, TRIAL_COLUMNS, TrialRecord, trial_path
from optbench.store.units import Units, scoring_units, with_workload_key, workload_key

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

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
        value = _cached_value(hit) if hit is not None and stat_key(st) == hit[0] else None
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

    schema = eval_schema()
    names = [str(p) for p in paths]
    try:
        table = ds.dataset(names, schema=schema, format="parquet").to_table(
            columns=[*EVAL_COLUMNS, "__filename"], use_threads=True)
        index = pc.index_in(table.column("__filename"), value_set=pa.array(names)).to_numpy().tolist()
        return _evaluations_only(table.drop_columns(["__filename"]), index)
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
    return _evaluations_only(pa.concat_tables(tables) if tables else schema.empty_table(), index)


def _evaluations_only(table: Any, index: list[int]) -> tuple[Any, list[int]]:
    """The rows that are evaluations: a trial with none is written with one row of null evaluation columns
    (:mod:`optbench.store.writer`), which is no evaluation."""
    import pyarrow.compute as pc

    valid = pc.is_valid(table.column("step"))
    if pc.all(valid).as_py() is not False:
        return table, index
    keep = valid.to_pylist()
    return table.filter(valid), [i for i, k in zip(index, keep) if k]


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
        self._units: Units | None = None

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

    def units(self) -> Units:
        """The comparable trials and the notes on what was left out or split (:func:`optbench.store.units.
        scoring_units`), worked out once."""
        if self._units is None:
            self._units = scoring_units(self.trials)
        return self._units

    def scoring_trials(self) -> pd.DataFrame:
        """The trials a leaderboard ranks, ``workload`` = the unit each is ranked under (:meth:`units`)."""
        return self.units().trials

    def all_trials(self) -> pd.DataFrame:
        """Every trial, research ones included, with ``workload`` = ``workload_key`` (none split): what the
        report's research sections read."""
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
        out["workload_key"] = workload_key(out)
        return out


def read_results(root: Path, *, cache: bool = True) -> ResultSet:
    """Every trial under ``root``; files that are damaged, foreign or duplicated are listed in ``problems``.

    Never raises for what is in the folder: any file is either a trial or a problem. Temporaries that killed
    writers left behind are removed first (:func:`optbench.store.fsutil.clean_stale_temporaries`); those of live writers
    are kept, and no temporary is ever read. Only footers are read (see :class:`ResultSet`); with ``cache``, a
    file whose size, times and inode match its entry in ``<root>/.optbench-cache/`` is not opened at all. The
    cache is a shortcut, never the source of truth: deleting it is harmless.

    Returns:
      ``trials`` has the :class:`TrialRecord` columns plus ``workload_key`` ("<workload>/<size>"; the units scoring
      ranks are made from it by :mod:`optbench.store.units`); ``evals`` has the :class:`EvalRow` columns plus
      :data:`EVAL_KEYS` and workload_key (taken from the trial's metadata).
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
    trials["workload_key"] = workload_key(trials)
    for col in ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "best_metric",
                "target", "total_timed_seconds"):
        trials[col] = pd.to_numeric(trials[col], errors="coerce").astype(float)
    return ResultSet(trials=trials, paths=[path for path, _ in read], problems=problems)
