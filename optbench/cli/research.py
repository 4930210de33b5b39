"""Click commands of the research recipes: schedules, cbs, lr-sweep, shape-search, curvature, seesaw, scaling.

Registered on the main group by :func:`add_commands`; like every click module here, it only parses options and
hands off to the command layer (:mod:`optbench.commands.research`). Each recipe that trains takes its own options
(the fields of its spec), every trial option of ``run`` and every execution option (``--jobs``, ``--nproc``,
``--executor``...), all generated from their declarations, plus ``--out``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from optbench.cli.options import config_options, hparam_options, quiet_option, results_dir_option
from optbench.engine.prepared import TrialConfig
from optbench.recipes.cbs import LR_SWEEP_SEEDS, CbsSpec
from optbench.recipes.curvature import DIAGNOSTICS_DEFAULTS, CurvatureSpec
from optbench.recipes.scaling import ScalingSpec
from optbench.recipes.seesaw import SeesawSpec
from optbench.recipes.shapes import ShapeSpec
from optbench.sweep.engine import Execution
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
    from optbench.recipes import schedules as research
    from optbench.plugins.hparams import parse_assignments
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


def recipe_options(spec: type, *, out: str, exclude: tuple[str, ...] = (), spec_exclude: tuple[str, ...] = (),
                   trial_defaults: dict[str, Any] | None = None,
                   spec_defaults: dict[str, Any] | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A recipe's options: its spec's fields (``spec``), ``-o``/``--hparams`` (``hparams``), ``--results-dir``,
    ``--out`` (default ``<results>/recipes/<name>``, holding ``out``), ``--quiet``, and the trial options but
    ``exclude`` (``trial``: what the recipe varies is its own option) and execution options (``execution``)."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            config_options(spec, param="spec", exclude=spec_exclude, defaults=spec_defaults),
            hparam_options, results_dir_option,
            click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help=f"Folder for {out} [default: <results-dir>/recipes/<recipe>]."),
            quiet_option,
            config_options(TrialConfig, param="trial", exclude=exclude, defaults=trial_defaults),
            config_options(Execution, param="execution"),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@click.command()
@recipe_options(CbsSpec, out="cbs.md (table), cbs.csv (every trial) and cbs.png", exclude=("batch_size",))
def cbs(**options: Any) -> None:
    """Critical batch size: steps to target against batch size, each at its best learning rate.

    \b
    Example (linreg tiny, about a minute on two cores):
      optbench cbs -w linreg -s sgd --batch-sizes 8,16,32,64,128 --lrs 0.01,0.03 -o schedule=constant
    """
    from optbench.commands import research

    research.cbs(**options)


@click.command("shape-search")
@recipe_options(ShapeSpec, out="shapes.md (ranking) and shapes.png (the best shapes)",
                exclude=("max_steps", "step_hint"))
def shape_search(**options: Any) -> None:
    """Search learning-rate schedule shapes apart from the base learning rate (Naganuma et al.).

    \b
    Each shape (warmup fraction, decay start, decay power, final fraction) is run at every --lrs value for
    --steps steps and scored by its final metric at its best learning rate.
    Example: optbench shape-search -w linreg -s adamw --shapes 8 --lrs 0.003,0.01,0.03
    """
    from optbench.commands import research

    research.shape_search(**options)


@click.command()
@recipe_options(CurvatureSpec, out="curvature.md (every evaluation) and curvature.png",
                exclude=("diagnostics",), trial_defaults=DIAGNOSTICS_DEFAULTS)
def curvature(**options: Any) -> None:
    """Sharpness (top Hessian eigenvalue) against 2/lr during training: progressive sharpening, edge of stability.

    \b
    Example (gradient descent on the tanh teacher, about 20 s):
      optbench curvature --lrs 0.2,0.5,1.0 -o momentum=0 -o schedule=constant -o warmup_frac=0 --max-steps 2000
    """
    from optbench.commands import research

    research.curvature(**options)


@click.command("seesaw")
@recipe_options(SeesawSpec, out="seesaw.md (the comparison)", exclude=("max_steps",))
def seesaw(**options: Any) -> None:
    """Seesaw against its step-decay twin at equal examples: metric, serial steps, steps to target.

    \b
    Example (linreg tiny, about 20 s):
      optbench seesaw -w linreg -s sgd --seed 0 --seed 1 --seed 2 --eval-every 16
    """
    from optbench.commands import research

    research.seesaw(**options)


@click.command("lr-sweep")
@click.option("-s", "--opt", "opts", multiple=True, default=("adamw", "sgd"), show_default=True,
              help="Submission (repeatable).")
@recipe_options(CbsSpec, out="lr-sweep.md (steps to target per learning rate)",
                spec_exclude=("submission", "batch_sizes", "max_overhead"),
                spec_defaults={"lrs": (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1),
                               "seeds": tuple(range(LR_SWEEP_SEEDS))})
def lr_sweep(**options: Any) -> None:
    """Learning-rate sensitivity: steps to target of each submission at every learning rate.

    \b
    Example: optbench lr-sweep -w linreg -s adamw -s lion -s signum -s adafactor -s sgd --seed 0 --seed 1
    """
    from optbench.commands import research

    research.lr_sweep(**options)


@click.command("scaling")
@recipe_options(ScalingSpec, out="scaling.md (table, fits), scaling.json, scaling.csv (every trial) and two plots",
                exclude=("model",))
def scaling(**options: Any) -> None:
    """Loss against compute over a ladder of model sizes: best lr per size, power-law fits, speedup over a reference.

    \b
    Every size x submission x learning rate x seed trains its whole token budget (--tokens); per submission the
    best lr of each size gives L(C) = a C^-b and lr*(N) = c N^-d, and each size the submission's effective compute
    speedup over --reference, with bootstrap intervals over seeds (extrapolations flagged).
    The default --tokens with a ladder size is 1x Chinchilla: give a small budget on a CPU.
    Example (three tiny CPU rungs on the synthetic corpus, 0.2% of Chinchilla each):
      optbench data prepare synthetic --data-dir DATA
      optbench scaling -s adamw -s lion --models t1,t2,t3 --tokens 0.002x --data-dir DATA --device cpu
    """
    from optbench.commands import research

    research.scaling(**options)


def add_commands(group: click.Group) -> None:
    """Register the research commands on ``group`` (the ``optbench`` main group)."""
    for command in (schedules, cbs, shape_search, curvature, seesaw, lr_sweep, scaling):
        group.add_command(command)
