"""Terminal output shared by every command: one console factory and one escape rule.

Everything a user or a plugin named (a plugin spec, a study, a file path) goes through :func:`escape` before rich
sees it, so that ``[bold]`` in a name prints as text instead of being read as markup (or crashing on ``[/x]``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

PIPE_WIDTH = 160  # columns when writing to a file or pipe, where tables should not be cut at 80


def console(stderr: bool = False, *, pipe_width: int = PIPE_WIDTH) -> Any:
    """A rich console on stdout (or stderr); ``pipe_width`` columns wide when writing to a file or pipe, where
    there is no terminal width, unless ``COLUMNS`` says otherwise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    wide = stream.isatty() or os.environ.get("COLUMNS")
    return Console(stderr=stderr, highlight=False, width=None if wide else pipe_width)


def escape(value: Any) -> str:
    """``value`` as text that rich prints literally."""
    from rich.markup import escape as rich_escape

    return rich_escape(str(value))
