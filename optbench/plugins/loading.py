"""Importing what a spec names: a ``module:Attr`` object (:mod:`optbench.plugins.registry`, and a plain class's
fallback, ``-o rest=module:Attr``, in :mod:`optbench.plugins.groups`) and a Python file (``file.py:Attr`` specs and
AlgoPerf submission files, :mod:`optbench.plugins.algoperf`). No optbench imports but the errors, so that every
module of the plugins layer can use it without an import circle."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any

from optbench.errors import PluginError


def import_file(path: Path, name: str, spec: str, *, reuse: bool = False) -> Any:
    """The module of Python file ``path``, imported as ``name`` (``reuse``: the one already imported under that
    name, if any); a file that fails to import is one :class:`PluginError` naming ``spec``, never a traceback."""
    if reuse and name in sys.modules:
        return sys.modules[name]
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise PluginError(f"plugin {spec!r}: cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:  # a broken plugin file must not crash the harness
        sys.modules.pop(name, None)
        raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from None
    return module


def import_attr(module_name: str, attr: str, spec: str) -> Any:
    """``attr`` (dotted for nested objects) of module ``module_name``; a module that fails to import or lacks the
    attribute is one :class:`PluginError` naming ``spec``."""
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"plugin {spec!r} failed to import: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"plugin {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj
