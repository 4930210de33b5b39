"""WikiText-103 / C4: document splitting, BPE training, flat token files, --tokens and lazy shards, manifests."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from optbench import data
from optbench.data import catalog, text
from optbench.data.text import TextOptions, token_dtype
from optbench.errors import DataMissingError, UsageError

from .conftest import C4_TRAIN_SHARDS, FAST, c4_path, wiki_spec

BPE = TextOptions(tokenizer="bpe", vocab_size=400)


def _decode_docs(folder, tokens: np.ndarray, eot: int) -> list[str]:
    """Split a token file at EOT ids and decode each document with the saved tokenizer.json."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    cuts = np.flatnonzero(tokens == eot)
    starts = np.concatenate([[0], cuts[:-1] + 1])
    return [tok.decode(tokens[a:b].tolist()) for a, b in zip(starts, cuts)]


def test_wikitext_articles_split_at_top_level_headings():
    raw = " \n = First = \n \n Body one .\n = = Section = = \n more .\n \n = Second = \n Body two .\n"
    docs = list(text.split_articles(raw.splitlines(keepends=True)))
    assert docs == [" = First = \n \n Body one .\n = = Section = = \n more .\n \n", " = Second = \n Body two .\n"]
    assert " \n" + "".join(docs) == raw  # only the whitespace before the first title is dropped


def test_wikitext_prepare_round_trips_every_article(server, wiki_source, data_dir):
    server.files["/wt/wikitext-103-raw-v1.zip"] = wiki_source.archive
    manifest = data.prepare(wiki_spec(wiki_source), data_dir=data_dir, mirror=server.url + "/wt", text=BPE,
                            policy=FAST)
    folder = data_dir / "wikitext103"
    tok = manifest["tokenizer"]
    assert tok["kind"] == "bpe" and tok["file"] == "tokenizer.json" and tok["eot_id"] == 0
    assert 257 < tok["vocab_size"] <= 400
    assert manifest["dtype"] == "uint16" and manifest["byteorder"] == "little"
    assert data.vocab_size("wikitext103", data_dir) == tok["vocab_size"]
    for split, source in (("train", "train"), ("val", "valid"), ("test", "test")):
        tokens = data.load_tokens("wikitext103", split, data_dir)
        assert isinstance(tokens, np.memmap) and tokens.dtype == np.dtype("<u2")
        assert len(tokens) == manifest["splits"][split]["tokens"] == (folder / f"{split}.bin").stat().st_size // 2
        assert int(tokens.max()) < tok["vocab_size"] and tokens[-1] == tok["eot_id"]
        assert manifest["splits"][split]["documents"] == len(wiki_source.splits[source])
        assert _decode_docs(folder, np.asarray(tokens), tok["eot_id"]) == wiki_source.splits[source]
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
    [download] = manifest["downloads"]
    assert download["url"] == "https://wikitext.smerity.com/wikitext-103-raw-v1.zip" and download["verified"]
    assert download["sha256"] == hashlib.sha256(wiki_source.archive).hexdigest()
    assert manifest["params"] == {"tokens": None, "tokenizer": "bpe", "vocab_size": 400}
    with pytest.raises(UsageError, match="no split 'dev'"):
        data.load_tokens("wikitext103", "dev", data_dir)


def test_wikitext_published_checksum_is_enforced(server, wiki_source, data_dir):
    server.files["/wt/wikitext-103-raw-v1.zip"] = wiki_source.archive
    with pytest.raises(UsageError, match="has .* bytes, expected 191984949"):
        data.prepare("wikitext103", data_dir=data_dir, mirror=server.url + "/wt", text=BPE, policy=FAST)
    with pytest.raises(DataMissingError, match="optbench data prepare wikitext103 --data-dir"):
        data.load_tokens("wikitext103", "train", data_dir)


def _shards_fetched(server) -> list[int]:
    return [i for i in range(C4_TRAIN_SHARDS) if server.requested(c4_path("train", i))]


def test_c4_reads_only_the_train_shards_that_tokens_needs(c4_server, c4_docs, data_dir):
    mirror = c4_server.url + "/hf"
    small = data.prepare("c4", data_dir=data_dir, mirror=mirror, text=replace(BPE, tokens=300), policy=FAST)
    assert small["splits"]["train"]["tokens"] == 300
    assert len(data.load_tokens("c4", "train", data_dir)) == 300
    assert _shards_fetched(c4_server) == [0]  # one shard holds far more than 300 tokens
    assert c4_server.requested(c4_path("val", 0))  # the validation shard is always fetched
    assert [d["file"] for d in small["downloads"]] == ["c4-validation.00000-of-00008.json.gz",
                                                        "c4-train.00000-of-01024.json.gz"]
    assert all(d["verified"] is False and len(d["sha256"]) == 64 for d in small["downloads"])
    val = np.asarray(data.load_tokens("c4", "val", data_dir))
    assert small["splits"]["val"]["documents"] == len(c4_docs["val"][0]) == int((val == 0).sum())

    # N tokens need at most N * 4 characters: the BPE trains on that prefix, the writer needs less (a token is
    # several bytes). With N = 0.9 shards' characters, that is 3.6 shards: the last two must stay untouched.
    chars_per_shard = sum(len(d) for d in c4_docs["train"][0])
    want = int(0.9 * chars_per_shard)
    big = data.prepare("c4", data_dir=data_dir, mirror=mirror, text=replace(BPE, tokens=want), policy=FAST)
    assert big["splits"]["train"]["tokens"] == want
    fetched = _shards_fetched(c4_server)
    assert fetched == list(range(len(fetched))) and 2 <= len(fetched) < C4_TRAIN_SHARDS
    assert big["params"]["tokens"] == want


def test_c4_train_documents_are_written_in_order(c4_server, c4_docs, data_dir):
    six = replace(catalog.C4, train_shards=catalog.C4.train_shards[:C4_TRAIN_SHARDS])  # what the server has
    manifest = data.prepare(six, data_dir=data_dir, mirror=c4_server.url + "/hf",
                            text=replace(BPE, tokens=10**6), policy=FAST)  # more than all 6 shards hold
    assert manifest["splits"]["train"]["documents"] == sum(len(s) for s in c4_docs["train"])
    docs = _decode_docs(data_dir / "c4", np.asarray(data.load_tokens("c4", "train", data_dir)), 0)
    assert docs == [d for shard in c4_docs["train"] for d in shard]


def test_corrupt_c4_shard_is_an_error_and_leaves_the_cache(c4_server, data_dir):
    c4_server.files[c4_path("val", 0)] = b"not gzip at all"
    with pytest.raises(UsageError, match="not a valid C4 shard"):
        data.prepare("c4", data_dir=data_dir, mirror=c4_server.url + "/hf", text=replace(BPE, tokens=100),
                     policy=FAST)
    assert not (data_dir / "downloads" / "c4" / "c4-validation.00000-of-00008.json.gz").exists()
    assert not (data_dir / "c4" / "manifest.json").exists()


def test_auto_tokenizer_falls_back_to_bpe(c4_server, data_dir, monkeypatch):
    monkeypatch.setattr(text, "gpt2_encoder", lambda: None)  # as on a machine without tiktoken or network
    manifest = data.prepare("c4", data_dir=data_dir, mirror=c4_server.url + "/hf",
                            text=TextOptions(tokens=200, vocab_size=300), policy=FAST)
    assert manifest["tokenizer"]["kind"] == "bpe" and (data_dir / "c4" / "tokenizer.json").is_file()
    with pytest.raises(UsageError, match="--tokenizer gpt2 needs tiktoken"):
        data.prepare("c4", data_dir=data_dir, mirror=c4_server.url + "/hf",
                     text=TextOptions(tokens=200, tokenizer="gpt2"), policy=FAST)


def test_gpt2_encoder_path_writes_no_tokenizer_file(c4_server, data_dir, monkeypatch):
    # Stand in for tiktoken's GPT-2 (50257 ids, EOT 50256) with a byte-level encoder: the writer must use its ids.
    fake = text.Encoder(kind="gpt2", vocab_size=50257, eot_id=50256,
                        encode=lambda texts: [list(t.encode("utf-8")) for t in texts])
    monkeypatch.setattr(text, "gpt2_encoder", lambda: fake)
    (data_dir / "c4").mkdir(parents=True)
    (data_dir / "c4" / "tokenizer.json").write_text("{}")  # stale, from an earlier BPE preparation
    manifest = data.prepare("c4", data_dir=data_dir, mirror=c4_server.url + "/hf", text=TextOptions(tokens=500),
                            policy=FAST)
    assert manifest["tokenizer"] == {"kind": "gpt2", "vocab_size": 50257, "eot_id": 50256,
                                     "eot": "<|endoftext|>", "file": None}
    assert not (data_dir / "c4" / "tokenizer.json").exists()
    tokens = data.load_tokens("c4", "train", data_dir)
    assert tokens.dtype == np.dtype("<u2") and len(tokens) == 500


def test_token_dtype_and_option_checks():
    assert token_dtype(65536) == np.dtype("<u2") and token_dtype(65537) == np.dtype("<u4")
    with pytest.raises(UsageError, match="--vocab-size"):
        TextOptions(vocab_size=100)
    with pytest.raises(UsageError, match="--tokens"):
        TextOptions(tokens=0)
    assert catalog.C4.default_tokens == 100_000_000 and len(catalog.C4.train_shards) == 1024
    assert catalog.C4.train_shards[7].url.endswith("/en/c4-train.00007-of-01024.json.gz")
