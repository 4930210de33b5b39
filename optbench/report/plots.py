"""Drawing and saving the report's plots: several at once, and none that was drawn before from the same inputs.

matplotlib draws in Python under the GIL, so threads do not help; a report's 10-20 plots are drawn and saved by
forked worker processes instead (one per core, at most :data:`MAX_WORKERS`). Each plot is a :class:`Plot`: a
drawing function and the arguments it draws from, which the parent already holds; a forked child inherits them, so
nothing but the finished file names and the PNG's base64 text travels back. Off Linux (no ``fork`` on Windows; on
macOS forking a process that has used system frameworks is unsafe, and Python's default there is spawn), or with
one core or one plot, they are drawn in this process; the files are the same either way.

**Plot cache.** A plot's key is a digest of its drawing function, every argument (data frames by content), its
name and caption, and the versions of optbench's code and matplotlib. With a cache folder (``report`` uses
``<results>/.optbench-cache/plots``), a plot whose key is there is copied from it instead of drawn: a report run
again after new trials on one workload redraws that workload's plots and the leaderboard's, not every plot. The
files are byte-identical to a fresh drawing (SVG ids are salted with a constant). An argument the digest does not
know (neither data frame, array, dataclass, container nor scalar) makes its plot uncached, never wrongly keyed;
an unwritable or damaged cache is skipped; deleting it is harmless.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import io
import multiprocessing
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.store.fsutil import AtomicBatch, atomic_batch
from optbench.report.pages import PLAIN_TEXT

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

MAX_WORKERS = 8


CACHE_KEEP_S = 7 * 86400.0  # cached plots unused for this long are deleted when a report writes the cache


@dataclass(frozen=True, kw_only=True)
class Plot:
    """One plot of a page: its file name (without suffix), caption, and ``draw(*args, **kwargs)``, which returns
    the figure (None: nothing to show). Everything the drawing depends on must be in ``args``/``kwargs``: they are
    the plot's cache key (:meth:`key`)."""

    name: str
    caption: str
    draw: Callable[..., Figure | None]
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def figure(self) -> Figure | None:
        return self.draw(*self.args, **self.kwargs)

    def key(self) -> str | None:
        """Digest of everything the plot is drawn from (None: an argument the digest cannot key)."""
        h = hashlib.sha256()
        try:
            _feed(h, (_versions(), f"{self.draw.__module__}.{self.draw.__qualname__}", self.name, self.caption,
                      self.args, dict(self.kwargs)))
        except TypeError:
            return None
        return h.hexdigest()[:32]


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[str, str]:
    import matplotlib

    from optbench.store.provenance import code_hash

    return code_hash(), matplotlib.__version__


def _feed(h: Any, value: Any) -> None:
    """Add ``value`` to the digest ``h`` by content and type; raises TypeError for what it cannot key."""
    import numpy as np
    import pandas as pd

    if isinstance(value, (pd.DataFrame, pd.Series)):
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        h.update(b"frame" + repr((list(map(str, frame.columns)), list(map(str, frame.dtypes)), frame.shape)).encode())
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
        h.update(repr(list(map(str, frame.index.names))).encode())
    elif isinstance(value, np.ndarray):
        h.update(b"array" + repr((str(value.dtype), value.shape)).encode() + np.ascontiguousarray(value).tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        h.update(b"dc" + type(value).__qualname__.encode())
        for f in dataclasses.fields(value):
            _feed(h, (f.name, getattr(value, f.name)))
    elif isinstance(value, Mapping):
        h.update(b"map%d" % len(value))
        for k, v in value.items():  # in order: a colour map's order is part of the plot
            _feed(h, k)
            _feed(h, v)
    elif isinstance(value, (list, tuple)):
        h.update(b"seq%d" % len(value))
        for v in value:
            _feed(h, v)
    elif value is None or isinstance(value, (str, int, float, bool, np.generic)):
        h.update(repr((type(value).__name__, value.item() if isinstance(value, np.generic) else value)).encode())
    else:
        raise TypeError(f"cannot key a {type(value).__name__}")


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
        fig = plot.figure()
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
    from optbench.parallel.executors import cores

    return max(1, min(n_plots, cores(), MAX_WORKERS))


def render_all(plots: Sequence[Plot], out: Path, *, workers: int | None = None,
               cache: Path | None = None) -> list[Saved]:
    """Draw and save every plot (PNG + SVG) into ``out``, in ``plots`` order, skipping those that draw None.

    Args:
      plots: what to draw.
      out: an existing, writable folder.
      workers: processes (default :func:`workers_for`); 1 draws here.
      cache: a folder of plots drawn before (see the module docstring); None draws every plot.
    Raises:
      OSError: a file could not be written in ``out`` (from whichever process wrote it).
    """
    keys = [p.key() if cache is not None else None for p in plots]
    done: list[Saved | None | bool] = [_cached(p, k, cache, out) if k else False for p, k in zip(plots, keys)]
    todo = [i for i, d in enumerate(done) if d is False]
    drawn = _draw([plots[i] for i in todo], out, workers=workers)
    with atomic_batch() as batch:  # one flush to disk for every stored plot
        for i, saved in zip(todo, drawn):
            done[i] = saved
            if keys[i]:
                _store(saved, keys[i], cache, batch)
    if cache is not None:
        _prune(cache, keep={k for k in keys if k})
    return [s for s in done if isinstance(s, Saved)]


def _draw(plots: Sequence[Plot], out: Path, *, workers: int | None) -> list[Saved | None]:
    global _PENDING
    if not plots:
        return []
    n = workers_for(len(plots)) if workers is None else max(1, min(workers, len(plots)))
    if n == 1 or not sys.platform.startswith("linux"):
        return [_render(p, out) for p in plots]
    _PENDING = (plots, out)
    try:
        with multiprocessing.get_context("fork").Pool(n) as pool:
            return pool.map(_render_pending, range(len(plots)), chunksize=1)
    finally:
        _PENDING = None


def _cached(plot: Plot, key: str, cache: Path, out: Path) -> Saved | None | bool:
    """The plot copied from the cache into ``out``; None if it drew nothing; False if it is not (wholly) there."""
    try:
        if (cache / f"{key}.none").exists():
            os.utime(cache / f"{key}.none")
            return None
        png_bytes = (cache / f"{key}.png").read_bytes()
        svg_bytes = (cache / f"{key}.svg").read_bytes()
    except OSError:
        return False
    png, svg = out / f"{plot.name}.png", out / f"{plot.name}.svg"
    png.write_bytes(png_bytes)
    svg.write_bytes(svg_bytes)
    for suffix in (".png", ".svg"):  # recently used: kept by _prune
        try:
            os.utime(cache / f"{key}{suffix}")
        except OSError:
            pass
    return Saved(name=plot.name, caption=plot.caption, png=png, svg=svg,
                 png_base64=base64.b64encode(png_bytes).decode("ascii"))


def _store(saved: Saved | None, key: str, cache: Path, batch: AtomicBatch) -> None:
    """Keep a drawn plot in the cache; a cache that cannot be written is skipped (it is never needed)."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if saved is None:
            with batch.open(cache / f"{key}.none") as f:
                f.write(b"")
            return
        for src, suffix in ((saved.svg, ".svg"), (saved.png, ".png")):
            with batch.open(cache / f"{key}{suffix}") as f, open(src, "rb") as g:
                shutil.copyfileobj(g, f)
    except OSError:
        pass


def _prune(cache: Path, *, keep: set[str]) -> None:
    """Delete cached plots neither in this report nor used within :data:`CACHE_KEEP_S`."""
    now = time.time()
    try:
        entries = list(os.scandir(cache))
    except OSError:
        return
    for entry in entries:
        key = entry.name.split(".")[0]
        try:
            if key not in keep and entry.is_file() and now - entry.stat().st_mtime > CACHE_KEEP_S:
                os.unlink(entry.path)
        except OSError:
            pass
