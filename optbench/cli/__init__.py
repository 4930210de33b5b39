"""Layer 9, cli: the ``optbench`` command line, a thin click layer over :mod:`optbench.commands`.

Every command parses its options and hands off to a function of :mod:`optbench.commands` (or a recipe); trial
options are generated from the fields of one config dataclass (:mod:`optbench.options`). Heavy imports (torch,
pandas, pyarrow) happen inside the commands, so ``optbench --help`` is instant. Every user mistake, whether click
finds it or the library does (:class:`optbench.errors.UsageError`), ends as one line on stderr and exit code 2.

May import: every layer below. Nothing imports it but ``optbench.__main__`` (and the ``cli.py`` shim).
Must never hold the work itself: no training, scoring or file writing beyond calling the layers below.
Enforced by tests/test_layering.py (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from optbench.cli.options import results_dir_option, trial_options
from optbench.cli.research import add_commands as add_research_commands
from optbench.cli.tuning import add_commands
from optbench.cli.data import data as data_group
from optbench.errors import TrialAborted, UsageError


class App(click.Group):
    """A click group whose errors are one line each: ``error: <message>`` with exit code 2 for bad input."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        self.given_args = list(sys.argv[1:] if args is None else args)  # `run --nproc` passes them to torchrun
        warnings.showwarning = _one_line_warning
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            _fail(f"{exc.format_message()}{where}", 2)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except UsageError as exc:
            _fail(str(exc), 2)
        except TrialAborted as exc:
            click.echo(f"error: {exc}", err=True)
            _leave_distributed(1)
        except click.Abort:
            _fail("aborted", 130)
        code = rv if isinstance(rv, int) else 0
        _leave_distributed(code)
        if standalone_mode:
            sys.exit(code)
        return code


def _interactive() -> bool:
    """Whether a person is watching (stderr is a terminal)."""
    return sys.stderr.isatty()


def _one_line_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                      line: str | None = None) -> None:
    """Python warnings as one ``warning:`` line on stderr (no file name and source line)."""
    click.echo(f"warning: {str(message).strip().splitlines()[0]}", err=True)


def _leave_distributed(code: int) -> None:
    """End torchrun's process group if this command used one. After a rank failed, the group holds an abandoned
    collective whose teardown could block: then leave at once (the trial is already recorded)."""
    if "torch.distributed" not in sys.modules:
        return
    from optbench.parallel.distributed import Group, finish

    if Group.broken:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    finish()


def _fail(message: str, code: int) -> None:
    first = message.strip().splitlines()[0] if message.strip() else "failed"
    click.echo(f"error: {first}", err=True)
    sys.exit(code)


@click.group(cls=App, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="optbench")
def main() -> None:
    """optbench: is your optimizer really faster?

    Train workloads to a fixed validation target with any optimizer, record every measurement as Parquet, and score
    time-to-target with AlgoPerf-style performance profiles.

    \b
    Quick start:
      optbench run --workload linreg --opt adamw
      optbench score
    """


@main.command()
@click.option("-w", "--workload", default="linreg", show_default=True,
              help="Workload: a registered name, package.module:Name or path/file.py:Name.")
@click.option("-s", "--opt", "opts", multiple=True, default=("adamw",), show_default=True,
              help="Submission (repeatable): registered name, package.module:Name (a torch.optim.Optimizer "
                   "subclass works as is), or path/file.py:Name.")
@click.option("--size", default=None, help="Size preset of the workload [default: the workload's default].")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Hyperparameter (repeatable); VALUE is JSON when it parses (0.1, true, [0.9,0.99]).")
@click.option("--hparams", "hparams_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON file of hyperparameters (--opt-arg overrides it).")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True,
              help="Seed (repeatable: one trial per seed).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N.")
@results_dir_option
@trial_options
@click.option("--study", default=None, help="Study id for tuning aggregation [default: seed<N>].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--resume", is_flag=True,
              help="Continue each trial from its checkpoint under the results directory, if it has one.")
@click.option("--nproc", type=click.IntRange(min=1, max=1024), default=1, show_default=True,
              help="Processes to train each trial with, data-parallel (starts torchrun: one per GPU, or gloo "
                   "processes on CPU).")
@click.pass_context
def run(ctx: click.Context, workload: str, opts: tuple[str, ...], size: str | None, opt_args: tuple[str, ...],
        hparams_file: Path | None, seeds: tuple[int, ...], device: str, results_dir: Path | None,
        data_dir: Path | None, max_steps: int | None, max_seconds: float | None, step_hint: int | None,
        eval_every_steps: int | None, batch_size: int | None, micro_batch_size: int | None, sync_every: int | None, checkpoint_every: float | None,
        timeout: float | None, warmup_steps: int, diagnostics: bool, compile_model: bool, study: str | None,
        quiet: bool, resume: bool,
        nproc: int) -> int:
    """Train WORKLOAD with each submission and seed until the target or the budget; write one Parquet per trial."""
    from optbench import commands
    from optbench.parallel import launch

    if nproc > 1:
        return launch.torchrun(nproc, launch.without_nproc(ctx.find_root().command.given_args))
    here = launch.rank()
    if not quiet and here == 0 and _interactive():  # torch takes seconds to import: say something first (on a
        # terminal only: a script's stderr keeps bad input to its one line)
        click.echo(f"optbench run: preparing {len(opts) * len(seeds)} trial(s) of {workload} ...", err=True)
    with launch.quiet_unless_main(here):
        return commands.run(
            workload=workload, opts=opts, size=size, opt_args=opt_args, hparams_file=hparams_file, seeds=seeds,
            device=device, results_dir=results_dir, data_dir=data_dir, quiet=quiet or here != 0,
            overrides=dict(max_steps=max_steps, max_seconds=max_seconds, step_hint=step_hint,
                           eval_every_steps=eval_every_steps,
                           batch_size=batch_size, micro_batch_size=micro_batch_size, sync_every=sync_every,
                           checkpoint_every=checkpoint_every, resume=resume or None, timeout=timeout,
                           warmup_steps=warmup_steps, study=study, compile=compile_model,
                           diagnostics=diagnostics or None),
        )


@main.command()
@results_dir_option
@click.option("--by", type=click.Choice(["time", "steps", "examples", "tokens"]), default="time",
              show_default=True, help="Measure to score: timed seconds, or hardware-independent counts.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "latex", "csv", "json"]), default="table",
              show_default=True)
@click.option("--reference", default=None, help="Score against this submission instead of the set's best.")
@click.option("--r-max", type=click.FloatRange(min=1, min_open=True), default=4.0, show_default=True,
              help="Largest performance ratio of the profile (AlgoPerf: 4).")
@click.option("--algoperf", is_flag=True, help="AlgoPerf's discretisation (100 tau points, trapezoid rule).")
@click.option("--ci", "with_ci", is_flag=True, help="Bootstrap confidence intervals of the scores.")
@click.option("--sensitivity", "hparam", default=None, metavar="HPARAM",
              help="Instead of the leaderboard: best metric and time to target per value of HPARAM (e.g. lr).")
def score(results_dir: Path | None, by: str, fmt: str, reference: str | None, r_max: float, algoperf: bool,
          with_ci: bool, hparam: str | None) -> None:
    """Score every trial under the results directory: time to target, performance profiles, leaderboard."""
    from optbench import commands

    commands.score(results_dir=results_dir, by=by, fmt=fmt, reference=reference, r_max=r_max,
                   algoperf=algoperf, with_ci=with_ci, hparam=hparam)


@main.command(name="list")
@click.argument("what", default="all", metavar="[all|workloads|submissions|NAME]")
def list_(what: str) -> None:
    """List workloads and submissions compactly, or show one plugin in detail (a workload's sizes, targets, budgets
    and how each target was chosen; a submission's defaults, capabilities, paper and search space)."""
    from optbench import commands

    commands.list_plugins(what)


@main.command(name="check-plugin")
@click.argument("spec")
@click.option("--skip", multiple=True, help="Check to skip (repeatable), e.g. linreg_tiny.")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Hyperparameter for the checks that train (repeatable). Without an lr, a plain torch.optim "
                   "class is tried over a small lr grid.")
def check_plugin(spec: str, skip: tuple[str, ...], opt_args: tuple[str, ...]) -> None:
    """Run the conformance suite on a submission SPEC (name, package.module:Name or file.py:Name).

    Exit code 0 when every check passes, 1 when any fails, 2 when SPEC cannot be loaded.
    """
    from optbench import commands

    raise SystemExit(commands.check_plugin(spec, skip=skip, opt_args=opt_args))


@main.command()
@results_dir_option
def status(results_dir: Path | None) -> None:
    """Where a sweep stands: trials done, failed, running (claimed by a live task), interrupted (resumable from a
    checkpoint) and pending, per workload and submission, from the results directory alone."""
    from optbench.store import paths
    from optbench.sweep.status import print_status

    print_status(paths.results_dir(results_dir))


main.add_command(data_group)
add_commands(main)
add_research_commands(main)


if __name__ == "__main__":  # pragma: no cover
    main()
