"""Click commands of the research recipes (schedules, schedule-shape search, critical batch size).

Registered on the main group by :func:`add_commands`; like every click module here, it only parses options and
hands off to the library (:mod:`optbench.research`), imported inside the commands so ``optbench --help`` stays
instant.
"""

from __future__ import annotations

from pathlib import Path

import click

from optbench.console import console as _console
from optbench.console import escape


def _int_list(text: str | None, *, what: str) -> list[int] | None:
    from optbench.errors import UsageError

    if not text:
        return None
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise UsageError(f"{what} expects comma-separated integers, got {text!r}") from None


@click.command()
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Schedule hyperparameter (repeatable): schedule, warmup_frac, decay_floor, cooldown_frac, ...")
@click.option("--schedule", "names", multiple=True,
              help="Schedule to show (repeatable; each with the same -o keys) [default: -o schedule or constant].")
@click.option("--total-steps", type=int, default=1000, show_default=True,
              help="Length of the schedule (a submission uses the workload's step_hint).")
@click.option("--steps", default=None, help="Comma-separated 1-based steps to print [default: 11 spread].")
@click.option("--lr", "base_lr", type=float, default=None, help="Print learning rates for this base lr.")
@click.option("--png", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also plot every step to this PNG.")
@click.option("--list", "list_only", is_flag=True, help="List the schedules and the keys each reads, then stop.")
def schedules(opt_args: tuple[str, ...], names: tuple[str, ...], total_steps: int, steps: str | None,
              base_lr: float | None, png: Path | None, list_only: bool) -> None:
    """Print (and plot) learning-rate schedules for given hyperparameters.

    \b
    Examples:
      optbench schedules --list
      optbench schedules -o schedule=wsd -o cooldown_frac=0.2 -o cooldown_shape=1-sqrt --total-steps 1500
      optbench schedules --schedule cosine --schedule wsd --schedule invsqrt -o warmup_frac=0.05 --png s.png
    """
    from optbench import research
    from optbench.hparams import parse_assignments
    from optbench.schedules import TABLE, key_default

    console = _console()
    if list_only:
        for kind in TABLE:
            keys = ", ".join(f"{k}={key_default(kind.name, k)}" for k in kind.keys)
            console.print(f"[bold]{kind.name}[/bold]  {escape(keys)}\n    {escape(kind.formula)}")
        return
    given = parse_assignments(opt_args)
    configs = [{**given, "schedule": n} for n in names] or [given]
    at = _int_list(steps, what="--steps")
    rows = [research.schedule_values(c, total_steps=total_steps, steps=at, base_lr=base_lr) for c in configs]
    what = "learning rate" if base_lr is not None else "multiplier of the base learning rate"
    for i, c in enumerate(configs):
        console.print(f"[{i}] {escape(research.describe(c))}")
    console.print(f"{'step':>10}" + "".join(f"{f'[{i}]':>12}" for i in range(len(configs))) + f"   ({what})")
    for i, (t, _) in enumerate(rows[0]):
        console.print(f"{t:>10}" + "".join(f"{r[i][1]:>12.6g}" for r in rows))
    if png is not None:
        path = research.schedules_plot(configs, total_steps=total_steps, out=png, base_lr=base_lr)
        console.print(f"wrote {escape(str(path))}")


def add_commands(group: click.Group) -> None:
    """Register the research commands on ``group`` (the ``optbench`` main group)."""
    group.add_command(schedules)
