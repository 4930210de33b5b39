"""Finding and loading plugins, and checking them against the API when they load.

A plugin is named by one of:

* a short name registered in the entry-point group ``optbench.workloads`` or ``optbench.submissions``
  (the built-ins register there too, exactly like third-party packages);
* ``package.module:Attr``, an importable object;
* ``path/to/file.py:Attr``, an object in a Python file.

For submissions, ``Attr`` may be a plain ``torch.optim.Optimizer`` subclass: :func:`optimizer_submission` makes it a
submission whose hyperparameters are its constructor keywords. Every loaded plugin carries its :class:`Origin`
(distribution and version, or file and hash), which goes onto its results.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from optbench.api import Submission, Workload
from optbench.errors import PluginError, UsageError
from optbench.plugins.loading import import_attr, import_file
from optbench.plugins.plain import is_plain_optimizer as is_plain_optimizer  # re-exported: older imports
from optbench.plugins.plain import optimizer_submission

Kind = Literal["workloads", "submissions"]
T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class Origin:
    """Where a plugin came from: recorded on every result it produces."""

    source: str  # "entry-point" | "module" | "file"
    distribution: str  # package name, or the file's name (never its folder)
    version: str  # package version, or "sha256:<12 hex>" of the file


@dataclass(frozen=True, kw_only=True)
class Loaded(Generic[T]):
    """A plugin object with the name it was asked for and its origin."""

    name: str
    obj: T
    origin: Origin

    @property
    def label(self) -> str:
        """The name results record: ``name``, except that a file plugin (``/home/me/opt.py:MyOpt``) is named by its
        file alone (``opt.py:MyOpt``): results carry no folders, hence no user names; the origin's hash tells two
        files of one name apart."""
        if self.name.startswith("algoperf:"):
            from optbench.plugins.algoperf import label

            return label(self.name)
        if not is_file_spec(self.name):
            return self.name
        target, _, attr = self.name.rpartition(":")
        return f"{Path(target).name}:{attr}"


def entry_points(kind: Kind) -> dict[str, metadata.EntryPoint]:
    """The entry points of group ``optbench.<kind>``, by name."""
    return {ep.name: ep for ep in metadata.entry_points(group=f"optbench.{kind}")}


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return f"{hint}known: {', '.join(sorted(known)) or '(none installed)'}"


def _dist_version(module_name: str) -> tuple[str, str]:
    top = module_name.split(".")[0]
    dists = metadata.packages_distributions().get(top, [])
    for dist in dists:
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    mod = sys.modules.get(top)
    return top, str(getattr(mod, "__version__", "unknown"))


def _load_file(path: Path, attr: str, spec: str) -> tuple[Any, Origin]:
    if not path.is_file():
        raise PluginError(f"plugin {spec!r}: no such file {str(path)!r}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    module = import_file(path, f"optbench_plugin_{digest}_{path.stem}", spec)
    if not hasattr(module, attr):
        raise PluginError(f"plugin {spec!r}: {str(path)!r} has no attribute {attr!r}")
    # The file's name and hash identify it; its folder would put the user's home directory into shared results.
    return getattr(module, attr), Origin(source="file", distribution=path.name, version=f"sha256:{digest}")


def _load_module(module_name: str, attr: str, spec: str) -> tuple[Any, Origin]:
    obj = import_attr(module_name, attr, spec)
    dist, version = _dist_version(module_name)
    return obj, Origin(source="module", distribution=dist, version=version)


def is_file_spec(spec: str) -> bool:
    """Whether ``spec`` names an object in a Python file (``path/file.py:Attr``) rather than a module or entry point."""
    target, sep, attr = spec.rpartition(":")
    return bool(sep and target and (target.endswith(".py") or "/" in target or "\\" in target))


def _resolve(kind: Kind, spec: str) -> tuple[Any, Origin]:
    """The raw object named by ``spec`` and its origin."""
    if spec.startswith("algoperf:"):  # an AlgoPerf submission file, run unchanged (optbench.plugins.algoperf)
        if kind != "submissions":
            raise UsageError(f"{spec!r}: algoperf: names a submission file, not a workload")
        from optbench.plugins import algoperf

        obj, dist, version = algoperf.load(spec)
        return obj, Origin(source="file", distribution=dist, version=version)
    if ":" in spec:
        target, _, attr = spec.rpartition(":")
        if not target or not attr:
            raise UsageError(f"plugin spec {spec!r} must look like package.module:Name or path/file.py:Name")
        if is_file_spec(spec):
            return _load_file(Path(target), attr, spec)
        return _load_module(target, attr, spec)
    eps = entry_points(kind)
    if spec not in eps:
        noun = "workload" if kind == "workloads" else "submission"
        raise UsageError(f"unknown {noun} {spec!r}; {_did_you_mean(spec, list(eps))}")
    ep = eps[spec]
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} ({ep.value}) failed to import: {type(exc).__name__}: {exc}") from None
    dist = ep.dist
    origin = Origin(
        source="entry-point",
        distribution=dist.name if dist else ep.module.split(".")[0],
        version=dist.version if dist else "unknown",
    )
    return obj, origin


def _instantiate(obj: Any, spec: str) -> Any:
    """Plugins may be given as instances or as zero-argument classes / factories."""
    if inspect.isclass(obj):
        try:
            return obj()
        except Exception as exc:
            raise PluginError(f"plugin {spec!r}: cannot instantiate {obj.__name__}: {exc}") from None
    return obj


def check_workload(obj: Any, spec: str) -> Workload:
    """Check ``obj`` against the :class:`Workload` protocol; raise :class:`PluginError` naming what is wrong."""
    from optbench.api import Metric, Size

    obj = _instantiate(obj, spec)
    missing = [a for a in ("name", "metric", "sizes", "default_size", "description", "setup") if not hasattr(obj, a)]
    if missing:
        raise PluginError(f"workload {spec!r} does not fit the API: missing {', '.join(missing)}")
    if not isinstance(obj.metric, Metric):
        raise PluginError(f"workload {spec!r}: metric must be an optbench.api.Metric")
    if not isinstance(obj.sizes, Mapping) or not obj.sizes:
        raise PluginError(f"workload {spec!r}: sizes must be a non-empty mapping of name -> Size")
    for key, size in obj.sizes.items():
        if not isinstance(size, Size) or size.name != key:
            raise PluginError(f"workload {spec!r}: sizes[{key!r}] must be a Size named {key!r}")
    if obj.default_size not in obj.sizes:
        raise PluginError(f"workload {spec!r}: default_size {obj.default_size!r} is not one of its sizes")
    if not callable(obj.setup):
        raise PluginError(f"workload {spec!r}: setup must be callable")
    return obj


def check_submission(obj: Any, spec: str) -> Submission:
    """Check ``obj`` against the :class:`Submission` protocol; a ``torch.optim.Optimizer`` subclass is adapted."""
    if inspect.isclass(obj):
        import torch

        if issubclass(obj, torch.optim.Optimizer):
            return optimizer_submission(obj, name=spec)
    obj = _instantiate(obj, spec)
    missing = [a for a in ("name", "defaults", "capabilities", "create", "search_space") if not hasattr(obj, a)]
    if missing:
        raise PluginError(
            f"submission {spec!r} does not fit the API: missing {', '.join(missing)} "
            "(give a Submission, a SubmissionSpec, or a torch.optim.Optimizer subclass)"
        )
    if not isinstance(obj.defaults, Mapping):
        raise PluginError(f"submission {spec!r}: defaults must be a mapping of hyperparameter -> value")
    if not callable(obj.create):
        raise PluginError(f"submission {spec!r}: create must be callable")
    return obj


def load_workload(spec: str) -> Loaded[Workload]:
    """Load and check the workload named by ``spec`` (entry-point name, module:Attr or file.py:Attr)."""
    obj, origin = _resolve("workloads", spec)
    return Loaded(name=spec, obj=check_workload(obj, spec), origin=origin)


def load_submission(spec: str) -> Loaded[Submission]:
    """Load and check the submission named by ``spec`` (entry-point name, module:Attr or file.py:Attr)."""
    obj, origin = _resolve("submissions", spec)
    sub = check_submission(obj, spec)
    own = getattr(sub, "name", spec)
    if origin.source == "entry-point" and own != spec:
        import warnings

        from optbench.errors import PluginWarning

        warnings.warn(PluginWarning(
            f"submission entry point {spec!r} calls itself {own!r}; results record {spec!r}: give the entry point "
            "and SubmissionSpec(name=...) the same name"), stacklevel=2)
    return Loaded(name=spec, obj=sub, origin=origin)


def load_all(kind: Kind) -> list[Loaded[Any] | tuple[str, PluginError]]:
    """Every registered plugin of ``kind``, loaded; a broken one is returned as ``(name, error)`` so that
    listing shows it instead of failing."""
    loader: Callable[[str], Loaded[Any]] = load_workload if kind == "workloads" else load_submission
    out: list[Loaded[Any] | tuple[str, PluginError]] = []
    for name in sorted(entry_points(kind)):
        try:
            out.append(loader(name))
        except PluginError as exc:
            out.append((name, exc))
    return out
