"""Printing a leaderboard: a rich table for people, Markdown/LaTeX for papers, CSV/JSON for machines."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from optbench.report.pages import markdown_table

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from optbench.scoring.profiles import Leaderboard
    from optbench.store.reader import ResultSet
    from optbench.store.units import Units

UNITS = {"time": "s", "steps": "steps", "examples": "examples", "tokens": "tokens", "flops": "FLOPs"}

# One letter per trial outcome (results.OUTCOMES), and what it means: the legend printed under every table that
# uses the letters, and the reason a miss gives. "E" is a capital so that an error stands out among the letters.
OUTCOME_LETTERS = {"reached": "r", "missed": "m", "diverged": "d", "error": "E", "oom": "o", "timeout": "t",
                   "interrupted": "i"}
OUTCOME_MEANING = {"reached": "reached the target", "missed": "budget spent without reaching the target",
                   "diverged": "diverged (loss or metric non-finite or exploding)", "error": "raised an error",
                   "oom": "out of memory", "timeout": "killed at its time limit",
                   "interrupted": "interrupted before it finished"}
MISS_REASON = {"missed": "budget", "diverged": "diverged", "error": "error", "oom": "oom", "timeout": "timeout",
               "interrupted": "interrupted"}


def outcome_letters() -> str:
    """The outcome column's heading: the letters in order, e.g. ``r/m/d/E/o/t/i``."""
    return "/".join(OUTCOME_LETTERS.values())


def outcome_legend() -> str:
    """One line spelling out every outcome letter."""
    return "Outcomes (trial counts): " + "; ".join(f"{OUTCOME_LETTERS[o]} = {OUTCOME_MEANING[o]}"
                                                   for o in OUTCOME_LETTERS) + "."


def outcome_counts(counts: Any) -> str:
    """Counts as letters, zeros left out (``r3 d1``); ``-`` when there is none. ``counts`` maps outcome -> n."""
    return " ".join(f"{OUTCOME_LETTERS[o]}{int(counts[o])}" for o in OUTCOME_LETTERS if counts[o]) or "-"


def miss_reason(board: Leaderboard, workload: str, submission: str) -> str:
    """Why a cell scores as a miss: what its trials did (``2 diverged, 1 budget``), a time beyond r_max, or no run.

    A cell misses when the median over its studies is inf, so some of its studies may have reached: they are
    counted as ``k/n studies reached``.
    """
    if (workload, submission) not in board.cells.index:
        return "not run"
    cell = board.cells.loc[(workload, submission)]
    if math.isfinite(float(cell["value"])):
        return "reference missed" if workload in board.undefined else f"ratio > {board.r_max:g}"
    parts = [part for o, why in MISS_REASON.items() if cell[o]
             for part in (_budget_parts(cell) if o == "missed" else [f"{int(cell[o])} {why}"])]
    if cell["n_studies_reached"]:
        parts.append(f"{int(cell['n_studies_reached'])}/{int(cell['n_studies'])} studies reached")
    return ", ".join(parts) or "no trial reached"


def _budget_parts(cell: Any) -> list[str]:
    """The misses of a cell by the budget that ended them: ``2 out of steps``, ``1 out of seconds`` (a machine's
    speed or load), and ``budget`` for files that did not record which."""
    steps, seconds = int(cell.get("missed_steps", 0)), int(cell.get("missed_seconds", 0))
    rest = int(cell["missed"]) - steps - seconds
    return [f"{n} {why}" for n, why in ((steps, "out of steps"), (seconds, "out of seconds"),
                                        (rest, MISS_REASON["missed"])) if n]


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
            row["score_level"], row["score_n"] = float(ci.loc[sub, "level"]), int(ci.loc[sub, "n"])
        for w in board.times.index:
            row[f"{w}:{board.by}"] = float(board.times.loc[w, sub])
            row[f"{w}:ratio"] = float(board.ratios.loc[w, sub])
            if not math.isfinite(row[f"{w}:ratio"]):
                row[f"{w}:miss"] = miss_reason(board, w, str(sub))
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
    """``12.3 s (1.50x)``; a miss says why: ``miss (2 diverged, 1 budget)``, ``40 s (miss: ratio > 4)``."""
    v, r = row[f"{w}:{by}"], row[f"{w}:ratio"]
    if math.isfinite(r):
        return f"{_fmt_value(v, by)} ({r:.2f}x)"
    why = row.get(f"{w}:miss", "")
    if math.isfinite(v):
        return f"{_fmt_value(v, by)} (miss: {why})" if why else _fmt_value(v, by)
    return f"miss ({why})" if why else "miss"


def _outcomes(row: dict[str, Any]) -> str:
    return outcome_counts({o: row.get(o, 0) for o in OUTCOME_LETTERS})


def caption(board: Leaderboard) -> str:
    """The caption under every format of the leaderboard: title, what scores mean, the outcome legend."""
    return f"optbench leaderboard (by {board.by}). {header(board)} {outcome_legend()}"


def print_rich(board: Leaderboard, data: list[dict[str, Any]], console: Any) -> None:
    """The leaderboard as a rich table; names from results are escaped, so "[red]" in one prints as is."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"optbench leaderboard (by {board.by})",
                  caption=escape(f"{header(board)}\n{outcome_legend()}"), caption_justify="left")
    table.add_column("#", justify="right")
    table.add_column("submission")
    table.add_column("score", justify="right")
    for w in board.times.index:
        table.add_column(escape(f"{w}\n{board.by} to target"), justify="right")
    table.add_column(f"outcomes\n({outcome_letters()})")
    for row in data:
        score = f"{row['score']:.3f}"
        if "score_low" in row:
            score += f" [{row['score_low']:.2f}, {row['score_high']:.2f}]"
        table.add_row(str(row["rank"]), escape(str(row["submission"])), score, *(_cell(row, w, board.by) for w in board.times.index),
                      _outcomes(row))
    console.print(table)


def to_markdown(board: Leaderboard, data: list[dict[str, Any]]) -> str:
    """A pipe table with an outcome-count column and a pandoc-style ``Table:`` caption under it."""
    ws = list(board.times.index)
    lines = [f"| # | submission | score | {' | '.join(ws)} | outcomes ({outcome_letters()}) |",
             "|---:|---|---:|" + "---:|" * len(ws) + "---|"]
    for row in data:
        score = f"{row['score']:.3f}" + (f" [{row['score_low']:.2f}, {row['score_high']:.2f}]" if "score_low" in row else "")
        lines.append(f"| {row['rank']} | {row['submission']} | {score} | "
                     + " | ".join(_cell(row, w, board.by) for w in ws) + f" | {_outcomes(row)} |")
    return "\n".join([*lines, "", f"Table: {caption(board)}"])


_TEX = {"\\": r"\textbackslash{}", "_": r"\_", "&": r"\&", "%": r"\%", "#": r"\#", "$": r"\$", "{": r"\{",
        "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _tex(text: str) -> str:
    """``text`` as LaTeX prints it literally (one pass, so an inserted ``{}`` is not escaped again)."""
    return "".join(_TEX.get(ch, ch) for ch in text)


def to_latex(board: Leaderboard, data: list[dict[str, Any]]) -> str:
    """A booktabs ``table`` float with an outcome-count column and a caption (header and legend)."""
    ws = list(board.times.index)
    lines = [r"\begin{table}[t]", r"\centering", r"\begin{tabular}{rlr" + "r" * len(ws) + "l}", r"\toprule",
             " & ".join(["\\#", "submission", "score", *(_tex(w) for w in ws),
                         _tex(f"outcomes ({outcome_letters()})")]) + r" \\", r"\midrule"]
    for row in data:
        cells = [str(row["rank"]), _tex(row["submission"]), f"{row['score']:.3f}",
                 *(_tex(_cell(row, w, board.by)) for w in ws), _tex(_outcomes(row))]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + _tex(caption(board)) + "}", r"\end{table}"]
    return "\n".join(lines)


def _json_safe(x: Any) -> Any:
    return None if isinstance(x, float) and not math.isfinite(x) else x


def pooled_warning(trials: pd.DataFrame) -> str | None:
    """The one-line warning for results of ``run`` and ``tune`` pooled on one workload and submission, or None."""
    from optbench.scoring.profiles import pooled_run_and_tune

    pooled = pooled_run_and_tune(trials)
    if not pooled:
        return None
    cells = ", ".join(f"{s} on {w}" for w, s in pooled)
    return (f"this results directory pools 'optbench run' studies (seed<N>) and 'optbench tune' studies "
            f"(study-<k>) of {cells}: scoring takes one median over both kinds; keep them in separate "
            "--results-dir folders")


def warn_pooled(trials: pd.DataFrame, console: Any = None) -> None:
    """Print :func:`pooled_warning` as one ``warning:`` line on stderr when it applies."""
    text = pooled_warning(trials)
    if text is None:
        return
    from optbench.console import console as make_console
    from optbench.console import escape

    (console or make_console(stderr=True)).print(f"warning: {escape(text)}", soft_wrap=True)


def note_units(units: Units, console: Any = None) -> None:
    """Print each of the units' notes (research trials left out, workloads split by setting) as one ``note:`` line
    on stderr: what is ranked is never silently less, or other, than what was read."""
    from optbench.console import console as make_console
    from optbench.console import escape

    for text in units.notes():
        (console or make_console(stderr=True)).print(f"note: {escape(text)}", soft_wrap=True)


def ranked_trials(loaded: ResultSet) -> pd.DataFrame:
    """The trials ``score`` ranks (:meth:`optbench.store.reader.ResultSet.scoring_trials`), with their notes and the
    pooled-studies warning printed on stderr.

    Raises:
      UsageError: every trial is a research trial, so there is nothing to rank.
    """
    from optbench.errors import UsageError

    units = loaded.units()
    if units.trials.empty:
        raise UsageError(units.nothing_ranked())
    note_units(units)
    warn_pooled(units.trials)
    return units.trials


def optimizer_shares(trials: Any) -> dict[str, float]:
    """Median share of the timed seconds each submission's update step took (``optimizer_share``; submissions
    with no measured trial are left out): "fewer steps but dearer steps" at a glance."""
    if "optimizer_share" not in trials.columns:
        return {}
    medians = trials.groupby("submission", sort=True)["optimizer_share"].median().dropna()
    return {str(k): float(v) for k, v in medians.items()}


def share_note(trials: Any) -> str | None:
    """One ``note:`` line of :func:`optimizer_shares`, or None when none was measured."""
    shares = optimizer_shares(trials)
    if not shares:
        return None
    return "note: optimizer step's share of the timed seconds (median): " + ", ".join(
        f"{k} {v:.0%}" for k, v in shares.items())


def print_leaderboard(loaded: ResultSet, *, by: str, fmt: str, reference: str | None, r_max: float, algoperf: bool,
                      with_ci: bool, console: Any = None) -> None:
    """Score the loaded results and print them in ``fmt`` (table|markdown|latex|csv|json)."""
    import click

    from optbench.scoring.profiles import leaderboard

    trials = ranked_trials(loaded)
    board = leaderboard(trials, by=by, r_max=r_max, reference=reference, algoperf=algoperf)
    ci = None
    if with_ci:
        from optbench.scoring.stats import score_ci

        ci = score_ci(trials, by=by, r_max=r_max, reference=reference, algoperf=algoperf)
    data = rows(board, ci)
    if fmt == "table":
        from optbench.console import console as make_console

        out = console or make_console()
        print_rich(board, data, out)
        if ci is not None:
            from rich.markup import escape as esc_markup

            from optbench.report.intervals import score_interval_note

            out.print(esc_markup(score_interval_note(ci)), soft_wrap=True)
        share = share_note(trials)
        if share:
            from rich.markup import escape

            out.print(escape(share), soft_wrap=True)
    elif fmt == "markdown":
        click.echo(to_markdown(board, data) + _ci_line(ci))
    elif fmt == "latex":
        click.echo(to_latex(board, data) + _ci_line(ci, prefix="% "))
    elif fmt == "csv":
        import pandas as pd

        click.echo(pd.DataFrame(data).to_csv(index=False), nl=False)
    else:
        payload = {"by": board.by, "r_max": board.r_max, "reference": board.reference, "algoperf": board.algoperf,
                   "note": header(board), "legend": outcome_legend(),
                   "rows": [{k: _json_safe(v) for k, v in r.items()} for r in data],
                   "optimizer_share": optimizer_shares(trials), "score_interval": _ci_line(ci).strip() or None}
        click.echo(json.dumps(payload, indent=2))


def _ci_line(ci: pd.DataFrame | None, *, prefix: str = "") -> str:
    """The score intervals' level and n as a trailing line (empty without ``--ci``)."""
    from optbench.report.intervals import score_interval_note

    return "" if ci is None else f"\n\n{prefix}{score_interval_note(ci)}"


def print_sensitivity(loaded: ResultSet, *, hparam: str, by: str, fmt: str) -> None:
    """Best metric and time to target per value of one swept hyperparameter, per workload and submission."""
    import click

    from optbench.scoring.stats import sensitivity

    trials = ranked_trials(loaded)
    table = sensitivity(trials, hparam=hparam, by=by)
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
        rows = ([f"{v:.4g}" if isinstance(v, float) else str(v) for v in rec] for rec in table.itertuples(index=False))
        click.echo("\n".join(markdown_table(cols, rows)))
