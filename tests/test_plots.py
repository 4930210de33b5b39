"""Plots drawn by forked workers are the files one process draws, in order; None draws nothing; a write error
in a worker reaches the caller."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from optbench.plots import Plot, render_all, workers_for


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
