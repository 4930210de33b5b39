"""Write a synthetic token corpus in the prepared format (the test suite's learnable Markov stream), so the LM
workloads' ``tiny`` tier runs without a download: ``python -m benchmarks.synthetic_lm_data DIR``, then
``--data-dir DIR``. Used by the research recipes of docs/RESEARCH.md on machines without the real datasets; a
result on it says nothing about WikiText-103 or C4 themselves."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.workloads.test_lm import markov_corpus, write_tokens


def main(root: Path, n_tokens: int = 400_000) -> Path:
    corpus = markov_corpus(n_tokens)
    split = int(0.9 * n_tokens)
    for name in ("wikitext103", "c4"):
        if not (root / name).exists():
            write_tokens(root, name, train=corpus[:split], val=corpus[split:])
    return root


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
