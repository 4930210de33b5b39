"""``optbench report``: plots (PNG + SVG) and one self-contained static HTML page of a results directory.

The page holds the leaderboard (scores with bootstrap intervals, times to target with intervals, outcome counts),
paired tests of every submission against the best one, the plots, the failed trials with their reasons, and the
provenance of every result (:mod:`optbench.report.sections` makes each section, :mod:`optbench.report.figures` draws
each plot). It loads no external asset: CSS is inline and every plot is embedded as a base64 PNG (the SVG files
beside it are linked for papers). Every string that comes from results (names, hyperparameters, versions) goes
through :func:`html.escape`.

Only comparable trials are ranked (:mod:`optbench.store.units`: research recipes' trials left out, a workload's
trials at different batch sizes or targets scored as separate units); the page says what was left out or split.
More sections come from the caller as :class:`~optbench.report.sections.Section` data: ``optbench report`` hands
in the research sections (batch-size sweeps, curvature; :mod:`optbench.recipes.sections`), which read every trial.

References:
  Dahl et al., "Benchmarking Neural Network Training Algorithms", arXiv:2306.07179 (2023), section 4.
  Dolan & More, "Benchmarking optimization software with performance profiles", Math. Programming 91 (2002).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from optbench.errors import UsageError
from optbench.report.pages import PLAIN_TEXT, esc
from optbench.report.sections import (PAIRED_LEGEND, Section, compute_html, failures_html, figure_html,
                                      leaderboard_html, page_warnings, paired_html, paired_rows, provenance_html,
                                      report_plots, section_html)
from optbench.store.fsutil import ensure_writable_dir

if TYPE_CHECKING:  # pragma: no cover
    from optbench.report.plots import Plot, Saved
    from optbench.scoring.profiles import Leaderboard
    from optbench.store.reader import ResultSet
    from optbench.store.units import Units


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
                 level: float = 0.9, n_boot: int = 1000, source: str = "", plot_cache: Path | None = None,
                 sections: Sequence[Section] = ()) -> Report:
    """Write plots (PNG + SVG) and ``index.html`` for the results in ``loaded``.

    Args:
      loaded: what :func:`optbench.store.reader.read_results` returned.
      out: output directory (created).
      by: measure to score (``time``, ``steps``, ``examples``, ``tokens``, ``flops``: model + optimizer FLOPs).
      r_max: upper end of the performance profiles.
      hparam: hyperparameter of the sensitivity plots.
      level: confidence level of the bootstrap intervals.
      n_boot: bootstrap replicates.
      source: where the results came from, shown on the page.
      plot_cache: a folder of plots drawn before, reused where their inputs are the same
        (:mod:`optbench.report.plots`); None draws every plot.
      sections: more sections, after the plots (``optbench report`` hands in the research sections of
        :mod:`optbench.recipes.sections`); their plots are drawn with the page's.
    Returns:
      The :class:`Report`. Only comparable trials are ranked (:mod:`optbench.store.units`): research trials left
      out and workloads split by setting get one ``note:`` line each on stderr, pooled ``run`` and ``tune``
      results a ``warning:`` line (:mod:`optbench.report.render`), and the page repeats them. With no trial to
      rank, the page holds the other sections and says why there is no leaderboard.
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

    if loaded.trials.empty:
        raise UsageError("no results to report; run e.g. 'optbench run' or 'optbench tune' first")
    out = ensure_writable_dir(Path(out), what="report directory")  # before any work is spent on plots
    units = loaded.units()
    render.note_units(units)  # on stderr now, and on the page among its warnings
    scored = None
    if not units.trials.empty:
        render.warn_pooled(units.trials)
        scored = _score(units.trials, by=by, r_max=r_max, level=level, n_boot=n_boot)
    with rc_context(PLAIN_TEXT):
        plots = [] if scored is None else report_plots(loaded, units.trials, scored.board, by=by, hparam=hparam)
        try:
            saved = _draw([*plots, *(p for sec in sections for p in sec.plots)], out, cache=plot_cache)
            ranked = _nothing_ranked(units) if scored is None else _ranked_html(
                scored, [figure_html(saved[p.name]) for p in plots if p.name in saved], level=level)
            index = out / "index.html"
            index.write_text(_page(loaded, units, ranked, source=source, research="\n".join(
                section_html(sec, saved) for sec in sections)), encoding="utf-8")
        except OSError as exc:  # the disk filled up, or the folder went away, while writing
            raise UsageError(f"cannot write the report in {str(out)!r}: {exc.strerror or exc}") from None
    return Report(index=index, images=tuple(f for s in saved.values() for f in (s.png, s.svg)))


@dataclass(frozen=True, kw_only=True, eq=False)
class _Scored:
    """The numbers of the ranked part of the page."""

    board: Leaderboard
    score_ci: pd.DataFrame
    time_ci: pd.DataFrame
    paired: list[dict[str, Any]]
    effort: pd.DataFrame | None = None


def _score(trials: pd.DataFrame, *, by: str, r_max: float, level: float, n_boot: int) -> _Scored:
    """Leaderboard, bootstrap intervals and paired tests of the ranked trials."""
    from optbench.scoring.profiles import leaderboard
    from optbench.scoring.stats import score_ci, time_cis, tuning_effort

    board = leaderboard(trials, by=by, r_max=r_max)
    return _Scored(board=board, score_ci=score_ci(trials, by=by, r_max=r_max, level=level, n_boot=n_boot),
                   time_ci=time_cis(trials, by=by, level=level, n_boot=n_boot),
                   paired=paired_rows(trials, board, by=by), effort=tuning_effort(trials, level=level))


def _draw(plots: list[Plot], out: Path, *, cache: Path | None) -> dict[str, Saved]:
    """Every plot drawn (or copied from ``cache``) into ``out``, by name."""
    from optbench.report.plots import render_all

    return {s.name: s for s in render_all(plots, out, cache=cache)}


def _nothing_ranked(units: Units) -> str:
    """The leaderboard's place on a page whose trials are all research trials."""
    text = units.nothing_ranked()
    return f'<h2>Leaderboard</h2>\n<p class="note">{esc(text[0].upper() + text[1:])}.</p>\n'


def _ranked_html(scored: _Scored, figures: list[str], *, level: float) -> str:
    """Leaderboard, paired tests and plots: the part of the page about the ranked trials."""
    from optbench.report import render

    from optbench.report.intervals import effort_html, score_interval_note, time_interval_note

    board = scored.board
    return f"""<h2>Leaderboard</h2>
<p class="note">{esc(render.header(board))} {esc(render.outcome_legend())}
{esc(time_interval_note(level))} {esc(score_interval_note(scored.score_ci).capitalize())}.</p>
{leaderboard_html(board, scored.score_ci, scored.time_ci)}
<h2>Paired tests against the best submission</h2>
<p class="note">Per workload, a paired sign-flip test on matched studies (a study's best trial; for
<code>optbench run</code> results a study is one seed). p-value: evidence that A reaches the target faster than B.
Speed-up: median over pairs of t_B / t_A. Seeds needed: matched studies for a paired test to detect the observed
speed-up with power 0.8 at alpha 0.05.</p>
<p class="note" id="paired-legend">{esc(PAIRED_LEGEND)}</p>
{paired_html(scored.paired)}
{"" if scored.effort is None or scored.effort.empty else effort_html(scored.effort)}
<h2>Plots</h2>
{''.join(figures)}
"""


def _page(loaded: ResultSet, units: Units, ranked: str, *, source: str, research: str) -> str:
    """The whole page: summary and warnings, the ranked part, the handed-in sections, the provenance."""
    from optbench import __version__

    trials = loaded.all_trials()  # provenance and counts of every trial, ranked or not
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    warn = "".join(f'<p class="warn">{esc(w)}</p>' for w in page_warnings(loaded, units))
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
{ranked}{compute_html(trials)}{failures_html(trials)}{research}
<h2>Provenance</h2>
<p class="note">What produced every result: engine version and code hash, git commit, framework, device, and where
each plugin came from.</p>
{provenance_html(trials)}
<script>{SCRIPT}</script>
</body></html>
"""
