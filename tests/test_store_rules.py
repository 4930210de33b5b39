"""The results store's two safety rules, tested so that breaking either fails deterministically.

1. A writer never exposes a partial file under the final name: the bytes go to a hidden temporary, and only a
   complete file is renamed onto ``<run_id>.parquet`` (a writer that opens the final path, or hands it to pyarrow,
   fails here without any timing). 2. A reader looks only at ``*.parquet`` names: hidden temporaries, whole or
   half-written, and other files are neither read as trials nor reported as problems.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq

from optbench.store.reader import read_results
from optbench.store.records import trial_path
from optbench.store.writer import write_trial
from tests.test_results import _record, _row


def _target(where) -> Path | None:
    """The file pyarrow writes to: a path, a named file object, or (Linux) what an fd-only file object points at."""
    name = getattr(where, "name", where)
    if isinstance(name, (str, os.PathLike)):
        return Path(name)
    link = Path(f"/proc/self/fd/{where.fileno()}")
    return Path(os.readlink(link)) if link.exists() else None


def test_writer_never_writes_under_the_final_name(tmp_path, monkeypatch):
    record = _record()
    final = trial_path(tmp_path, record)
    real = pq.write_table
    seen = []

    def checked(table, where, *args, **kwargs):
        target = _target(where)
        assert target != final, "pyarrow was handed the final path"
        assert not final.exists(), "the final path exists while the file is being written"
        real(table, where, *args, **kwargs)
        assert not final.exists(), "the final path appeared before the write completed"
        seen.append(target)

    monkeypatch.setattr(pq, "write_table", checked)
    path = write_trial(tmp_path, record, [_row(0, 1.0), _row(100, 0.05)])
    assert path == final and final.is_file()
    assert len(seen) == 1
    if seen[0] is not None:  # known on Linux: a hidden temporary next to the final file, gone after the rename
        assert seen[0].parent == final.parent and seen[0].name.startswith(".") and not seen[0].exists()
    assert sorted(p.name for p in final.parent.iterdir()) == [final.name]


def test_reader_ignores_temporaries_and_other_files(tmp_path):
    kept = write_trial(tmp_path, _record(run_id="kept"), [_row(0, 1.0), _row(100, 0.05)])
    whole = write_trial(tmp_path, _record(run_id="whole"), [_row(0, 1.0)])
    # A complete file still under its temporary name (killed between fsync and rename), a half-written one, and
    # files that are not results at all: none of them is a trial and none is a problem.
    whole.rename(kept.parent / f".{whole.name}.k3j2.tmp")
    (kept.parent / ".half.parquet.x9.tmp").write_bytes(kept.read_bytes()[:40])
    (tmp_path / "notes.txt").write_text("not a result")
    shutil.copy(kept, tmp_path / "kept.parquet.bak")
    loaded = read_results(tmp_path)
    assert loaded.problems == []
    assert loaded.trials["run_id"].tolist() == ["kept"]
    assert len(loaded.evals) == 2
