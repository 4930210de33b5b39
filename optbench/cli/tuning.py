"""Click commands ``optbench tune``, ``optbench report`` and ``optbench import algoperf``: option parsing only.

Like :mod:`optbench.cli`, each command parses its options and calls its body in :mod:`optbench.commands` (the one
command layer), imported inside the command so that ``optbench --help`` stays instant. Bad input raises
:class:`optbench.errors.UsageError`, which the CLI's group turns into one line and exit code 2. ``optbench.cli``
calls :func:`add_commands` to register them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from optbench.cli.options import config_options, quiet_option, results_dir_option
from optbench.engine.prepared import TrialConfig
from optbench.sweep.engine import Execution
from optbench.sweep.tuning import TuneSpec


@click.command()
@config_options(TuneSpec, param="spec")
@results_dir_option
@quiet_option
@config_options(TrialConfig, param="trial", exclude=("resume",))  # a tune always resumes its interrupted trials
@config_options(Execution, param="execution")
def tune(spec: TuneSpec, results_dir: Path | None, quiet: bool, trial: TrialConfig, execution: Execution) -> None:
    """Tune submissions on WORKLOAD: STUDIES x TRIALS trials at scrambled-Halton points of the search space.

    Each trial is an ordinary trial with its own seed, recorded as study-<k> trial <i>; trials already in the
    results directory are skipped, so re-running the command resumes an interrupted tune.
    """
    from dataclasses import replace

    from optbench.commands import trials

    code = trials.tune(spec=replace(spec, trial=trial), execution=execution, results_dir=results_dir, quiet=quiet)
    if code:
        sys.exit(code)


@click.command()
@results_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Where index.html and the PNG/SVG plots go.")
@click.option("--by", type=click.Choice(["time", "steps", "examples", "tokens", "flops"]), default="time",
              show_default=True, help="Measure to score.")
@click.option("--r-max", type=click.FloatRange(min=1, min_open=True), default=4.0, show_default=True,
              help="Largest performance ratio of the profiles.")
@click.option("--hparam", default="lr", show_default=True, help="Hyperparameter of the sensitivity plots.")
def report(results_dir: Path | None, out: Path, by: str, r_max: float, hparam: str) -> None:
    """Write a self-contained HTML report (leaderboard, paired tests, plots, provenance) and PNG/SVG plots."""
    from optbench.commands import results

    results.report(results_dir=results_dir, out=out, by=by, r_max=r_max, hparam=hparam)


@click.group(name="import")
def import_() -> None:
    """Import results of other benchmarks into the results directory."""


@import_.command(name="algoperf")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@results_dir_option
@click.option("--rules", type=click.Choice(["v0.5", "v0.6"]), default="v0.6", show_default=True,
              help="AlgoPerf rules version whose published validation targets apply.")
@click.option("--target", "targets", multiple=True, metavar="WORKLOAD=VALUE",
              help="Validation target of a workload (repeatable); overrides the published one.")
@click.option("--submission", default=None, help="Submission name [default: from the folder names].")
def algoperf(directory: Path, results_dir: Path | None, rules: str, targets: tuple[str, ...],
             submission: str | None) -> None:
    """Import AlgoPerf trial logs (<workload>_<framework>/trial_<n>/eval_measurements.csv) under DIRECTORY."""
    from optbench.commands import results

    results.import_algoperf(directory, results_dir=results_dir, rules=rules, targets=targets,
                             submission=submission)


def add_commands(main: click.Group) -> None:
    """Register ``tune``, ``report`` and ``import`` on the ``optbench`` group."""
    main.add_command(tune)
    main.add_command(report)
    main.add_command(import_)
