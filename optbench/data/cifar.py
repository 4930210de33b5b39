"""CIFAR-10: download the official python-version archive, parse it without unpickling objects, write .npy arrays.

The archive holds ``cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``, each a Python 2 pickle of a
dict: ``data`` (uint8 array, (10000, 3072), rows are R,G,B planes of 32x32), ``labels`` (list of ints),
``batch_label`` and ``filenames`` (bytes). Output, in ``<data_dir>/cifar10/``::

    train_x.npy  uint8 (45000, 32, 32, 3)  HWC      train_y.npy  uint8 (45000,)
    val_x.npy    uint8 (5000, 32, 32, 3)            val_y.npy    uint8 (5000,)
    test_x.npy   uint8 (10000, 32, 32, 3)           test_y.npy   uint8 (10000,)
    manifest.json

Why the reader is safe. A pickle is a program for a small stack machine; the only way it can reach Python code is
to name a global (``module.name``), which the unpickler resolves through ``find_class``. :class:`_BatchUnpickler`
answers exactly three names, each with an inert stand-in written here — never numpy's own reconstruction code:

* ``numpy.core.multiarray._reconstruct`` -> :func:`_reconstruct`, which returns an empty :class:`_Array` record;
* ``numpy.ndarray`` -> a sentinel that is not callable (only accepted as ``_reconstruct``'s first argument);
* ``numpy.dtype`` -> :class:`_DType`, which accepts only plain integer/float type codes.

Every other global raises ``UnpicklingError``. ``_Array.__setstate__`` checks the shape, the dtype and that the raw
bytes have exactly the right length, and only then calls ``np.frombuffer`` — so numpy never sees untrusted pickle
state, object arrays cannot be built, and no module can be imported or function called. Everything else a pickle can
make is plain data (ints, bytes, lists, dicts, tuples). The archive is read member by member in memory; nothing is
extracted to disk, so tar path tricks do not apply.
"""

from __future__ import annotations

import io
import math
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optbench.data.catalog import MANIFEST, MANIFEST_VERSION, ImageSpec
from optbench.data.download import Fetcher, atomic_file, hash_file, write_json
from optbench.errors import UsageError

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

BATCH_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
IMAGE_SHAPE = (32, 32, 3)  # HWC
NUM_CLASSES = 10
_MAX_MEMBER_BYTES = 256 << 20  # a real batch is ~31 MB; refuse anything absurd before reading it into memory
_TYPECODES = frozenset("u1 u2 u4 u8 i1 i2 i4 i8 f4 f8 b B h H i I l L q Q f d".split())


# ---------------------------------------------------------------------------------------------- restricted reader


class _NDArraySentinel:
    """Stands for ``numpy.ndarray`` inside a pickle; deliberately not callable."""


_NDARRAY = _NDArraySentinel()


class _DType:
    """Stand-in for ``numpy.dtype(code, align, copy)`` restricted to plain numeric codes (no objects, no records)."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True) -> None:
        code = code.decode("ascii") if isinstance(code, bytes) else code
        if not isinstance(code, str) or code not in _TYPECODES:
            raise pickle.UnpicklingError(f"refusing dtype {code!r}")
        self.code, self.byteorder = code, "|"

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state, by era: (version>=1, byteorder, subarray, names, fields, elsize, alignment[, flags
        # [, metadata]]) or, before versions, (byteorder, subarray, fields, elsize, alignment).
        if not isinstance(state, tuple) or len(state) < 5:
            raise pickle.UnpicklingError("malformed dtype state")
        order, nested = (state[1], state[2:5]) if isinstance(state[0], int) else (state[0], state[1:3])
        if any(s is not None for s in nested):
            raise pickle.UnpicklingError("refusing a structured or sub-array dtype")
        order = order.decode("ascii") if isinstance(order, bytes) else order
        if order not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError(f"refusing byte order {order!r}")
        self.byteorder = order

    def resolve(self) -> np.dtype:
        """The real numpy dtype, built from the validated code and byte order."""
        import numpy as np

        dt = np.dtype(self.code)
        return dt.newbyteorder(self.byteorder) if self.byteorder in ("<", ">") else dt


class _Array:
    """Stand-in for an ndarray under construction; ``__setstate__`` turns validated raw bytes into ``.array``."""

    array: Any = None

    def __setstate__(self, state: Any) -> None:
        import numpy as np

        # ndarray state: (version, shape, dtype, is_fortran, rawdata); very old pickles omit the version.
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not isinstance(state, tuple) or len(state) != 4:
            raise pickle.UnpicklingError("malformed array state")
        shape, dtype, fortran, raw = state
        if not (isinstance(shape, tuple) and all(isinstance(n, int) and n >= 0 for n in shape)):
            raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
        if not isinstance(dtype, _DType) or not isinstance(raw, bytes):
            raise pickle.UnpicklingError("array state must hold a plain dtype and raw bytes")
        dt = dtype.resolve()
        if len(raw) != math.prod(shape) * dt.itemsize:
            raise pickle.UnpicklingError(f"array of shape {shape} needs {math.prod(shape) * dt.itemsize} bytes")
        self.array = np.ndarray(shape, dtype=dt, buffer=raw, order="F" if fortran else "C")


def _reconstruct(subtype: Any, shape: Any, typecode: Any) -> _Array:
    """Stand-in for ``numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')``: an empty array record."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError("_reconstruct only builds plain ndarrays")
    return _Array()


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy >= 2
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _DType,
}


class _BatchUnpickler(pickle.Unpickler):
    """A pickle reader that resolves only the three names in ``_ALLOWED`` (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


def read_pickle(raw: bytes) -> dict[str, Any]:
    """Decode one CIFAR batch/meta pickle into a dict with str keys and numpy arrays, executing no code.

    Args:
      raw: the pickle bytes (Python 2 ``str`` values are read as bytes, as the CIFAR page advises).
    Returns:
      The dict, keys decoded to str, array records replaced by read-only numpy arrays.
    Raises:
      UsageError: not a pickle of a dict, or it names a global outside the allow-list.
    """
    try:
        obj = _BatchUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as err:  # noqa: BLE001 - any decoding failure means the file is not a CIFAR batch
        raise UsageError(f"not a valid CIFAR-10 pickle: {err}") from None
    if not isinstance(obj, dict):
        raise UsageError("not a valid CIFAR-10 pickle: top level is not a dict")
    return {
        (k.decode("latin-1") if isinstance(k, bytes) else str(k)): (v.array if isinstance(v, _Array) else v)
        for k, v in obj.items()
    }


# ---------------------------------------------------------------------------------------------- archive -> arrays


@dataclass(frozen=True)
class Split:
    """Images (N, 32, 32, 3) uint8 and labels (N,) uint8."""

    x: np.ndarray
    y: np.ndarray


def decode_batch(batch: dict[str, Any], *, where: str) -> Split:
    """Turn a batch dict into HWC images and labels, checking shapes and label range.

    Args:
      batch: from :func:`read_pickle`; ``data`` is (N, 3072) uint8 with R, G, B planes of 32x32 per row.
      where: the member name, for error messages.
    Returns:
      ``Split(x=(N, 32, 32, 3) uint8, y=(N,) uint8)``.
    """
    import numpy as np

    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise UsageError(f"{where}: 'data' must be a uint8 array of shape (N, 3072)")
    if not isinstance(labels, list) or len(labels) != data.shape[0] or not all(isinstance(v, int) for v in labels):
        raise UsageError(f"{where}: 'labels' must be a list of {data.shape[0]} ints")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise UsageError(f"{where}: labels outside 0..{NUM_CLASSES - 1}")
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, C, H, W) planes -> (N, H, W, C)
    return Split(x=np.ascontiguousarray(x), y=y.astype(np.uint8))


def read_archive(path: Path) -> tuple[Split, Split, list[str]]:
    """Read the train batches, the test batch and the class names from ``cifar-10-python.tar.gz``.

    Returns:
      ``(train, test, class_names)``; train is the 5 batches concatenated in order.
    """
    import numpy as np

    def member(tf: tarfile.TarFile, name: str) -> bytes:
        try:
            info = tf.getmember(f"{BATCH_DIR}/{name}")
        except KeyError:
            raise UsageError(f"{path.name} lacks {BATCH_DIR}/{name}: not the CIFAR-10 python archive") from None
        if not info.isfile() or info.size > _MAX_MEMBER_BYTES:
            raise UsageError(f"{path.name}: {info.name} is not a regular file of sane size")
        return tf.extractfile(info).read()  # type: ignore[union-attr]

    try:
        with tarfile.open(path, "r:gz") as tf:
            train = [decode_batch(read_pickle(member(tf, n)), where=n) for n in TRAIN_BATCHES]
            test = decode_batch(read_pickle(member(tf, TEST_BATCH)), where=TEST_BATCH)
            meta = read_pickle(member(tf, META))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UsageError(f"cannot read {path}: {err}") from None
    names = [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    train_all = Split(x=np.concatenate([b.x for b in train]), y=np.concatenate([b.y for b in train]))
    return train_all, test, names


def split_validation(train: Split, *, val_size: int, seed: int) -> tuple[Split, Split]:
    """Hold out ``val_size`` training images chosen by a seeded permutation; both parts keep the original order.

    Returns:
      ``(train_rest, val)``.
    """
    import numpy as np

    n = len(train.y)
    if not 0 < val_size < n:
        raise UsageError(f"validation split of {val_size} must be between 1 and {n - 1} (train has {n} images)")
    perm = np.random.default_rng(seed).permutation(n)
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    return Split(train.x[train_idx], train.y[train_idx]), Split(train.x[val_idx], train.y[val_idx])


def _save_npy(path: Path, array: np.ndarray) -> dict[str, Any]:
    """Write ``array`` as .npy atomically; return its manifest entry (sha256, bytes, shape, dtype)."""
    import numpy as np

    with atomic_file(path) as f:
        np.save(f, array, allow_pickle=False)
    return {
        "sha256": hash_file(path)["sha256"], "bytes": path.stat().st_size,
        "shape": list(array.shape), "dtype": str(array.dtype),
    }


def prepare_cifar10(spec: ImageSpec, *, out_dir: Path, fetcher: Fetcher,
                    log: Callable[[str], None]) -> dict[str, Any]:
    """Download (or reuse), verify and convert CIFAR-10 into ``out_dir``; return the manifest written there.

    Args:
      spec: the catalog entry (URL, checksum, expected counts, validation split).
      out_dir: ``<data_dir>/cifar10``.
      fetcher: download policy and cache.
      log: one-line status messages.
    Returns:
      The manifest dict (also written to ``out_dir/manifest.json`` last, marking the folder complete).

    References:
      Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
    """
    archive = fetcher.fetch(spec.archive)
    log(f"reading {archive.path.name}")
    train, test, names = read_archive(archive.path)
    if len(train.y) != spec.train_count or len(test.y) != spec.test_count:
        raise UsageError(
            f"{archive.path.name} holds {len(train.y)} train / {len(test.y)} test images, "
            f"expected {spec.train_count} / {spec.test_count}"
        )
    train, val = split_validation(train, val_size=spec.val_size, seed=spec.split_seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)  # the folder counts as unprepared until the new manifest lands
    files: dict[str, Any] = {}
    for split_name, split in (("train", train), ("val", val), ("test", test)):
        files[f"{split_name}_x.npy"] = _save_npy(out_dir / f"{split_name}_x.npy", split.x)
        files[f"{split_name}_y.npy"] = _save_npy(out_dir / f"{split_name}_y.npy", split.y)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": spec.name,
        "kind": "images",
        "homepage": spec.homepage,
        "license": spec.license,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": {"val_size": spec.val_size, "split_seed": spec.split_seed},
        "downloads": [archive.record() | {"md5": archive.digests["md5"]}],
        "layout": "NHWC uint8 images, uint8 labels 0..9",
        "classes": names,
        "counts": {"train": int(len(train.y)), "val": int(len(val.y)), "test": int(len(test.y))},
        "files": files,
    }
    write_json(out_dir / MANIFEST, manifest)
    return manifest
