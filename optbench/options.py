"""Options declared once: a config dataclass field carries its command-line flag, help, default and bounds.

A field made with :func:`option` is an ordinary dataclass field whose metadata holds an :class:`Option`. The command
line generates its click options from those fields (:mod:`optbench.cli.options`), so a flag, its help and its
default exist in one place; :func:`check` validates a value against the same bounds, with the flag's name in the
one-line error, wherever the config is consumed (:func:`optbench.engine.prepared.prepare` for trial options). Adding
an option is one field plus its use.

The bounded-value checks every layer shares (:func:`bounded_int`, :func:`bounded_float`) live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from optbench.errors import UsageError

KINDS = ("int", "float", "flag", "switch", "text", "dir", "file", "choice", "ints", "floats")


@dataclass(frozen=True, kw_only=True)
class Option:
    """What a config field looks like on the command line, and the values it accepts.

    Attributes:
      flag: the long flag (``--max-steps``); the field's name is the parameter it fills.
      help: the help text.
      kind: ``int``, ``float`` (finite), ``flag`` (a switch, off by default), ``switch`` (``--x/--no-x``, unset by
        default), ``text``, ``dir`` (a folder path), ``file`` (a file path), ``choice``, or ``ints`` / ``floats``
        (comma-separated numbers, e.g. ``8,16,32``, each within the bounds).
      multiple: the option is repeatable; the field holds a tuple of values of ``kind``.
      low, high: the bounds of a number (inclusive, except ``low`` of a float when ``low_open``).
      choices: the accepted values of a ``choice``.
      short: a one-letter alias (``-w``); metavar, show_default: as click's.
    """

    flag: str
    help: str
    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = True
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    show_default: bool = False
    short: str | None = None
    multiple: bool = False

    def check(self, value: Any) -> Any:
        """``value`` validated (None passes: "not given"); a :class:`UsageError` naming the flag otherwise."""
        if value is None:
            return None
        if self.multiple:
            return tuple(self._one(v) for v in value)
        return self._one(value)

    def _one(self, value: Any) -> Any:
        if self.kind in ("ints", "floats"):
            return self._numbers(value)
        if self.kind == "int":
            return bounded_int(value, what=self.flag, low=int(self.low if self.low is not None else -2**63),
                               high=int(self.high if self.high is not None else 2**63 - 1))
        if self.kind == "float":
            return bounded_float(value, what=self.flag, low=self.low if self.low is not None else 0.0,
                                 high=self.high if self.high is not None else 1e9, low_open=self.low_open)
        if self.kind in ("flag", "switch"):
            if not isinstance(value, bool):
                raise UsageError(f"{self.flag} must be true or false, got {value!r}")
            return value
        if self.kind == "choice" and value not in self.choices:
            raise UsageError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


    def _numbers(self, value: Any) -> tuple[Any, ...]:
        """A comma-separated list (or a sequence) of numbers, each within the bounds; at least one."""
        one = Option(flag=self.flag, help=self.help, kind=self.kind[:-1], low=self.low, high=self.high,
                     low_open=self.low_open)
        items = value.replace(" ", "").split(",") if isinstance(value, str) else list(value)
        items = [x for x in items if x != ""]
        if not items:
            raise UsageError(f"{self.flag} needs comma-separated numbers, e.g. {_example(self.kind)}")
        cast = int if self.kind == "ints" else float
        try:
            return tuple(one.check(cast(x) if isinstance(x, str) else x) for x in items)
        except ValueError:
            raise UsageError(f"{self.flag} needs comma-separated numbers, e.g. {_example(self.kind)}; "
                             f"got {value!r}") from None


def _example(kind: str) -> str:
    return "16,32,64" if kind == "ints" else "0.003,0.01,0.03"


def option(default: Any, flag: str, help: str, **spec: Any) -> Any:
    """A dataclass field with its command-line :class:`Option` (see the module docstring)."""
    return field(default=default, metadata={"option": Option(flag=flag, help=help, **spec)})


def options_of(cls: type) -> dict[str, Option]:
    """Field name -> :class:`Option` of the fields of ``cls`` that have one, in declaration order."""
    return {f.name: f.metadata["option"] for f in fields(cls) if "option" in f.metadata}


def check(cls: type, name: str, value: Any) -> Any:
    """``value`` of field ``name`` of ``cls`` validated against its option's bounds."""
    return options_of(cls)[name].check(value)


def bounded_int(value: Any, *, what: str, low: int, high: int) -> int:
    """``value`` as an int in [low, high]; integral floats (``32.0``, ``1e3``) are accepted, nothing else.

    Raises:
      UsageError: a bool, a string, a list, NaN/inf, a fraction, or a value out of range, naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UsageError(f"{what} must be an integer, got {value!r}")
        value = int(value)
    if not low <= value <= high:
        raise UsageError(f"{what} must be an integer >= {low} and <= {high}, got {value}")
    return value


def bounded_float(value: Any, *, what: str, low: float = 0.0, high: float = 1e9, low_open: bool = True) -> float:
    """``value`` as a finite float in (low, high] (or [low, high] with ``low_open=False``).

    Raises:
      UsageError: a non-number, NaN, inf or a value out of range, naming ``what``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{what} must be a number, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond float range
        raise UsageError(f"{what} must be a finite number, got {value!r}") from None
    if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
        side = ">" if low_open else ">="
        raise UsageError(f"{what} must be a finite number {side} {low:g} and <= {high:g}, got {value!r}")
    return value
