"""A synthetic token corpus in the prepared format, so that the LM workloads' ``tiny`` tier runs without a download:
``optbench data prepare synthetic --data-dir DIR``, then ``--data-dir DIR`` on the LM commands.

The stream is a learnable Markov chain (each token follows one of 4 fixed successors of the previous one, Zipfian
starts, documents of mean length 200 ending with EOT), written as stand-ins named ``wikitext103`` and ``c4`` (the
names the LM workloads read). The research recipes of docs/RESEARCH.md use it on machines without the real
datasets; a result on it says nothing about WikiText-103 or C4 themselves. The bytes written are those of the
generator the test suite has always used (same seed, same split, same manifest), so recorded numbers stay valid.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

VOCAB = 8192  # the tiers' BPE vocabulary
EOT = 0  # end-of-text token id
DEFAULT_TOKENS = 400_000  # train + validation; enough for the tiny tier's validation windows
STAND_INS = ("wikitext103", "c4")  # the datasets the LM workloads read
TRAIN_SHARE = 0.9  # the rest is the validation split


def markov_corpus(n: int, *, vocab: int = VOCAB, seed: int = 0) -> np.ndarray:
    """``n`` tokens of a learnable stream: each token follows one of 4 fixed successors of the previous one, with
    Zipfian starts, and documents (mean length 200) end with EOT."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, vocab)
    succ = rng.choice(np.arange(1, vocab), size=(vocab, 4), p=zipf / zipf.sum())
    pick, ends = rng.integers(0, 4, n), rng.random(n) < 1 / 200
    # The chain is sequential; plain Python lists make its loop several times faster than numpy scalar indexing,
    # with the same values.
    table, picks, stops = succ.tolist(), pick.tolist(), ends.tolist()
    out, state = [0] * n, 1
    for i in range(n):
        state = EOT if stops[i] else table[state][picks[i]]
        out[i] = state
    return np.asarray(out, dtype=np.int64)


def write_tokens(root: Path, name: str, *, train: np.ndarray, val: np.ndarray, vocab: int = VOCAB,
                 kind: str = "bpe", dtype: str = "uint16") -> Path:
    """Write ``train.bin``/``val.bin`` and a manifest under ``root/name``, as ``optbench data prepare`` does."""
    folder = Path(root) / name
    folder.mkdir(parents=True)
    files, splits = {}, {}
    for split, tokens in (("train", train), ("val", val)):
        path = folder / f"{split}.bin"
        tokens.astype(np.dtype(dtype).newbyteorder("<")).tofile(path)
        files[path.name] = {"bytes": path.stat().st_size}
        splits[split] = {"file": path.name, "tokens": int(tokens.size)}
    manifest = {"format_version": 1, "name": name, "kind": "tokens", "dtype": dtype, "byteorder": "little",
                "tokenizer": {"kind": kind, "vocab_size": vocab, "eot_id": EOT}, "splits": splits, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return root


def write_synthetic(root: Path, *, n_tokens: int = DEFAULT_TOKENS, names: Sequence[str] = STAND_INS,
                    log: Callable[[str], None] | None = None) -> list[str]:
    """Write the corpus as each of ``names`` under ``root``, leaving a dataset already there as it is; returns the
    names written. Each is written in a hidden folder and renamed into place, so a killed run leaves no partial
    dataset that a later run would take for a finished one."""
    root = Path(root)
    todo = [n for n in names if not (root / n).exists()]
    for name in names:
        if name not in todo and log:
            log(f"{name}: already in {root / name}, kept")
    if not todo:
        return []
    corpus = markov_corpus(n_tokens)
    split = int(TRAIN_SHARE * n_tokens)
    scratch = root / f".synthetic-{os.getpid()}"
    try:
        for name in todo:
            write_tokens(scratch, name, train=corpus[:split], val=corpus[split:])
            os.replace(scratch / name, root / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return todo


def prepare_synthetic(data_dir: Path | None, *, log: Callable[[str], None] | None = None) -> str:
    """``optbench data prepare synthetic``: write the stand-ins into ``data_dir``; returns the line to print.

    Raises:
      UsageError: no ``data_dir``, or the default data directory: the stand-ins carry the real datasets' names,
        so they go to a folder of their own, never where a real WikiText-103 or C4 is (or will be) prepared.
    """
    from optbench.errors import UsageError
    from optbench.store import paths

    if data_dir is None:
        raise UsageError("optbench data prepare synthetic needs --data-dir DIR (a folder of its own: the corpus "
                         "stands in for wikitext103 and c4), then --data-dir DIR on the LM commands")
    root = Path(data_dir).expanduser()
    if root.resolve() == paths.data_dir(None).resolve():
        raise UsageError(f"{str(root)!r} is the default data directory, where real datasets go; give the synthetic "
                         "corpus a --data-dir of its own")
    try:
        root.mkdir(parents=True, exist_ok=True)
        written = write_synthetic(root, log=log)
    except OSError as exc:
        raise UsageError(f"could not write the synthetic corpus to {str(root)!r}: {exc.strerror or exc}") from None
    train = int(TRAIN_SHARE * DEFAULT_TOKENS)
    what = ", ".join(written) if written else "nothing new"
    return (f"synthetic: wrote {what} in {root} (a Markov stream standing in for {' and '.join(STAND_INS)}: "
            f"train {train:,} · val {DEFAULT_TOKENS - train:,} tokens, vocab {VOCAB}); use --data-dir {root}")
