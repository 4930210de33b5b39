"""The results reader against foreign, damaged, copied and half-written files (issue 8): it never raises, every bad
file is a listed problem, copies count once, and temporaries of killed writers are removed but never counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optbench.store import fsutil
from optbench.store.reader import read_results
from optbench.store.records import TRIAL_COLUMNS, trial_path
from optbench.store.writer import write_trial
from optbench.scoring.profiles import leaderboard

from .test_results import _record, _row

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _with_metadata(path: Path, raw: bytes) -> None:
    """Rewrite a real result file with ``raw`` as its ``optbench`` metadata (the data stays as written)."""
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({b"optbench": raw}), path)


def _one_file_is_a_trial_or_a_problem(root: Path, path: Path) -> None:
    """The property: read_results does not raise, and ``path`` is either one trial or one problem naming it."""
    loaded = read_results(root)
    named = [p for p in loaded.problems if p.startswith(str(path))]
    assert len(loaded.trials) + len(named) == 1, (loaded.problems, len(loaded.trials))
    assert len(loaded.problems) == len(named)
    if len(loaded.trials):  # whatever the reader accepts, scoring takes
        board = leaderboard(loaded.scoring_trials(), by="time")
        assert list(board.scores.index) == loaded.trials["submission"].tolist()


@SETTINGS
@given(value=JSON)
def test_any_json_value_as_metadata_is_a_problem_not_a_crash(value):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_trial(root, _record(), [_row(0, 1.0), _row(100, 0.05)])
        _with_metadata(path, json.dumps(value).encode())
        _one_file_is_a_trial_or_a_problem(root, path)
        assert len(read_results(root).trials) == 0  # no JSON value of this shape is a whole trial record


@SETTINGS
@given(field=st.sampled_from(TRIAL_COLUMNS), value=JSON)
def test_one_field_of_any_type_is_checked(field, value):
    """A valid record with one field replaced by any JSON value: a trial if the value fits, else a problem."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = write_trial(root, _record(), [_row(0, 1.0), _row(100, 0.05)])
        _with_metadata(path, json.dumps({**asdict(_record()), field: value}).encode())
        _one_file_is_a_trial_or_a_problem(root, path)


@pytest.mark.parametrize("field,value,needle", [
    ("seed", "abc", "'seed' is not a valid int"),
    ("seed", 2**70, "'seed' is not a valid int"),
    ("seed", True, "'seed' is not a valid int"),
    ("target", [0.1], "'target' is not a valid float"),
    ("target", float("inf"), "'target' is not finite"),
    ("outcome", "won", "outcome 'won' is not one of"),
    ("metric_goal", "up", "metric_goal 'up'"),
    ("hparams", {"lr": 0.1}, "'hparams' is not a valid str"),
    ("hparams", "[1, 2]", "'hparams' is not a JSON object"),
    ("time_to_target", -1.0, "'time_to_target' is negative"),
    ("run_id", None, "'run_id' is null"),
    ("steps_to_target", None, "reached trial without time_to_target or steps_to_target"),
    ("submission", "\udcff", "'submission' is not a valid str"),
])
def test_wrong_field_types_are_named(tmp_path, field, value, needle):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    _with_metadata(path, json.dumps({**asdict(_record()), field: value}).encode())
    loaded = read_results(tmp_path)
    assert loaded.trials.empty and len(loaded.problems) == 1 and needle in loaded.problems[0]


@pytest.mark.parametrize("raw,needle", [
    (b"[1, 2]", "JSON list, not an object"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[" * 100_000, "not valid JSON"),
])
def test_metadata_that_is_no_object(tmp_path, raw, needle):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    _with_metadata(path, raw)
    loaded = read_results(tmp_path)
    assert loaded.trials.empty and needle in loaded.problems[0]


def test_a_record_from_before_a_field_existed_reads_with_its_default(tmp_path):
    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    meta = asdict(_record())
    del meta["compiled"]  # has a default: older files lack it
    _with_metadata(path, json.dumps(meta).encode())
    loaded = read_results(tmp_path)
    assert loaded.problems == [] and loaded.trials["compiled"].tolist() == [False]


def _damaged(data: bytes, cuts: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for pos, byte in cuts:
        out[pos % len(out)] = byte
    return bytes(out)


@pytest.fixture(scope="module")
def real_bytes(tmp_path_factory) -> bytes:
    return write_trial(tmp_path_factory.mktemp("one"), _record(), [_row(0, 1.0), _row(100, 0.05)]).read_bytes()


@SETTINGS
@given(data=st.data())
def test_arbitrary_bytes_as_a_parquet_file(real_bytes, data):
    """Random bytes, and a real file truncated or with bytes overwritten: a problem (or, rarely intact, a trial)."""
    raw = data.draw(st.one_of(
        st.binary(max_size=2000),
        st.integers(0, len(real_bytes)).map(lambda n: real_bytes[:n]),
        st.lists(st.tuples(st.integers(0, len(real_bytes)), st.integers(0, 255)), min_size=1, max_size=8).map(
            lambda cuts: _damaged(real_bytes, cuts)),
    ))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        path = root / "linreg-tiny" / "x" / "damaged.parquet"
        path.parent.mkdir(parents=True)
        path.write_bytes(raw)
        _one_file_is_a_trial_or_a_problem(root, path)


def test_wrong_column_types_are_a_problem(tmp_path):
    import pyarrow as pa

    path = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    table = pq.read_table(path)
    step = table.schema.get_field_index("step")
    table = table.set_column(step, "step", pa.array(["zero"]))
    pq.write_table(table, path)
    loaded = read_results(tmp_path)
    assert loaded.trials.empty and "wrong type" in loaded.problems[0]


# --------------------------------------------------------------------------------------- copies and odd entries


def test_a_copied_file_is_one_trial_and_a_problem(tmp_path):
    home = write_trial(tmp_path, _record(), [_row(0, 1.0), _row(100, 0.05)])
    copy = tmp_path / "aaa-backup" / "r1.parquet"  # sorts before the original: the original must still win
    copy.parent.mkdir()
    copy.write_bytes(home.read_bytes())
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1 and len(loaded.evals) == 2
    assert len(loaded.problems) == 1 and loaded.problems[0].startswith(str(copy))
    assert "duplicate of run 'r1'" in loaded.problems[0] and str(home) in loaded.problems[0]


def test_copies_away_from_home_keep_one(tmp_path):
    other = tmp_path / "elsewhere"
    home = write_trial(other, _record(), [_row(0, 1.0)])
    for name in ("a.parquet", "b.parquet"):
        (tmp_path / name).write_bytes(home.read_bytes())
    home.unlink()
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1 and len(loaded.problems) == 1 and "b.parquet" in loaded.problems[0]


def test_a_directory_named_like_a_result_is_not_read(tmp_path):
    write_trial(tmp_path, _record(), [_row(0, 1.0)])
    odd = tmp_path / "x.parquet"
    odd.mkdir()
    write_trial(odd, _record(run_id="inside"), [_row(0, 1.0)])  # the files inside it are still results
    os.mkfifo(tmp_path / "pipe.parquet")  # reading a FIFO would block forever
    loaded = read_results(tmp_path)
    assert sorted(loaded.trials["run_id"]) == ["inside", "r1"]
    assert len(loaded.problems) == 1 and "pipe.parquet: not a regular file" in loaded.problems[0]


def test_a_hidden_parquet_name_is_never_a_result(tmp_path):
    home = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    (home.parent / ".r2.parquet").write_bytes(home.read_bytes())
    loaded = read_results(tmp_path)
    assert len(loaded.trials) == 1 and loaded.problems == []


# ------------------------------------------------------------------------------------------------ temporaries


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftover_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    home = write_trial(tmp_path, _record(), [_row(0, 1.0)])
    folder = home.parent
    dead = folder / fsutil.temporary_name("r2.parquet", pid=_dead_pid())
    live_writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = folder / fsutil.temporary_name("r3.parquet", pid=live_writer.pid)
        old_style = folder / ".r4.parquet.ab_cd123.tmp"  # tempfile.mkstemp's names, before the PID was in them
        recent_old_style = folder / ".r5.parquet.zz_yy987.tmp"
        for path in (dead, live, old_style, recent_old_style):
            path.write_bytes(home.read_bytes())  # whole Parquet files: only the name says they are temporaries
        hour_ago = time.time() - 2 * fsutil.OLD_TEMPORARY_AGE_S
        os.utime(old_style, (hour_ago, hour_ago))
        loaded = read_results(tmp_path)
        assert len(loaded.trials) == 1 and loaded.problems == []
        assert not dead.exists() and not old_style.exists()
        assert live.exists() and recent_old_style.exists()
    finally:
        live_writer.kill()
        live_writer.wait()
    assert fsutil.clean_stale_temporaries(tmp_path) == 1  # the writer is gone now
    assert not live.exists() and recent_old_style.exists() and home.exists()


def test_atomic_file_names_its_writer(tmp_path):
    target = tmp_path / "f.bin"
    with fsutil.atomic_file(target) as fh:
        (tmp_path_in_use,) = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert tmp_path_in_use.name.startswith(f".f.bin.{os.getpid()}.")
        assert fsutil.clean_stale_temporaries(tmp_path) == 0  # our own write is never cleaned away
        fh.write(b"x")
    assert target.read_bytes() == b"x" and [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_unremovable_temporaries_are_skipped(tmp_path, monkeypatch):
    """A read-only store: the cleaner skips what it cannot delete (the OS refusal is simulated: tests run as root)."""
    stale = tmp_path / fsutil.temporary_name("r.parquet", pid=_dead_pid())
    other = tmp_path / fsutil.temporary_name("s.parquet", pid=_dead_pid())
    stale.write_bytes(b"x")
    other.write_bytes(b"y")
    real_unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self == stale:
            raise PermissionError(13, "Permission denied")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert fsutil.clean_stale_temporaries(tmp_path) == 1 and stale.exists() and not other.exists()
    assert read_results(tmp_path).problems == []


# ---------------------------------------------------------------------------------------------- undecodable text


def test_write_trial_refuses_undecodable_text_and_names_the_field(tmp_path):
    bad = replace(_record(), submission=os.fsdecode(b"opt\xff"))
    with pytest.raises(ValueError, match=r"trial field 'submission' is not valid UTF-8 text.*opt\\udcff"):
        write_trial(tmp_path, bad, [_row(0, 1.0)])
    assert not trial_path(tmp_path, bad).exists() and not any(tmp_path.rglob("*"))
