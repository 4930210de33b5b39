"""The Parquet results store: round trip, atomic writes, and tolerance of files that are not ours."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pandas as pd
import pytest

from optbench import SCHEMA_VERSION
from optbench.store.reader import read_results, read_trial
from optbench.store.records import EVAL_COLUMNS, TRIAL_COLUMNS, EvalRow, TrialRecord
from optbench.store.writer import write_trial


def _record(**kw) -> TrialRecord:
    base = dict(
        schema_version=SCHEMA_VERSION, run_id="r1", created_at="2026-01-01T00:00:00+00:00", workload="linreg",
        size="tiny", workload_origin="optbench==0.1.0", submission="torch.optim:SGD", submission_origin="torch==2",
        hparams=json.dumps({"lr": 0.1}), seed=0, study="seed0", trial="0", outcome="reached",
        metric_name="excess_risk", metric_goal="min", target=0.1, time_to_target=1.5, steps_to_target=100,
        examples_to_target=3200, tokens_to_target=3200, best_metric=0.05, total_steps=100, total_timed_seconds=1.5,
        max_steps=3000, max_seconds=None, error=None, optbench_version="0.1.0", code_hash="abc",
        git_commit="", torch_version="2", python_version="3.11", device="cpu", device_name="cpu", cpu_model="cpu",
    )
    return TrialRecord(**{**base, **kw})


def _row(step: int, value: float) -> EvalRow:
    return EvalRow(step=step, examples=32 * step, tokens=32 * step, timed_seconds=step / 100, eval_seconds=0.01,
                   wall_seconds=step / 90, train_loss=math.nan if step == 0 else 0.3, metric_value=value,
                   learning_rate=0.1, batch_size=32, metrics_json=json.dumps({"excess_risk": value}))


def test_round_trip(tmp_path):
    rec = _record()
    path = write_trial(tmp_path, rec, [_row(0, 1.0), _row(100, 0.05)])
    assert path.name == "r1.parquet" and path.parent.name == "torch.optim_SGD"  # ':' never reaches a file name
    meta, frame = read_trial(path)
    assert meta == {**vars(rec)}
    assert list(frame.columns) == list(EVAL_COLUMNS) and frame["step"].tolist() == [0, 100]
    plain = pd.read_parquet(path)  # self-describing for anyone with pandas
    assert list(plain.columns) == [*EVAL_COLUMNS, *TRIAL_COLUMNS]
    assert plain["submission"].unique().tolist() == ["torch.optim:SGD"]
    assert plain["max_seconds"].isna().all() and plain["error"].isna().all()
    loaded = read_results(tmp_path)
    assert loaded.problems == [] and loaded.trials["workload_key"].tolist() == ["linreg/tiny"]
    assert len(loaded.evals) == 2 and set(loaded.evals["workload_key"]) == {"linreg/tiny"}


def test_trial_without_evals_is_still_written(tmp_path):
    write_trial(tmp_path, _record(outcome="error", error="Traceback ...", time_to_target=None, steps_to_target=None,
                                  examples_to_target=None, tokens_to_target=None, best_metric=None), [])
    loaded = read_results(tmp_path)
    assert loaded.trials.iloc[0]["outcome"] == "error" and loaded.evals.empty


def test_corrupt_foreign_and_future_files_are_reported_not_fatal(tmp_path):
    write_trial(tmp_path, _record(), [_row(0, 1.0)])
    (tmp_path / "truncated.parquet").write_bytes(b"PAR1\x00\x01")
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "foreign.parquet")
    write_trial(tmp_path, _record(run_id="future", schema_version=SCHEMA_VERSION + 1), [_row(0, 1.0)])
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1
    reasons = " | ".join(loaded.problems)
    assert "truncated.parquet" in reasons and "not a readable Parquet" in reasons
    assert "foreign.parquet" in reasons and "not an optbench result" in reasons
    assert "schema version" in reasons


def test_temporary_files_are_ignored(tmp_path):
    write_trial(tmp_path, _record(), [_row(0, 1.0)])
    (tmp_path / ".r2.abcd.tmp").write_bytes(b"half a file")
    assert len(read_results(tmp_path).trials) == 1


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    def explode(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", explode)
    with pytest.raises(OSError):
        write_trial(tmp_path, _record(), [_row(0, 1.0)])
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_missing_directory_reads_empty(tmp_path):
    loaded = read_results(tmp_path / "nope")
    assert loaded.trials.empty and loaded.problems == []
    assert replace(_record(), seed=3).seed == 3


def test_study_kind_and_what_it_varies_round_trip(tmp_path):
    write_trial(tmp_path, _record(study_kind="cbs", varies="batch_size,lr"), [_row(0, 1.0)])
    trial = read_results(tmp_path).trials.iloc[0]
    assert (trial["study_kind"], trial["varies"]) == ("cbs", "batch_size,lr")
    assert (_record().study_kind, _record().varies) == ("run", "")  # a plain run's, and an older file's


def test_a_file_from_before_study_kind_reads_as_a_plain_run(tmp_path):
    import pyarrow.parquet as pq

    path = write_trial(tmp_path, _record(study_kind="cbs", varies="lr"), [_row(0, 1.0)])
    table = pq.read_table(path).drop(["study_kind", "varies"])  # what an older writer left: neither column ...
    meta = {k: v for k, v in json.loads(table.schema.metadata[b"optbench"]).items()
            if k not in ("study_kind", "varies")}  # ... nor key
    pq.write_table(table.replace_schema_metadata({"optbench": json.dumps(meta)}), path)
    loaded = read_results(tmp_path, cache=False)
    assert loaded.problems == []
    assert loaded.trials[["study_kind", "varies"]].values.tolist() == [["run", ""]]


@pytest.mark.parametrize("field", ["study_kind", "varies"])
def test_study_kind_and_varies_are_checked_like_any_text_field(tmp_path, field):
    import pyarrow.parquet as pq

    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    table = pq.read_table(path)
    meta = {**json.loads(table.schema.metadata[b"optbench"]), field: 3}
    pq.write_table(table.replace_schema_metadata({"optbench": json.dumps(meta)}), path)
    loaded = read_results(tmp_path, cache=False)
    assert loaded.trials.empty and loaded.problems == [f"{path}: field {field!r} is not a valid str: 3"]
