"""Atomic writes, temporaries and liveness checks at their edges, pinned for mutation testing
(benchmarks/mutation.py). Real files in a temporary folder; a dead PID is one of a child that has exited."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from optbench.errors import UsageError
from optbench.store.fsutil import (OLD_TEMPORARY_AGE_S, atomic_batch, atomic_file, clean_stale_temporaries, ensure_writable_dir, is_dir,
                             is_file, is_stale_temporary, is_valid_text, pid_alive, printable, temporary_name)


@pytest.fixture(scope="module")
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_names_carry_the_writers_pid_and_16_hex():
    assert re.fullmatch(rf"\.f\.bin\.{os.getpid()}\.[0-9a-f]{{16}}\.tmp", temporary_name("f.bin"))
    assert re.fullmatch(r"\.f\.123\.[0-9a-f]{16}\.tmp", temporary_name("f", 123))
    assert temporary_name("f", 0).startswith(".f.0.")  # an explicit PID is used even when falsy
    assert temporary_name("f") != temporary_name("f")


def test_atomic_file_creates_folders_and_replaces_the_file_private(tmp_path):
    target = tmp_path / "a" / "b" / "f.txt"
    with atomic_file(target, "w") as fh:
        fh.write("one")
        assert not target.exists()  # nothing under the final name until it is whole
    assert target.read_text() == "one" and (target.stat().st_mode & 0o777) == 0o600
    with atomic_file(target) as fh:
        fh.write(b"two")
    assert target.read_bytes() == b"two" and sorted(p.name for p in target.parent.iterdir()) == ["f.txt"]


def test_atomic_file_on_error_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):  # BaseException too: Ctrl-C mid-write
        with atomic_file(target, "w") as fh:
            fh.write("new")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_text_checks():
    assert is_valid_text("héllo") and not is_valid_text("a\udcff")
    assert printable("a\udcffb") == "a\\udcffb" and printable("é") == "é"


def test_pid_alive(dead_pid):
    assert pid_alive(os.getpid()) is True
    assert pid_alive(1) is True  # init: the smallest real PID
    assert pid_alive(dead_pid) is False
    assert pid_alive(0) is False and pid_alive(-1) is False  # process groups, never a writer
    assert pid_alive(2**70) is False  # no PID can be that large


def test_new_style_temporaries_are_stale_when_their_writer_is_gone(tmp_path, dead_pid):
    live = tmp_path / temporary_name("r.parquet")
    dead = tmp_path / temporary_name("r.parquet", dead_pid)
    for p in (live, dead):
        p.write_bytes(b"x")
    assert is_stale_temporary(dead) is True and is_stale_temporary(live) is False
    assert is_stale_temporary(tmp_path / "r.parquet") is False and is_stale_temporary(tmp_path / ".x.tmp") is False


def test_old_style_temporaries_are_stale_after_the_age_limit(tmp_path):
    old = tmp_path / ".r.parquet.abcd_123.tmp"
    old.write_bytes(b"x")
    mtime = old.lstat().st_mtime
    assert is_stale_temporary(old, now=mtime + OLD_TEMPORARY_AGE_S) is False  # exactly the limit: kept
    assert is_stale_temporary(old, now=mtime + OLD_TEMPORARY_AGE_S + 1) is True
    assert is_stale_temporary(old) is False  # now: just written
    os.utime(old, (mtime - OLD_TEMPORARY_AGE_S - 10, mtime - OLD_TEMPORARY_AGE_S - 10))
    assert is_stale_temporary(old) is True
    assert is_stale_temporary(tmp_path / ".gone.abcd_123.tmp", now=1e12) is False  # vanished meanwhile
    assert OLD_TEMPORARY_AGE_S == 3600.0


def test_clean_removes_only_stale_regular_files_and_counts_them(tmp_path, dead_pid):
    sub = tmp_path / "w" / "s"
    sub.mkdir(parents=True)
    stale = [sub / temporary_name("a.parquet", dead_pid), tmp_path / temporary_name("b.parquet", dead_pid)]
    for p in stale:
        p.write_bytes(b"x")
    live = sub / temporary_name("c.parquet")
    live.write_bytes(b"x")
    folder = sub / temporary_name("d", dead_pid)
    folder.mkdir()  # a directory with a temporary's name is not ours to delete
    link = sub / temporary_name("e", dead_pid)
    link.symlink_to(live)
    assert clean_stale_temporaries(tmp_path) == 2
    assert not any(p.exists() for p in stale) and live.exists() and folder.is_dir() and link.is_symlink()
    assert clean_stale_temporaries(tmp_path) == 0
    assert clean_stale_temporaries(tmp_path / "missing") == 0
    assert clean_stale_temporaries(live) == 0  # a file, not a folder


def test_ensure_writable_dir_creates_probes_and_cleans_up(tmp_path):
    target = tmp_path / "x" / "y"
    assert ensure_writable_dir(target) == target and target.is_dir() and list(target.iterdir()) == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UsageError) as info:
        ensure_writable_dir(blocker / "below")
    assert str(info.value) == f"results directory {str(blocker / 'below')!r} is not writable: Not a directory"
    with pytest.raises(UsageError, match=r"^data folder '.*' is not writable: "):
        ensure_writable_dir(blocker / "d", what="data folder")
    target.mkdir(exist_ok=True)
    assert ensure_writable_dir(target) == target  # an existing folder is fine too
    with pytest.raises(UsageError, match=r"^results directory '/proc' is not writable: "):
        ensure_writable_dir(Path("/proc"))  # exists, but no file can be made in it (not even by root)


def test_the_liveness_check_sends_no_signal():
    # The child restores SIGHUP's default (it may inherit "ignored" from nohup): a check that sent a real signal
    # instead of signal 0 would end it.
    child = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGHUP, "
                              "signal.SIG_DFL); print('ready', flush=True); time.sleep(60)"], stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        assert pid_alive(child.pid) is True
        time.sleep(0.2)
        assert child.poll() is None
    finally:
        child.kill()
        child.wait()


def test_is_dir_and_is_file_answer_false_where_a_path_cannot_be_looked_up(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    assert (is_dir(tmp_path), is_file(tmp_path), is_dir(f), is_file(f)) == (True, False, False, True)
    long = tmp_path / ("x" * 300)  # longer than a file name may be: Path.is_dir raises
    assert is_dir(long) is False and is_file(long) is False
    assert is_dir(str(tmp_path)) is True and is_file(str(f)) is True


def test_a_batch_shows_its_files_at_commit_and_syncs_once(tmp_path, monkeypatch):
    syncs = []
    monkeypatch.setattr(os, "sync", lambda: syncs.append(1))
    monkeypatch.setattr(os, "fsync", lambda fd: pytest.fail("a batch fsyncs no file on its own"))
    finals = [tmp_path / "a" / f"{i}.bin" for i in range(3)]
    with atomic_batch() as batch:
        for i, path in enumerate(finals):
            with batch.open(path) as f:
                f.write(bytes([i]) * 10)
        assert not any(p.exists() for p in finals)  # nothing under a final name before the commit
        assert len(list((tmp_path / "a").iterdir())) == 3  # three hidden temporaries
    assert syncs == [1]
    assert [p.read_bytes() for p in finals] == [bytes([i]) * 10 for i in range(3)]
    assert sorted(os.listdir(tmp_path / "a")) == ["0.bin", "1.bin", "2.bin"]


def test_a_batch_left_by_an_error_keeps_every_finished_file(tmp_path):
    done, broken = tmp_path / "done.bin", tmp_path / "broken.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_batch() as batch:
            with batch.open(done) as f:
                f.write(b"whole")
            with batch.open(broken) as f:
                f.write(b"half")
                raise KeyboardInterrupt
    assert done.read_bytes() == b"whole" and not broken.exists()
    assert os.listdir(tmp_path) == ["done.bin"]  # the unfinished file's temporary is gone too


def test_an_empty_batch_syncs_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sync", lambda: pytest.fail("nothing to flush"))
    with atomic_batch():
        pass
