"""User-supplied text corpora: a private or air-gapped corpus prepared like the benchmark's own text data.

``optbench data prepare text --name NAME --train FILE --valid FILE [--test FILE]`` (or ``--archive FILE --sha256
HEX``) writes ``<data_dir>/NAME/`` in the layout of ``wikitext103`` and ``c4`` (flat token files, the same
byte-level BPE, a manifest), so the generic ``lm`` workload trains on it. The manifest says ``"source":
"user-supplied"`` and ``"verified": false``: the only checksum is the one the user gave (``--sha256``) or the
sha256 recorded here, never a published one.

Every input is read once in full before anything is written (UTF-8, not binary, not empty; its sha256), the new
folder is built beside the old one (``.NAME.partial``) and swapped in by renames, so bad input or an interrupted
run leaves an existing preparation as it was. Importing this module is cheap (no numpy, no tokenizers).
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import os
import re
import shutil
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from optbench.data.catalog import DATASETS, MANIFEST, MANIFEST_VERSION, USER_SOURCE
from optbench.errors import UsageError
from optbench.options import option

if TYPE_CHECKING:  # pragma: no cover
    from optbench.data.text import TextOptions

DOCUMENTS = ("headings", "paragraphs", "lines", "file")  # how a file is cut into documents (each followed by end-of-text)


@dataclass(frozen=True, kw_only=True)
class OwnText:
    """The options of ``optbench data prepare text``: your own corpus, and how it is cut into documents (declared
    once: the command line is generated from these fields)."""

    dataset: str | None = option(None, "--name", "NAME 'text': the name of your dataset.", kind="text")
    train: Path | None = option(None, "--train", "NAME 'text': the training text (UTF-8).", kind="file")
    valid: Path | None = option(None, "--valid", "NAME 'text': the validation text (UTF-8).", kind="file")
    test: Path | None = option(None, "--test", "NAME 'text': the test text (optional).", kind="file")
    archive: Path | None = option(None, "--archive", "NAME 'text': a zip or tar with train.txt, valid.txt [, test.txt] "
                                  "instead of the files.", kind="file")
    sha256: str | None = option(None, "--sha256", "NAME 'text': the sha256 the --archive must have.", kind="text",
                                metavar="HEX")
    documents: str = option("headings", "--documents", "NAME 'text': documents are WikiText '= Title =' articles, "
                            "blank-line-separated paragraphs, non-blank lines, or whole files.", kind="choice",
                            choices=DOCUMENTS, show_default=True)

    def given(self) -> list[str]:
        """The flags given (a non-default documents mode counts): they apply to your own text only."""
        from dataclasses import fields

        return [f.metadata["option"].flag for f in fields(self) if getattr(self, f.name) != f.default]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_RESERVED = frozenset({"downloads", "text"})  # the download cache; the CLI's keyword for this route
_MEMBER = re.compile(r"(?:wiki\.)?(train|valid|val|test)\.(?:txt|raw)")  # archive members, WikiText's names too
_CHUNK = 1 << 20


def check_name(name: str) -> str:
    """``name`` if it can name a user-supplied dataset: letters, digits, ``_`` and ``-`` (it becomes a folder and
    part of a size name, ``tiny@NAME``), and not a catalog dataset's name."""
    if name in DATASETS:
        raise UsageError(f"--name {name!r} is a published dataset (optbench data prepare {name}); "
                         "give your corpus another name")
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise UsageError(f"--name {name!r}: use 1-64 letters, digits, '_' or '-', starting with a letter or digit "
                         f"(not {' or '.join(sorted(_RESERVED))})")
    return name


def is_user_name(name: str) -> bool:
    """Whether ``name`` could be a user-supplied dataset (well-formed and not in the catalog)."""
    return name not in DATASETS and name not in _RESERVED and bool(_NAME.fullmatch(name))


def prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares a user-supplied dataset (the files are the user's to give)."""
    return f"optbench data prepare text --name {name} --train FILE --valid FILE --data-dir {data_dir}"


# ---------------------------------------------------------------------------------------------- sources


@dataclass(frozen=True, kw_only=True)
class Source:
    """The text of one split: a file, or a member of an archive.

    Attributes:
      split: ``train``, ``val`` or ``test``.
      label: what the manifest and messages call it: a file's name (never its folder) or ``archive:member``.
      open: a fresh binary stream of the text, as a context manager.
    """

    split: str
    label: str
    open: Callable[[], contextlib.AbstractContextManager[IO[bytes]]]


def file_sources(train: Path, valid: Path, test: Path | None = None) -> list[Source]:
    """One source per given file; a missing or unreadable one is a usage error naming it."""
    out = []
    for split, path in (("train", train), ("val", valid), ("test", test)):
        if path is None:
            continue
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"--{'valid' if split == 'val' else split} {path}: no such file")
        out.append(Source(split=split, label=path.name, open=lambda p=path: open(p, "rb")))
    return out


def archive_sources(archive: Path, sha256: str) -> list[Source]:
    """The splits inside a zip or tar archive (``train.txt``, ``valid.txt``/``val.txt``, optionally ``test.txt``;
    WikiText's ``wiki.train.raw`` names work too), after checking the archive's sha256 against the user's.

    Nothing is extracted to disk: members are read as streams, and only regular files count.
    """
    archive = Path(archive)
    want = sha256.lower().removeprefix("sha256:")
    if not re.fullmatch(r"[0-9a-f]{64}", want):
        raise UsageError(f"--sha256 must be 64 hex digits (the archive's sha256), got {sha256!r}")
    if not archive.is_file():
        raise UsageError(f"--archive {archive}: no such file")
    got = _sha256(archive)
    if got != want:
        raise UsageError(f"checksum mismatch for {archive.name}: expected sha256 {want}, got {got}")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            members = [i.filename for i in zf.infolist() if not i.is_dir()]
        opener: Callable[[str], contextlib.AbstractContextManager[IO[bytes]]] = \
            lambda m: _zip_member(archive, m)  # noqa: E731
    elif _is_tar(archive):
        with tarfile.open(archive, "r:*") as tf:
            members = [m.name for m in tf.getmembers() if m.isfile()]
        opener = lambda m: _tar_member(archive, m)  # noqa: E731
    else:
        raise UsageError(f"--archive {archive.name} is neither a zip nor a tar archive")
    return _pick_members(archive.name, members, opener)


def _pick_members(name: str, members: list[str], opener: Callable[[str], Any]) -> list[Source]:
    found: dict[str, list[str]] = {}
    for member in members:
        m = _MEMBER.fullmatch(member.rsplit("/", 1)[-1])
        if m:
            found.setdefault("val" if m.group(1) in ("valid", "val") else m.group(1), []).append(member)
    for split, hits in found.items():
        if len(hits) > 1:
            raise UsageError(f"{name} has several {split} files ({', '.join(hits)}); keep one")
    if "train" not in found or "val" not in found:
        raise UsageError(f"{name} needs train.txt and valid.txt (or wiki.train.raw and wiki.valid.raw) inside; "
                         f"it has: {', '.join(members[:8]) or 'no files'}")
    return [Source(split=s, label=f"{name}:{found[s][0]}", open=lambda m=found[s][0]: opener(m))
            for s in ("train", "val", "test") if s in found]


def _is_tar(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


@contextlib.contextmanager
def _zip_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    with zipfile.ZipFile(archive) as zf, zf.open(member) as f:
        yield f


@contextlib.contextmanager
def _tar_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    with tarfile.open(archive, "r:*") as tf:
        f = tf.extractfile(member)
        if f is None:  # pragma: no cover - only regular files are listed
            raise UsageError(f"{archive.name}:{member} is not a regular file")
        with f:
            yield f


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def check_source(source: Source) -> dict[str, Any]:
    """Read ``source`` once: its sha256 and size, after checking that it is non-empty UTF-8 text.

    Raises:
      UsageError: unreadable, not UTF-8 (the offset of the first bad byte), binary (a NUL byte), or no text at all.
    """
    h, size, text = hashlib.sha256(), 0, False
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with source.open() as f:
            while block := f.read(_CHUNK):
                h.update(block)
                if b"\0" in block:
                    raise UsageError(f"{source.label} is binary (a NUL byte at offset {size + block.index(0)}), "
                                     "not UTF-8 text")
                try:
                    text = bool(decoder.decode(block).strip()) or text
                except UnicodeDecodeError as err:
                    raise UsageError(f"{source.label} is not UTF-8 text (invalid byte at offset "
                                     f"{size + err.start})") from None
                size += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise UsageError(f"{source.label} is not UTF-8 text (it ends inside a character)") from None
    except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
        raise UsageError(f"cannot read {source.label}: {err}") from None
    if not text:
        raise UsageError(f"{source.label} is empty (no text in it)")
    return {"split": source.split, "file": source.label, "sha256": h.hexdigest(), "bytes": size}


def documents(source: Source, mode: str) -> Iterator[str]:
    """The documents of ``source``: ``headings`` cuts at WikiText's top-level ``= Title =`` lines (a file without
    them is one document, held in memory whole), ``paragraphs`` at blank lines, ``lines`` makes every non-blank
    line one, ``file`` the whole text one."""
    from optbench.data.text import split_articles

    with source.open() as raw:
        lines = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")  # a BOM is not text
        if mode == "headings":
            yield from split_articles(lines)
        elif mode == "paragraphs":
            yield from _paragraphs(lines)
        elif mode == "lines":
            yield from (line.rstrip("\r\n") for line in lines if line.strip())
        elif mode == "file":
            yield "".join(lines)
        else:
            raise UsageError(f"--documents must be one of {', '.join(DOCUMENTS)}, got {mode!r}")


def _paragraphs(lines: Iterator[str]) -> Iterator[str]:
    """Blocks of non-blank lines, text kept as is (the blank lines between them dropped)."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line)
        elif block:
            yield "".join(block)
            block = []
    if block:
        yield "".join(block)


# ---------------------------------------------------------------------------------------------- preparing


def prepare_user_text(name: str, sources: list[Source], *, root: Path, options: TextOptions, documents_mode: str,
                      force: bool, log: Callable[[str], None], archive: dict[str, Any] | None = None,
                      ) -> dict[str, Any]:
    """Tokenize a user's corpus into ``root/name`` with the benchmark's tokenizer choice; return the manifest.

    Args:
      name: the dataset name (checked by :func:`check_name`).
      sources: the splits (:func:`file_sources` or :func:`archive_sources`); train and val at least.
      root: the data directory.
      options: tokens (cut of ``train.bin``), vocabulary and tokenizer, as for the published corpora.
      documents_mode: one of :data:`DOCUMENTS`.
      force: replace an existing preparation of ``name`` made from other files or options.
      log: one-line status messages.
      archive: the archive's name and user-given sha256, recorded in the manifest.
    Raises:
      UsageError: bad name or input, or ``name`` already prepared otherwise (without ``force``).
    """
    from optbench.data.text import Corpus, choose_encoder, write_splits
    from optbench.data.download import write_json

    check_name(name)
    if documents_mode not in DOCUMENTS:
        raise UsageError(f"--documents must be one of {', '.join(DOCUMENTS)}, got {documents_mode!r}")
    records = [check_source(s) for s in sources]  # all input checked before anything is written
    params = {"tokens": options.tokens, "tokenizer": options.tokenizer, "vocab_size": options.vocab_size,
              "documents": documents_mode, "sources": {r["split"]: r["sha256"] for r in records}}
    out_dir = root / name
    previous = _existing(out_dir)
    if previous is not None and previous.get("params") == params and not force:
        log(f"{name} is already prepared from these files in {out_dir} (use --force to prepare it again)")
        return previous
    if previous is not None and not force:
        raise UsageError(f"{name} is already prepared in {out_dir} from other files or options; "
                         "use --force to replace it, or another --name")
    corpus = Corpus(splits={s.split: (lambda s=s: iter([documents(s, documents_mode)])) for s in sources})
    encoder = choose_encoder(options, corpus, tokens=options.tokens, log=log)
    staging = root / f".{name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # left by a run that was killed
    staging.mkdir(parents=True)
    try:
        manifest = {
            "format_version": MANIFEST_VERSION, "name": name, "kind": "tokens",
            "source": USER_SOURCE, "verified": False, "homepage": None, "license": None,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "params": params,
            "downloads": [], "sources": records, "archive": archive,
            **write_splits(corpus, encoder, staging, tokens=options.tokens, log=log),
        }
        write_json(staging / MANIFEST, manifest)
        _swap_in(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _existing(out_dir: Path) -> dict[str, Any] | None:
    """The manifest of an earlier user-supplied preparation in ``out_dir``, None if the folder is absent or empty;
    a folder that holds anything else is refused (``--force`` never deletes what optbench did not write)."""
    import json

    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    try:
        manifest = json.loads((out_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("source") != USER_SOURCE:
        raise UsageError(f"{out_dir} exists and is not a user-supplied dataset prepared by optbench; "
                         "choose another --name or remove it")
    return manifest


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Put ``staging`` at ``out_dir`` by renames; the old folder is removed only once the new one is in place."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def user_datasets(root: Path) -> list[str]:
    """Names of the folders under ``root`` that hold a user-supplied text dataset, sorted."""
    import json

    found = []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and is_user_name(p.name))
    except OSError:
        return []
    for folder in folders:
        try:
            if json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("source") == USER_SOURCE:
                found.append(folder.name)
        except (OSError, ValueError, AttributeError, RecursionError):
            continue
    return found
