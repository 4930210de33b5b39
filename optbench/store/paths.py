"""Default locations: results and the dataset cache."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "OPTBENCH_DATA"  # overrides the dataset cache directory
RESULTS_ENV = "OPTBENCH_RESULTS"  # overrides the default results directory


def data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where prepared datasets live: ``explicit``, else ``$OPTBENCH_DATA``, else ``$XDG_CACHE_HOME/optbench``
    (``~/.cache/optbench``)."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "optbench"


def results_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where results go: ``explicit``, else ``$OPTBENCH_RESULTS``, else ``./results``."""
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get(RESULTS_ENV) or "results")
