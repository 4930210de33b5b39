"""What every module that draws a plot or writes a page shares: escaping, file-safe names, HTML tables, and the
plain-text settings and tick labels of every plot (``report``, its research sections, and the research commands).
Imports nothing of optbench: it is the bottom floor of the output modules."""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

# Names in plots are the user's text: never mathtext ("$x_1$" would be typeset, a lone "$" or "^" can fail to
# parse), never LaTeX. Every figure is drawn and saved under these settings.
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def plain_text() -> Any:
    """A matplotlib ``rc_context`` with :data:`PLAIN_TEXT`."""
    from matplotlib import rc_context

    return rc_context(PLAIN_TEXT)


def esc(value: Any) -> str:
    """HTML-escaped text of any value (quotes included, so it is safe in attributes too)."""
    return html.escape(str(value), quote=True)


def safe_name(text: str) -> str:
    """A file-name-safe version of ``text`` (a workload key or submission label), for plot files."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "workload"


def plain_formatter() -> Any:
    """Tick labels as plain numbers ("0.01", "300"): the default log labels are mathtext, which PLAIN_TEXT turns
    off."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _pos: f"{v:g}")


def plain_log_ticks(axis: Any) -> None:
    """Major tick labels of a log ``axis`` as plain numbers, minor ones blank."""
    from matplotlib.ticker import NullFormatter

    axis.set_major_formatter(plain_formatter())
    axis.set_minor_formatter(NullFormatter())


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a Markdown table: the header row, its rule and one line per row of cells (already text)."""
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers),
            *("| " + " | ".join(r) + " |" for r in rows)]


def html_table(headers: list[str], rows: list[list[str]], *, table_id: str, left: int = 1, wrap: bool = True) -> str:
    """An HTML table; headers and cells are already escaped HTML; the first ``left`` columns are left-aligned.

    ``wrap=False``: cells keep to one line and the table scrolls sideways in its box (hashes, versions and
    hyperparameters are unreadable when broken across lines).
    """
    head = "".join(f'<th class="l">{h}</th>' if i < left else f"<th>{h}</th>" for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>\n" for r in rows)
    box = "scroll" if wrap else "scroll nowrap"
    return (f'<div class="{box}"><table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>\n{body}</tbody>'
            "</table></div>")
