"""Hyperparameters: parsing ``--opt-arg key=value``, merging with a submission's defaults, and search spaces.

Search spaces use AlgoPerf's JSON format::

    {"lr": {"min": 1e-4, "max": 1e-1, "scaling": "log"},
     "beta1": {"min": 0.8, "max": 0.99, "scaling": "linear"},
     "schedule": {"feasible_points": ["constant", "cosine"]}}

or a list of fixed configurations ``[{"lr": 0.01, ...}, ...]``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from optbench.errors import UsageError
from optbench.store.fsutil import is_valid_text, printable

HARNESS_HPARAMS = ("batch_size",)  # consumed by the harness, accepted for every submission
MAX_DEPTH = 32  # nesting of a hyperparameter value or search space; deeper JSON is a mistake, not a setting


def loads(raw: str | bytes, *, source: str) -> Any:
    """Decode JSON given by the user; malformed or absurdly nested input is one :class:`UsageError`.

    Python's decoder recurses per nesting level, so ``[[[[...]]]]`` a few thousand deep raises RecursionError;
    that, like any other decoding failure, is reported against ``source``.
    """
    try:
        value = json.loads(raw)
    except RecursionError:
        raise UsageError(f"{source}: JSON nested too deeply") from None
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{source}: not valid JSON ({exc})") from None
    check_json(value, where=source)
    return value


def load_file(path: Any, *, what: str) -> Any:
    """The JSON in file ``path`` (hyperparameters, a search space); any failure is one :class:`UsageError`."""
    from pathlib import Path

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {str(path)!r}: {exc.strerror or exc}") from None
    return loads(raw, source=f"{what} {str(path)!r}")


def check_json(value: Any, *, where: str, _depth: int = 0) -> None:
    """Raise :class:`UsageError` unless ``value`` is JSON we can store: at most :data:`MAX_DEPTH` deep, string
    keys, and text that is valid UTF-8 (the results store writes it as UTF-8)."""
    if _depth > MAX_DEPTH:
        raise UsageError(f"{where}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, str):
        if not is_valid_text(value):
            raise UsageError(f"{where}: text that is not valid UTF-8: {printable(value)!r}")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise UsageError(f"{where}: keys must be text, got {k!r}")
            check_json(k, where=where, _depth=_depth + 1)
            check_json(v, where=where, _depth=_depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_json(v, where=where, _depth=_depth + 1)
    elif value is not None and not isinstance(value, (bool, int, float)):
        raise UsageError(f"{where}: unsupported value {value!r}")


def parse_value(text: str) -> Any:
    """A command-line value: JSON when it parses (``0.1``, ``true``, ``[0.9, 0.99]``), else the plain string."""
    lowered = text.strip()
    if lowered in ("True", "False", "None"):  # Python spellings people type
        return {"True": True, "False": False, "None": None}[lowered]
    try:
        return json.loads(lowered)
    except RecursionError:
        raise UsageError(f"--opt-arg value nested too deeply: {text[:40]!r}...") from None
    except ValueError:
        return text


def parse_assignments(items: Iterable[str]) -> dict[str, Any]:
    """``["lr=0.1", "betas=[0.9,0.95]"]`` -> ``{"lr": 0.1, "betas": [0.9, 0.95]}``.

    A key may name the submission it is for, ``adamw.lr=1e-3`` (see :func:`for_submission`).

    Raises:
      UsageError: an item without ``=``, with an empty key, or a key given twice (a silent last-one-wins would
        run another experiment than the one typed).
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--opt-arg expects KEY=VALUE, got {item!r}")
        if key in out:
            raise UsageError(f"--opt-arg {key} is given twice ({out[key]!r}, then {parse_value(value)!r}); give it once")
        out[key] = parse_value(value)
    return out


def for_submission(given: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """The values that apply to a submission known by ``names`` (its short name and its label): plain keys, and
    keys ``NAME.key`` for one of ``names``, which win over the plain key. Keys meant for other submissions drop out.
    """
    names = set(names)
    plain = {k: v for k, v in given.items() if "." not in k}
    # rpartition: the submission may be a spec with dots (torch.optim:SGD.lr=0.1); a key never has one
    mine = {k.rpartition(".")[2]: v for k, v in given.items() if "." in k and k.rpartition(".")[0] in names}
    return {**plain, **mine}


GROUP_SEP = "@"  # KEY@GROUP: an option of one parameter group of a plain class (optbench.plugins.groups)


def split_group_key(key: str) -> tuple[str, str | None]:
    """``"lr@hidden"`` -> ``("lr", "hidden")``; a key without ``@`` -> ``(key, None)``.

    ``@`` rather than ``.``: ``NAME.key`` already names the submission a key is for, and a submission spec has dots
    (``torch.optim:Muon.lr@hidden`` is ``lr@hidden`` for ``torch.optim:Muon``).

    Raises:
      UsageError: an empty KEY or GROUP, or more than one ``@``.
    """
    base, sep, group = key.partition(GROUP_SEP)
    if not sep:
        return key, None
    if not base or not group or GROUP_SEP in group:
        raise UsageError(f"--opt-arg {key!r}: a group option is KEY@GROUP=VALUE, e.g. lr@hidden=0.02")
    return base, group


def check_prefixes(given: Mapping[str, Any], submissions: Iterable[str]) -> None:
    """A usage error for a ``NAME.key`` whose NAME is none of the command's submissions (a typo would otherwise
    leave the value unused without a word)."""
    known = set(submissions)
    stray = sorted({k.rpartition(".")[0] for k in given if "." in k} - known)
    if stray:
        raise UsageError(f"hyperparameter prefix {', '.join(repr(s) for s in stray)} names no submission of this "
                         f"command ({', '.join(sorted(known))}); write NAME.key=VALUE with NAME as given to -s")


def merge(defaults: Mapping[str, Any], given: Mapping[str, Any], *, submission: str,
          expects: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Defaults overridden by ``given``; a key the submission does not accept, or a value its key does not take
    (see :mod:`optbench.plugins.values`), is a usage error.

    Args:
      defaults: the submission's defaults (its accepted keys).
      given: user-supplied values.
      submission: name for the error message.
      expects: what each key takes (:func:`optbench.plugins.values.expectations` of the submission); None: what
        the defaults' types say.
    Returns:
      The merged hyperparameters (harness keys such as ``batch_size`` included), integral floats given for
      integers made ints.
    """
    from optbench.plugins.values import check_values, from_default

    check_keys(defaults, given, submission=submission)
    if expects is None:
        expects = {k: from_default(v) for k, v in defaults.items()}
    return check_values({**defaults, **given}, expects, submission=submission)


def check_keys(defaults: Mapping[str, Any], keys: Iterable[str], *, submission: str) -> None:
    """A usage error naming every key in ``keys`` that the submission (whose defaults are ``defaults``) lacks."""
    from optbench.schedules import SCHEDULE_HPARAMS

    # A scheduled submission (one with a "schedule" default) takes every schedule's keys (wsd's cooldown...).
    extra = SCHEDULE_HPARAMS if "schedule" in defaults else ()
    keys = list(keys)
    grouped = [k for k in keys if split_group_key(k)[1] is not None]
    if grouped and "roles" not in defaults:  # only plain classes take group options (optbench.plugins.groups)
        raise UsageError(f"submission {submission!r} takes no group option {', '.join(sorted(grouped))}: KEY@GROUP "
                         "is for plain optimizer classes (module:Attr)")
    unknown = sorted({k for k in keys if k not in defaults and k not in HARNESS_HPARAMS and k not in extra
                      and k not in grouped})
    if unknown:
        known = ", ".join(sorted(defaults)) or "(none)"
        raise UsageError(f"submission {submission!r} has no hyperparameter {', '.join(unknown)}; it accepts: {known}")


@dataclass(frozen=True, kw_only=True)
class Range:
    """A continuous or integer range, sampled on a log or linear scale."""

    name: str
    low: float
    high: float
    scaling: str  # "log" | "linear"
    integer: bool = False

    def at(self, u: float) -> float | int:
        """The value at quantile ``u`` in [0, 1)."""
        if self.scaling == "log":
            v = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return int(round(v)) if self.integer else v


@dataclass(frozen=True, kw_only=True)
class Choice:
    """A finite set of feasible points."""

    name: str
    points: tuple[Any, ...]

    def at(self, u: float) -> Any:
        return self.points[min(len(self.points) - 1, int(u * len(self.points)))]


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """A parsed search space: either dimensions to sample or a fixed list of configurations."""

    dims: tuple[Range | Choice, ...] = ()
    fixed: tuple[Mapping[str, Any], ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.dims)

    def point(self, u: Iterable[float]) -> dict[str, Any]:
        """The configuration at unit-cube point ``u`` (one coordinate per dimension)."""
        return {d.name: d.at(x) for d, x in zip(self.dims, u, strict=True)}


def parse_search_space(raw: Any, *, source: str = "search space") -> SearchSpace:
    """Validate and parse AlgoPerf's search-space JSON.

    Args:
      raw: the decoded JSON (a dict of dimensions or a list of fixed configurations).
      source: where it came from, for error messages.
    Returns:
      The parsed :class:`SearchSpace`.
    Raises:
      UsageError: on any malformed entry, naming it.
    """
    if isinstance(raw, list):
        if not raw or not all(isinstance(c, dict) for c in raw):
            raise UsageError(f"{source}: a list search space must be a non-empty list of objects")
        return SearchSpace(fixed=tuple(raw))
    if not isinstance(raw, dict) or not raw:
        raise UsageError(f"{source}: expected a JSON object of dimensions or a list of configurations")
    dims: list[Range | Choice] = []
    for name, spec in raw.items():
        if not isinstance(spec, dict):
            raise UsageError(f"{source}: dimension {name!r} must be an object")
        if "feasible_points" in spec:
            pts = spec["feasible_points"]
            if not isinstance(pts, list) or not pts:
                raise UsageError(f"{source}: {name!r}.feasible_points must be a non-empty list")
            dims.append(Choice(name=name, points=tuple(pts)))
            continue
        try:
            low, high = float(spec["min"]), float(spec["max"])
        except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: an integer beyond any float
            raise UsageError(f"{source}: {name!r} needs numeric 'min' and 'max' (or 'feasible_points')") from None
        scaling = spec.get("scaling", "linear")
        if scaling not in ("log", "linear"):
            raise UsageError(f"{source}: {name!r}.scaling must be 'log' or 'linear', got {scaling!r}")
        if not (math.isfinite(low) and math.isfinite(high)):
            raise UsageError(f"{source}: {name!r} needs finite 'min' and 'max', got {low} and {high}")
        if not low <= high or (scaling == "log" and low <= 0):
            raise UsageError(f"{source}: {name!r} needs min <= max (and min > 0 on a log scale)")
        dims.append(Range(name=name, low=low, high=high, scaling=scaling, integer=bool(spec.get("integer", False))))
    return SearchSpace(dims=tuple(dims))
