"""Hyperparameter values checked before anything trains.

Each value a submission is given (``-o``, ``--hparams``, a tuning point) must be what its default says: a float for a
float, a bool for a bool, a list of the default's length for a tuple, text for text. A plain optimizer class says
more through its constructor's annotations (``Optional[bool]``, ``Literal["a", "b"]``, ``tuple[float, float] |
tuple[float, float, float]``, an enum), and those widen or narrow what its keys take. Everywhere: NaN and the
infinities are refused, and so is a negative learning rate (``lr``, ``learning_rate`` and keys ending ``_lr``).
A mistake is one :class:`~optbench.errors.UsageError` naming the key, what it takes and the value given; until now
``lr=true`` trained at lr 1 and ``betas=0.9`` started a trial that ended as ``error``.

What a default of ``None`` takes is not known (built-ins use it for "the schedule's own value"), so it takes any
JSON value unless an annotation says otherwise.
"""

from __future__ import annotations

import enum
import json
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from optbench.errors import UsageError

REQUIRED = object()  # a plain class's constructor keyword with no default: the user must give it
_NAMES = {"bool": "a bool", "int": "an integer", "float": "a float", "str": "text", "none": "null", "seq": "a list"}


@dataclass(frozen=True)
class Expect:
    """What one hyperparameter takes.

    Attributes:
      kinds: of "bool", "int", "float" (ints too), "str", "none", "seq"; empty: any JSON value.
      lengths: for "seq", the lengths allowed (empty: any).
      items: for "seq", what each item takes (None: anything).
      choices: for "str", the names allowed (empty: any text).
    """

    kinds: frozenset[str] = frozenset()
    lengths: frozenset[int] = frozenset()
    items: Expect | None = None
    choices: tuple[str, ...] = ()

    def describe(self) -> str:
        """``a float``, ``a list of 2 or 3 floats``, ``one of 'a', 'b' or null``..."""
        if not self.kinds:
            return "any JSON value"
        shown = [k for k in ("bool", "int", "float", "str", "seq", "none")
                 if k in self.kinds and not (k == "int" and "float" in self.kinds)]  # "a float" takes ints too
        return " or ".join(self._word(k) for k in shown)

    def _word(self, kind: str) -> str:
        if kind == "str" and self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if kind != "seq":
            return _NAMES[kind]
        of = " of " + " or ".join(str(n) for n in sorted(self.lengths)) if self.lengths else ""
        if self.items is not None and self.items.kinds:  # "a float" -> "floats"
            return f"a list{of} {self.items.describe().removeprefix('a ').removeprefix('an ')}s"
        return f"a list{of} items" if of else "a list"

    def __or__(self, other: Expect) -> Expect:
        """Takes what either takes (an empty ``kinds``, any length or any text on either side wins)."""
        if not self.kinds or not other.kinds:
            return ANY
        any_length = any("seq" in e.kinds and not e.lengths for e in (self, other))
        any_text = any("str" in e.kinds and not e.choices for e in (self, other))
        return Expect(kinds=self.kinds | other.kinds,
                      lengths=frozenset() if any_length else self.lengths | other.lengths,
                      items=self.items if self.items is not None else other.items,
                      choices=() if any_text else tuple(dict.fromkeys(self.choices + other.choices)))


ANY = Expect()


def from_default(value: Any, *, fixed_length: bool = False) -> Expect:
    """What a default's type says (``fixed_length``: a list takes its length only)."""
    if value is None or value is REQUIRED:
        return ANY
    if isinstance(value, bool):
        return Expect(kinds=frozenset({"bool"}))
    if isinstance(value, int):  # JSON defaults and search spaces do not tell 0 from 0.0: a number (annotations
        return Expect(kinds=frozenset({"int", "float"}))  # of a plain class say ``int`` where it must be one)
    if isinstance(value, float):
        return Expect(kinds=frozenset({"float"}))
    if isinstance(value, str):
        return Expect(kinds=frozenset({"str"}))
    if isinstance(value, enum.Enum):
        return Expect(kinds=frozenset({"str"}), choices=tuple(m.name for m in type(value)))
    if isinstance(value, (list, tuple)):
        items = [from_default(v) for v in value]
        item = items[0] if items and all(i == items[0] for i in items) else None
        return Expect(kinds=frozenset({"seq"}), lengths=frozenset({len(value)}) if fixed_length else frozenset(),
                      items=item)
    return ANY


def from_annotation(ann: Any) -> Expect | None:
    """What a constructor annotation says, or None where it says nothing usable (a callable, a tensor, text)."""
    if ann is None or ann is type(None):
        return Expect(kinds=frozenset({"none"}))
    simple = {bool: "bool", int: "int", float: "float", str: "str"}
    if ann in simple:
        return Expect(kinds=frozenset({simple[ann]}))
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return Expect(kinds=frozenset({"str"}), choices=tuple(m.name for m in ann))
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin in (typing.Union, types.UnionType):
        parts = [e for e in (from_annotation(a) for a in args) if e is not None]
        if not parts:
            return None
        out = parts[0]
        for p in parts[1:]:
            out = out | p
        return out
    if origin is typing.Literal:
        names = tuple(a for a in args if isinstance(a, str))
        kinds = {simple[type(a)] for a in args if type(a) in simple and not isinstance(a, str)}
        kinds |= {"none"} if None in args else set()
        if not names and not kinds:
            return None  # a literal sentinel object
        return Expect(kinds=frozenset(kinds | ({"str"} if names else set())), choices=names)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return Expect(kinds=frozenset({"seq"}), items=from_annotation(args[0]))
        items = {from_annotation(a) for a in args}
        item = items.pop() if len(items) == 1 else None
        return Expect(kinds=frozenset({"seq"}), lengths=frozenset({len(args)}), items=item)
    if origin in (list, Sequence, Iterable) or ann in (list, tuple):
        return Expect(kinds=frozenset({"seq"}), items=from_annotation(args[0]) if args else None)
    return None


def conform(key: str, value: Any, expect: Expect, *, submission: str) -> Any:
    """``value`` for ``key`` if ``expect`` takes it (an integral float for an integer becomes an int), else a
    :class:`UsageError` naming the key, what it takes and the value; NaN, infinities and negative learning rates
    are refused whatever the expectation."""
    ok, out = accepts(value, expect)
    if not ok:
        raise UsageError(f"submission {submission!r}: hyperparameter {key} takes {expect.describe()}, got "
                         f"{_shown(value)}")
    bad = _nonfinite(out)
    if bad is not None:
        raise UsageError(f"submission {submission!r}: hyperparameter {key} must be finite, got {_shown(value)}")
    if is_learning_rate(key) and isinstance(out, (int, float)) and out < 0:
        raise UsageError(f"submission {submission!r}: learning rate {key} must be >= 0, got {_shown(value)}")
    return out


def is_learning_rate(key: str) -> bool:
    """``lr``, ``learning_rate``, and ``adam_lr``-like keys; not ``lr_decay`` (a factor)."""
    return key in ("lr", "learning_rate") or key.endswith(("_lr", "_learning_rate"))


def check_values(hparams: Mapping[str, Any], expects: Mapping[str, Expect], *, submission: str) -> dict[str, Any]:
    """Every value of ``hparams`` conformed to ``expects`` (keys without one: to their type only as finite
    numbers and learning rates); a :data:`REQUIRED` value is a usage error naming the keys to give."""
    missing = [k for k, v in hparams.items() if v is REQUIRED]
    if missing:
        raise UsageError(f"submission {submission!r} needs {', '.join(missing)} (set with -o KEY=VALUE)")
    return {k: conform(k, v, expects.get(k, ANY), submission=submission) for k, v in hparams.items()}


def accepts(value: Any, expect: Expect) -> tuple[bool, Any]:
    """Whether ``expect`` takes ``value``, and the value as it is to be used (an integral float given for an integer
    made an int, lists' items likewise)."""
    if not expect.kinds:
        return True, value
    k = expect.kinds
    if value is None:
        return "none" in k, value
    if isinstance(value, bool):
        return "bool" in k, value
    if isinstance(value, int):
        return bool(k & {"int", "float"}), value
    if isinstance(value, float):
        if "float" in k:
            return True, value
        if "int" in k and math.isfinite(value) and value == int(value):
            return True, int(value)
        return False, value
    if isinstance(value, str):
        return "str" in k and (not expect.choices or value in expect.choices), value
    if isinstance(value, (list, tuple)):
        if "seq" not in k or (expect.lengths and len(value) not in expect.lengths):
            return False, value
        out = []
        for v in value:
            ok, v = accepts(v, expect.items or ANY)
            if not ok:
                return False, value
            out.append(v)
        return True, out
    return False, value


def _nonfinite(value: Any) -> Any:
    """The first NaN or infinity in ``value`` (nested lists and objects too), else None."""
    if isinstance(value, float) and not math.isfinite(value):
        return value
    items: Iterable[Any] = value.values() if isinstance(value, Mapping) else value if isinstance(
        value, (list, tuple)) else ()
    return next((bad for bad in map(_nonfinite, items) if bad is not None), None)


def _shown(value: Any) -> str:
    """The value as typed on a command line (JSON), shortened."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def expectations(sub: Any) -> dict[str, Expect]:
    """What each hyperparameter of submission ``sub`` takes: a plain class's own (annotations and defaults, see
    :mod:`optbench.plugins.plain`), else from its defaults, plus the schedule keys' defaults."""
    from optbench.schedules import KEY_DEFAULTS

    own: Callable[[], Mapping[str, Expect]] | None = getattr(getattr(sub, "factory", None), "expects", None)
    out = {k: from_default(v) for k, v in KEY_DEFAULTS.items()}
    for k, v in dict(sub.defaults).items():  # None: "the schedule's own value" for a schedule key, else anything
        out[k] = from_default(v) if v is not None else out.get(k, ANY) | Expect(kinds=frozenset({"none"}))
    out.update(own() if own is not None else {})
    return out
