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

import sys
import warnings
from pathlib import Path
from typing import Any

import click

from optbench.cli.options import (config_options, hparam_options, quiet_option, results_dir_option, seeds_option,
                                  workload_option)
from optbench.cli.research import add_commands as add_research_commands
from optbench.cli.tuning import add_commands
from optbench.cli.data import data as data_group
from optbench.engine.prepared import TrialConfig
from optbench.errors import TrialAborted, UsageError
from optbench.sweep.engine import Execution


class App(click.Group):
    """A click group whose errors are one line each: ``error: <message>`` with exit code 2 for bad input."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
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
    """End torchrun's process group if this command used one (imported only then: torch is slow to import)."""
    if "torch.distributed" in sys.modules:
        from optbench.parallel.distributed import leave

        leave(code)


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
@workload_option()
@click.option("-s", "--opt", "opts", multiple=True, default=("adamw",), show_default=True,
              help="Submission (repeatable): registered name, package.module:Name (a torch.optim.Optimizer "
                   "subclass works as is), path/file.py:Name, or algoperf:path/submission.py (an AlgoPerf "
                   "submission file, run unchanged).")
@hparam_options
@click.option("--search-space", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="For algoperf: submissions: their tuning_search_space.json (run uses its first point) "
                   "[default: the one beside the file].")
@seeds_option()
@click.option("--study", default=None, help="Study id for tuning aggregation [default: seed<N>].")
@results_dir_option
@quiet_option
@config_options(TrialConfig, param="trial")
@config_options(Execution, param="execution")
def run(workload: str, opts: tuple[str, ...], hparams: dict[str, Any], search_space: Path | None,
        seeds: tuple[int, ...], study: str | None, results_dir: Path | None, quiet: bool, trial: TrialConfig,
        execution: Execution) -> int:
    """Train WORKLOAD with each submission and seed until the target or the budget; write one Parquet per trial.

    A trial already recorded in the results directory is not run again (give another --study to repeat it).
    """
    from optbench.commands import trials
    from optbench.plugins.algoperf import with_search_space

    opts = with_search_space(opts, search_space)

    if not quiet and _interactive():  # torch takes seconds to import: say something first (on a terminal only:
        # a script's stderr keeps bad input to its one line)
        click.echo(f"optbench run: preparing {len(opts) * len(seeds)} trial(s) of {workload} ...", err=True)
    return trials.run(workload=workload, opts=opts, hparams=hparams, seeds=seeds, study=study, trial=trial,
                        execution=execution, results_dir=results_dir, quiet=quiet)


@main.command()
@results_dir_option
@click.option("--by", type=click.Choice(["time", "steps", "examples", "tokens", "flops"]), default="time",
              show_default=True, help="Measure to score: timed seconds, or hardware-independent counts.")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "latex", "csv", "json"]), default="table",
              show_default=True)
@click.option("--reference", default=None, help="Score against this submission instead of the set's best.")
@click.option("--r-max", type=click.FloatRange(min=1, min_open=True), default=4.0, show_default=True,
              help="Largest performance ratio of the profile (AlgoPerf: 4).")
@click.option("--algoperf", is_flag=True, help="AlgoPerf's discretisation (100 tau points, trapezoid rule).")
@click.option("--ci", "with_ci", is_flag=True, help="Bootstrap confidence intervals of the scores (their level and "
              "the fewest studies per cell are printed with them).")
@click.option("--effort", is_flag=True, help="Instead of the leaderboard: tuning effort, the trials a study needed "
              "before its first reach (median over studies, order-statistic interval), per workload and submission.")
@click.option("--sensitivity", "hparam", default=None, metavar="HPARAM",
              help="Instead of the leaderboard: best metric and time to target per value of HPARAM (e.g. lr).")
def score(results_dir: Path | None, by: str, fmt: str, reference: str | None, r_max: float, algoperf: bool,
          with_ci: bool, effort: bool, hparam: str | None) -> None:
    """Score every trial under the results directory: time to target, performance profiles, leaderboard."""
    from optbench.commands import results

    results.score(results_dir=results_dir, by=by, fmt=fmt, reference=reference, r_max=r_max,
                   algoperf=algoperf, with_ci=with_ci, hparam=hparam, effort=effort)


@main.command()
@click.argument("run_id")
@results_dir_option
def show(run_id: str, results_dir: Path | None) -> None:
    """Show one trial's record: what ran, how it ended, and why (its stored reason or whole traceback).

    RUN_ID may be the start of a run id (as 'optbench run' prints it, and as each result file is named) if only one
    trial's id starts with it.
    """
    from optbench.commands import results

    results.show(run_id, results_dir=results_dir)


@main.command(name="list")
@click.argument("what", default="all", metavar="[all|workloads|submissions|NAME]")
def list_(what: str) -> None:
    """List workloads and submissions compactly, or show one plugin in detail (a workload's sizes, targets, budgets
    and how each target was chosen; a submission's defaults, capabilities, paper and search space)."""
    from optbench.commands import plugins

    plugins.list_plugins(what)


@main.command(name="check-plugin")
@click.argument("spec")
@click.option("--skip", multiple=True, help="Check to skip (repeatable), e.g. linreg_tiny.")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Hyperparameter for the checks that train (repeatable). Without an lr, a plain torch.optim "
                   "class is tried over a small lr grid.")
@click.option("--check-timeout", "limit", type=float, default=None, metavar="SECONDS",
              help="Time limit of each check (> 0 seconds); one past it is stopped and reported as timed out "
                   "[default: 300].")
def check_plugin(spec: str, skip: tuple[str, ...], opt_args: tuple[str, ...], limit: float | None) -> None:
    """Run the conformance suite on a submission SPEC (name, package.module:Name or file.py:Name), one line per
    check as it runs, and list the submission's capabilities.

    Exit code 0 when every check passes, 1 when any fails, raises or times out, 2 when SPEC cannot be loaded.
    """
    from optbench.commands import plugins

    raise SystemExit(plugins.check_plugin(spec, skip=skip, opt_args=opt_args, limit=limit))


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
