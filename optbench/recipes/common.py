"""What every recipe shares: where its outputs go, writing them atomically, and the median interval of its tables.

A recipe (one module per recipe in this package) is a *planner*, which turns its options into a plan of trials for
the sweep engine (:func:`optbench.sweep.engine.run_plan`), plus an *analysis*, which reads the plan's results back
from the store and writes tables and plots. Because the analysis reads recorded results, a recipe run again after
it finished trains nothing and writes the same outputs; one interrupted is completed by running it again.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from optbench.errors import UsageError
from optbench.report.pages import plain_text
from optbench.store.fsutil import atomic_file

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

RECIPES_DIR = "recipes"  # under the results directory: each recipe's outputs, unless --out says elsewhere


def output_dir(results_dir: Path, recipe: str, out: Path | None) -> Path:
    """Where ``recipe`` writes its tables and plots: ``out``, else ``<results>/recipes/<recipe>/`` (never the working
    directory by default). The sweep proves it writable before any trial trains."""
    return Path(out) if out is not None else Path(results_dir) / RECIPES_DIR / recipe


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` at ``path`` atomically (a reader never sees half a file)."""
    try:
        with atomic_file(path, "w") as f:
            f.write(text)
    except OSError as exc:
        raise UsageError(f"could not write {str(path)!r}: {exc.strerror or exc}") from None
    return path


def save_png(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (a reader never sees half a file)."""
    buf = io.BytesIO()
    with plain_text():
        fig.savefig(buf, format="png", dpi=110)
    try:
        with atomic_file(path) as f:
            f.write(buf.getvalue())
    except OSError as exc:
        raise UsageError(f"could not write {str(path)!r}: {exc.strerror or exc}") from None
    return path


def median_interval(values: Sequence[float], *, level: float = 0.9, n_boot: int = 2000,
                    seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median of ``values`` (inf = missed) with a bootstrap percentile interval over them
    (NaN bounds for fewer than 2 values)."""
    import numpy as np

    from optbench.scoring.stats import _bootstrap_medians, _percentile_bounds

    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    if len(x) < 2:
        return float(np.median(x)), math.nan, math.nan
    low, high = _percentile_bounds(_bootstrap_medians(x, n_boot, np.random.default_rng(seed)), level)
    return float(np.median(x)), float(low), float(high)

