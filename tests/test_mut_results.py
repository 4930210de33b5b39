"""The results store's edges, pinned for mutation testing (benchmarks/mutation.py runs them for
optbench/store/records.py, writer.py, checks.py and reader.py): file names, the Parquet schema and compression,
every range check of the reader at its boundary, and the frames it returns.

Files are real Parquet written by :func:`write_trial`; a bad file is the real one with its ``optbench`` metadata
replaced, as a foreign or damaged writer would leave it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from optbench.store.checks import check_meta
from optbench.store.reader import read_results, read_trial, result_files
from optbench.store.records import EVAL_COLUMNS, TRIAL_COLUMNS, trial_path
from optbench.store.writer import write_trial

from .test_results import _record, _row


def _meta(**kw) -> dict:
    return {**asdict(_record()), **kw}


def _problem(tmp_path: Path, meta) -> str:
    """The one problem the reader lists for a real file carrying ``meta`` (asserts it is not read as a trial)."""
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"optbench": json.dumps(meta).encode()}), path)
    loaded = read_results(tmp_path)
    assert loaded.trials.empty and len(loaded.problems) == 1, loaded.problems
    assert loaded.problems[0].startswith(f"{path}: ")
    return loaded.problems[0][len(f"{path}: "):]


# ------------------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("name,safe", [
    ("torch.optim:SGD", "torch.optim_SGD"), ("a/b//c", "a_b_c"), ("..x..", "x"), ("_.y._", "y"), ("...", "_"),
    ("", "_"), ("A-z_0.9=1", "A-z_0.9=1"), ("é ü", "_"), ("XmyX", "XmyX"),
])
def test_file_names_are_made_safe(tmp_path, name, safe):
    rec = _record(submission=name, workload="w:1", size="s/2", run_id="rid")
    assert trial_path(tmp_path, rec) == tmp_path / "w_1-s_2" / safe / "rid.parquet"


# ---------------------------------------------------------------------------------------------------- writing
def test_written_file_has_the_declared_types_lz4_and_the_metadata(tmp_path):
    rec = _record(max_seconds=None, compiled=True)
    path = write_trial(tmp_path, rec, [_row(0, 1.0), _row(5, 0.5)])
    pf = pq.ParquetFile(path)
    assert pf.metadata.row_group(0).column(0).compression == "LZ4"  # pyarrow names LZ4_RAW so
    schema = pf.schema_arrow
    assert schema.names == [*EVAL_COLUMNS, *TRIAL_COLUMNS]
    expect = {"step": pa.int64(), "timed_seconds": pa.float64(), "metrics_json": pa.string(), "seed": pa.int64(),
              "target": pa.float64(), "max_seconds": pa.float64(), "steps_to_target": pa.int64(),
              "compiled": pa.bool_(), "error": pa.string(), "batch_size": pa.int64()}
    assert {k: schema.field(k).type for k in expect} == expect
    assert json.loads(schema.metadata[b"optbench"]) == asdict(rec)
    table = pq.read_table(path)
    assert table.num_rows == 2 and table["compiled"].to_pylist() == [True, True]
    assert table["run_id"].to_pylist() == ["r1", "r1"] and table["step"].to_pylist() == [0, 5]


def test_undecodable_metrics_json_is_refused_naming_the_step(tmp_path):
    from dataclasses import replace

    row = replace(_row(7, 0.5), metrics_json='{"x\udcff": 1}')
    with pytest.raises(ValueError, match=r"metrics_json of the evaluation at step 7 is not valid UTF-8 text .*\\udcff"):
        write_trial(tmp_path, _record(), [_row(0, 1.0), row])
    with pytest.raises(ValueError, match=r"trial field 'study' is not valid UTF-8"):
        write_trial(tmp_path, _record(study="s\udcff"), [])
    assert not any(tmp_path.rglob("*"))


# ---------------------------------------------------------------------------------------------------- checking
@pytest.mark.parametrize("field,value", [
    ("seed", 2**63 - 1), ("seed", -2**63), ("total_steps", 0), ("time_to_target", 0.0), ("time_to_target", 3),
    ("best_metric", math.inf), ("max_seconds", None),
    ("error", None), ("compiled", True), ("target", -5.0),
])
def test_values_at_the_edge_of_their_range_are_accepted(field, value):
    out = check_meta(_meta(**{field: value}))
    assert out[field] == value
    if field in ("time_to_target", "target", "best_metric"):
        assert type(out[field]) is float  # an int in a float field reads as a float


@pytest.mark.parametrize("field,value,needle", [
    ("seed", 2**63, "field 'seed' is not a valid int: 9223372036854775808"),
    ("seed", -2**63 - 1, "field 'seed' is not a valid int"),
    ("seed", True, "field 'seed' is not a valid int: True"),
    ("seed", 1.0, "field 'seed' is not a valid int"),
    ("target", False, "field 'target' is not a valid float"),
    ("target", "1", "field 'target' is not a valid float"),
    ("compiled", 1, "field 'compiled' is not a valid bool"),
    ("study", 3, "field 'study' is not a valid str"),
    ("study", None, "field 'study' is null"),
    ("total_timed_seconds", math.nan, "field 'total_timed_seconds' is not finite"),
    ("total_steps", -1, "field 'total_steps' is negative: -1"),
    ("tokens_to_target", -1, "field 'tokens_to_target' is negative"),
    ("time_to_target", -0.5, "field 'time_to_target' is negative: -0.5"),
    ("outcome", "won", "outcome 'won' is not one of reached, missed, diverged, error, oom, timeout, interrupted"),
    ("metric_goal", "up", "metric_goal 'up' is not 'min' or 'max'"),
    ("hparams", "[1]", "field 'hparams' is not a JSON object"),
    ("hparams", "{", "field 'hparams' is not a JSON object"),
    ("hparams", "[" * 100_000 + "]" * 100_000, "field 'hparams' is not a JSON object"),
    ("time_to_target", None, "a reached trial without time_to_target or steps_to_target"),
    ("steps_to_target", None, "a reached trial without time_to_target or steps_to_target"),
    ("schema_version", True, "schema version True is not supported (this optbench reads 1 and 2)"),
    ("schema_version", 3, "schema version 3 is not supported"),
    ("schema_version", 0, "schema version 0 is not supported"),
    ("schema_version", 1.0, "schema version 1.0 is not supported"),
])
def test_out_of_range_values_are_named(tmp_path, field, value, needle):
    assert _problem(tmp_path, _meta(**{field: value})).startswith(needle)


# A bug these tests found (results._as_float's fallback converted the huge int to float again and raised the
# same OverflowError, which stopped every reader), fixed; the tests keep it fixed.
@pytest.mark.parametrize("sign", [1, -1])
def test_an_int_beyond_float_range_reads_as_infinity(sign):
    assert check_meta(_meta(best_metric=sign * 10**400))["best_metric"] == sign * math.inf


def test_an_int_beyond_float_range_in_a_finite_field_is_a_problem(tmp_path):
    assert "field 'target' is not finite: inf" in _problem(tmp_path, _meta(target=10**400))


def test_long_bad_values_are_cut_in_the_message():
    with pytest.raises(ValueError) as info:
        check_meta(_meta(study=["x" * 500]))
    assert str(info.value) == f"field 'study' is not a valid str: {repr(['x' * 500])[:80]}"
    with pytest.raises(ValueError) as info:
        check_meta(_meta(schema_version="v" * 100))
    assert str(info.value).startswith(f"schema version {repr('v' * 100)[:40]} is not")


def test_a_field_without_default_must_be_present_one_with_a_default_may_be_absent():
    meta = _meta()
    del meta["seed"]
    with pytest.raises(ValueError, match="^field 'seed' is missing$"):
        check_meta(meta)
    meta = _meta(compiled=True)
    del meta["compiled"]
    assert check_meta(meta)["compiled"] is False


def test_trials_not_reached_need_no_target_measures():
    none = dict(time_to_target=None, steps_to_target=None, examples_to_target=None, tokens_to_target=None)
    for outcome in ("missed", "diverged", "error", "oom", "timeout", "interrupted"):
        assert check_meta(_meta(outcome=outcome, **none))["outcome"] == outcome


def test_metadata_that_is_not_json_or_not_an_object():
    from optbench.store.checks import _read_json

    with pytest.raises(ValueError, match=r"^'optbench' metadata is not valid JSON \(JSONDecodeError\)$"):
        _read_json(b"{")
    with pytest.raises(ValueError, match=r"not valid JSON \(RecursionError\)"):
        _read_json(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match=r"^'optbench' metadata is a JSON list, not an object$"):
        check_meta([1])


# ---------------------------------------------------------------------------------------------------- reading
def test_missing_columns_are_named(tmp_path):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    table = pq.read_table(path)
    pq.write_table(table.drop(["seed", "step"]), path)
    assert read_results(tmp_path).problems == [f"{path}: missing columns seed, step"]


def test_a_file_without_our_metadata_or_unreadable(tmp_path):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "foreign.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"^not an optbench result \(no 'optbench' metadata\)$"):
        read_trial(tmp_path / "foreign.parquet")
    with pytest.raises(ValueError, match=r"^not a readable Parquet file \(ArrowInvalid: .*magic bytes not found"):
        read_trial(tmp_path / "junk.parquet")


def test_an_eval_column_of_another_type_is_named(tmp_path):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    table = pq.read_table(path)
    table = table.set_column(table.schema.get_field_index("step"), "step", pa.array(["zero"]))
    pq.write_table(table, path)
    with pytest.raises(ValueError, match=r"^evaluation columns of the wrong type \('step' is string\)$"):
        read_trial(path)


def test_field_types_come_from_the_annotations():
    from optbench.store.checks import _field_types

    types = _field_types()
    optional = {name for name, (_, opt) in types.items() if opt}
    assert optional == {"time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target",
                        "best_metric", "max_steps", "max_seconds", "error", "micro_batch_size", "step_hint",
                        "base_batch_size", "compile_seconds", "recompiles", "model_flops_per_example",
                        "optimizer_flops_per_step", "flops_to_target", "total_flops", "mfu", "optimizer_share",
                        "load_average", "cpu_count", "cpu_share", "gpu_utilization"}
    assert {types[k][0] for k in ("seed", "total_steps", "max_steps", "steps_to_target")} == {"int"}
    assert {types[k][0] for k in ("target", "best_metric", "max_seconds", "total_timed_seconds")} == {"float"}
    assert types["compiled"] == ("bool", False) and types["error"] == ("str", True)
    assert types["diagnostics"] == ("bool", False) and types["base_batch_size"] == ("int", True)
    assert list(types) == list(TRIAL_COLUMNS)


def test_read_trial_casts_the_eval_columns(tmp_path):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0), _row(3, 0.5)])
    meta, frame = read_trial(path)
    assert meta["run_id"] == "r1" and list(frame.columns) == list(EVAL_COLUMNS)
    assert str(frame["step"].dtype) == "int64" and str(frame["metric_value"].dtype) == "float64"
    assert frame["metric_value"].tolist() == [1.0, 0.5]


def test_result_files_lists_regular_parquet_files_sorted(tmp_path):
    import os

    (tmp_path / "b").mkdir()
    for name in ("b/z.parquet", "a.parquet", ".hidden.parquet", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.parquet").mkdir()
    (tmp_path / "dir.parquet" / "in.parquet").write_bytes(b"")
    os.mkfifo(tmp_path / "pipe.parquet")
    problems: list[str] = []
    found = result_files(tmp_path, problems)
    assert found == [tmp_path / "a.parquet", tmp_path / "b" / "z.parquet", tmp_path / "dir.parquet" / "in.parquet"]
    assert problems == [f"{tmp_path / 'pipe.parquet'}: not a regular file"]


def test_an_unlistable_folder_is_a_problem(tmp_path):
    problems: list[str] = []
    root = tmp_path / ("x" * 300)  # one name longer than the file system allows: listing it fails
    assert result_files(root, problems) == []
    assert problems == [f"{root}: cannot list every file (File name too long)"]


def test_frames_carry_keys_metadata_and_float_measures(tmp_path):
    write_trial(tmp_path, _record(), [_row(0, 1.0), _row(100, 0.05)])
    write_trial(tmp_path, _record(run_id="r2", size="small", outcome="missed", time_to_target=None,
                                  steps_to_target=None, examples_to_target=None, tokens_to_target=None,
                                  best_metric=None), [])
    loaded = read_results(tmp_path)
    t = loaded.trials.set_index("run_id")
    assert t.loc["r1", "workload_key"] == "linreg/tiny" and t.loc["r2", "workload_key"] == "linreg/small"
    for col in ("time_to_target", "steps_to_target", "examples_to_target", "tokens_to_target", "best_metric",
                "target", "total_timed_seconds"):
        assert str(loaded.trials[col].dtype) == "float64", col
    assert t.loc["r1", "steps_to_target"] == 100.0 and math.isnan(t.loc["r2", "steps_to_target"])
    write_trial(tmp_path, _record(run_id="r3"), [_row(0, 1.0), _row(100, 0.05)])
    e = read_results(tmp_path).evals
    assert list(e.index) == [0, 1, 2, 3]  # one frame, not each file's own index
    e = e[e["run_id"] == "r1"]
    assert len(e) == 2  # a trial without rows (r2) adds none
    assert e["workload_key"].tolist() == ["linreg/tiny"] * 2 and e["step"].tolist() == [0, 100]
    for col in ("workload", "size", "submission", "study", "trial", "seed", "metric_goal", "target"):
        assert e[col].tolist() == [asdict(_record())[col]] * 2, col


def test_no_evaluations_at_all_gives_empty_frames_with_their_columns(tmp_path):
    write_trial(tmp_path, _record(outcome="error", time_to_target=None, steps_to_target=None), [])
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1 and loaded.evals.empty
    assert {*EVAL_COLUMNS, "run_id", "submission", "workload_key"} <= set(loaded.evals.columns)
    empty = read_results(tmp_path / "missing")
    assert list(empty.trials.columns) == [*TRIAL_COLUMNS, "workload_key"] and empty.evals.empty


def test_the_copy_at_its_home_wins_wherever_it_sorts(tmp_path):
    home = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    early = tmp_path / "a-first" / "r1.parquet"  # sorts before the home path
    early.parent.mkdir()
    early.write_bytes(home.read_bytes())
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1
    assert loaded.problems == [f"{early}: duplicate of run 'r1' ({home}), not counted"]
