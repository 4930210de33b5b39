"""What every recipe shares: where its outputs go, writing them atomically, and the median interval of its tables.

A recipe (one module per recipe in this package) is a *planner*, which turns its options into a plan of trials for
the sweep engine (:func:`optbench.sweep.engine.run_plan`), plus an *analysis*, which reads the plan's results back
from the store and writes tables and plots. Because the analysis reads recorded results, a recipe run again after
it finished trains nothing and writes the same outputs; one interrupted is completed by running it again.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.errors import UsageError
from optbench.report.pages import plain_text
from optbench.store.fsutil import atomic_file

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from optbench.scoring.stats import Interval

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


def median_interval(values: Sequence[float], *, level: float = 0.9) -> Interval:
    """The median of ``values`` (inf = missed) with its distribution-free order-statistic interval
    (:func:`optbench.scoring.stats.median_order_interval`): ``level`` on the result is the coverage achieved, below
    the requested one with few values (2 values: 50%), and ``label()`` says it with n, for every table that shows it."""
    from optbench.scoring.stats import median_order_interval

    return median_order_interval(list(values), level=level)


# ------------------------------------------------------------------------------- learning-rate grid edges

MAX_EXTENSIONS = 3  # rounds of grid extension a recipe runs by default before reporting an edge optimum as such
DEFAULT_GRID_STEP = 3.0  # the factor a one-value grid would be extended by (a grid of one is never extended)


def grid_edge(grid: Sequence[float], scores: Mapping[float, float]) -> str | None:
    """``"low"`` or ``"high"`` when the best (smallest) score of ``grid`` sits at that end alone; None when it is
    interior, tied between values (a plateau), when nothing reached (every score inf: no side to move to) or the
    grid has one value (no sweep)."""
    values = sorted(grid)
    finite = [scores[g] for g in values if g in scores and math.isfinite(scores[g])]
    if len(values) < 2 or not finite:
        return None
    best = min(finite)
    at = [i for i, g in enumerate(values) if scores.get(g, math.inf) == best]
    if len(at) > 1:  # a tie: the best is a plateau, not a point beyond the grid
        return None
    return {0: "low", len(values) - 1: "high"}.get(at[0])


def extend_grid(grid: Sequence[float], scores: Mapping[float, float], *,
                high: float = 1e6) -> tuple[float, ...] | None:
    """``grid`` with one more value beyond the edge its best score sits at, at the grid's own spacing on that side
    (the ratio of its two outermost values), or None when the best is interior (or see :func:`grid_edge`) or the new
    value would leave (0, ``high``]. Pure, so the rounds of :func:`extend_until_interior` are testable on numbers."""
    side = grid_edge(grid, scores)
    if side is None:
        return None
    values = sorted(grid)
    if side == "low":
        new = values[0] / (values[1] / values[0])
    else:
        new = values[-1] * (values[-1] / values[-2])
    new = float(f"{new:.6g}")  # a value that prints as it is (0.001, not 0.0010000000000000002)
    if not 0 < new <= high or new in values:
        return None
    return tuple(sorted((*values, new)))


def _key(key: Any) -> str:
    """A grid's key as JSON text: a tuple key (a model size and a submission) joined with "/", not its repr."""
    return "/".join(str(part) for part in key) if isinstance(key, tuple) else str(key)


@dataclass(frozen=True, kw_only=True)
class GridExtension:
    """What :func:`extend_until_interior` did, recorded in a recipe's JSON: per key (a batch size, a submission) the
    grid it ended with, the values it added, and the edge its best still sits at (None: interior)."""

    grids: dict[Any, tuple[float, ...]]
    added: dict[Any, tuple[float, ...]]
    edges: dict[Any, str | None]
    rounds: int
    enabled: bool

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "rounds": self.rounds,
                "grids": {_key(k): list(v) for k, v in self.grids.items()},
                "added": {_key(k): list(v) for k, v in self.added.items() if v},
                "edges": {_key(k): v for k, v in self.edges.items() if v}}

    def notes(self, what: str = "lr") -> list[str]:
        """One line per key whose best value still sits at an edge: an optimum there is a bound, not a value."""
        return [f"best {what} of {k} is at the {side} edge of its grid ({min(self.grids[k]) if side == 'low' else max(self.grids[k]):g}): "
                f"the optimum may lie beyond it" + ("" if self.enabled else " (rerun without --no-extend-grid to "
                                                    "extend the grid)") for k, side in self.edges.items() if side]


def extend_until_interior(grids: Mapping[Any, Sequence[float]],
                          run_round: Callable[[Mapping[Any, tuple[float, ...]]], Mapping[Any, Mapping[float, float]]],
                          *, max_extensions: int = MAX_EXTENSIONS, enabled: bool = True) -> GridExtension:
    """Run ``run_round`` on ``grids`` (key -> learning rates), then, while some key's best score sits at an edge of
    its grid and fewer than ``max_extensions`` rounds were added, extend those grids by one step on that side
    (:func:`extend_grid`) and run again. ``run_round`` takes the grids and returns key -> {lr: score} (smaller is
    better, inf = missed); a sweep engine skips what is already recorded, so each round trains only the new values.
    """
    current = {k: tuple(sorted(v)) for k, v in grids.items()}
    rounds = 0
    while True:
        scores = run_round(current)
        grown = {k: extend_grid(g, scores.get(k, {})) for k, g in current.items()}
        if not enabled or rounds >= max_extensions or all(v is None for v in grown.values()):
            break
        current = {k: grown[k] or g for k, g in current.items()}
        rounds += 1
    added = {k: tuple(sorted(set(current[k]) - set(grids[k]))) for k in current}
    edges = {k: grid_edge(g, scores.get(k, {})) for k, g in current.items()}
    return GridExtension(grids=current, added=added, edges=edges, rounds=rounds, enabled=enabled)
