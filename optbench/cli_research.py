"""Click commands of the research recipes (schedules, schedule-shape search, critical batch size).

Registered on the main group by :func:`add_commands`; like every click module here, it only parses options and
hands off to the library.
"""

from __future__ import annotations

import click


def add_commands(group: click.Group) -> None:
    """Register the research commands on ``group`` (the ``optbench`` main group)."""
