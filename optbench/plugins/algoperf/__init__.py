"""AlgoPerf submission files, run unchanged: ``-s algoperf:path/to/submission.py[@path/to/search_space.json]``.

:func:`load` imports the file (with the stand-in ``algoperf`` and ``absl`` packages of :mod:`.imports` where the
real ones are not installed), checks that it has AlgoPerf's functions, and returns an :class:`AlgoPerfSubmission`:
an optbench submission with :attr:`~optbench.api.Capability.OWNS_STEP` whose updater
(:class:`~optbench.plugins.algoperf.adapter.AlgoPerfUpdater`) calls them. The search space is the file named after
``@``, else ``tuning_search_space.json`` beside the submission (AlgoPerf's layout), else none (self-tuning: the
submission gets ``hyperparameters=None``). Its keys are the hyperparameters ``-o`` may set; ``run`` uses its
first point (:func:`first_point`), ``tune`` samples it as AlgoPerf's external tuning does.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from optbench.api import Capability, TrialInfo
from optbench.errors import PluginError, UsageError

PREFIX = "algoperf:"
SPACE_FILE = "tuning_search_space.json"
REQUIRED = ("init_optimizer_state", "update_params")


@dataclass(frozen=True, kw_only=True)
class AlgoPerfSubmission:
    """An AlgoPerf submission file as an optbench :class:`~optbench.api.Submission`."""

    name: str
    module: ModuleType = field(repr=False)
    defaults: Mapping[str, Any]
    space: Any = None
    capabilities: frozenset[Capability] = frozenset()
    paper: str = "AlgoPerf submission file"

    def create(self, model: Any, hparams: Mapping[str, Any], info: TrialInfo) -> Any:
        from optbench.plugins.algoperf.adapter import AlgoPerfUpdater

        return AlgoPerfUpdater(self.module, model, hparams, info, label=self.name)

    def search_space(self) -> Any:
        return self.space


class AnyKeys(Mapping[str, Any]):
    """The defaults of a file without a search space: no values, and every key accepted (``-o name=value`` sets
    ``hyperparameters.name``; only the file knows which names it reads)."""

    def __getitem__(self, key: str) -> Any:
        raise KeyError(key)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __contains__(self, key: object) -> bool:
        return True


def with_search_space(specs: tuple[str, ...], path: Path | None) -> tuple[str, ...]:
    """``run --search-space FILE``: each ``algoperf:`` spec names FILE as its search space (``@FILE``).

    Raises:
      UsageError: the option with a submission that is not an AlgoPerf file, or one that already names a space.
    """
    if path is None:
        return specs
    others = [s for s in specs if not is_algoperf_spec(s) or "@" in s]
    if others:
        raise UsageError(f"--search-space applies to algoperf:FILE submissions without @SPACE, not {others[0]!r} "
                         "(other submissions take -o values; tune takes --search-space for any)")
    return tuple(f"{s}@{path}" for s in specs)


def is_algoperf_spec(spec: str) -> bool:
    return spec.startswith(PREFIX)


def split(spec: str) -> tuple[Path, Path | None]:
    """``algoperf:SUB.py[@SPACE.json]`` -> (submission file, search-space file or None)."""
    body = spec[len(PREFIX):]
    sub, _, space = body.partition("@")
    if not sub.endswith(".py"):
        raise UsageError(f"{spec!r}: write algoperf:path/to/submission.py (optionally @path/to/search_space.json)")
    return Path(sub), Path(space) if space else None


def label(spec: str) -> str:
    """The name results record: file names only, never folders (no user names in shared results)."""
    sub, space = split(spec)
    named = f"{sub.parent.name}/{sub.name}" if sub.parent.name else sub.name  # AlgoPerf files are all submission.py
    return PREFIX + named + (f"@{space.name}" if space is not None else "")


def _import(path: Path, spec: str, digest: str) -> ModuleType:
    from optbench.plugins.algoperf.imports import ensure_all
    from optbench.plugins.loading import import_file

    ensure_all()
    return import_file(path, f"optbench_algoperf_{digest}_{path.stem}", spec, reuse=True)


def _space(path: Path | None, sub: Path, spec: str) -> tuple[Any, bytes]:
    from optbench.plugins.hparams import load_file, parse_search_space

    if path is None:
        beside = sub.with_name(SPACE_FILE)
        if not beside.is_file():
            return None, b""
        path = beside
    raw = load_file(path, what="search space")
    parse_search_space(raw, source=str(path))  # malformed: one line now
    return raw, path.read_bytes()


def first_point(raw: Any) -> dict[str, Any]:
    """What ``run`` uses: a list's first configuration; for dimensions, each one's first feasible point or the
    middle of its range (geometric on a log scale)."""
    if raw is None:
        return {}
    if isinstance(raw, list):
        return dict(raw[0])
    out: dict[str, Any] = {}
    for name, dim in raw.items():
        if "feasible_points" in dim:
            out[name] = dim["feasible_points"][0]
            continue
        low, high = float(dim["min"]), float(dim["max"])
        mid = math.sqrt(low * high) if dim.get("scaling") == "log" else (low + high) / 2
        out[name] = int(round(mid)) if dim.get("integer") else mid
    return out


def load(spec: str) -> tuple[AlgoPerfSubmission, str, str]:
    """The submission named by ``spec``, the file's name and its version (a hash of it and its search space).

    Raises:
      PluginError: no such file, an import that fails, a file without AlgoPerf's functions (one line each).
    """
    sub, space_path = split(spec)
    if not sub.is_file():
        raise PluginError(f"plugin {spec!r}: no such file {str(sub)!r}")
    if space_path is not None and not space_path.is_file():
        raise UsageError(f"plugin {spec!r}: no such search-space file {str(space_path)!r}")
    space, space_bytes = _space(space_path, sub, spec)
    digest = hashlib.sha256(sub.read_bytes() + space_bytes).hexdigest()[:12]
    module = _import(sub, spec, digest)
    missing = [f for f in REQUIRED if not callable(getattr(module, f, None))]
    if missing:
        raise PluginError(f"plugin {spec!r} is not an AlgoPerf submission: no {', '.join(missing)}()")
    caps = {Capability.OWNS_STEP, Capability.BATCH_SCHEDULE, Capability.EVAL_PARAMS}
    defaults = first_point(space) if space is not None else AnyKeys()
    obj = AlgoPerfSubmission(name=label(spec), module=module, defaults=defaults, space=space,
                             capabilities=frozenset(caps))
    return obj, sub.name, f"sha256:{digest}"
