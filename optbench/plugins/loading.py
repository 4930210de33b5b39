"""Importing a plugin from a Python file: the one place that does it, for ``file.py:Attr`` specs
(:mod:`optbench.plugins.registry`) and AlgoPerf submission files (:mod:`optbench.plugins.algoperf`)."""

from __future__ import annotations

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
