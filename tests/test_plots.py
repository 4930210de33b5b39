"""Plots drawn by forked workers are the files one process draws, in order; None draws nothing; a write error
in a worker reaches the caller."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from optbench.report.plots import Plot, render_all, workers_for


def _line(k: int):  # noqa: ANN202
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0, k, k * k], label=f"k={k}")
    ax.set(title=f"plot {k}", xlabel="x")
    ax.legend()
    return fig


def _plots() -> list[Plot]:
    plots = [Plot(name=f"p{k}", caption=f"caption {k}", draw=lambda k=k: _line(k)) for k in range(4)]
    plots.insert(2, Plot(name="empty", caption="nothing", draw=lambda: None))
    return plots


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers are forked on Linux only")
def test_workers_write_what_one_process_writes(tmp_path: Path) -> None:
    one, many = tmp_path / "one", tmp_path / "many"
    one.mkdir(), many.mkdir()
    serial = render_all(_plots(), one, workers=1)
    forked = render_all(_plots(), many, workers=3)
    assert [s.name for s in serial] == [s.name for s in forked] == ["p0", "p1", "p2", "p3"]
    assert [s.caption for s in forked] == [f"caption {k}" for k in range(4)]
    for a, b in zip(serial, forked):
        assert a.png.read_bytes() == b.png.read_bytes() and a.svg.read_bytes() == b.svg.read_bytes()
        assert a.png_base64 == b.png_base64 and b.png.parent == many
    assert sorted(p.name for p in many.iterdir()) == sorted(f"p{k}.{e}" for k in range(4) for e in ("png", "svg"))


def test_a_write_error_in_a_worker_is_raised_here(tmp_path: Path) -> None:
    missing = tmp_path / "gone"  # not created: every save fails
    with pytest.raises(OSError):
        render_all(_plots(), missing, workers=2)


def test_workers_never_exceed_plots_or_the_cap() -> None:
    assert workers_for(1) == 1 and workers_for(0) == 1
    assert 1 <= workers_for(100) <= 8


CALLS: list[int] = []


def _counted(k: int, frame=None):  # noqa: ANN001, ANN202
    CALLS.append(k)
    return _line(k)


def test_a_cached_plot_is_copied_not_drawn_and_a_changed_one_is_redrawn(tmp_path: Path) -> None:
    import pandas as pd

    cache = tmp_path / "cache"
    frame = pd.DataFrame({"x": [1.0, 2.0]})
    plots = [Plot(name=f"p{k}", caption="c", draw=_counted, args=(k,), kwargs={"frame": frame}) for k in range(3)]
    CALLS.clear()
    first = render_all(plots, _fresh(tmp_path, "a"), workers=1, cache=cache)
    assert CALLS == [0, 1, 2]
    again = render_all(plots, _fresh(tmp_path, "b"), workers=1, cache=cache)
    assert CALLS == [0, 1, 2]  # nothing drawn: every plot came from the cache, byte for byte
    for a, b in zip(first, again):
        assert a.png.read_bytes() == b.png.read_bytes() and a.svg.read_bytes() == b.svg.read_bytes()
        assert a.png_base64 == b.png_base64 and b.png.parent.name == "b"
    changed = frame.assign(x=[1.0, 2.5])  # one plot's data changes: only it is drawn again
    plots[1] = Plot(name="p1", caption="c", draw=_counted, args=(1,), kwargs={"frame": changed})
    render_all(plots, _fresh(tmp_path, "c"), workers=1, cache=cache)
    assert CALLS == [0, 1, 2, 1]
    (cache / f"{plots[2].key()}.svg").unlink()  # half an entry is no entry
    render_all(plots, _fresh(tmp_path, "d"), workers=1, cache=cache)
    assert CALLS == [0, 1, 2, 1, 2]


def test_what_the_digest_cannot_key_is_drawn_every_time(tmp_path: Path) -> None:
    plot = Plot(name="odd", caption="c", draw=_counted, args=(5,), kwargs={"frame": object()})
    assert plot.key() is None
    CALLS.clear()
    for name in ("a", "b"):
        render_all([plot], _fresh(tmp_path, name), workers=1, cache=tmp_path / "cache")
    assert CALLS == [5, 5]


def test_keys_differ_by_name_caption_function_and_argument_order() -> None:
    base = Plot(name="p", caption="c", draw=_counted, args=(1,))
    assert base.key() == Plot(name="p", caption="c", draw=_counted, args=(1,)).key()
    others = [Plot(name="q", caption="c", draw=_counted, args=(1,)),
              Plot(name="p", caption="d", draw=_counted, args=(1,)),
              Plot(name="p", caption="c", draw=_line, args=(1,)),
              Plot(name="p", caption="c", draw=_counted, args=(1.0,)),
              Plot(name="p", caption="c", draw=_counted, args=(1,), kwargs={"frame": {"a": 1, "b": 2}})]
    keys = {p.key() for p in others} | {base.key()}
    assert len(keys) == len(others) + 1
    assert (Plot(name="p", caption="c", draw=_counted, kwargs={"frame": {"a": 1, "b": 2}}).key()
            != Plot(name="p", caption="c", draw=_counted, kwargs={"frame": {"b": 2, "a": 1}}).key())  # order counts


def test_old_unused_entries_are_pruned(tmp_path: Path) -> None:
    import os
    import time

    cache = tmp_path / "cache"
    cache.mkdir()
    stale, recent = cache / "0123.png", cache / "4567.png"
    stale.write_bytes(b"x"), recent.write_bytes(b"y")
    old = time.time() - 8 * 86400
    os.utime(stale, (old, old))
    render_all([Plot(name="p", caption="c", draw=_line, args=(1,))], _fresh(tmp_path, "o"), workers=1, cache=cache)
    assert not stale.exists() and recent.exists()


def _fresh(root: Path, name: str) -> Path:
    (root / name).mkdir()
    return root / name


def test_report_reuses_its_plots_from_the_results_cache(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from optbench.cli import main
    from tests.test_report import _fill

    results = _fill(tmp_path / "results", workloads=("linreg",), seeds=3)
    runs = []
    for name in ("one", "two"):
        r = CliRunner().invoke(main, ["report", "--results-dir", str(results), "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        runs.append(sorted((tmp_path / name).glob("*.[ps][nv]g")))
    cached = sorted((results / ".optbench-cache" / "plots").iterdir())
    assert len(cached) == len(runs[0]) and {p.suffix for p in cached} == {".png", ".svg"}
    assert [p.name for p in runs[0]] == [p.name for p in runs[1]]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(*runs))
