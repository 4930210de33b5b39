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

from optbench.cli.options import results_dir_option, trial_options


@click.command()
@click.option("-w", "--workload", default="linreg", show_default=True, help="Workload to tune on.")
@click.option("-s", "--opt", "opts", multiple=True, default=("adamw",), show_default=True,
              help="Submission (repeatable): each is tuned over its own search space.")
@click.option("--size", default=None, help="Size preset of the workload [default: the workload's default].")
@click.option("--search-space", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="AlgoPerf-format search-space JSON, or a JSON list of fixed configurations (trial i uses "
                   "configuration i) [default: the submission's own search space].")
@click.option("--trials", type=int, default=None, help="Trials per study [default: 5; self-tuning: 1].")
@click.option("--studies", type=int, default=3, show_default=True, help="Independent studies.")
@click.option("--jobs", type=int, default=1, show_default=True,
              help="Trials run in parallel worker processes (timings get noisier).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Base seed: Halton scrambling per study and a distinct seed per trial derive from it.")
@click.option("--ruleset", type=click.Choice(["external", "self"]), default="external", show_default=True,
              help="external: tune over the search space; self: the submission's defaults, longer budget.")
@click.option("--budget-multiplier", type=float, default=1.5, show_default=True,
              help="Budget factor of the self-tuning ruleset (AlgoPerf v0.6: 1.5).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA where available, else CPU), cpu, cuda or cuda:N.")
@results_dir_option
@trial_options
@click.option("--quiet", is_flag=True, help="No line per trial.")
@click.option("--executor", type=click.Choice(["slurm", "local"]), default=None,
              help="Run each trial as a submitit task: a SLURM job array, or local processes (same code path); "
                   "preempted or timed-out tasks are requeued and resume from their checkpoints.")
@click.option("--partition", default=None, help="SLURM partition [default: the cluster's].")
@click.option("--gpus-per-task", type=click.IntRange(min=0, max=64), default=0, show_default=True,
              help="GPUs per task; a trial spans them, data-parallel.")
@click.option("--cpus-per-task", type=click.IntRange(min=1, max=1024), default=1, show_default=True)
@click.option("--time-limit", type=click.IntRange(min=1, max=10**6), default=60, show_default=True,
              metavar="MINUTES", help="Time limit per task; a task reaching it is requeued and resumes.")
@click.option("--array-parallelism", type=click.IntRange(min=1, max=10**6), default=256, show_default=True,
              help="Tasks of the job array running at once.")
@click.option("--slurm-arg", "slurm_args", multiple=True, metavar="KEY=VALUE",
              help="Another sbatch parameter (repeatable), e.g. account=mylab or qos=high.")
@click.option("--wait/--no-wait", default=None,
              help="Wait for the tasks to end [default: wait for local, return after submitting to SLURM].")
def tune(workload: str, opts: tuple[str, ...], size: str | None, search_space: Path | None, trials: int | None,
         studies: int, jobs: int, seed: int, ruleset: str, budget_multiplier: float, device: str,
         results_dir: Path | None, data_dir: Path | None, max_steps: int | None, max_seconds: float | None,
         step_hint: int | None, eval_every_steps: int | None, batch_size: int | None,
         micro_batch_size: int | None, sync_every: int | None,
         checkpoint_every: float | None, timeout: float | None, warmup_steps: int, diagnostics: bool,
         compile_model: bool, quiet: bool, executor: str | None, partition: str | None, gpus_per_task: int, cpus_per_task: int,
         time_limit: int, array_parallelism: int, slurm_args: tuple[str, ...], wait: bool | None) -> None:
    """Tune submissions on WORKLOAD: STUDIES x TRIALS trials at scrambled-Halton points of the search space.

    Each trial is an ordinary trial with its own seed, recorded as study-<k> trial <i>; trials already in the
    results directory are skipped, so re-running the command resumes an interrupted tune.
    """
    from optbench import commands
    from optbench.parallel.executors import ClusterOptions, parse_slurm_args

    cluster = None if executor is None else ClusterOptions(
        executor=executor, partition=partition, gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task,
        time_limit=time_limit, array_parallelism=array_parallelism, extra=parse_slurm_args(slurm_args),
        wait=(executor == "local") if wait is None else wait)
    code = commands.tune(cluster=cluster, 
        workload=workload, opts=opts, size=size, search_space=search_space, trials=trials, studies=studies,
        jobs=jobs, seed=seed, ruleset=ruleset, budget_multiplier=budget_multiplier, device=device,
        results_dir=results_dir, data_dir=data_dir, quiet=quiet,
        overrides={"max_steps": max_steps, "max_seconds": max_seconds, "step_hint": step_hint,
                   "eval_every_steps": eval_every_steps,
                   "batch_size": batch_size, "micro_batch_size": micro_batch_size, "sync_every": sync_every,
                   "checkpoint_every": checkpoint_every, "timeout": timeout, "warmup_steps": warmup_steps,
                   "compile": compile_model, "diagnostics": diagnostics or None})
    if code:
        sys.exit(code)


@click.command()
@results_dir_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("report"),
              show_default=True, help="Where index.html and the PNG/SVG plots go.")
@click.option("--by", type=click.Choice(["time", "steps", "examples", "tokens"]), default="time",
              show_default=True, help="Measure to score.")
@click.option("--r-max", type=click.FloatRange(min=1, min_open=True), default=4.0, show_default=True,
              help="Largest performance ratio of the profiles.")
@click.option("--hparam", default="lr", show_default=True, help="Hyperparameter of the sensitivity plots.")
def report(results_dir: Path | None, out: Path, by: str, r_max: float, hparam: str) -> None:
    """Write a self-contained HTML report (leaderboard, paired tests, plots, provenance) and PNG/SVG plots."""
    from optbench import commands

    commands.report(results_dir=results_dir, out=out, by=by, r_max=r_max, hparam=hparam)


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
    from optbench import commands

    commands.import_algoperf(directory, results_dir=results_dir, rules=rules, targets=targets,
                             submission=submission)


def add_commands(main: click.Group) -> None:
    """Register ``tune``, ``report`` and ``import`` on the ``optbench`` group."""
    main.add_command(tune)
    main.add_command(report)
    main.add_command(import_)
