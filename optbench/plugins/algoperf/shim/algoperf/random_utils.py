"""AlgoPerf's random keys for PyTorch submissions: NumPy uint32 pairs, split and folded deterministically.

A key is derived by hashing, so the same key always gives the same children (what a submission relies on), without
JAX. The streams are not JAX's: a submission gets different numbers here than under AlgoPerf, as it does between
AlgoPerf's JAX and PyTorch runs.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def _key(*parts: Any) -> np.ndarray:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.frombuffer(digest[:8], dtype=np.uint32).copy()


def PRNGKey(seed: int) -> np.ndarray:  # noqa: N802  (AlgoPerf's name)
    return _key("seed", int(seed))


def split(rng: Any, num: int = 2) -> np.ndarray:
    """``num`` child keys of ``rng``, shape (num, 2)."""
    base = tuple(int(x) for x in np.asarray(rng).ravel())
    return np.stack([_key("split", base, i) for i in range(num)])


def fold_in(rng: Any, data: int) -> np.ndarray:
    base = tuple(int(x) for x in np.asarray(rng).ravel())
    return _key("fold", base, int(data))
