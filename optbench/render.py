"""Printing a leaderboard: a rich table for people, Markdown/LaTeX for papers, CSV/JSON for machines."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from optbench.results import ResultSet
    from optbench.scoring import Leaderboard

UNITS = {"time": "s", "steps": "steps", "examples": "examples", "tokens": "tokens"}


def _fmt_value(v: float, by: str) -> str:
    if not math.isfinite(v):
        return "miss"
    return f"{v:.3g} s" if by == "time" else f"{v:.4g}"


def rows(board: Leaderboard, ci: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """One dict per submission (best first): rank, score, its CI, per-workload value and ratio, outcome counts."""
    out = []
    table = board.table()
    for rank, (sub, rec) in enumerate(table.iterrows(), start=1):
        row: dict[str, Any] = {"rank": rank, "submission": sub, "score": float(rec["score"])}
        if ci is not None and sub in ci.index:
            row["score_low"], row["score_high"] = float(ci.loc[sub, "low"]), float(ci.loc[sub, "high"])
        for w in board.times.index:
            row[f"{w}:{board.by}"] = float(board.times.loc[w, sub])
            row[f"{w}:ratio"] = float(board.ratios.loc[w, sub])
        for outcome in board.outcomes.columns:
            row[outcome] = int(rec[outcome])
        out.append(row)
    return out


def header(board: Leaderboard) -> str:
    """What the scores mean, stated every time: the measure, the normalisation, the integration."""
    base = f"reference submission {board.reference!r}" if board.reference else "best submission per workload"
    integ = "AlgoPerf's 100-point trapezoid" if board.algoperf else "exact area"
    text = (f"Benchmark score: area under the performance profile over tau in [1, {board.r_max:g}] ({integ}), "
            f"ratios of {board.by} to target relative to the {base}.")
    if board.unreached:
        text += f" No submission reached the target on: {', '.join(board.unreached)}."
    if board.undefined:
        text += f" The reference missed (ratios undefined, counted as misses): {', '.join(board.undefined)}."
    return text


def _cell(row: dict[str, Any], w: str, by: str) -> str:
    v, r = row[f"{w}:{by}"], row[f"{w}:ratio"]
    return _fmt_value(v, by) + (f" ({r:.2f}x)" if math.isfinite(r) else "")


def _outcomes(row: dict[str, Any], names: list[str]) -> str:
    return " ".join(f"{n[0] if n != 'error' else 'E'}{row[n]}" for n in names if row[n]) or "-"


def print_rich(board: Leaderboard, data: list[dict[str, Any]], console: Any) -> None:
    """The leaderboard as a rich table; names from results are escaped, so "[red]" in one prints as is."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"optbench leaderboard (by {board.by})", caption=escape(header(board)),
                  caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("submission")
    table.add_column("score", justify="right")
    for w in board.times.index:
        table.add_column(escape(f"{w}\n{board.by} to target"), justify="right")
    table.add_column("outcomes\n(r/m/d/E/o/t)")
    names = list(board.outcomes.columns)
    for row in data:
        score = f"{row['score']:.3f}"
        if "score_low" in row:
            score += f" [{row['score_low']:.2f}, {row['score_high']:.2f}]"
        table.add_row(str(row["rank"]), escape(str(row["submission"])), score, *(_cell(row, w, board.by) for w in board.times.index),
                      _outcomes(row, names))
    console.print(table)


def to_markdown(board: Leaderboard, data: list[dict[str, Any]]) -> str:
    ws = list(board.times.index)
    lines = [f"| # | submission | score | {' | '.join(ws)} |", "|---:|---|---:|" + "---:|" * len(ws)]
    for row in data:
        score = f"{row['score']:.3f}" + (f" [{row['score_low']:.2f}, {row['score_high']:.2f}]" if "score_low" in row else "")
        lines.append(f"| {row['rank']} | {row['submission']} | {score} | "
                     + " | ".join(_cell(row, w, board.by) for w in ws) + " |")
    return "\n".join([*lines, "", header(board)])


def _tex(text: str) -> str:
    return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def to_latex(board: Leaderboard, data: list[dict[str, Any]]) -> str:
    ws = list(board.times.index)
    lines = [r"\begin{tabular}{rlr" + "r" * len(ws) + "}", r"\toprule",
             " & ".join(["\\#", "submission", "score", *(_tex(w) for w in ws)]) + r" \\", r"\midrule"]
    for row in data:
        cells = [str(row["rank"]), _tex(row["submission"]), f"{row['score']:.3f}",
                 *(_tex(_cell(row, w, board.by)) for w in ws)]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", f"% {header(board)}"]
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def print_leaderboard(loaded: ResultSet, *, by: str, fmt: str, reference: str | None, r_max: float, algoperf: bool,
                      with_ci: bool, console: Any = None) -> None:
    """Score the loaded results and print them in ``fmt`` (table|markdown|latex|csv|json)."""
    import click

    from optbench.scoring import leaderboard

    trials = loaded.scoring_trials()
    board = leaderboard(trials, by=by, r_max=r_max, reference=reference, algoperf=algoperf)
    ci = None
    if with_ci:
        from optbench.stats import score_ci

        ci = score_ci(trials, by=by, r_max=r_max, reference=reference, algoperf=algoperf)
    data = rows(board, ci)
    if fmt == "table":
        from optbench.console import console as make_console

        print_rich(board, data, console or make_console())
    elif fmt == "markdown":
        click.echo(to_markdown(board, data))
    elif fmt == "latex":
        click.echo(to_latex(board, data))
    elif fmt == "csv":
        import pandas as pd

        click.echo(pd.DataFrame(data).to_csv(index=False), nl=False)
    else:
        payload = {"by": board.by, "r_max": board.r_max, "reference": board.reference, "algoperf": board.algoperf,
                   "note": header(board), "rows": [{k: _json_safe(v) for k, v in r.items()} for r in data]}
        click.echo(json.dumps(payload, indent=2))


def print_sensitivity(loaded: ResultSet, *, hparam: str, by: str, fmt: str) -> None:
    """Best metric and time to target per value of one swept hyperparameter, per workload and submission."""
    import click

    from optbench.stats import sensitivity

    table = sensitivity(loaded.scoring_trials(), hparam=hparam, by=by)
    if fmt == "table":
        from rich.markup import escape
        from rich.table import Table

        from optbench.console import console as make_console

        out = Table(title=escape(f"sensitivity to {hparam} (medians over trials; inf = missed)"))
        for col in table.columns:
            out.add_column(escape(str(col)))
        for rec in table.itertuples(index=False):  # names and hyperparameter values: the user's text, escaped
            out.add_row(*(f"{v:.4g}" if isinstance(v, float) else escape(str(v)) for v in rec))
        make_console().print(out)
    elif fmt == "csv":
        click.echo(table.to_csv(index=False), nl=False)
    elif fmt == "json":
        click.echo(json.dumps([{k: _json_safe(v) for k, v in r.items()} for r in table.to_dict("records")],
                              indent=2, default=str))
    elif fmt == "latex":
        click.echo(table.to_latex(index=False))
    else:
        cols = [str(c) for c in table.columns]
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for rec in table.itertuples(index=False):
            lines.append("| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in rec) + " |")
        click.echo("\n".join(lines))
