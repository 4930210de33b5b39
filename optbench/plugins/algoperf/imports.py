"""Making ``import algoperf`` and ``from absl import logging`` work for AlgoPerf submission files, without JAX.

Each stand-in (``shim/algoperf``, ``absl_shim/absl``) is put on ``sys.path`` only when the real package cannot be
found (``importlib.util.find_spec(name) is None``): an installed AlgoPerf or absl-py is never shadowed. The stand-ins
stay on the path for the rest of the process (a submission may import them again at any step).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAND_INS = {"algoperf": HERE / "shim", "absl": HERE / "absl_shim"}


def ensure(name: str) -> str:
    """Make package ``name`` importable: ``"installed"`` when the real one is, else ``"stand-in"`` (put on the path)."""
    folder = str(STAND_INS[name])
    if folder in sys.path:
        return "stand-in"
    if importlib.util.find_spec(name) is not None:
        return "installed"
    sys.path.append(folder)  # appended: anything installed later in the path would still win
    importlib.invalidate_caches()
    return "stand-in"


def ensure_all() -> dict[str, str]:
    """Both packages; returns which of them are stand-ins (recorded in the submission's origin)."""
    return {name: ensure(name) for name in STAND_INS}


def training_complete_types() -> tuple[type[BaseException], ...]:
    """The ``TrainingCompleteError`` classes a submission may raise: the one ``algoperf.spec`` holds (real or stand-in),
    matched by class; any exception class of that name is taken too (a submission that defines its own copy)."""
    ensure("algoperf")
    from algoperf import spec  # type: ignore[import-not-found]

    return (spec.TrainingCompleteError,)
