"""The datasets optbench can prepare: where each comes from, its published checksum, and how it is laid out.

Specs are frozen dataclasses so that tests (and users with a private mirror of different bytes) can derive a variant
with :func:`dataclasses.replace` (e.g. a tiny generated CIFAR archive with its own checksum) through the Python API,
while the CLI always uses the published values below. Importing this module is cheap: no numpy, no I/O.

Checksum policy (see docs/DATA.md): a file with a published checksum is verified against it and rejected on
mismatch; a file without one is accepted after a complete download and its sha256 is recorded in the manifest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1  # bump when the layout of a prepared folder changes; older folders then count as unprepared
USER_SOURCE = "user-supplied"  # the manifest's "source" of a corpus given by the user (optbench data prepare text)


@dataclass(frozen=True, kw_only=True)
class RemoteFile:
    """One file to download.

    Attributes:
      url: canonical URL; it must start with the owning spec's ``base_url`` so that a mirror can replace that prefix.
      checksum: published checksum as ``"md5:<hex>"`` or ``"sha256:<hex>"``; None where none is published.
      size: published size in bytes, if known (checked when given).
    """

    url: str
    checksum: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        """The last path component of the URL, used as the cache file name."""
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What every dataset declares.

    Attributes:
      name: the CLI name and the folder under the data directory.
      description: one line for ``optbench data list``.
      homepage: where the data is described.
      license: the data's license, as published.
      base_url: the scheme+host+path prefix shared by all source URLs; ``--mirror`` replaces exactly this prefix.
    """

    name: str
    description: str
    homepage: str
    license: str
    base_url: str


@dataclass(frozen=True, kw_only=True)
class ImageSpec(DatasetSpec):
    """An image-classification archive split into train/val/test arrays (CIFAR-10).

    Attributes:
      archive: the tar.gz with the python-pickle batches.
      train_count, test_count: images expected in the archive (checked after parsing).
      val_size: images moved from train to a held-out validation split.
      split_seed: seed of the permutation that picks the validation images.
    """

    archive: RemoteFile
    train_count: int
    test_count: int
    val_size: int
    split_seed: int = 0


@dataclass(frozen=True, kw_only=True)
class TextSpec(DatasetSpec):
    """A text corpus tokenized into flat token files.

    Attributes:
      source_format: ``"wikitext-zip"`` (one zip with ``wiki.{train,valid,test}.raw``) or ``"c4-json-gz"``
        (gzipped JSON-lines shards with a ``"text"`` field).
      files: downloaded in full before tokenizing (the WikiText zip; C4's validation shard).
      train_shards: downloaded lazily in order, only as many as ``--tokens`` needs (C4).
      default_tokens: train tokens to write when ``--tokens`` is not given; None means all of the training text.
    """

    source_format: str
    files: tuple[RemoteFile, ...]
    train_shards: tuple[RemoteFile, ...] = ()
    default_tokens: int | None = None


_C4_BASE = "https://huggingface.co/datasets/allenai/c4/resolve/main/"
_C4_TRAIN_SHARDS = 1024

CIFAR10 = ImageSpec(
    name="cifar10",
    description="CIFAR-10: 60k 32x32 colour images in 10 classes (45k train / 5k val / 10k test)",
    homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
    license="no explicit license; cite Krizhevsky (2009), Learning Multiple Layers of Features from Tiny Images",
    base_url="https://www.cs.toronto.edu/~kriz/",
    # md5 published on the homepage next to the download link.
    archive=RemoteFile(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        checksum="md5:c58f30108f718f92721af3b95e74349a",
    ),
    train_count=50_000,
    test_count=10_000,
    val_size=5_000,
    split_seed=0,
)

WIKITEXT103 = TextSpec(
    name="wikitext103",
    description="WikiText-103 (raw): ~100M words of Wikipedia Good/Featured articles, train/valid/test",
    homepage="https://wikitext.smerity.com/",
    license="CC BY-SA 3.0",
    # The original S3 bucket (research.metamind.io) is gone; the author's host serves the same archive.
    base_url="https://wikitext.smerity.com/",
    source_format="wikitext-zip",
    # No checksum is published by the authors; this sha256 (191,984,949 bytes) is the one pinned for the
    # original archive by independent loaders (e.g. Julia's MLDatasets / CorpusLoaders), so we verify it.
    files=(
        RemoteFile(
            url="https://wikitext.smerity.com/wikitext-103-raw-v1.zip",
            checksum="sha256:91c00ae287f0d699e18605c84afc9e45c192bc6b7797ff8837e5474655a33794",
            size=191_984_949,
        ),
    ),
)

C4 = TextSpec(
    name="c4",
    description="C4 (English, allenai/c4 en/): web text; validation shard 0 + as many train shards as --tokens needs",
    homepage="https://huggingface.co/datasets/allenai/c4",
    license="ODC-By 1.0",
    base_url=_C4_BASE,
    source_format="c4-json-gz",
    # No per-file checksums are published with the shards; the sha256 of each download is recorded instead.
    files=(RemoteFile(url=_C4_BASE + "en/c4-validation.00000-of-00008.json.gz"),),
    train_shards=tuple(
        RemoteFile(url=f"{_C4_BASE}en/c4-train.{i:05d}-of-{_C4_TRAIN_SHARDS:05d}.json.gz")
        for i in range(_C4_TRAIN_SHARDS)
    ),
    default_tokens=100_000_000,
)

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({s.name: s for s in (CIFAR10, WIKITEXT103, C4)})
"""Every dataset by name; the spec's ``description`` is the one-line summary."""
