"""``optbench data prepare text``: a user's own corpus, tokenized as the published text is, recorded as
user-supplied; bad input is one line and exit code 2, and nothing prepared before is lost."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from optbench import data
from optbench.cli import main
from optbench.data import text as text_module
from optbench.errors import UsageError

from .conftest import _tar_gz, write_text_corpus

WIDE = {"COLUMNS": "400"}


@pytest.fixture
def corpus(tmp_path):
    return write_text_corpus(tmp_path / "corpus", train_articles=120, valid_articles=12)


def _prepare(data_dir: Path, *args: str):
    return CliRunner().invoke(main, ["data", "prepare", "text", "--data-dir", str(data_dir), *args])


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_own_text_is_tokenized_with_the_benchmark_bpe_and_recorded_as_user_supplied(corpus, data_dir):
    r = _prepare(data_dir, "--name", "mine", "--train", str(corpus["train"]), "--valid", str(corpus["valid"]))
    assert r.exit_code == 0, r.output
    manifest = data.read_manifest("mine", data_dir)
    assert manifest["source"] == "user-supplied" and manifest["verified"] is False and manifest["downloads"] == []
    assert [s["file"] for s in manifest["sources"]] == ["train.txt", "valid.txt"]  # names, never folders
    assert manifest["sources"][0]["sha256"] == hashlib.sha256(corpus["train"].read_bytes()).hexdigest()
    tok = manifest["tokenizer"]
    assert tok["kind"] == "bpe" and tok["eot_id"] == 0 and 257 <= tok["vocab_size"] <= 8192
    # The ids decode back to the text, article by article: the BPE is byte-level and EOT ends each document.
    from tokenizers import Tokenizer

    bpe = Tokenizer.from_file(str(data.dataset_dir("mine", data_dir) / "tokenizer.json"))
    ids = np.asarray(data.load_tokens("mine", "train", data_dir)).tolist()
    docs = [bpe.decode(list(d), skip_special_tokens=False) for d in _split(ids, tok["eot_id"])]
    assert "".join(docs) == corpus["train"].read_text(encoding="utf-8")
    assert manifest["splits"]["train"]["documents"] == 120 and manifest["splits"]["val"]["tokens"] > 0
    assert "test" not in manifest["splits"]


def _split(ids: list[int], eot: int) -> list[list[int]]:
    out, cur = [], []
    for i in ids:
        if i == eot:
            out.append(cur)
            cur = []
        else:
            cur.append(i)
    assert not cur  # every document ends with EOT
    return out


def test_the_same_bpe_as_the_published_text(corpus, data_dir):
    """Same text, same options: the user route and the catalog route write the same tokens."""
    from optbench.data.text import TextOptions, train_bpe

    data.prepare_user_text("mine", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir,
                           text=TextOptions(vocab_size=500))
    articles = text_module.split_articles(corpus["train"].read_text(encoding="utf-8").splitlines(keepends=True))
    encoder = train_bpe(articles, vocab_size=500)
    assert data.vocab_size("mine", data_dir) == encoder.vocab_size
    assert (data.dataset_dir("mine", data_dir) / "tokenizer.json").read_text() == encoder.json


def test_documents_modes(tmp_path, data_dir):
    (tmp_path / "t.txt").write_text("one line\n\nsecond line\nthird line\n\n\nfour\n", encoding="utf-8")
    for mode, docs in (("lines", 4), ("paragraphs", 3), ("file", 1), ("headings", 1)):
        data.prepare_user_text(f"m-{mode}", train=tmp_path / "t.txt", valid=tmp_path / "t.txt", documents=mode,
                               data_dir=data_dir, text=data.TextOptions(vocab_size=300))
        assert data.read_manifest(f"m-{mode}", data_dir)["splits"]["train"]["documents"] == docs


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    (b"", "is empty"),
    (b"  \n\n\t\n", "is empty"),
    (b"caf\xe9 au lait", "is not UTF-8 text (invalid byte at offset 3)"),
    (b"ok\x00binary", "is binary (a NUL byte at offset 2)"),
    (b"ends inside \xe6\x97", "is not UTF-8 text"),
])
def test_bad_input_is_one_line_and_keeps_the_previous_preparation(corpus, data_dir, tmp_path, content, message):
    assert _prepare(data_dir, "--name", "mine", "--train", str(corpus["train"]),
                    "--valid", str(corpus["valid"])).exit_code == 0
    before = _snapshot(data_dir / "mine")
    bad = tmp_path / "bad.txt"
    if content is not None:
        bad.write_bytes(content)
    r = _prepare(data_dir, "--name", "mine", "--train", str(bad), "--valid", str(corpus["valid"]), "--force")
    assert r.exit_code == 2, r.output
    assert r.output.startswith("error: ") and len(r.output.strip().splitlines()) == 1 and message in r.output
    assert _snapshot(data_dir / "mine") == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["mine"]  # no staging folder left behind


@pytest.mark.parametrize(("args", "message"), [
    (["--name", "c4"], "is a published dataset"),
    (["--name", "wikitext103"], "is a published dataset"),
    (["--name", "../up"], "letters, digits"),
    (["--name", "downloads"], "letters, digits"),
    ([], "needs --name"),
])
def test_names_that_cannot_be_used(corpus, data_dir, args, message):
    r = _prepare(data_dir, *args, "--train", str(corpus["train"]), "--valid", str(corpus["valid"]))
    assert r.exit_code == 2 and message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not data_dir.exists() or not any(data_dir.iterdir())


def test_an_existing_preparation_needs_force(corpus, data_dir):
    args = ["--name", "mine", "--train", str(corpus["train"]), "--valid", str(corpus["valid"])]
    assert _prepare(data_dir, *args).exit_code == 0
    before = _snapshot(data_dir / "mine")
    again = _prepare(data_dir, *args)  # same files, same options: nothing to do
    assert again.exit_code == 0 and "already prepared" in again.output
    other = [*args, "--vocab-size", "400"]
    refused = _prepare(data_dir, *other)
    assert refused.exit_code == 2 and "use --force" in refused.output
    assert _snapshot(data_dir / "mine") == before
    forced = _prepare(data_dir, *other, "--force")
    assert forced.exit_code == 0, forced.output
    assert data.read_manifest("mine", data_dir)["params"]["vocab_size"] == 400


def test_a_folder_optbench_did_not_write_is_never_replaced(corpus, data_dir):
    (data_dir / "mine").mkdir(parents=True)
    (data_dir / "mine" / "notes.txt").write_text("mine, not optbench's")
    r = _prepare(data_dir, "--name", "mine", "--train", str(corpus["train"]), "--valid", str(corpus["valid"]),
                 "--force")
    assert r.exit_code == 2 and "not a user-supplied dataset" in r.output
    assert (data_dir / "mine" / "notes.txt").read_text() == "mine, not optbench's"


def test_a_failure_while_writing_keeps_the_previous_preparation(corpus, data_dir, monkeypatch):
    data.prepare_user_text("mine", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir)
    before = _snapshot(data_dir / "mine")
    real = text_module.write_tokens

    def fail_on_val(path, *a, **k):
        if path.name == "val.bin":
            raise OSError("disk full")
        return real(path, *a, **k)

    monkeypatch.setattr(text_module, "write_tokens", fail_on_val)
    with pytest.raises(OSError, match="disk full"):
        data.prepare_user_text("mine", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir,
                               text=data.TextOptions(vocab_size=300), force=True)
    assert _snapshot(data_dir / "mine") == before
    assert sorted(p.name for p in data_dir.iterdir()) == ["mine"]


def _zip(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in files.items():
            zf.writestr(name, payload)
    return buf.getvalue()


@pytest.mark.parametrize(("pack", "names"), [
    (_zip, ("corpus/train.txt", "corpus/valid.txt", "corpus/test.txt")),
    (_tar_gz, ("wikitext-103-raw/wiki.train.raw", "wikitext-103-raw/wiki.valid.raw", "wikitext-103-raw/wiki.test.raw")),
])
def test_an_archive_with_the_users_checksum(corpus, data_dir, tmp_path, pack, names):
    payload = pack(dict(zip(names, (corpus["train"].read_bytes(), corpus["valid"].read_bytes(),
                                    corpus["valid"].read_bytes()), strict=True)))
    archive = tmp_path / "corpus.bin"
    archive.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    wrong = _prepare(data_dir, "--name", "arch", "--archive", str(archive), "--sha256", "0" * 64)
    assert wrong.exit_code == 2 and "checksum mismatch" in wrong.output and digest in wrong.output
    assert not (data_dir / "arch").exists()
    r = _prepare(data_dir, "--name", "arch", "--archive", str(archive), "--sha256", digest.upper())
    assert r.exit_code == 0, r.output
    manifest = data.read_manifest("arch", data_dir)
    assert manifest["archive"] == {"file": "corpus.bin", "sha256": digest, "checksum": "given by the user"}
    assert set(manifest["splits"]) == {"train", "val", "test"} and manifest["verified"] is False
    # the archive's text, tokenized, is the files' text tokenized
    data.prepare_user_text("files", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir)
    assert np.array_equal(data.load_tokens("arch", "train", data_dir), data.load_tokens("files", "train", data_dir))


def test_an_archive_without_the_splits(data_dir, tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip({"readme.md": b"hello"}))
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    r = _prepare(data_dir, "--name", "a", "--archive", str(archive), "--sha256", digest)
    assert r.exit_code == 2 and "needs train.txt and valid.txt" in r.output and "readme.md" in r.output


def test_options_of_the_two_routes_do_not_mix(corpus, data_dir):
    r = CliRunner().invoke(main, ["data", "prepare", "wikitext103", "--train", str(corpus["train"]),
                                  "--data-dir", str(data_dir)])
    assert r.exit_code == 2 and "--train applies to 'optbench data prepare text'" in r.output
    r = _prepare(data_dir, "--name", "x", "--train", str(corpus["train"]))
    assert r.exit_code == 2 and "--valid FILE" in r.output
    with pytest.raises(UsageError, match="either --archive or --train"):
        data.prepare_user_text("x", train=corpus["train"], valid=corpus["valid"], archive=corpus["train"],
                               sha256="0" * 64, data_dir=data_dir)


def test_list_shows_user_datasets_as_unverified(corpus, data_dir):
    data.prepare_user_text("mine", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir)
    r = CliRunner().invoke(main, ["data", "list", "--data-dir", str(data_dir)], env=WIDE)
    assert r.exit_code == 0, r.output
    row = next(line for line in r.output.splitlines() if " mine " in line)
    assert "prepared" in row and "bpe vocab" in row and "user-supplied, not verified" in row
    assert "published" not in r.output
    assert data.text_datasets(data_dir) == ["wikitext103", "c4", "mine"]


def test_unprepared_user_dataset_names_the_text_command(data_dir):
    from optbench.errors import DataMissingError

    with pytest.raises(DataMissingError, match=r"optbench data prepare text --name mine --train FILE --valid FILE"):
        data.read_manifest("mine", data_dir)
    with pytest.raises(UsageError, match="unknown dataset"):
        data.read_manifest("../etc", data_dir)


def test_a_catalog_manifest_in_a_user_folder_is_not_a_user_dataset(corpus, data_dir):
    """A folder whose manifest does not say user-supplied is not read as one (e.g. a copied c4 folder)."""
    data.prepare_user_text("mine", train=corpus["train"], valid=corpus["valid"], data_dir=data_dir)
    path = data.dataset_dir("mine", data_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    del manifest["source"]
    path.write_text(json.dumps(manifest))
    from optbench.errors import DataMissingError

    with pytest.raises(DataMissingError, match="not a user-supplied dataset"):
        data.read_manifest("mine", data_dir)
