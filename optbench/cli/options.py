"""Click options generated from config fields, so each option is declared once (:mod:`optbench.options`).

:func:`config_options` turns the :func:`optbench.options.option` fields of a config dataclass (the trial options of
:class:`optbench.engine.prepared.TrialConfig`, the execution options of :class:`optbench.sweep.engine.Execution`)
into click options and hands the command one instance of the dataclass, each given value checked against its
field's bounds (one line naming the flag, exit code 2, before anything loads). The few options that are not config
fields and that several commands share are declared here once too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import click

from optbench.options import Option, options_of

_TYPES: dict[str, Any] = {"int": click.INT, "float": click.FLOAT, "text": click.STRING,
                          "dir": click.Path(file_okay=False, path_type=Path),
                          "file": click.Path(dir_okay=False, path_type=Path)}


def _click_option(name: str, opt: Option, default: Any) -> Callable[[Any], Any]:
    """The click option of config field ``name``."""
    common: dict[str, Any] = {"help": opt.help, "show_default": opt.show_default}
    if opt.metavar:
        common["metavar"] = opt.metavar
    flags = ([opt.short] if opt.short else []) + [opt.flag]
    if opt.kind == "flag":
        return click.option(*flags, name, is_flag=True, default=bool(default), **common)
    if opt.kind == "switch":
        bare = opt.flag.removeprefix("--")
        return click.option(f"{opt.flag}/--no-{bare}", name, default=default, **common)
    if opt.kind in ("ints", "floats"):  # typed as text: the field's check parses the list, naming the flag
        text = None if default is None else ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in default)
        return click.option(*flags, name, type=click.STRING, default=text, **common)
    kind = click.Choice(list(opt.choices)) if opt.kind == "choice" else _TYPES[opt.kind]
    if opt.multiple:
        return click.option(*flags, name, type=kind, multiple=True, default=tuple(default), **common)
    return click.option(*flags, name, type=kind, default=default, **common)


def config_options(cls: type, *, param: str, exclude: Collection[str] = (),
                   defaults: dict[str, Any] | None = None) -> Callable[[Any], Any]:
    """A decorator adding a click option for every option field of ``cls`` (but ``exclude``); the command receives
    ``param=cls(**values)`` instead of one parameter per option. ``defaults`` overrides a field's default for this
    command (shown in its help)."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(cls)}
    opts = {n: o for n, o in options_of(cls).items() if n not in exclude}
    chosen = {n: (defaults or {}).get(n, fields[n].default) for n in opts}

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {n: opts[n].check(_plain(kwargs.pop(n))) for n in opts}
            kwargs[param] = cls(**values)
            return f(*args, **kwargs)

        for name in reversed(list(opts)):
            command = _click_option(name, opts[name], chosen[name])(command)
        return command

    return decorate


def _plain(value: Any) -> Any:
    """click's tuples of a repeatable option as a tuple (frozen configs), everything else as it is."""
    return tuple(value) if isinstance(value, list) else value


def results_dir_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--results-dir``."""
    return click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Results directory [default: ./results or $OPTBENCH_RESULTS].")(f)


def hparam_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``-o/--opt-arg KEY=VALUE`` (repeatable) and ``--hparams FILE``, handed to the command as one ``hparams``
    mapping (the file's object, overridden by the ``-o`` values)."""

    @functools.wraps(f)
    def command(*args: Any, **kwargs: Any) -> Any:
        from optbench.commands.trials import given_hparams

        kwargs["hparams"] = given_hparams(kwargs.pop("opt_args"), kwargs.pop("hparams_file"))
        return f(*args, **kwargs)

    command = click.option("--hparams", "hparams_file", type=click.Path(dir_okay=False, path_type=Path),
                           default=None, help="JSON file of hyperparameters (--opt-arg overrides it).")(command)
    return click.option("-o", "--opt-arg", "opt_args", multiple=True, metavar="KEY=VALUE",
                        help="Hyperparameter (repeatable); VALUE is JSON when it parses (0.1, true, [0.9,0.99]); "
                             "NAME.KEY=VALUE sets it for submission NAME only.")(command)


def workload_option(default: str = "linreg", help: str = "Workload: a registered name, package.module:Name or "
                    "path/file.py:Name.") -> Callable[[Any], Any]:
    """``-w/--workload``."""
    return click.option("-w", "--workload", default=default, show_default=True, help=help)


def seeds_option(default: tuple[int, ...] = (0,)) -> Callable[[Any], Any]:
    """``--seed`` (repeatable: one trial per seed)."""
    return click.option("--seed", "seeds", type=int, multiple=True, default=default, show_default=True,
                        help="Seed (repeatable: one trial per seed).")


def quiet_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--quiet``."""
    return click.option("--quiet", is_flag=True, help="Less output: no progress bar, no plan notes (run) or line per trial (tune).")(f)
