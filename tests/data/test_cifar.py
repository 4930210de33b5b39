"""CIFAR-10: restricted pickle reader, archive -> HWC arrays, seeded validation split, manifest, readers."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import replace

import numpy as np
import pytest

from optbench import data
from optbench.data.cifar import read_pickle
from optbench.data.text import TextOptions
from optbench.errors import DataMissingError, UsageError

from .conftest import CIFAR_TEST, CIFAR_VAL, FAST, cifar_spec, py2_pickle

N_TRAIN = 200


def _prepare(cifar_server, cifar_source, data_dir, **kw):
    return data.prepare(cifar_spec(cifar_source), data_dir=data_dir, mirror=cifar_server.url + "/~kriz",
                        policy=FAST, **kw)


def _hwc(rows: np.ndarray) -> np.ndarray:
    """Reference conversion, pixel by pixel: row = 1024 R values, then G, then B, each row-major 32x32."""
    out = np.empty((len(rows), 32, 32, 3), np.uint8)
    for c in range(3):
        out[..., c] = rows[:, c * 1024:(c + 1) * 1024].reshape(-1, 32, 32)
    return out


def test_prepare_writes_hwc_arrays_with_a_seeded_validation_split(cifar_server, cifar_source, data_dir):
    manifest = _prepare(cifar_server, cifar_source, data_dir)
    arrays = data.load_cifar10(data_dir)
    assert set(arrays) == {"train_x", "train_y", "val_x", "val_y", "test_x", "test_y"}
    assert all(isinstance(a, np.memmap) and not a.flags.writeable for a in arrays.values())
    assert arrays["train_x"].shape == (N_TRAIN - CIFAR_VAL, 32, 32, 3) and arrays["train_x"].dtype == np.uint8
    assert arrays["val_x"].shape == (CIFAR_VAL, 32, 32, 3) and arrays["val_y"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["test_x"], _hwc(cifar_source.test_rows))
    np.testing.assert_array_equal(arrays["test_y"], cifar_source.test_labels)

    # train + val partition the original train set; each keeps the original order; the split is the seeded one
    perm = np.random.default_rng(0).permutation(N_TRAIN)
    val_idx, train_idx = np.sort(perm[:CIFAR_VAL]), np.sort(perm[CIFAR_VAL:])
    source_x = _hwc(cifar_source.train_rows)
    np.testing.assert_array_equal(arrays["val_x"], source_x[val_idx])
    np.testing.assert_array_equal(arrays["train_x"], source_x[train_idx])
    np.testing.assert_array_equal(arrays["train_y"], cifar_source.train_labels[train_idx])

    assert manifest["counts"] == {"train": N_TRAIN - CIFAR_VAL, "val": CIFAR_VAL, "test": CIFAR_TEST}
    assert manifest["classes"][:2] == ["airplane", "automobile"]
    [download] = manifest["downloads"]
    assert download["url"] == "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert download["fetched_from"] == cifar_server.url + "/~kriz/cifar-10-python.tar.gz"
    assert download["md5"] == hashlib.md5(cifar_source.archive).hexdigest()
    assert download["published_checksum"] == "md5:" + download["md5"] and download["verified"] is True
    folder = data_dir / "cifar10"
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert entry["bytes"] == (folder / name).stat().st_size
    assert manifest["files"]["val_x.npy"]["shape"] == [CIFAR_VAL, 32, 32, 3]
    assert manifest["files"]["test_y.npy"]["dtype"] == "uint8"
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert data.read_manifest("cifar10", data_dir) == manifest


def test_the_published_checksum_guards_the_catalog_spec(cifar_server, data_dir):
    # the real spec (as the CLI uses it) carries the published md5, which a generated archive cannot match
    with pytest.raises(UsageError, match="checksum mismatch .* expected md5 c58f30108f718f92721af3b95e74349a"):
        data.prepare("cifar10", data_dir=data_dir, mirror=cifar_server.url + "/~kriz", policy=FAST)
    assert not (data_dir / "downloads" / "cifar10" / "cifar-10-python.tar.gz").exists()
    assert not (data_dir / "cifar10" / "manifest.json").exists()
    with pytest.raises(DataMissingError):
        data.load_cifar10(data_dir)


def test_prepared_dataset_is_reused_unless_forced(cifar_server, cifar_source, data_dir):
    first = _prepare(cifar_server, cifar_source, data_dir)
    assert len(cifar_server.requests) == 1
    assert _prepare(cifar_server, cifar_source, data_dir)["created"] == first["created"]
    _prepare(cifar_server, cifar_source, data_dir, force=True)
    assert len(cifar_server.requests) == 1  # forced: converted again from the verified cached archive
    other = data.prepare(replace(cifar_spec(cifar_source), val_size=30), data_dir=data_dir,
                         mirror=cifar_server.url + "/~kriz", policy=FAST)
    assert other["counts"]["val"] == 30  # a different request is not served from the old files


def test_missing_and_incomplete_datasets_name_the_prepare_command(cifar_server, cifar_source, data_dir):
    with pytest.raises(DataMissingError) as err:
        data.load_cifar10(data_dir)
    message = str(err.value)
    assert "\n" not in message
    assert f"optbench data prepare cifar10 --data-dir {data_dir}" in message
    _prepare(cifar_server, cifar_source, data_dir)
    (data_dir / "cifar10" / "val_y.npy").unlink()
    with pytest.raises(DataMissingError, match=f"incomplete .*optbench data prepare cifar10 --data-dir {data_dir}"):
        data.read_manifest("cifar10", data_dir)


def test_default_data_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("OPTBENCH_DATA", str(tmp_path / "env"))
    with pytest.raises(DataMissingError, match=f"--data-dir {tmp_path / 'env'}"):
        data.read_manifest("cifar10")


def test_text_options_are_refused_for_images(data_dir):
    with pytest.raises(UsageError, match="apply to text datasets"):
        data.prepare("cifar10", data_dir=data_dir, text=TextOptions(tokens=10))


def test_malformed_archive_is_a_usage_error(server, cifar_source, data_dir):
    bogus = b"this is not a tar.gz"
    server.files["/~kriz/cifar-10-python.tar.gz"] = bogus
    spec = replace(cifar_spec(cifar_source),
                   archive=replace(cifar_spec(cifar_source).archive, checksum="md5:" + hashlib.md5(bogus).hexdigest()))
    with pytest.raises(UsageError, match="cannot read"):
        data.prepare(spec, data_dir=data_dir, mirror=server.url + "/~kriz", policy=FAST)


# ---------------------------------------------------------------------------------------------- the safe reader


def test_reader_decodes_python2_batches():
    rows = np.arange(2 * 3072, dtype=np.int64).astype(np.uint8).reshape(2, 3072)
    batch = read_pickle(py2_pickle({b"data": rows, b"labels": [3, 7], b"batch_label": b"x", b"filenames": [b"a"]}))
    assert batch["labels"] == [3, 7] and batch["batch_label"] == b"x"
    np.testing.assert_array_equal(batch["data"], rows)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(("payload", "refused"), [
    (pickle.dumps({"data": _Evil()}, protocol=2), r"global (posix|nt)\.system"),  # arbitrary callable
    (pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2), r"global _codecs\.encode"),  # Python 3 pickles
    (pickle.dumps({"data": np.zeros(3, np.uint8)}, protocol=5), r"global numpy\._core\.numeric\._frombuffer"),
    (py2_pickle({b"data": np.array([None, 1], dtype=object)}), "refusing dtype 'O8'"),  # object arrays
    (py2_pickle({b"data": np.zeros(2, dtype=[("a", "u1"), ("b", "f4")])}), "refusing dtype 'V5'"),  # records
])
def test_reader_refuses_anything_but_plain_arrays(payload, refused, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match="not a valid CIFAR-10 pickle: .*" + refused):
        read_pickle(payload)
    assert not (tmp_path / "pwned").exists()


def test_reader_checks_the_array_byte_count():
    good = py2_pickle({b"data": np.zeros((2, 4), np.uint8)})
    short = good.replace(b"U\x08" + bytes(8), b"U\x07" + bytes(7))  # SHORT_BINSTRING of 8 zero bytes -> 7
    assert short != good
    with pytest.raises(UsageError, match="needs 8 bytes"):
        read_pickle(short)
