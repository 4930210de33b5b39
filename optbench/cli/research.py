"""Click commands of the research recipes (schedules, schedule-shape search, critical batch size).

Registered on the main group by :func:`add_commands`; like every click module here, it only parses options and
hands off to the library (:mod:`optbench.recipes.research`), imported inside the commands so ``optbench --help`` stays
instant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from optbench.cli.options import results_dir_option
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
    from optbench.recipes import research
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


def _where_options(*, out: str, what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--device``, ``--data-dir``, ``--results-dir`` and ``--out`` (default ``out``, holding ``what``) of the sweep
    commands."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto."),
            click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                         help="Prepared datasets."),
            results_dir_option,
            click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path(out),
                         show_default=True, help=f"Folder for {what}."),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _float_list(text: str, *, what: str) -> tuple[float, ...]:
    from optbench.errors import UsageError

    try:
        return tuple(float(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise UsageError(f"{what} expects comma-separated numbers, got {text!r}") from None


@click.command()
@click.option("-w", "--workload", default="linreg", show_default=True, help="Workload.")
@click.option("-s", "--opt", "opt", default="sgd", show_default=True, help="Submission.")
@click.option("--size", default=None, help="Size preset [default: the workload's default].")
@click.option("--batch-sizes", default="8,16,32,64,128", show_default=True, help="Comma-separated batch sizes.")
@click.option("--lrs", default="0.003,0.01,0.03", show_default=True,
              help="Comma-separated learning rates, swept at every batch size (the best one moves with it).")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True, help="Seed (repeatable).")
@click.option("--target", type=float, default=None, help="Validation target [default: the size's own].")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Other hyperparameters of every trial (e.g. schedule=constant).")
@click.option("--max-steps", type=int, default=None, help="Step budget of every trial.")
@click.option("--max-seconds", type=float, default=None,
              help="Timed seconds of every trial [default: the size's budget, which large batches may exhaust].")
@click.option("--eval-every", "eval_every_steps", type=int, default=None, help="Evaluate every N steps.")
@click.option("--overhead", type=float, default=0.2, show_default=True,
              help="Critical batch size: the largest B whose steps exceed linear scaling by at most this fraction.")
@_where_options(out="cbs", what="cbs.md (table), cbs.csv (every trial) and cbs.png")
def cbs(workload: str, opt: str, size: str | None, batch_sizes: str, lrs: str, seeds: tuple[int, ...],
        target: float | None, opt_args: tuple[str, ...], max_steps: int | None, max_seconds: float | None,
        eval_every_steps: int | None, overhead: float, device: str, data_dir: Path | None, results_dir: Path | None,
        out: Path) -> None:
    """Critical batch size: steps to target against batch size, each at its best learning rate.

    \b
    Example (linreg tiny, about a minute on two cores):
      optbench cbs -w linreg -s sgd --batch-sizes 8,16,32,64,128 --lrs 0.01,0.03 -o schedule=constant
    """
    from optbench.store import paths
    from optbench.recipes import research
    from optbench.plugins.hparams import parse_assignments

    spec = research.CbsSpec(
        workload=workload, submission=opt, size=size, target=target, device=device, data_dir=data_dir,
        batch_sizes=tuple(_int_list(batch_sizes, what="--batch-sizes") or ()), lrs=_float_list(lrs, what="--lrs"),
        seeds=seeds, hparams=parse_assignments(opt_args), max_steps=max_steps, max_seconds=max_seconds,
        eval_every_steps=eval_every_steps, max_overhead=overhead)
    research.check_cbs(spec)
    console = _console()

    def progress(run: research.CbsRun) -> None:
        what = f"{run.steps_to_target} steps" if run.steps_to_target is not None else run.outcome
        console.print(escape(f"batch {run.batch_size} lr {run.lr:g} seed {run.seed}: {what}"))

    runs = research.run_cbs(spec, results_dir=paths.results_dir(results_dir), progress=progress)
    summary = research.summarize_cbs(runs, max_overhead=overhead)
    title = f"critical batch size: {opt} on {workload}" + (f"/{size}" if size else "")
    md, csv, png = research.write_cbs(summary, runs, out, title=title)
    console.print(escape(research.cbs_markdown(summary)))
    console.print(escape(f"wrote {md}, {csv}, {png}"))


@click.command("shape-search")
@click.option("-w", "--workload", default="linreg", show_default=True, help="Workload.")
@click.option("-s", "--opt", "opt", default="adamw", show_default=True, help="A scheduled submission.")
@click.option("--size", default=None, help="Size preset [default: the workload's default].")
@click.option("--shapes", type=int, default=8, show_default=True, help="Shapes sampled from the poly family.")
@click.option("--lrs", default="0.003,0.01,0.03", show_default=True,
              help="Comma-separated base learning rates, swept for every shape (searched apart from the shape).")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True, help="Seed (repeatable).")
@click.option("--search-seed", type=int, default=0, show_default=True, help="Seed of the Halton points.")
@click.option("--steps", type=int, default=None, help="Steps per trial and schedule length [default: step_hint].")
@click.option("--no-references", is_flag=True, help="Skip the reference shapes (cosine, constant, WSD).")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE", help="Other hyperparameters.")
@_where_options(out="shapes", what="shapes.md (ranking) and shapes.png (the best shapes)")
def shape_search(workload: str, opt: str, size: str | None, shapes: int, lrs: str, seeds: tuple[int, ...],
                 search_seed: int, steps: int | None, no_references: bool, opt_args: tuple[str, ...], device: str,
                 data_dir: Path | None, results_dir: Path | None, out: Path) -> None:
    """Search learning-rate schedule shapes apart from the base learning rate (Naganuma et al.).

    \b
    Each shape (warmup fraction, decay start, decay power, final fraction) is run at every --lrs value for
    --steps steps and scored by its final metric at its best learning rate.
    Example: optbench shape-search -w linreg -s adamw --shapes 8 --lrs 0.003,0.01,0.03
    """
    from optbench.store import paths
    from optbench.recipes import research
    from optbench.plugins.hparams import parse_assignments

    spec = research.ShapeSpec(workload=workload, submission=opt, size=size, shapes=shapes,
                              lrs=_float_list(lrs, what="--lrs"), seeds=seeds, search_seed=search_seed, steps=steps,
                              references=not no_references, hparams=parse_assignments(opt_args), device=device,
                              data_dir=data_dir)
    console = _console()

    def progress(shape: dict, lr: float, value: float) -> None:
        console.print(escape(f"{research.describe(shape)} lr {lr:g}: {value:.4g}"))

    ranked, n_steps, metric = research.run_shape_search(spec, results_dir=paths.results_dir(results_dir),
                                                        progress=progress)
    title = f"schedule shapes: {opt} on {workload}, {n_steps} steps"
    md, png = research.write_shapes(ranked, out, steps=n_steps, metric=metric, title=title)
    console.print(escape(research.shapes_markdown(ranked[:10], metric=metric)))
    console.print(escape(f"wrote {md}, {png}"))


@click.command()
@click.option("-w", "--workload", default="teacher", show_default=True,
              help="Workload (the default: full-batch regression of a tanh teacher, the edge-of-stability setting).")
@click.option("-s", "--opt", "opt", default="sgd", show_default=True, help="Submission.")
@click.option("--size", default=None, help="Size preset [default: the workload's default].")
@click.option("--lrs", default="0.2,0.5,1.0", show_default=True, help="Comma-separated learning rates: one trial each.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every trial.")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Other hyperparameters (gradient descent: -o momentum=0 -o schedule=constant -o warmup_frac=0).")
@click.option("--max-steps", type=int, default=None, help="Step budget.")
@click.option("--eval-every", "eval_every_steps", type=int, default=None, help="Evaluate (and measure) every N steps.")
@click.option("--batch-size", type=int, default=None, help="Training batch size [default: the size's].")
@click.option("--hvp-batch", type=int, default=None,
              help="Size of the fixed batch the sharpness is measured on [default: the training batch size].")
@click.option("--noise-batches", type=int, default=0, show_default=True,
              help="Batches per gradient-noise-scale estimate (0: off).")
@click.option("--iters", type=int, default=20, show_default=True, help="Power-iteration steps per measurement.")
@_where_options(out="curvature", what="curvature.md (every evaluation) and curvature.png")
def curvature(workload: str, opt: str, size: str | None, lrs: str, seed: int, opt_args: tuple[str, ...],
              max_steps: int | None, eval_every_steps: int | None, batch_size: int | None, hvp_batch: int | None,
              noise_batches: int, iters: int, device: str, data_dir: Path | None, results_dir: Path | None,
              out: Path) -> None:
    """Sharpness (top Hessian eigenvalue) against 2/lr during training: progressive sharpening, edge of stability.

    \b
    Example (gradient descent on the tanh teacher, about 20 s):
      optbench curvature --lrs 0.2,0.5,1.0 -o momentum=0 -o schedule=constant -o warmup_frac=0 --max-steps 2000
    """
    from optbench.store import paths
    from optbench.recipes import research
    from optbench.plugins.hparams import parse_assignments

    spec = research.CurvatureSpec(
        workload=workload, submission=opt, size=size, lrs=_float_list(lrs, what="--lrs"), seed=seed,
        hparams=parse_assignments(opt_args), max_steps=max_steps, eval_every_steps=eval_every_steps,
        batch_size=batch_size, diag_batch_size=hvp_batch, noise_batches=noise_batches, iters=iters, device=device,
        data_dir=data_dir)
    points = research.run_curvature(spec, results_dir=paths.results_dir(results_dir))
    from optbench.plugins.registry import load_workload

    metric = load_workload(workload).obj.metric.name
    md, png = research.write_curvature(points, out, metric=metric, title=f"sharpness of {opt} on {workload}")
    console = _console()
    console.print(escape(research.curvature_markdown(points, metric=metric)))
    console.print(escape(f"wrote {md}, {png}"))


@click.command("seesaw")
@click.option("-w", "--workload", default="linreg", show_default=True, help="Workload.")
@click.option("-s", "--opt", "opt", default="sgd", show_default=True, help="A scheduled submission.")
@click.option("--size", default=None, help="Size preset [default: the workload's default].")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0, 1, 2), show_default=True,
              help="Seed (repeatable): one twin and one Seesaw trial each.")
@click.option("--twin-steps", type=int, default=None, help="Steps of the twin [default: the size's step_hint].")
@click.option("--target", type=float, default=None, help="Target for steps to target [default: the size's].")
@click.option("--eval-every", "eval_every_steps", type=int, default=None, help="Evaluate every N steps.")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Hyperparameters of both (decay_milestones, decay_factor, lr...; seesaw_* for Seesaw only).")
@_where_options(out="seesaw", what="seesaw.md (the comparison)")
def seesaw(workload: str, opt: str, size: str | None, seeds: tuple[int, ...], twin_steps: int | None,
           target: float | None, eval_every_steps: int | None, opt_args: tuple[str, ...], device: str, data_dir: Path | None,
           results_dir: Path | None, out: Path) -> None:
    """Seesaw against its step-decay twin at equal examples: metric, serial steps, steps to target.

    \b
    Example (linreg tiny, about 20 s):
      optbench seesaw -w linreg -s sgd --seed 0 --seed 1 --seed 2 --eval-every 16
    """
    from optbench.store import paths
    from optbench.recipes import research
    from optbench.store.fsutil import atomic_file, ensure_writable_dir
    from optbench.plugins.hparams import parse_assignments

    spec = research.SeesawSpec(workload=workload, submission=opt, size=size, seeds=seeds, twin_steps=twin_steps,
                               target=target,
                               eval_every_steps=eval_every_steps, hparams=parse_assignments(opt_args),
                               device=device, data_dir=data_dir)
    ensure_writable_dir(out, what="--out directory")
    pairs, metric = research.run_seesaw(spec, results_dir=paths.results_dir(results_dir))
    text = research.seesaw_markdown(pairs, metric=metric)
    with atomic_file(out / "seesaw.md", "w") as f:
        f.write(f"# Seesaw vs step decay: {opt} on {workload}\n\n{text}")
    console = _console()
    console.print(escape(text))
    console.print(escape(f"wrote {out / 'seesaw.md'}"))


@click.command("lr-sweep")
@click.option("-w", "--workload", default="linreg", show_default=True, help="Workload.")
@click.option("-s", "--opt", "opts", multiple=True, default=("adamw", "sgd"), show_default=True,
              help="Submission (repeatable).")
@click.option("--size", default=None, help="Size preset [default: the workload's default].")
@click.option("--lrs", default="0.0001,0.0003,0.001,0.003,0.01,0.03,0.1", show_default=True,
              help="Comma-separated learning rates.")
@click.option("--batch-size", type=int, default=None, help="Batch size [default: the size's].")
@click.option("--seed", "seeds", type=int, multiple=True, default=(0,), show_default=True, help="Seed (repeatable).")
@click.option("--target", type=float, default=None, help="Validation target [default: the size's own].")
@click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
              help="Other hyperparameters of every trial (keys every listed submission accepts).")
@click.option("--max-steps", type=int, default=None, help="Step budget of every trial.")
@click.option("--max-seconds", type=float, default=None, help="Timed seconds of every trial [default: the size's].")
@click.option("--eval-every", "eval_every_steps", type=int, default=None, help="Evaluate every N steps.")
@_where_options(out="lr-sweep", what="lr-sweep.md (steps to target per learning rate)")
def lr_sweep(workload: str, opts: tuple[str, ...], size: str | None, lrs: str, batch_size: int | None,
             seeds: tuple[int, ...], target: float | None, opt_args: tuple[str, ...], max_steps: int | None,
             max_seconds: float | None, eval_every_steps: int | None, device: str, data_dir: Path | None,
             results_dir: Path | None, out: Path) -> None:
    """Learning-rate sensitivity: steps to target of each submission at every learning rate.

    \b
    Example: optbench lr-sweep -w linreg -s adamw -s lion -s signum -s adafactor -s sgd --seed 0 --seed 1
    """
    from optbench.store import paths
    from optbench.recipes import research
    from optbench.store.fsutil import atomic_file, ensure_writable_dir
    from optbench.plugins.hparams import parse_assignments
    from optbench.plugins.registry import load_workload

    w = load_workload(workload)
    b = batch_size or w.obj.sizes.get(size or w.obj.default_size, next(iter(w.obj.sizes.values()))).batch_size
    spec = research.CbsSpec(workload=workload, submission=opts[0] if opts else "", size=size, target=target,
                            batch_sizes=(b,), lrs=_float_list(lrs, what="--lrs"), seeds=seeds, device=device,
                            data_dir=data_dir, hparams=parse_assignments(opt_args), max_steps=max_steps,
                            max_seconds=max_seconds, eval_every_steps=eval_every_steps)
    research.check_cbs(spec)
    ensure_writable_dir(out, what="--out directory")
    sweeps = research.lr_sweep(opts, spec, results_dir=paths.results_dir(results_dir))
    text = research.sensitivity_markdown(sweeps)
    with atomic_file(out / "lr-sweep.md", "w") as f:
        f.write(f"# Steps to target against learning rate on {workload} (batch {b})\n\n{text}")
    console = _console()
    console.print(escape(text))
    console.print(escape(f"wrote {out / 'lr-sweep.md'}"))


def add_commands(group: click.Group) -> None:
    """Register the research commands on ``group`` (the ``optbench`` main group)."""
    group.add_command(schedules)
    group.add_command(cbs)
    group.add_command(shape_search)
    group.add_command(curvature)
    group.add_command(seesaw)
    group.add_command(lr_sweep)
