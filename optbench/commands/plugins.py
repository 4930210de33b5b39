"""``optbench list`` and ``optbench check-plugin``: the plugins, listed, detailed, and checked."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from optbench.console import console as _console
from optbench.console import escape
from optbench.errors import UsageError
from optbench.plugins.hparams import parse_assignments


def list_plugins(what: str = "all") -> None:
    """``optbench list``: a compact table of workloads and submissions (``what``: all, workloads, submissions), or
    the details of one plugin (``what``: its name or spec): a workload's sizes with targets, budgets, evaluation
    period and how each target was chosen; a submission's defaults, capabilities, paper and search space."""
    from optbench.plugins.registry import entry_points, load_submission, load_workload

    if what in ("all", "workloads", "submissions"):
        if what in ("all", "workloads"):
            _list_workloads()
        if what in ("all", "submissions"):
            _list_submissions()
        return
    if what in entry_points("workloads") or (":" in what and what not in entry_points("submissions")
                                             and _is_workload(what)):
        _workload_details(load_workload(what))
    else:
        _submission_details(load_submission(what))


def _is_workload(spec: str) -> bool:
    from optbench.errors import UsageError
    from optbench.plugins.registry import load_workload

    try:
        load_workload(spec)
    except UsageError:
        return False
    return True


def _origin(item: Any) -> str:
    return "" if item.origin.distribution == "optbench" else f" [dim]({escape(item.origin.distribution)})[/dim]"


def _list_workloads() -> None:
    from rich.table import Table

    from optbench.plugins.registry import load_all

    table = Table(title="Workloads", caption="* default size; details: optbench list NAME")
    for col in ("name", "metric", "sizes", "data"):
        table.add_column(col)
    for item in load_all("workloads"):
        if isinstance(item, tuple):
            table.add_row(escape(item[0]), f"[red]broken: {escape(item[1])}[/red]", "", "")
            continue
        w = item.obj
        sizes = ", ".join(n + ("*" if n == w.default_size else "") for n in w.sizes)
        data = ", ".join(sorted({sz.dataset for sz in w.sizes.values() if sz.dataset})) or "-"
        table.add_row(escape(w.name) + _origin(item), escape(f"{w.metric.name} ({w.metric.goal.value})"),
                      escape(sizes), escape(data))
    _console().print(table)


def _short(text: str, limit: int = 44) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _list_submissions() -> None:
    from rich.table import Table

    from optbench.plugins.registry import load_all

    table = Table(title="Submissions", caption="details: optbench list NAME")
    for col in ("name", "method", "needs"):
        table.add_column(col)
    for item in load_all("submissions"):
        if isinstance(item, tuple):
            table.add_row(escape(item[0]), f"[red]broken: {escape(_short(str(item[1])))}[/red]", "")
            continue
        s = item.obj
        caps = ", ".join(sorted(c.value for c in s.capabilities)) or "-"
        table.add_row(escape(item.name) + _origin(item), escape(_short(getattr(s, "paper", "") or "-")),
                      escape(caps))
    console = _console()
    console.print(table)
    console.print("Any torch.optim.Optimizer subclass also works: --opt torch.optim:Adagrad -o lr=0.01\n"
                  "(at a constant lr unless given one: -o schedule=cosine -o warmup_frac=0.05)")


def _budget(b: Any) -> str:
    return " / ".join(x for x in (f"{b.max_steps} steps" if b.max_steps else "",
                                   f"{b.max_seconds:g} s" if b.max_seconds else "") if x)


def _flops(workload: Any, size: Any) -> str:
    """A size's model FLOPs per example where the workload says them cheaply (``flops_per_example(size)``),
    else when they are known: counted on one batch when a trial starts (optbench.engine.flops)."""
    analytic = getattr(workload, "flops_per_example", None)
    value = analytic(size) if callable(analytic) else None
    return f"{value:.3g}" if value is not None else "counted"


def _workload_details(item: Any) -> None:
    from rich.table import Table

    w, console = item.obj, _console()
    console.print(escape(f"{w.name}: {w.description}"), width=min(100, console.width))
    console.print(escape(f"metric {w.metric.name} ({'lower' if w.metric.goal.value == 'min' else 'higher'} is "
                         f"better); from {item.origin.distribution} {item.origin.version}"))
    table = Table(title=escape(f"{w.name} sizes"))
    table.caption = ("batch (micro-batch); hint: the schedule's step_hint; FLOPs: per example, forward+backward "
                     "(counted: with FlopCounterMode at trial start)")
    for col in ("size", "target", "budget", "batch", "hint", "eval", "data", "FLOPs"):
        table.add_column(col)
    for name, sz in w.sizes.items():
        period = sz.eval_every
        every = " / ".join(x for x in (f"{period.steps} steps" if period.steps else "",
                                        f"{period.seconds:g} s" if period.seconds else "") if x)
        batch = f"{sz.batch_size}" + (f" ({sz.micro_batch_size})" if sz.micro_batch_size else "")
        table.add_row(*map(escape, (name + (" (default)" if name == w.default_size else ""), f"{sz.target:g}",
                                    _budget(sz.budget), batch, sz.step_hint, every, sz.dataset or "-",
                                    _flops(w, sz))))
    console.print(table, width=min(100, console.width))  # a wide terminal: still one readable page
    console.print("How each target was chosen:")
    for name, sz in w.sizes.items():
        console.print(escape(f"  {name}: {sz.note or 'not stated'}"), width=min(100, console.width))
    models = getattr(w, "models", None) or {}  # a model-size ladder, selected apart from the size (--model NAME)
    if models:
        rungs = ", ".join(f"{n} ({getattr(r, 'n_layer', '?')}x{getattr(r, 'd_model', '?')})" for n, r in models.items())
        console.print(escape(f"Model sizes (--model NAME, with --tokens 1x|Nx|COUNT; docs/WORKLOADS.md): {rungs}"),
                      width=min(100, console.width))


def _submission_details(item: Any) -> None:
    from rich.table import Table

    s, console = item.obj, _console()
    console.print(escape(f"{item.name}: {getattr(s, 'paper', '') or 'no paper named'}"))
    caps = ", ".join(sorted(c.value for c in s.capabilities)) or "none"
    console.print(escape(f"needs from the harness: {caps}; from {item.origin.distribution} {item.origin.version}"))
    table = Table(title="defaults (-o KEY=VALUE)")
    table.add_column("hyperparameter")
    table.add_column("default", overflow="fold")
    for key, value in s.defaults.items():
        table.add_row(escape(key), escape(json_text(value)))
    console.print(table)
    space = s.search_space()
    if space:
        table = Table(title="search space (tune)")
        for col in ("hyperparameter", "range"):
            table.add_column(col, overflow="fold")
        for key, spec in (space.items() if isinstance(space, dict) else []):
            rng = (f"{spec.get('min')} .. {spec.get('max')} ({spec.get('scaling', 'linear')})" if "min" in spec
                   else f"one of {spec.get('feasible_points')}")
            table.add_row(escape(key), escape(rng))
        console.print(table)
    else:
        console.print("no search space: tune needs --search-space FILE")


def json_text(value: Any) -> str:
    """A default as it would be typed after ``-o KEY=``."""
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


def check_plugin(spec: str, *, skip: Sequence[str] = (), opt_args: Sequence[str] = (),
                 limit: float | None = None) -> int:
    """``optbench check-plugin``: the conformance suite, one line per check printed as it runs; returns the exit
    code (0: every check run passed; 1: any failed, raised or timed out).

    ``opt_args`` (``-o KEY=VALUE``) set hyperparameters for the checks that train; a plain optimizer class without
    a given lr is tried over a small lr grid (see :mod:`optbench.engine.conformance`). ``limit``: seconds each
    check may take (default :data:`~optbench.engine.conformance.DEFAULT_TIME_LIMIT`); one past it is stopped,
    reported as timed out, and the next check runs."""
    from collections import Counter

    from optbench.engine.conformance import ALL_CHECKS, DEFAULT_TIME_LIMIT, run_check
    from optbench.engine.prepared import MAX_SECONDS
    from optbench.options import bounded_float
    from optbench.plugins.hparams import merge
    from optbench.plugins.registry import load_submission
    from optbench.plugins.values import expectations

    unknown = sorted(set(skip) - set(ALL_CHECKS))
    if unknown:
        raise UsageError(f"unknown check {', '.join(unknown)}; checks: {', '.join(ALL_CHECKS)}")
    # bounded as every --timeout is (a NaN or a 2^63 limit reached each check as its trial's --timeout and failed it)
    limit = DEFAULT_TIME_LIMIT if limit is None else bounded_float(limit, what="--check-timeout", high=MAX_SECONDS)
    loaded = load_submission(spec)
    given = parse_assignments(opt_args)
    hparams = merge(loaded.obj.defaults, given, submission=spec, expects=expectations(loaded.obj)) if given else None
    console = _console()
    caps = ", ".join(sorted(getattr(c, "value", str(c)) for c in loaded.obj.capabilities)) or "none"
    console.print(escape(f"conformance of {spec} ({loaded.origin.distribution} {loaded.origin.version}); "
                         f"capabilities: {caps}; time limit {limit:g} s per check (--check-timeout)"), soft_wrap=True)
    width = max(map(len, ALL_CHECKS))
    ended: Counter[str] = Counter()
    for name in ALL_CHECKS:
        if name in skip:
            console.print(f"  {name:<{width}}  [dim]skipped[/dim]")
            continue
        console.print(f"  {name:<{width}}  ", end="")  # the name shows while the check runs
        console.file.flush()
        with warnings.catch_warnings(record=True) as caught:  # printed under the check's line, not inside it
            res = run_check(loaded, name, hparams=hparams, limit=limit)
        verdict = "pass" if res.passed else {"raised": "exception", "timed out": "timed out"}.get(res.kind, "FAIL")
        ended[verdict] += 1
        colour = "green" if res.passed else "red"
        console.print(f"[{colour}]{verdict:<9}[/{colour}]  " + escape(res.detail), soft_wrap=True)
        for text in dict.fromkeys(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip()):
            console.print(f"  {'':<{width}}  [yellow]warning:[/yellow] " + escape(text), soft_wrap=True)
    console.print(_tally(ended, limit))
    return 0 if ended["pass"] == sum(ended.values()) else 1


def _tally(ended: Any, limit: float) -> str:
    """The last line: how the checks run ended, and what to do about a timed-out one."""
    parts = [f"{ended['pass']} passed", f"{ended['FAIL']} failed"]
    parts += [f"{ended[k]} {k if k != 'exception' else 'raised an exception'}" for k in ("exception", "timed out")
              if ended[k]]
    hint = (f"; a check that timed out was stopped at {limit:g} s: give more with --check-timeout SECONDS"
            if ended["timed out"] else "")
    return ", ".join(parts) + hint
