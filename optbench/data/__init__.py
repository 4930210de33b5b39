"""Datasets: prepare them once (download, verify, convert) and read them memory-mapped in workloads.

Reader API for workloads::

    from optbench import data
    arrays = data.load_cifar10(data_dir)              # train_x/train_y/val_x/val_y/test_x/test_y, memory-mapped
    tokens = data.load_tokens("c4", "train", data_dir)  # flat uint16/uint32 memmap
    vocab = data.vocab_size("c4", data_dir)

A dataset that is not prepared raises :class:`~optbench.errors.DataMissingError` whose message is the command that
prepares it. Importing this package is cheap: numpy and the download machinery load inside the functions.
See docs/DATA.md for sources, formats and the checksum policy.

Layer 2, beside :mod:`optbench.plugins`: workloads read their data through it. May import: the core and the store.
Must never import: parallel, engine, sweep, scoring, report, recipes, commands or cli, nor a workload. Enforced by
tests/test_layering.py (see docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.store import paths
from optbench.data.catalog import (
    DATASETS, MANIFEST, MANIFEST_VERSION, USER_SOURCE, DatasetSpec, ImageSpec, TextSpec,
)
from optbench.errors import DataMissingError, UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

    from optbench.data.download import DownloadPolicy
    from optbench.data.text import TextOptions


def __getattr__(name: str) -> Any:
    """``optbench.data.TextOptions`` without importing the text machinery with the package (PEP 562)."""
    if name == "TextOptions":
        from optbench.data.text import TextOptions

        return TextOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "DATASETS", "TextOptions", "dataset_dir", "load_cifar10", "load_tokens", "prepare", "prepare_command",
    "prepare_user_text", "read_manifest", "text_datasets", "vocab_size",
]

CIFAR10_ARRAYS = ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")
PathLike = str | os.PathLike[str]


def _spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} (your own text: "
                         f"optbench data prepare text --name {name} --train FILE --valid FILE)") from None


def _lookup(name: str) -> DatasetSpec | None:
    """The catalog spec of ``name``, or None for a well-formed user-supplied dataset name (see
    :mod:`optbench.data.user`); anything else is an unknown dataset."""
    from optbench.data.user import is_user_name

    if name in DATASETS:
        return DATASETS[name]
    if isinstance(name, str) and is_user_name(name):
        return None
    raise UsageError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))} "
                     "or your own text prepared with 'optbench data prepare text --name NAME ...'")


def dataset_dir(name: str, data_dir: PathLike | None = None) -> Path:
    """Folder of a prepared dataset: ``<data_dir>/<name>`` (data_dir defaults to :func:`optbench.store.paths.data_dir`)."""
    _lookup(name)
    return paths.data_dir(data_dir) / name


def shell_data_dir(data_dir: PathLike | None = None) -> str:
    """The data directory as a command line gives it (resolved from the default, shell-quoted)."""
    return shlex.quote(str(paths.data_dir(data_dir)))


def prepare_command(name: str, data_dir: PathLike | None = None) -> str:
    """The shell command that prepares ``name`` into ``data_dir`` (for a user-supplied dataset, with FILE
    placeholders: only the user knows the files)."""
    folder = shell_data_dir(data_dir)
    if _lookup(name) is None:
        from optbench.data.user import prepare_command as user_command

        return user_command(name, folder)
    return f"optbench data prepare {name} --data-dir {folder}"


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _is_plain_name(x: Any) -> bool:
    """A file name inside the dataset folder (no separators, no ``..``: a manifest cannot point elsewhere)."""
    return isinstance(x, str) and x not in ("", ".", "..") and "/" not in x and "\\" not in x and "\0" not in x


def manifest_problem(manifest: Any, spec: DatasetSpec | None) -> str | None:
    """What is wrong with the structure of a parsed manifest of ``spec`` (None: a user-supplied text dataset), or
    None.

    Readers index the manifest directly (``files[name]["bytes"]``, ``splits["train"]["file"]``, the tokenizer's
    ``vocab_size``...), so every key they use is checked here, once, with its type.
    """
    if not isinstance(manifest, dict) or manifest.get("format_version") != MANIFEST_VERSION:
        return "was prepared by an incompatible optbench version"
    files, downloads = manifest.get("files"), manifest.get("downloads", [])
    if not isinstance(files, dict) or not all(
            _is_plain_name(k) and isinstance(v, dict) and _is_count(v.get("bytes")) for k, v in files.items()):
        return "has a damaged manifest ('files' is not a map of file name -> {bytes, ...})"
    if not isinstance(downloads, list) or not all(
            isinstance(d, dict) and isinstance(d.get("file"), str)
            and isinstance(d.get("published_checksum") or d.get("sha256"), str) for d in downloads):
        return "has a damaged manifest ('downloads' is not a list of files with checksums)"
    if isinstance(spec, ImageSpec):
        return _image_problem(manifest, files)
    if spec is None and manifest.get("source") != USER_SOURCE:
        return f"is not a user-supplied dataset (its manifest's source is not {USER_SOURCE!r})"
    return _text_problem(manifest, files)


def _image_problem(manifest: dict[str, Any], files: dict[str, Any]) -> str | None:
    counts = manifest.get("counts", {})  # only shown by `data list`, which shows whichever splits it names
    if manifest.get("kind") != "images" or not isinstance(counts, dict) or not all(
            isinstance(k, str) and _is_count(v) for k, v in counts.items()):
        return "has a damaged manifest ('counts' is not a map of split -> number of images)"
    for key in CIFAR10_ARRAYS:
        shape = files.get(f"{key}.npy", {}).get("shape")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            return f"has a damaged manifest (no shape of {key}.npy)"
    return None


def _text_problem(manifest: dict[str, Any], files: dict[str, Any]) -> str | None:
    splits, tok = manifest.get("splits"), manifest.get("tokenizer")
    if manifest.get("kind") != "tokens" or not isinstance(splits, dict) or not splits or not all(
            isinstance(k, str) and isinstance(v, dict) and v.get("file") in files and _is_count(v.get("tokens"))
            for k, v in splits.items()):
        return "has a damaged manifest ('splits' is not a map of split -> {file, tokens})"
    if manifest.get("dtype") not in ("uint16", "uint32"):
        return "has a damaged manifest ('dtype' is not uint16 or uint32)"
    if not isinstance(tok, dict) or not _is_count(tok.get("vocab_size")) or not _is_count(tok.get("eot_id")) \
            or not isinstance(tok.get("kind"), str):
        return "has a damaged manifest ('tokenizer' lacks kind, vocab_size or eot_id)"
    return None


def _missing(name: str, data_dir: PathLike | None, why: str) -> DataMissingError:
    command = prepare_command(name, data_dir)
    return DataMissingError(f"dataset {name!r} {why} in {dataset_dir(name, data_dir)}; prepare it with: {command}")


def read_manifest(name: str, data_dir: PathLike | None = None) -> dict[str, Any]:
    """The manifest of a prepared dataset, after checking its structure and that every file it lists is present
    with its size.

    Args:
      name: a key of :data:`~optbench.data.catalog.DATASETS`, or a user-supplied text dataset's name.
      data_dir: the data directory (default: ``$OPTBENCH_DATA`` or ``~/.cache/optbench``).
    Returns:
      The parsed ``manifest.json``.
    Raises:
      DataMissingError: missing, unreadable, damaged (a key missing or of the wrong type), from another format
        version, or with a missing/truncated file; the one-line message contains
        ``optbench data prepare NAME --data-dir DIR``.
      UsageError: a name that is neither a catalog dataset nor a possible user-supplied one.
    """
    folder = dataset_dir(name, data_dir)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _missing(name, data_dir, "is not prepared") from None
    except (OSError, ValueError, RecursionError):
        raise _missing(name, data_dir, "has an unreadable manifest") from None
    why = manifest_problem(manifest, _lookup(name))
    if why:
        raise _missing(name, data_dir, why)
    for file, entry in manifest["files"].items():
        path = folder / file
        try:
            ok = path.is_file() and path.stat().st_size == entry["bytes"]
        except OSError:
            ok = False
        if not ok:
            raise _missing(name, data_dir, f"is incomplete ({file} is missing or truncated)")
    return manifest


def load_cifar10(data_dir: PathLike | None = None) -> dict[str, np.ndarray]:
    """CIFAR-10 as read-only memory-mapped arrays.

    Returns:
      ``train_x`` (45000, 32, 32, 3) uint8 HWC, ``train_y`` (45000,) uint8, ``val_x``/``val_y`` (5000 held out from
      the official train set by a seeded permutation), ``test_x``/``test_y`` (10000, the official test set).
    Raises:
      DataMissingError: not prepared (the message says how to prepare it).
    """
    import numpy as np

    manifest = read_manifest("cifar10", data_dir)
    folder = dataset_dir("cifar10", data_dir)
    arrays = {}
    for key in CIFAR10_ARRAYS:
        try:
            arrays[key] = np.load(folder / f"{key}.npy", mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):  # same size as recorded, but not a readable .npy any more
            arrays[key] = None
        if arrays[key] is None or list(arrays[key].shape) != manifest["files"][f"{key}.npy"]["shape"]:
            raise DataMissingError(f"{folder}/{key}.npy does not match its manifest; re-run: "
                                   f"{prepare_command('cifar10', data_dir)} --force")
    return arrays


def load_tokens(name: str, split: str, data_dir: PathLike | None = None) -> np.ndarray:
    """The flat token ids of one split (``train``, ``val``; WikiText also ``test``) as a read-only memmap.

    Documents are separated by the end-of-text id ``read_manifest(name)["tokenizer"]["eot_id"]``.
    Raises:
      DataMissingError: not prepared. UsageError: the dataset has no such split.
    """
    from optbench.data.text import open_tokens

    manifest = read_manifest(name, data_dir)
    splits = manifest.get("splits", {})
    if split not in splits:
        raise UsageError(f"dataset {name!r} has no split {split!r}; it has: {', '.join(splits) or 'none'}")
    path = dataset_dir(name, data_dir) / splits[split]["file"]
    try:
        return open_tokens(path, manifest["dtype"])
    except (OSError, ValueError):  # e.g. a length that is no whole number of tokens
        raise DataMissingError(f"{path} does not match its manifest; re-run: "
                               f"{prepare_command(name, data_dir)} --force") from None


def vocab_size(name: str, data_dir: PathLike | None = None) -> int:
    """Vocabulary size of a prepared text dataset's tokenizer (every id in its token files is below it)."""
    manifest = read_manifest(name, data_dir)
    if "tokenizer" not in manifest:
        raise UsageError(f"dataset {name!r} is not a text dataset")
    return int(manifest["tokenizer"]["vocab_size"])


def prepare(
    dataset: str | DatasetSpec,
    *,
    data_dir: PathLike | None = None,
    mirror: str | None = None,
    text: TextOptions | None = None,
    force: bool = False,
    progress: bool = False,
    policy: DownloadPolicy | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Download, verify and convert a dataset into ``<data_dir>/<name>``; a no-op when already prepared alike.

    Args:
      dataset: a catalog name, or a spec (tests and private mirrors pass a modified one, e.g. another checksum).
      data_dir: the data directory (default: ``$OPTBENCH_DATA`` or ``~/.cache/optbench``).
      mirror: replaces each source URL's base (default ``$OPTBENCH_MIRROR``).
      text: token budget, vocabulary and tokenizer for text datasets (must be left default for images).
      force: prepare again even if a matching preparation exists.
      progress: show download progress bars on stderr.
      policy: download retries and timeouts.
      log: receives one-line status messages.
    Returns:
      The manifest.
    Raises:
      UsageError: bad options, a download that fails or does not verify, a malformed archive.
    """
    from optbench.data.download import DownloadPolicy, Fetcher, resolve_mirror
    from optbench.data.text import TextOptions, text_params

    spec = _spec(dataset) if isinstance(dataset, str) else dataset
    root = paths.data_dir(data_dir)
    log = log or (lambda _msg: None)
    text = text or TextOptions()
    if isinstance(spec, ImageSpec):
        if text != TextOptions():
            raise UsageError(f"--tokens, --vocab-size and --tokenizer apply to text datasets, not {spec.name}")
        wanted: dict[str, Any] = {"val_size": spec.val_size, "split_seed": spec.split_seed}
    elif isinstance(spec, TextSpec):
        wanted = text_params(text, spec)
    else:
        raise TypeError(f"unsupported dataset spec {type(spec).__name__}")
    if not force and _prepared_with(spec.name, root, wanted):
        log(f"{spec.name} is already prepared in {root / spec.name} (use --force to prepare it again)")
        return read_manifest(spec.name, root)
    fetcher = Fetcher(cache_dir=root / "downloads" / spec.name, base_url=spec.base_url, mirror=resolve_mirror(mirror),
                      progress=progress, policy=policy or DownloadPolicy(), log=log)
    out_dir = root / spec.name
    if isinstance(spec, ImageSpec):
        from optbench.data.cifar import prepare_cifar10

        return prepare_cifar10(spec, out_dir=out_dir, fetcher=fetcher, log=log)
    from optbench.data.text import prepare_text

    return prepare_text(spec, out_dir=out_dir, fetcher=fetcher, options=text, log=log)


def _prepared_with(name: str, root: Path, params: dict[str, Any]) -> bool:
    """Whether ``root/name`` holds a complete preparation made with the same parameters."""
    try:
        return read_manifest(name, root).get("params") == params
    except UsageError:  # DataMissingError included
        return False


def prepare_user_text(
    name: str,
    *,
    train: PathLike | None = None,
    valid: PathLike | None = None,
    test: PathLike | None = None,
    archive: PathLike | None = None,
    sha256: str | None = None,
    data_dir: PathLike | None = None,
    text: TextOptions | None = None,
    documents: str = "headings",
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Prepare your own text corpus as ``<data_dir>/<name>``, tokenized as the published text datasets are.

    Give either ``train`` and ``valid`` (and optionally ``test``) UTF-8 files, or an ``archive`` (zip or tar with
    ``train.txt``, ``valid.txt`` and optionally ``test.txt``) with its ``sha256``. The manifest records the inputs'
    sha256 with ``"source": "user-supplied"`` and ``"verified": false``. Preparing the same files with the same
    options again is a no-op.

    Args:
      name: the dataset's name (letters, digits, ``_``, ``-``; not a catalog name).
      train, valid, test: the splits' text files.
      archive, sha256: instead of files, an archive and the sha256 you expect it to have (checked first).
      data_dir: the data directory (default: ``$OPTBENCH_DATA`` or ``~/.cache/optbench``).
      text: tokens (cut of ``train.bin``), vocabulary and tokenizer, as for the published corpora.
      documents: ``headings`` (WikiText's ``= Title =`` articles; a file without them is one document),
        ``paragraphs`` (blocks between blank lines), ``lines`` (one document per non-blank line) or ``file``.
      force: replace an existing preparation of ``name`` made from other files or options.
      log: receives one-line status messages.
    Returns:
      The manifest.
    Raises:
      UsageError: a bad name, missing or non-text input, a checksum mismatch, or ``name`` prepared otherwise already
        (without ``force``); nothing already prepared is changed then.
    """
    from optbench.data.text import TextOptions
    from optbench.data.user import archive_sources, check_name, file_sources, prepare_user_text as prepare_it

    check_name(name)
    if archive is not None:
        if train is not None or valid is not None or test is not None:
            raise UsageError("give either --archive or --train/--valid/--test, not both")
        if not sha256:
            raise UsageError("--archive needs --sha256 HEX: the checksum you expect the archive to have")
        sources = archive_sources(Path(archive), sha256)
        record = {"file": Path(archive).name, "sha256": sha256.lower().removeprefix("sha256:"),
                  "checksum": "given by the user"}
    else:
        if sha256:
            raise UsageError("--sha256 is the checksum of an --archive; files given with --train are hashed here")
        if train is None or valid is None:
            raise UsageError("a text corpus needs --train FILE and --valid FILE (or --archive FILE --sha256 HEX)")
        sources, record = file_sources(Path(train), Path(valid), None if test is None else Path(test)), None
    return prepare_it(name, sources, root=paths.data_dir(data_dir), options=text or TextOptions(),
                      documents_mode=documents, force=force, log=log or (lambda _msg: None), archive=record)


def is_text_dataset_name(name: str) -> bool:
    """Whether ``name`` can name a text dataset: a catalog text corpus, or a well-formed user-supplied name
    (prepared or not: only reading it says)."""
    from optbench.data.user import is_user_name

    return isinstance(DATASETS.get(name), TextSpec) or is_user_name(name)


def text_datasets(data_dir: PathLike | None = None) -> list[str]:
    """The text datasets a language model can train on: the catalog's (prepared or not) and every user-supplied
    one prepared in ``data_dir``."""
    from optbench.data.user import user_datasets

    catalog = [n for n, s in DATASETS.items() if isinstance(s, TextSpec)]
    return catalog + user_datasets(paths.data_dir(data_dir))
