"""Reading results at scale (issue 11): trials from footers only, the summary cache, lazy evaluation rows, the
metric direction in one place, and a results directory read as one dataset by pyarrow, pandas and DuckDB."""

from __future__ import annotations

import os
import threading
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from optbench.store import reader as store_reader
from optbench.store.reader import CACHE_DIR, CACHE_FILE, read_results, result_files
from optbench.store.records import EVAL_COLUMNS, TRIAL_COLUMNS, best, better, goal_sign, meets
from optbench.store.writer import write_trial

from .test_results import _record, _row


def _store(root: Path, n: int = 3) -> list[Path]:
    return [write_trial(root, _record(run_id=f"r{i}", seed=i), [_row(0, 1.0), _row(100, 0.05)]) for i in range(n)]


def _frame(loaded: store_reader.ResultSet) -> pd.DataFrame:
    return loaded.trials.sort_values("run_id").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- summary cache


def test_the_cache_sits_in_a_hidden_folder_and_a_warm_read_equals_a_cold_one(tmp_path):
    paths = _store(tmp_path)
    cold = read_results(tmp_path, cache=False)
    assert not (tmp_path / CACHE_DIR).exists()  # cache=False neither reads nor writes it
    first = read_results(tmp_path)
    cache = tmp_path / CACHE_DIR / CACHE_FILE
    assert cache.is_file() and all(cache.parent not in p.parents for p in paths)
    warm = read_results(tmp_path)
    pd.testing.assert_frame_equal(_frame(cold), _frame(first))
    pd.testing.assert_frame_equal(_frame(cold), _frame(warm))
    assert warm.problems == cold.problems == [] and sorted(result_files(tmp_path, [])) == sorted(paths)


def test_a_warm_read_opens_no_result_file(tmp_path, monkeypatch):
    _store(tmp_path)
    read_results(tmp_path)
    opened: list[Path] = []
    real = store_reader.summarize
    monkeypatch.setattr(store_reader, "summarize", lambda path: opened.append(path) or real(path))
    assert len(read_results(tmp_path).trials) == 3
    assert opened == []


def test_a_rewritten_file_is_read_again_even_with_its_size_and_mtime_restored(tmp_path):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0), _row(100, 0.05)])
    before = path.stat()
    assert read_results(tmp_path).trials.iloc[0]["best_metric"] == 0.05  # now cached
    for k in range(1, 200):  # a record whose file has exactly the old size, so only the inode/ctime tell
        other = write_trial(tmp_path / "scratch", _record(best_metric=0.05 + k / 1000), [_row(0, 1.0),
                                                                                        _row(100, 0.05)])
        if other.stat().st_size == before.st_size:
            break
    else:
        pytest.skip("no same-size variant found")
    os.replace(other, path)  # what write_trial does: a new inode under the old name
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    trials = read_results(tmp_path).trials
    assert trials.loc[trials["run_id"] == "r1", "best_metric"].tolist() == [0.05 + k / 1000]


def test_an_in_place_edit_with_mtime_restored_is_read_again(tmp_path):
    good = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    before = good.stat()
    assert len(read_results(tmp_path).trials) == 1
    raw = bytearray(good.read_bytes())
    raw[-6] ^= 0xFF  # the footer's length: no longer a readable file, same size, same inode
    with open(good, "r+b") as fh:
        fh.write(raw)
    os.utime(good, ns=(before.st_atime_ns, before.st_mtime_ns))
    loaded = read_results(tmp_path)
    assert loaded.trials.empty and "not a readable Parquet file" in loaded.problems[0]


def test_deleted_or_damaged_cache_is_harmless_and_rebuilt(tmp_path):
    _store(tmp_path)
    expected = _frame(read_results(tmp_path))
    cache = tmp_path / CACHE_DIR / CACHE_FILE
    cache.write_bytes(b"not an arrow file")
    pd.testing.assert_frame_equal(_frame(read_results(tmp_path)), expected)
    assert cache.read_bytes() != b"not an arrow file"  # rewritten whole
    cache.unlink()
    pd.testing.assert_frame_equal(_frame(read_results(tmp_path)), expected)
    assert cache.is_file()


def test_problems_are_cached_with_their_reason_and_new_files_are_added(tmp_path):
    _store(tmp_path, 1)
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    cold = read_results(tmp_path)
    warm = read_results(tmp_path)
    assert warm.problems == cold.problems and "not a readable Parquet file" in warm.problems[0]
    write_trial(tmp_path, _record(run_id="late"), [_row(0, 1.0)])
    (tmp_path / "junk.parquet").unlink()
    again = read_results(tmp_path)
    assert sorted(again.trials["run_id"]) == ["late", "r0"] and again.problems == []


def test_a_cache_entry_that_no_longer_checks_is_not_used(tmp_path):
    import pyarrow as pa
    import pyarrow.ipc as ipc

    _store(tmp_path, 1)
    read_results(tmp_path)
    cache = tmp_path / CACHE_DIR / CACHE_FILE
    with ipc.open_file(cache) as reader:
        table = reader.read_all()
    bad = table.set_column(table.schema.get_field_index("entry"), "entry", pa.array(['{"outcome": "won"}']))
    with ipc.new_file(cache, bad.schema) as writer:
        writer.write_table(bad)
    loaded = read_results(tmp_path)
    assert loaded.trials["run_id"].tolist() == ["r0"] and loaded.problems == []


def test_concurrent_readers_and_a_writer_leave_a_cache_that_matches_the_files(tmp_path):
    _store(tmp_path, 2)
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(8):
                read_results(tmp_path)
        except BaseException as exc:  # noqa: BLE001  reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(12):
        write_trial(tmp_path, _record(run_id=f"new{i}"), [_row(0, 1.0)])
    for t in threads:
        t.join()
    assert errors == []
    assert not list((tmp_path / CACHE_DIR).glob(".*.tmp"))  # every cache write was renamed into place
    pd.testing.assert_frame_equal(_frame(read_results(tmp_path)), _frame(read_results(tmp_path, cache=False)))
    assert len(read_results(tmp_path).trials) == 14


def test_the_cache_folder_is_never_read_as_results(tmp_path):
    home = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    (tmp_path / CACHE_DIR).mkdir()
    (tmp_path / CACHE_DIR / "x.parquet").write_bytes(home.read_bytes())
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1 and loaded.problems == []  # not a duplicate, not a problem


def test_an_unwritable_cache_does_not_stop_reading(tmp_path):
    _store(tmp_path, 1)
    (tmp_path / CACHE_DIR).write_text("a file where the cache folder goes")
    assert len(read_results(tmp_path).trials) == 1


def test_a_field_added_with_a_default_keeps_older_files_readable(tmp_path):
    table_path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    import pyarrow.parquet as pq

    import json

    table = pq.read_table(table_path)
    meta = json.loads(table.schema.metadata[b"optbench"])
    del meta["compiled"]  # a file from before 'compiled' existed: neither the column nor the field
    pq.write_table(table.drop_columns(["compiled"]).replace_schema_metadata({"optbench": json.dumps(meta)}),
                   table_path)
    loaded = read_results(tmp_path)
    assert loaded.problems == [] and loaded.trials["compiled"].tolist() == [False]


# ------------------------------------------------------------------------------------------ lazy evaluations


def test_trials_come_from_the_footer_and_unreadable_rows_are_a_problem_when_read(tmp_path):
    import pyarrow.parquet as pq

    good = write_trial(tmp_path, _record(run_id="good", seed=1), [_row(0, 1.0), _row(100, 0.05)])
    bad = write_trial(tmp_path, _record(run_id="bad"), [_row(0, 1.0), _row(100, 0.05)])
    raw = bytearray(bad.read_bytes())
    start = pq.ParquetFile(bad).metadata.row_group(0).column(0).data_page_offset
    raw[start:start + 40] = bytes(40)  # the first column's page zeroed; the footer is intact
    bad.write_bytes(bytes(raw))
    loaded = read_results(tmp_path)
    assert sorted(loaded.trials["run_id"]) == ["bad", "good"] and loaded.problems == []
    assert loaded.evals["run_id"].tolist() == ["good", "good"]
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith(f"{bad}: evaluation rows unreadable")
    assert good.exists()


def test_evals_of_reads_only_the_runs_asked_for(tmp_path, monkeypatch):
    _store(tmp_path, 3)
    loaded = read_results(tmp_path)
    seen: list[list[Path]] = []
    real = store_reader._read_eval_tables
    monkeypatch.setattr(store_reader, "_read_eval_tables", lambda paths, problems: seen.append(list(paths)) or real(
        paths, problems))
    some = loaded.evals_of(["r2", "r0"])
    assert sorted(set(some["run_id"])) == ["r0", "r2"] and len(some) == 4
    assert [p.stem for p in seen[0]] == ["r0", "r2"]
    assert some["workload_key"].tolist() == ["linreg/tiny"] * 4 and some["seed"].tolist() == [0, 0, 2, 2]
    assert loaded.evals_of([]).empty


def test_evals_keep_each_file_in_order_with_its_rows_in_order(tmp_path):
    for i in range(5):
        write_trial(tmp_path, _record(run_id=f"r{i}"), [_row(s, 1.0 / (s + 1)) for s in (0, 10, 20)])
    loaded = read_results(tmp_path)
    e = loaded.evals
    assert e["run_id"].tolist() == [r for r in loaded.trials["run_id"] for _ in range(3)]
    assert e["step"].tolist() == [0, 10, 20] * 5 and list(e.index) == list(range(15))


# --------------------------------------------------------------------------------------- the metric direction


def test_direction_helpers():
    import numpy as np

    assert goal_sign("min") == 1.0 and goal_sign("max") == -1.0
    assert better(1.0, 2.0, "min") and not better(1.0, 2.0, "max") and not better(1.0, 1.0, "min")
    assert best([3.0, float("nan"), 1.0, float("inf")], "min") == 1.0
    assert best([3.0, None, 1.0], "max") == 3.0 and best([float("nan")], "min") is None
    v = np.array([0.1, 0.2, np.nan])
    assert meets(v, 0.2, "min").tolist() == [True, True, False]
    assert meets(v, 0.2, "max").tolist() == [False, True, False]
    with pytest.raises(ValueError, match="'min' or 'max'"):
        goal_sign("up")


# ---------------------------------------------------------------------------------------- interoperability


def test_a_results_directory_is_one_dataset_to_pyarrow_pandas_and_duckdb(tmp_path):
    """One call each (and polars' where installed) reads every trial's rows (docs/PERFORMANCE.md, "Reading results with other tools")."""
    import pyarrow.dataset as ds

    duckdb = pytest.importorskip("duckdb")
    _store(tmp_path, 3)
    write_trial(tmp_path, replace(_record(run_id="small", size="small")), [_row(0, 0.5)])
    read_results(tmp_path)  # leaves the summary cache in place: the tools must not trip on it
    ours = read_results(tmp_path)
    expected = sorted(ours.trials["run_id"])

    table = ds.dataset(tmp_path, format="parquet").to_table()
    frame = pd.read_parquet(tmp_path)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{tmp_path}/**/*.parquet')").df()

    got_all = [table.to_pandas(), frame, rows]
    try:
        import polars as pl
    except ImportError:  # optional, like DuckDB: the test dependency is one of the two
        pass
    else:
        got_all.append(pl.scan_parquet(f"{tmp_path}/**/*.parquet").collect().to_pandas())
    for got in got_all:
        assert len(got) == len(ours.evals) == 7
        assert sorted(set(got["run_id"])) == expected
        assert set(got.columns) >= {*EVAL_COLUMNS, *TRIAL_COLUMNS}
    one = rows.groupby("run_id")["best_metric"].first().sort_index()
    assert one.tolist() == ours.trials.set_index("run_id").sort_index()["best_metric"].tolist()


@pytest.mark.slow
def test_the_scale_benchmark_runs_tiny(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "score_scale.py"
    out = subprocess.run([sys.executable, str(script), "--sizes", "100", "--repeats", "1", "--evals", "3",
                          "--work", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| 100 |" in out.stdout and "report, plots redrawn" in out.stdout
