"""What an interval covers, said wherever one is shown, and the tuning-effort table (``score --effort``, the report).

Every interval printed by ``score --ci`` and ``report`` carries its level and n: times to target use the
distribution-free order-statistic interval of the median over studies, whose coverage is exact and often below the
requested level with few studies (:func:`optbench.scoring.stats.median_order_interval`); scores use a bootstrap,
whose level is nominal and is marked so when some cell has fewer than
:data:`~optbench.scoring.stats.BOOTSTRAP_MIN_UNITS` studies.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from optbench.report.pages import esc, html_table, markdown_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

EFFORT_NOTE = ("Tuning effort: per study, the trials it ran (in trial order) up to and including its first that "
               "reached the target; the median over studies, with its order-statistic interval (coverage and n "
               "stated). 'more than N' = a median study never reached in its N trials. Fewer is better: a method "
               "that needs little tuning reaches in its first trial or two.")


def score_interval_note(ci: pd.DataFrame) -> str:
    """One line for a leaderboard with ``score --ci``: the bootstrap's level, its smallest sample, and whether that
    level is nominal only."""
    from optbench.scoring.stats import BOOTSTRAP_MIN_UNITS

    if ci.empty:
        return ""
    level, n = float(ci["level"].iloc[0]), int(ci["n"].min())
    text = (f"score intervals: {level:.0%} bootstrap percentile over studies (every cell resampled, the leaderboard "
            f"recomputed), fewest studies in a cell n={n}")
    if n < BOOTSTRAP_MIN_UNITS:
        text += (f"; with fewer than {BOOTSTRAP_MIN_UNITS} studies the {level:.0%} is nominal and the real coverage "
                 "lower (2 studies: at most 50%): run more seeds or studies")
    return text


def time_interval_text(row: Any, fmt: Any) -> str:
    """`` [lo, hi] (75%, n=3)`` for one (workload, submission) row of :func:`optbench.scoring.stats.time_cis`;
    ``fmt`` formats a bound. Empty when there is no interval (one study)."""
    if math.isnan(float(row["low"])):
        return f" (n={int(row['n_units'])})"
    level = f"{float(row['level']):.1%}".replace(".0%", "%")
    return f" [{fmt(float(row['low']))}, {fmt(float(row['high']))}] ({level}, n={int(row['n_units'])})"


def time_interval_note(level: float) -> str:
    """The page's line on the times' intervals."""
    return (f"Times to target: the median over studies with its distribution-free order-statistic interval (binomial "
            f"coverage, no assumption on the distribution); requested {level:.0%}, each cell shows the coverage it "
            f"achieves and n (2 studies: 50%, 3: 75%, 5: 94%).")


def _effort_cell(row: Any) -> str:
    if math.isinf(row["estimate"]):
        return f"more than {int(row['trials'])}"
    return f"{row['estimate']:g}"


def _effort_interval(row: Any) -> str:
    if math.isnan(row["low"]):
        return f"no interval (n={int(row['n'])})"
    high = f"more than {int(row['trials'])}" if math.isinf(row["high"]) else f"{row['high']:g}"
    level = f"{row['level']:.1%}".replace(".0%", "%")
    return f"{row['low']:g}-{high} ({level}, n={int(row['n'])})"


def effort_records(effort: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per (workload, submission) of :func:`optbench.scoring.stats.tuning_effort`, infinities as None."""
    out = []
    for (w, s), r in effort.iterrows():
        def num(x: float) -> float | None:
            return None if not math.isfinite(x) else float(x)

        out.append({"workload": str(w), "submission": str(s), "trials_to_reach": num(r["estimate"]),
                    "low": num(r["low"]), "high": num(r["high"]), "level": float(r["level"]),
                    "requested": float(r["requested"]), "studies": int(r["n"]),
                    "studies_reached": int(r["reached"]), "trials_per_study": int(r["trials"]),
                    "interval": "order-statistic"})
    return out


EFFORT_HEADERS = ("workload", "submission", "trials to first reach (median)", "interval (coverage, studies)",
                  "studies reached", "trials per study")


def effort_cells(effort: pd.DataFrame) -> list[list[str]]:
    """The effort table as text rows, in :data:`EFFORT_HEADERS` order."""
    return [[str(w), str(s), _effort_cell(r), _effort_interval(r), f"{int(r['reached'])}/{int(r['n'])}",
             str(int(r["trials"]))] for (w, s), r in effort.iterrows()]


def effort_html(effort: pd.DataFrame) -> str:
    """The report's tuning-effort section."""
    rows = [[esc(c) for c in cells] for cells in effort_cells(effort)]
    return f"<h2>Tuning effort</h2>\n<p class=\"note\">{esc(EFFORT_NOTE)}</p>\n" + html_table(
        list(EFFORT_HEADERS), rows, table_id="effort", left=2)


def print_effort(trials: pd.DataFrame, *, fmt: str, level: float = 0.9) -> None:
    """``optbench score --effort``: the tuning-effort table in ``fmt`` (table|markdown|latex|csv|json)."""
    import click
    import pandas as pd

    from optbench.scoring.stats import tuning_effort

    effort = tuning_effort(trials, level=level)
    cells = effort_cells(effort)
    if fmt == "json":
        click.echo(json.dumps({"note": EFFORT_NOTE, "rows": effort_records(effort)}, indent=2))
    elif fmt == "csv":
        click.echo(pd.DataFrame(effort_records(effort)).to_csv(index=False), nl=False)
    elif fmt == "table":
        from rich.markup import escape
        from rich.table import Table

        from optbench.console import console

        table = Table(title="tuning effort", caption=escape(EFFORT_NOTE), caption_justify="left")
        for h in EFFORT_HEADERS:
            table.add_column(escape(h))
        for row in cells:
            table.add_row(*(escape(c) for c in row))
        console().print(table)
    elif fmt == "latex":
        click.echo(pd.DataFrame(cells, columns=list(EFFORT_HEADERS)).to_latex(index=False))
    else:
        click.echo("\n".join([*markdown_table(EFFORT_HEADERS, cells), "", EFFORT_NOTE]))
