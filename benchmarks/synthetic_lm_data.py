"""Write the synthetic token corpus (:mod:`optbench.data.synthetic`): ``python -m benchmarks.synthetic_lm_data DIR``
is the same as ``optbench data prepare synthetic --data-dir DIR``, kept for scripts that call :func:`main`."""

from __future__ import annotations

import sys
from pathlib import Path

from optbench.data.synthetic import DEFAULT_TOKENS, write_synthetic


def main(root: Path, n_tokens: int = DEFAULT_TOKENS) -> Path:
    write_synthetic(root, n_tokens=n_tokens)
    return root


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
