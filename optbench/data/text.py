"""Text corpora (WikiText-103 raw, C4 English) -> flat token files, nanoGPT style.

Each split becomes one file of token ids, raw little-endian ``uint16`` (vocabulary <= 65536) or ``uint32``, with an
end-of-text token after every document; a language model reads random windows of it through ``np.memmap``::

    <data_dir>/<name>/train.bin   val.bin   [test.bin: WikiText only]   [tokenizer.json: BPE only]   manifest.json

Tokenizer: GPT-2's BPE through ``tiktoken`` when it is installed and its encoding loads without network trouble
(``--tokenizer auto``/``gpt2``); otherwise a byte-level BPE trained with the ``tokenizers`` library on (a prefix of)
the training text, saved as ``tokenizer.json``. Documents: WikiText articles (split at top-level ``= Title =``
headings) or C4 records (the ``"text"`` field of each JSON line).

References:
  Merity et al., "Pointer Sentinel Mixture Models", ICLR 2017 (WikiText).
  Raffel et al., "Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer", JMLR 2020 (C4).
  Radford et al., "Language Models are Unsupervised Multitask Learners", 2019 (GPT-2 BPE).
"""

from __future__ import annotations

import gzip
import io
import itertools
import json
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.data.catalog import MANIFEST, MANIFEST_VERSION, TextSpec
from optbench.data.download import Downloaded, Fetcher, atomic_file, hash_file, write_json
from optbench.errors import UsageError
from optbench.options import option

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

TOKENIZER_FILE = "tokenizer.json"
EOT = "<|endoftext|>"
TOKENIZERS = ("auto", "gpt2", "bpe")
MIN_VOCAB = 257  # 256 byte symbols + the end-of-text token
BPE_MAX_TEXT_CHARS = 512 << 20  # the BPE trains on at most this much training text (memory and minutes, not hours)
BPE_CHARS_PER_TOKEN = 4  # with --tokens N, train the BPE on about the text those N tokens come from
_BATCH_DOCS = 256  # documents per encode call: big enough for the Rust encoder's threads, small for the --tokens cut
_TIKTOKEN_TIMEOUT_S = 30.0

Chunks = Iterator[Iterator[str]]  # documents grouped by source file; a consumer that stops early opens no more files


@dataclass(frozen=True, kw_only=True)
class TextOptions:
    """What ``optbench data prepare`` asks of a text dataset.

    Attributes:
      tokens: train tokens to write (the file is cut there); None takes the spec's default (None = everything).
      vocab_size: vocabulary of the trained BPE (ignored for GPT-2's fixed 50257).
      tokenizer: ``"auto"`` (GPT-2 if available offline, else BPE), ``"gpt2"`` or ``"bpe"``.
    """

    tokens: int | None = option(None, "--tokens", "Text: train tokens to write (C4 downloads only the shards they need) "
                                "[default: all for wikitext103 and your own text, 100M for c4].", kind="int",
                                low=1, high=2**62)
    vocab_size: int = option(8192, "--vocab-size", "Text: vocabulary of the byte-level BPE trained when GPT-2's "
                             "tokenizer is not available.", kind="int", low=MIN_VOCAB, high=2**32, show_default=True)
    tokenizer: str = option("auto", "--tokenizer", "Text: auto = GPT-2 via tiktoken if it loads offline, else train a "
                            "BPE.", kind="choice", choices=TOKENIZERS, show_default=True)

    def __post_init__(self) -> None:
        if self.tokens is not None and self.tokens <= 0:
            raise UsageError(f"--tokens must be positive, got {self.tokens}")
        if not MIN_VOCAB <= self.vocab_size <= 2**32:
            raise UsageError(f"--vocab-size must be between {MIN_VOCAB} and 2**32, got {self.vocab_size}")
        if self.tokenizer not in TOKENIZERS:
            raise UsageError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")


@dataclass(frozen=True, kw_only=True)
class Encoder:
    """A tokenizer reduced to what the writer needs.

    Attributes:
      kind: ``"gpt2"`` (tiktoken) or ``"bpe"`` (trained here).
      vocab_size: number of ids; every id is < vocab_size.
      eot_id: the end-of-text id appended after each document.
      encode: a batch of texts -> a list of id lists (special-token text is encoded as ordinary text).
      json: the serialized tokenizer for ``tokenizer.json`` (BPE only).
    """

    kind: str
    vocab_size: int
    eot_id: int
    encode: Callable[[list[str]], list[list[int]]]
    json: str | None = None


def token_dtype(vocab_size: int) -> np.dtype:
    """Little-endian uint16 when every id fits (vocab_size <= 65536), else uint32."""
    import numpy as np

    return np.dtype("<u2") if vocab_size <= 1 << 16 else np.dtype("<u4")


# ---------------------------------------------------------------------------------------------- document readers


def wikitext_articles(zip_path: Path, split: str) -> Iterator[str]:
    """Articles of ``wiki.<split>.raw`` (split: train, valid, test) inside the WikiText zip, in file order.

    An article starts at a top-level heading line `` = Title = `` (sections are `` = = Section = = ``); whitespace-only
    stretches are dropped. The text of each article is kept byte for byte.
    """
    with zipfile.ZipFile(zip_path) as zf:
        names = [n for n in zf.namelist() if n == f"wiki.{split}.raw" or n.endswith(f"/wiki.{split}.raw")]
        if not names:
            raise UsageError(f"{zip_path.name} lacks wiki.{split}.raw: not the WikiText-103 raw archive")
        with zf.open(names[0]) as raw:
            yield from split_articles(io.TextIOWrapper(raw, encoding="utf-8", newline=""))


def _is_title(line: str) -> bool:
    s = line.strip()
    return s.startswith("= ") and s.endswith(" =") and not s.startswith("= =")


def split_articles(lines: Iterable[str]) -> Iterator[str]:
    article: list[str] = []
    for line in lines:
        if _is_title(line) and article:
            if "".join(article).strip():
                yield "".join(article)
            article = []
        article.append(line)
    if "".join(article).strip():
        yield "".join(article)


def c4_documents(path: Path) -> Iterator[str]:
    """The ``"text"`` of each JSON line of a gzipped C4 shard.

    Raises:
      UsageError: the shard is not gzip, a line is not JSON, or a record lacks ``"text"``.
    """
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise UsageError(f"{path.name} line {lineno}: expected a JSON object with a 'text' string")
                yield record["text"]
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path.name} is not a valid C4 shard (gzipped JSON lines): {err}") from None


# ---------------------------------------------------------------------------------------------- corpora


@dataclass
class Corpus:
    """The splits of one text dataset as lazily opened document streams.

    Attributes:
      splits: split name -> a function returning fresh :data:`Chunks` (``train`` first, then ``val``, ``test``).
      downloads: every file fetched so far, in order (C4 train shards join as they are first needed).
    """

    splits: dict[str, Callable[[], Chunks]]
    downloads: list[Downloaded] = field(default_factory=list)

    def note(self, d: Downloaded) -> None:
        """Record a download once (a shard read by both the BPE trainer and the writer appears once)."""
        if all(x.path != d.path for x in self.downloads):
            self.downloads.append(d)


def open_corpus(spec: TextSpec, fetcher: Fetcher) -> Corpus:
    """Fetch what every split needs up front (the WikiText zip, C4's validation shard) and describe the splits."""
    if spec.source_format == "wikitext-zip":
        archive = fetcher.fetch(spec.files[0])
        corpus = Corpus(splits={
            name: (lambda s=source: iter([wikitext_articles(archive.path, s)]))
            for name, source in (("train", "train"), ("val", "valid"), ("test", "test"))
        })
        corpus.note(archive)
        return corpus
    if spec.source_format == "c4-json-gz":
        vals = [fetcher.fetch(f) for f in spec.files]
        corpus = Corpus(splits={})
        corpus.splits["train"] = lambda: _c4_chunks(spec.train_shards, fetcher, corpus)
        corpus.splits["val"] = lambda: (_checked_c4(d, fetcher) for d in vals)
        for d in vals:
            corpus.note(d)
        return corpus
    raise ValueError(f"catalog error: unknown source format {spec.source_format!r}")


def _c4_chunks(shards: Iterable[Any], fetcher: Fetcher, corpus: Corpus) -> Chunks:
    # A generator: shard k+1 is downloaded only when the consumer asks for documents beyond shard k.
    for remote in shards:
        shard = fetcher.fetch(remote)
        corpus.note(shard)
        yield _checked_c4(shard, fetcher)


def _checked_c4(shard: Downloaded, fetcher: Fetcher) -> Iterator[str]:
    """Documents of a cached shard; a shard that turns out corrupt is removed from the cache before the error."""
    try:
        yield from c4_documents(shard.path)
    except UsageError:
        fetcher.forget(shard)
        raise


# ---------------------------------------------------------------------------------------------- tokenizers


def gpt2_encoder() -> Encoder | None:
    """GPT-2's BPE via tiktoken, or None when tiktoken is missing or its encoding cannot be loaded (offline, slow).

    The load runs in a daemon thread with a timeout because tiktoken may try to download its vocabulary.
    """
    box: list[Any] = []

    def load() -> None:
        try:
            import tiktoken

            box.append(tiktoken.get_encoding("gpt2"))
        except Exception:  # noqa: BLE001 - ImportError, network errors: all mean "not available"
            pass

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(_TIKTOKEN_TIMEOUT_S)
    if not box:
        return None
    enc = box[0]
    return Encoder(kind="gpt2", vocab_size=enc.n_vocab, eot_id=enc.eot_token, encode=enc.encode_ordinary_batch)


def train_bpe(docs: Iterable[str], *, vocab_size: int) -> Encoder:
    """Train a byte-level BPE (GPT-2's pre-tokenizer and byte alphabet) with ``<|endoftext|>`` as id 0.

    Args:
      docs: training documents.
      vocab_size: target vocabulary; a small corpus may yield fewer merges (the manifest records the real size).
    Returns:
      The encoder; literal ``<|endoftext|>`` text inside documents is encoded as ordinary bytes.

    References:
      Sennrich et al., "Neural Machine Translation of Rare Words with Subword Units", ACL 2016.
    """
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        raise UsageError("preparing text without GPT-2's tiktoken needs the 'tokenizers' package: "
                         "pip install tokenizers (or tiktoken)") from None

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(docs, trainer=trainer)
    tok.encode_special_tokens = True  # documents never produce the separator id themselves

    batch = getattr(tok, "encode_batch_fast", tok.encode_batch)  # _fast (tokenizers >= 0.20) skips offsets

    def encode(texts: list[str]) -> list[list[int]]:
        return [e.ids for e in batch(texts, add_special_tokens=False)]

    return Encoder(kind="bpe", vocab_size=tok.get_vocab_size(), eot_id=tok.token_to_id(EOT), encode=encode,
                   json=tok.to_str())


def _prefix(chunks: Chunks, max_chars: int) -> Iterator[str]:
    """Documents from ``chunks`` until about ``max_chars`` characters have been given (the last one overshoots)."""
    seen = 0
    for docs in chunks:
        for doc in docs:
            yield doc
            seen += len(doc)
            if seen >= max_chars:
                return


def choose_encoder(options: TextOptions, corpus: Corpus, *, tokens: int | None,
                   log: Callable[[str], None]) -> Encoder:
    """GPT-2 (tiktoken) when asked or available under ``auto``, else a BPE trained on the start of the train split."""
    if options.tokenizer in ("auto", "gpt2"):
        encoder = gpt2_encoder()
        if encoder is not None:
            return encoder
        if options.tokenizer == "gpt2":
            raise UsageError("--tokenizer gpt2 needs tiktoken with its gpt2 encoding available; use --tokenizer bpe")
    budget = BPE_MAX_TEXT_CHARS if tokens is None else min(BPE_MAX_TEXT_CHARS, BPE_CHARS_PER_TOKEN * tokens)
    log(f"training a byte-level BPE (vocab {options.vocab_size}) on up to {budget:,} characters of training text")
    return train_bpe(_prefix(corpus.splits["train"](), budget), vocab_size=options.vocab_size)


# ---------------------------------------------------------------------------------------------- writing


def write_tokens(path: Path, chunks: Chunks, encoder: Encoder, *, limit: int | None) -> tuple[int, int]:
    """Encode documents into ``path`` (atomically), an end-of-text id after each, stopping after ``limit`` tokens.

    Args:
      path: the ``.bin`` file to write.
      chunks: documents grouped by source file; stopping early leaves later files unopened (and undownloaded).
      encoder: the tokenizer.
      limit: cut the file at exactly this many tokens; None writes everything.
    Returns:
      ``(tokens written, documents started)``.
    """
    import numpy as np

    dtype = token_dtype(encoder.vocab_size)
    n_tokens = n_docs = 0
    with atomic_file(path) as f:
        for docs in chunks:
            for batch in _batched(docs, _BATCH_DOCS):
                flat, lengths = _encode_flat(batch, encoder, dtype)
                starts = np.cumsum(lengths) - lengths  # offset of each document within the batch
                if limit is not None and n_tokens + flat.size >= limit:
                    room = limit - n_tokens
                    f.write(flat[:room].tobytes())
                    return limit, n_docs + int((starts < room).sum())
                f.write(flat.tobytes())
                n_tokens, n_docs = n_tokens + flat.size, n_docs + len(batch)
    return n_tokens, n_docs


def _encode_flat(batch: list[str], encoder: Encoder, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Encode a batch into one flat id array (each document followed by EOT) and the per-document lengths."""
    import numpy as np

    ids = encoder.encode(batch)
    lengths = np.fromiter((len(x) + 1 for x in ids), dtype=np.int64, count=len(ids))
    eot = (encoder.eot_id,)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.chain(x, eot) for x in ids), dtype=dtype,
                       count=int(lengths.sum()))
    return flat, lengths


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)


def prepare_text(spec: TextSpec, *, out_dir: Path, fetcher: Fetcher, options: TextOptions,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Download, tokenize and write a text dataset into ``out_dir``; return the manifest written there (last).

    Args:
      spec: the catalog entry.
      out_dir: ``<data_dir>/<name>``.
      fetcher: download policy and cache.
      options: token budget, vocabulary, tokenizer choice.
      log: one-line status messages.
    Returns:
      The manifest dict.
    """
    tokens = options.tokens if options.tokens is not None else spec.default_tokens
    corpus = open_corpus(spec, fetcher)
    encoder = choose_encoder(options, corpus, tokens=tokens, log=log)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # unprepared until the new manifest lands
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": spec.name,
        "kind": "tokens",
        "homepage": spec.homepage,
        "license": spec.license,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": text_params(options, spec),
        **write_splits(corpus, encoder, out_dir, tokens=tokens, log=log),
    }
    manifest["downloads"] = [d.record() for d in corpus.downloads]  # complete only now: C4 shards join lazily
    write_json(out_dir / MANIFEST, manifest)
    return manifest


def write_splits(corpus: Corpus, encoder: Encoder, out_dir: Path, *, tokens: int | None,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Tokenize every split of ``corpus`` into ``out_dir/<split>.bin`` (and the BPE into ``tokenizer.json``).

    Args:
      corpus: the document streams.
      encoder: the tokenizer.
      out_dir: an existing folder.
      tokens: cut ``train.bin`` at this many tokens; None writes everything.
      log: one-line status messages.
    Returns:
      The manifest entries that describe the written files: ``tokenizer``, ``dtype``, ``byteorder``, ``splits``,
      ``files`` (each file's sha256 and size).
    """
    files: dict[str, Any] = {}
    splits: dict[str, Any] = {}
    for split, chunks in corpus.splits.items():
        path = out_dir / f"{split}.bin"
        log(f"tokenizing {split} -> {path.name}")
        n_tokens, n_docs = write_tokens(path, chunks(), encoder, limit=tokens if split == "train" else None)
        splits[split] = {"file": path.name, "tokens": n_tokens, "documents": n_docs}
        files[path.name] = {"sha256": hash_file(path)["sha256"], "bytes": path.stat().st_size}
    tokenizer_path = out_dir / TOKENIZER_FILE
    if encoder.json is not None:
        _write_text(tokenizer_path, encoder.json)
        files[TOKENIZER_FILE] = {"sha256": hash_file(tokenizer_path)["sha256"], "bytes": tokenizer_path.stat().st_size}
    else:
        tokenizer_path.unlink(missing_ok=True)  # a stale BPE next to GPT-2 ids would mislead
    return {
        "tokenizer": {
            "kind": encoder.kind,
            "vocab_size": encoder.vocab_size,
            "eot_id": encoder.eot_id,
            "eot": EOT,
            "file": TOKENIZER_FILE if encoder.json is not None else None,
        },
        "dtype": token_dtype(encoder.vocab_size).name,
        "byteorder": "little",
        "splits": splits,
        "files": files,
    }


def text_params(options: TextOptions, spec: TextSpec) -> dict[str, Any]:
    """The request a prepared folder answers; an equal request later is served from the existing files."""
    tokens = options.tokens if options.tokens is not None else spec.default_tokens
    return {"tokens": tokens, "tokenizer": options.tokenizer, "vocab_size": options.vocab_size}


def open_tokens(path: Path, dtype: str) -> np.ndarray:
    """Memory-map a flat token file read-only (an empty file gives an empty array: mmap cannot map 0 bytes)."""
    import numpy as np

    dt = np.dtype(dtype).newbyteorder("<")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r")
