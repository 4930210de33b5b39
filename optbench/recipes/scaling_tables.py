"""What ``optbench scaling`` writes and the report shows: the ladder's table (Markdown, HTML cells, CSV of every
trial, JSON) and its two plots (final loss against compute per submission with the fitted power laws; the best
learning rate against model size), all from a :class:`~optbench.recipes.scaling.ScalingSummary`."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.recipes.common import save_png, write_text
from optbench.recipes.scaling import ScalingRow, ScalingRun, ScalingSummary
from optbench.report.pages import markdown_table, plain_formatter, plain_log_ticks, plain_text
from optbench.scoring.fits import LEVEL, Fit, Interval

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

HEADERS = ("size", "params (non-emb.)", "submission", "best lr", "final loss", f"{LEVEL:.0%} interval", "model FLOPs",
           "tokens", "tokens to target", "speedup", f"{LEVEL:.0%} interval", "extrapolated")


def _g(x: float, fmt: str = ".4g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return "inf" if x == math.inf else format(x, fmt)


def _span(i: Interval) -> str:
    return "" if math.isnan(i.low) else f"{_g(i.low)}-{_g(i.high)}"


def _count(x: float) -> str:
    return "missed" if x == math.inf else _g(x, ".3g")


def row_cells(r: ScalingRow, *, reference: str) -> list[str]:
    """One row as text, in :data:`HEADERS` order (the command and the report print the same)."""
    lr = "" if r.best_lr is None else f"{r.best_lr:.3g}" + (f" ({r.lr_edge} edge)" if r.lr_edge else "")
    if r.speedup is None:
        k, span, extra = ("reference", "", "") if r.submission == reference else ("", "", "")
    else:
        k, span = _g(r.speedup.k.value, ".3g"), _span(r.speedup.k)
        extra = "yes" if r.speedup.extrapolated else "no"
    loss = "diverged" if r.loss.value == math.inf else _g(r.loss.value)
    return [r.model, _g(r.params, ".3g"), r.submission, lr, loss, _span(r.loss), _g(r.compute, ".3g"),
            _g(r.tokens, ".3g"), _count(r.tokens_to_target), k, span, extra]


def fit_lines(summary: ScalingSummary) -> list[str]:
    """One line per fitted law: parameters with intervals and the range they were fitted over."""
    out = []
    for sub, fit in summary.loss_fits.items():
        if fit is not None:
            floor = f"{summary.floor:g} + " if summary.floor else ""
            out.append(f"{sub}: L(C) = {floor}a C^-b, a = {_g(fit.a.value)} ({_span(fit.a)}), b = {_g(fit.b.value)} "
                       f"({_span(fit.b)}), fitted on {fit.points} sizes, C in {_g(fit.x_range[0], '.3g')}-"
                       f"{_g(fit.x_range[1], '.3g')} FLOPs")
    for sub, fit in summary.lr_fits.items():
        if fit is not None:
            out.append(f"{sub}: lr*(N) = c N^-d, c = {_g(fit.a.value)} ({_span(fit.a)}), d = {_g(fit.b.value)} "
                       f"({_span(fit.b)}), N in {_g(fit.x_range[0], '.3g')}-{_g(fit.x_range[1], '.3g')} params")
    return out


def definition(summary: ScalingSummary) -> str:
    return (f"Per size and submission: the learning rate with the lowest mean final loss over seeds, that mean and "
            f"its {LEVEL:.0%} bootstrap interval (seeds resampled, the best learning rate chosen again per draw). "
            f"Speedup over {summary.reference}: k = C_ref(L) / C, the model FLOPs {summary.reference}'s fitted "
            f"L(C) needs to reach this row's loss L over the FLOPs this row spent (both fits and the row resampled); "
            f"'extrapolated': C_ref(L) lies outside {summary.reference}'s measured compute. An lr at the grid's "
            f"edge may not be the optimum.")


def scaling_markdown(summary: ScalingSummary) -> str:
    """The table, the fits and the definitions, as Markdown."""
    lines = markdown_table(HEADERS, (row_cells(r, reference=summary.reference) for r in summary.rows))
    lines += ["", definition(summary), "", "Fits (log-log least squares, intervals by bootstrap over seeds):", ""]
    lines += [f"- {line}" for line in fit_lines(summary)] or ["- none: fewer than two sizes with a finite loss"]
    return "\n".join(lines) + "\n"


def _j(x: Any) -> Any:
    """A JSON value: non-finite floats as null."""
    return x if not isinstance(x, float) or math.isfinite(x) else None


def _interval_json(i: Interval) -> dict[str, Any]:
    return {"value": _j(i.value), "low": _j(i.low), "high": _j(i.high)}


def _fit_json(fit: Fit | None) -> dict[str, Any] | None:
    if fit is None:
        return None
    return {"a": _interval_json(fit.a), "b": _interval_json(fit.b), "floor": fit.law.floor,
            "x_range": [fit.x_range[0], fit.x_range[1]], "points": fit.points}


def scaling_json(summary: ScalingSummary) -> dict[str, Any]:
    """The table and the fits as JSON values (NaN and inf as null; a missed target is null with ``missed``)."""
    rows = []
    for r in summary.rows:
        s = r.speedup
        rows.append({"model": r.model, "params": _j(r.params), "submission": r.submission, "best_lr": r.best_lr,
                     "lr_edge": r.lr_edge, "final_loss": _interval_json(r.loss), "model_flops": _j(r.compute),
                     "tokens": _j(r.tokens), "tokens_to_target": _j(r.tokens_to_target),
                     "flops_to_target": _j(r.flops_to_target), "missed": r.tokens_to_target == math.inf,
                     "speedup": None if s is None else {**_interval_json(s.k), "needed_flops": _j(s.needed),
                                                        "extrapolated": s.extrapolated},
                     "trials": r.runs})
    fits = {sub: {"loss": _fit_json(summary.loss_fits.get(sub)), "lr": _fit_json(summary.lr_fits.get(sub))}
            for sub in summary.loss_fits}
    return {"reference": summary.reference, "loss_floor": summary.floor, "level": LEVEL, "rows": rows, "fits": fits}


RUN_FIELDS = ("model", "submission", "lr", "seed", "outcome", "final_loss", "compute", "tokens", "params",
              "tokens_to_target", "flops_to_target")


def runs_csv(runs: Sequence[ScalingRun]) -> str:
    lines = [",".join(RUN_FIELDS)]
    for r in sorted(runs, key=lambda r: (r.model, r.submission, r.lr, r.seed)):
        lines.append(",".join("" if isinstance(v, float) and math.isnan(v) else repr(v) if isinstance(v, float)
                              else str(v) for v in (getattr(r, f) for f in RUN_FIELDS)))
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ plots


def plot_loss(summary: ScalingSummary, *, title: str) -> Figure:
    """Final loss (best lr, mean over seeds, interval) against model FLOPs per submission, log-log, with each fitted
    power law: solid over the sizes it was fitted on, dashed beyond them (extrapolation)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    xs_all = [r.compute for r in summary.rows if math.isfinite(r.compute) and r.compute > 0]
    for i, sub in enumerate(dict.fromkeys(r.submission for r in summary.rows)):
        rows = [r for r in summary.rows if r.submission == sub and math.isfinite(r.loss.value) and r.compute > 0]
        color = f"C{i % 10}"
        if rows:
            x, y = [r.compute for r in rows], [r.loss.value for r in rows]
            lo = [r.loss.value - r.loss.low if math.isfinite(r.loss.low) else 0.0 for r in rows]
            hi = [r.loss.high - r.loss.value if math.isfinite(r.loss.high) else 0.0 for r in rows]
            ax.errorbar(x, y, yerr=[lo, hi], fmt="o", color=color, capsize=3, label=sub)
        fit = summary.loss_fits.get(sub)
        if fit is not None and xs_all:
            inside = np.geomspace(*fit.x_range, 50)
            wide = np.geomspace(min(xs_all) / 2, max(xs_all) * 2, 80)
            ax.plot(wide, fit.law(wide), "--", color=color, lw=1, alpha=0.6)
            ax.plot(inside, fit.law(inside), "-", color=color, lw=1.5,
                    label=f"{sub} fit: b = {fit.b.value:.3g}")
    _finish(ax, xlabel="model FLOPs", ylabel="final validation loss", title=title)
    return fig


def plot_best_lr(summary: ScalingSummary, *, title: str) -> Figure:
    """The best learning rate of each size against its parameter count, per submission, with lr*(N) = c N^-d."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for i, sub in enumerate(dict.fromkeys(r.submission for r in summary.rows)):
        rows = [r for r in summary.rows if r.submission == sub and r.best_lr is not None and r.params > 0]
        color = f"C{i % 10}"
        if rows:
            ax.plot([r.params for r in rows], [r.best_lr for r in rows], "o", color=color, label=sub)
            edges = [r for r in rows if r.lr_edge]
            if edges:
                ax.plot([r.params for r in edges], [r.best_lr for r in edges], "x", color="k", ms=9)
        fit = summary.lr_fits.get(sub)
        if fit is not None:
            n = np.geomspace(*fit.x_range, 50)
            ax.plot(n, fit.law(n), "-", color=color, lw=1.2, label=f"{sub} fit: d = {fit.b.value:.3g}")
    _finish(ax, xlabel="non-embedding parameters", ylabel="best learning rate (x: at the grid's edge)", title=title)
    return fig


def _finish(ax: Any, *, xlabel: str, ylabel: str, title: str) -> None:
    """Log axes, labels, grid and (when something is drawn) the legend, as both plots have them."""
    _log_axes(ax)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _log_axes(ax: Any) -> None:
    """Both axes logarithmic with plain-number labels (mathtext is off in the report's plots); the y axis labels its
    minor ticks too, since a loss axis often spans less than a decade."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_log_ticks(ax.xaxis)
    ax.yaxis.set_major_formatter(plain_formatter())
    ax.yaxis.set_minor_formatter(plain_formatter() if _span_decades(ax.get_ylim()) < 1 else NullFormatter())


def _span_decades(limits: tuple[float, float]) -> float:
    low, high = limits
    return math.log10(high / low) if low > 0 and high > 0 else math.inf


def write_scaling(summary: ScalingSummary, runs: Sequence[ScalingRun], out: Path, *, title: str,
                  extension: dict[str, Any] | None = None) -> tuple[Path, ...]:
    """``scaling.md`` (table, fits), ``scaling.json`` (with the grid ``extension``'s record), ``scaling.csv`` (every
    trial), ``scaling-loss.png`` and ``scaling-lr.png`` under ``out``."""
    md = write_text(out / "scaling.md", f"# {title}\n\n" + scaling_markdown(summary))
    data = {**scaling_json(summary), "grid_extension": extension}
    js = write_text(out / "scaling.json", json.dumps(data, indent=1) + "\n")
    csv = write_text(out / "scaling.csv", runs_csv(runs))
    with plain_text():
        loss, lr = plot_loss(summary, title=title), plot_best_lr(summary, title=title)
    return md, js, csv, save_png(loss, out / "scaling-loss.png"), save_png(lr, out / "scaling-lr.png")
