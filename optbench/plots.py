"""Drawing and saving the report's plots, several at once.

matplotlib draws in Python under the GIL, so threads do not help; a report's 10-20 plots are drawn and saved by
forked worker processes instead (one per core, at most :data:`MAX_WORKERS`). Each plot is a :class:`Plot` whose
``draw`` builds its figure from data the parent already holds: a forked child inherits it, so nothing but the
finished file names and the PNG's base64 text travels back. Off Linux (no ``fork`` on Windows; on macOS forking
a process that has used system frameworks is unsafe, and Python's default there is spawn), or with one core or
one plot, they are drawn in this process; the files are the same either way.

Measured on the 2-core machine of docs/PERFORMANCE.md (the report of 100 trials, 10 plots): see that file.
"""

from __future__ import annotations

import base64
import io
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from optbench.pages import PLAIN_TEXT

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MAX_WORKERS = 8


@dataclass(frozen=True, kw_only=True)
class Plot:
    """One plot of a page: its file name (without suffix), caption, and how to draw it (None: nothing to show)."""

    name: str
    caption: str
    draw: Callable[[], Figure | None]


@dataclass(frozen=True, kw_only=True)
class Saved:
    """A plot as written: its PNG and SVG files and the PNG as base64 (for embedding)."""

    name: str
    caption: str
    png: Path
    svg: Path
    png_base64: str


def save_figure(fig: Figure, out: Path, name: str) -> tuple[Path, Path, str]:
    """Write ``name``.png and .svg under ``out``; return both paths and the PNG as base64."""
    from matplotlib import rc_context

    png, svg = out / f"{name}.png", out / f"{name}.svg"
    buf = io.BytesIO()
    # Text stays text in the SVG (smaller, searchable); a fixed salt for its element ids (random by default) makes
    # the same plot the same file, wherever and by whichever process it is drawn.
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "optbench"}):
        fig.savefig(buf, format="png", dpi=110)
        fig.set_layout_engine("none")  # keep the layout the PNG computed: half the cost, identical placement
        fig.savefig(svg, format="svg", metadata={"Date": None})
    png.write_bytes(buf.getvalue())
    return png, svg, base64.b64encode(buf.getvalue()).decode("ascii")


def _render(plot: Plot, out: Path) -> Saved | None:
    from matplotlib import rc_context

    with rc_context(PLAIN_TEXT):
        fig = plot.draw()
        if fig is None:
            return None
        png, svg, b64 = save_figure(fig, out, plot.name)
    return Saved(name=plot.name, caption=plot.caption, png=png, svg=svg, png_base64=b64)


# The plots a forked pool draws: set by the parent just before it forks, read by the children (inherited memory).
_PENDING: tuple[Sequence[Plot], Path] | None = None


def _render_pending(i: int) -> Saved | None:
    assert _PENDING is not None
    plots, out = _PENDING
    return _render(plots[i], out)


def workers_for(n_plots: int) -> int:
    """Processes to draw ``n_plots`` with: one per usable core, at most :data:`MAX_WORKERS` and ``n_plots``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(n_plots, cores, MAX_WORKERS))


def render_all(plots: Sequence[Plot], out: Path, *, workers: int | None = None) -> list[Saved]:
    """Draw and save every plot (PNG + SVG) into ``out``, in ``plots`` order, skipping those that draw None.

    Args:
      plots: what to draw.
      out: an existing, writable folder.
      workers: processes (default :func:`workers_for`); 1 draws here.
    Raises:
      OSError: a file could not be written (from whichever process wrote it).
    """
    global _PENDING
    n = workers_for(len(plots)) if workers is None else max(1, min(workers, len(plots)))
    if n == 1 or not sys.platform.startswith("linux"):
        done = [_render(p, out) for p in plots]
    else:
        _PENDING = (plots, out)
        try:
            with multiprocessing.get_context("fork").Pool(n) as pool:
                done = pool.map(_render_pending, range(len(plots)), chunksize=1)
        finally:
            _PENDING = None
    return [s for s in done if s is not None]
