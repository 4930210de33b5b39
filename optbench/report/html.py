"""``optbench report``: plots (PNG + SVG) and one self-contained static HTML page of a results directory.

The page holds the leaderboard (scores with bootstrap intervals, times to target with intervals, outcome counts),
paired tests of every submission against the best one, the plots, and the provenance of every result
(:mod:`optbench.report.sections` makes each section, :mod:`optbench.report.figures` draws each plot). It loads no
external asset: CSS is inline and every plot is embedded as a base64 PNG (the SVG files beside it are linked for
papers). Every string that comes from results (names, hyperparameters, versions) goes through :func:`html.escape`.

Research sections (``cbs-<workload>-<submission>``, ``diagnostics-<workload>``, each with a table) appear only
where the results hold a batch-size sweep or trials run with ``--diagnostics`` (:mod:`optbench.recipes.sections`).

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  Dolan & More, "Benchmarking optimization software with performance profiles", Math. Programming 91 (2002).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from optbench.errors import UsageError
from optbench.report.pages import PLAIN_TEXT, esc
from optbench.report.sections import (PAIRED_LEGEND, figure_html, leaderboard_html, page_warnings, paired_html,
                                      paired_rows, provenance_html, report_plots)
from optbench.store.fsutil import ensure_writable_dir

if TYPE_CHECKING:  # pragma: no cover
    from optbench.scoring.profiles import Leaderboard
    from optbench.store.reader import ResultSet


@dataclass(frozen=True, kw_only=True)
class Report:
    """What :func:`build_report` wrote: the page and the image files (PNG and SVG of each plot)."""

    index: Path
    images: tuple[Path, ...]


# --------------------------------------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;
text-align:right;vertical-align:top}th{background:#f3f3f3}td.l,th.l{text-align:left}
.note{color:#555;font-size:.9em}.warn{background:#fff4e0;border-left:4px solid #f0a020;padding:.4em .8em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.85em;color:#555}
code{font-size:.85em;word-break:break-all}.scroll{overflow-x:auto;max-width:100%}
.nowrap th,.nowrap td{white-space:nowrap}.nowrap code{word-break:normal}
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) { ok++; } }
  document.body.setAttribute('data-images-decoded', ok + '/' + imgs.length);
});
"""


# ------------------------------------------------------------------------------------------------------- driver


def build_report(loaded: ResultSet, *, out: Path, by: str = "time", r_max: float = 4.0, hparam: str = "lr",
                 level: float = 0.9, n_boot: int = 1000, source: str = "", plot_cache: Path | None = None) -> Report:
    """Write plots (PNG + SVG) and ``index.html`` for the results in ``loaded``.

    Args:
      loaded: what :func:`optbench.store.reader.read_results` returned.
      out: output directory (created).
      by: measure to score (``time``, ``steps``, ``examples``, ``tokens``).
      r_max: upper end of the performance profiles.
      hparam: hyperparameter of the sensitivity plots.
      level: confidence level of the bootstrap intervals.
      n_boot: bootstrap replicates.
      source: where the results came from, shown on the page.
      plot_cache: a folder of plots drawn before, reused where their inputs are the same
        (:mod:`optbench.report.plots`); None draws every plot.
    Returns:
      The :class:`Report`. Results of ``run`` and ``tune`` pooled on one workload and submission get one
      ``warning:`` line on stderr (:func:`optbench.report.render.warn_pooled`) and a warning on the page.
    Raises:
      UsageError: no results, a bad measure, matplotlib missing, ``out`` not writable (checked before any plot), or
        a write that fails part way.
    References:
      Dahl et al. 2023 (arXiv:2306.07179), section 4; Efron & Tibshirani 1993 (bootstrap intervals).
    """
    try:
        from matplotlib import rc_context
    except ImportError:
        raise UsageError("optbench report needs matplotlib: pip install matplotlib") from None
    from optbench.report import render
    from optbench.report.plots import render_all
    from optbench.recipes.sections import research_sections
    from optbench.scoring.profiles import leaderboard
    from optbench.scoring.stats import score_ci, time_cis

    if loaded.trials.empty:
        raise UsageError("no results to report; run e.g. 'optbench run' or 'optbench tune' first")
    out = ensure_writable_dir(Path(out), what="report directory")  # before any work is spent on plots
    trials = loaded.scoring_trials()
    render.warn_pooled(trials)  # on stderr now, and on the page among its warnings
    board = leaderboard(trials, by=by, r_max=r_max)
    s_ci = score_ci(trials, by=by, r_max=r_max, level=level, n_boot=n_boot)
    t_ci = time_cis(trials, by=by, level=level, n_boot=n_boot)
    paired = paired_rows(trials, board, by=by)
    with rc_context(PLAIN_TEXT):
        plots = report_plots(loaded, trials, board, by=by, hparam=hparam)
        sections = research_sections(loaded, trials)  # batch-size sweeps, diagnostics: only where results have them
        try:
            every = [*plots, *(p for sec in sections for p in sec.plots)]
            saved = {s.name: s for s in render_all(every, out, cache=plot_cache)}
            blocks = [figure_html(saved[p.name]) for p in plots if p.name in saved]
            research = [f'<h2>{esc(sec.title)}</h2>\n<p class="note">{esc(sec.note)}</p>\n{sec.table_html}\n'
                        + "".join(figure_html(saved[p.name]) for p in sec.plots if p.name in saved)
                        for sec in sections]
            images = [f for s in saved.values() for f in (s.png, s.svg)]
            index = out / "index.html"
            index.write_text(_page(loaded, trials, board, s_ci, t_ci, paired, blocks, level=level, source=source,
                                   research="\n".join(research)), encoding="utf-8")
        except OSError as exc:  # the disk filled up, or the folder went away, while writing
            raise UsageError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None
    return Report(index=index, images=tuple(images))


def _page(loaded: ResultSet, trials: pd.DataFrame, board: Leaderboard, s_ci: pd.DataFrame, t_ci: pd.DataFrame,
          paired: list[dict[str, Any]], figures: list[str], *, level: float, source: str, research: str = "") -> str:
    from optbench import __version__
    from optbench.report import render

    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in page_warnings(loaded, trials))
    summary = (f"{len(trials)} trials, {trials['workload'].nunique()} workload(s), "
               f"{trials['submission'].nunique()} submission(s); generated {now} by optbench {__version__}"
               + (f" from {source}" if source else ""))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>optbench report</title><style>{CSS}</style></head>
<body>
<h1>optbench report</h1>
<p class="note">{esc(summary)}</p>
{warn}
<h2>Leaderboard</h2>
<p class="note">{esc(render.header(board))} {esc(render.outcome_legend())}
Intervals: {level:.0%} bootstrap percentile intervals over studies
(scores: every cell resampled, the whole leaderboard recomputed per replicate).</p>
{leaderboard_html(board, s_ci, t_ci)}
<h2>Paired tests against the best submission</h2>
<p class="note">Per workload, a paired sign-flip test on matched studies (a study's best trial; for
<code>optbench run</code> results a study is one seed). p-value: evidence that A reaches the target faster than B.
Speed-up: median over pairs of t_B / t_A. Seeds needed: matched studies for a paired test to detect the observed
speed-up with power 0.8 at alpha 0.05.</p>
<p class="note" id="paired-legend">{esc(PAIRED_LEGEND)}</p>
{paired_html(paired)}
<h2>Plots</h2>
{''.join(figures)}
{research}
<h2>Provenance</h2>
<p class="note">What produced every result: engine version and code hash, git commit, framework, device, and where
each plugin came from.</p>
{provenance_html(trials)}
<script>{SCRIPT}</script>
</body></html>
"""
