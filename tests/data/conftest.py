"""Fixtures for the dataset tests: a loopback HTTP server with Range support and small archives in the real formats.

Everything is generated here: a CIFAR-10 python archive whose batches are Python-2-style pickles (as the real files
are), a WikiText-103 raw zip with real-looking articles, and gzipped C4 JSON-lines shards.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import re
import struct
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import pytest

from optbench.data import catalog
from optbench.data.download import DownloadPolicy

CIFAR_PER_BATCH = 40  # 5 train batches -> 200 train images
CIFAR_TEST = 50
CIFAR_VAL = 20
FAST = DownloadPolicy(attempts=1, backoff_s=0.0, timeout_s=10.0)


# ---------------------------------------------------------------------------------------------- loopback server


@dataclass
class FileServer:
    """Serves ``files`` (path -> bytes) on 127.0.0.1 and records every request as ``(path, Range header)``.

    ``cut[path] = (nbytes, times)`` makes the next ``times`` responses for ``path`` stop after ``nbytes`` bytes of
    their body and close the connection (a dropped download). ``ranges = False`` makes the server ignore Range.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    cut: dict[str, tuple[int, int]] = field(default_factory=dict)
    ranges: bool = True
    redirects: dict[str, str] = field(default_factory=dict)  # path -> path answered with 302 (as the HF hub does)
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    url: str = ""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take_cut(self, path: str) -> int | None:
        with self.lock:
            if path not in self.cut:
                return None
            offset, times = self.cut[path]
            if times <= 1:
                del self.cut[path]
            else:
                self.cut[path] = (offset, times - 1)
            return offset

    def requested(self, path: str) -> list[str | None]:
        """Range headers of the requests for ``path``, in order."""
        return [r for p, r in self.requests if p == path]


class _Handler(BaseHTTPRequestHandler):
    server_version = "optbench-test/1"

    def log_message(self, *args: object) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv: FileServer = self.server.owner  # type: ignore[attr-defined]
        path = urlsplit(self.path).path
        range_header = self.headers.get("Range")
        with srv.lock:
            srv.requests.append((path, range_header))
        if path in srv.redirects:
            self.send_response(302)
            self.send_header("Location", srv.url + srv.redirects[path])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = srv.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start, end, status = 0, len(body) - 1, 200
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
        if match and srv.ranges:
            start = int(match[1])
            end = int(match[2]) if match[2] else len(body) - 1
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        chunk = body[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes" if srv.ranges else "none")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
        self.end_headers()
        cut = srv.take_cut(path)
        if cut is not None:
            chunk = chunk[:cut]  # promised the whole body, send part of it, hang up
        self.wfile.write(chunk)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def server():
    """A running :class:`FileServer`; stopped at teardown."""
    state = FileServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.owner = state  # type: ignore[attr-defined]
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """An empty data directory; OPTBENCH_DATA/OPTBENCH_MIRROR cleared so the environment cannot leak in."""
    monkeypatch.delenv("OPTBENCH_DATA", raising=False)
    monkeypatch.delenv("OPTBENCH_MIRROR", raising=False)
    return tmp_path / "data"


# ---------------------------------------------------------------------------------------------- Python-2 pickles


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes pickles the way Python 2's cPickle (protocol 2) wrote the CIFAR batches.

    Python 2 ``str`` became SHORT_BINSTRING/BINSTRING opcodes (Python 3 has no way to emit them for bytes), and
    numpy lived at ``numpy.core``. Python 3's pickler would instead call ``_codecs.encode`` for bytes, which the real
    files never contain.
    """

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes | str) -> None:
        raw = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj: object, name: str | None = None) -> None:
        module = getattr(obj, "__module__", None) or ""
        name = name or obj.__qualname__  # type: ignore[attr-defined]
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(module, module)
        if name == "_reconstruct":
            module = "numpy.core.multiarray"
        self.write(pickle.GLOBAL + module.encode() + b"\n" + name.encode() + b"\n")
        self.memoize(obj)

    dispatch[type] = save_global


def py2_pickle(obj: object) -> bytes:
    """``obj`` pickled as Python 2 would have (protocol 2, byte strings as py2 ``str``)."""
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- CIFAR archive


@dataclass(frozen=True)
class CifarSource:
    """A generated archive and the arrays it encodes (in the file's CHW-planes row layout)."""

    archive: bytes
    train_rows: np.ndarray  # (200, 3072) uint8
    train_labels: np.ndarray  # (200,)
    test_rows: np.ndarray  # (50, 3072)
    test_labels: np.ndarray


def _batch(rows: np.ndarray, labels: np.ndarray, label: str) -> bytes:
    return py2_pickle({
        b"batch_label": label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": rows,
        b"filenames": [f"img_{i:05d}.png".encode() for i in range(len(labels))],
    })


def make_cifar(seed: int = 0) -> CifarSource:
    """A cifar-10-python.tar.gz with 5 train batches of 40 images and a test batch of 50."""
    rng = np.random.default_rng(seed)
    n_train = 5 * CIFAR_PER_BATCH
    train_rows = rng.integers(0, 256, size=(n_train, 3072), dtype=np.uint8)
    train_labels = rng.integers(0, 10, size=n_train)
    test_rows = rng.integers(0, 256, size=(CIFAR_TEST, 3072), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=CIFAR_TEST)
    members = {
        f"data_batch_{i + 1}": _batch(train_rows[i * CIFAR_PER_BATCH:(i + 1) * CIFAR_PER_BATCH],
                                      train_labels[i * CIFAR_PER_BATCH:(i + 1) * CIFAR_PER_BATCH],
                                      f"training batch {i + 1} of 5")
        for i in range(5)
    }
    members["test_batch"] = _batch(test_rows, test_labels, "testing batch 1 of 1")
    members["batches.meta"] = py2_pickle({
        b"label_names": [n.encode() for n in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                               "horse", "ship", "truck")],
        b"num_cases_per_batch": CIFAR_PER_BATCH, b"num_vis": 3072,
    })
    members["readme.html"] = b"<html>test</html>"
    return CifarSource(_tar_gz({f"cifar-10-batches-py/{k}": v for k, v in members.items()}),
                       train_rows, train_labels, test_rows, test_labels)


def _tar_gz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def cifar_spec(source: CifarSource) -> catalog.ImageSpec:
    """The real CIFAR-10 spec with the generated archive's md5 and sizes (injected through the Python API)."""
    import hashlib

    return replace(
        catalog.CIFAR10,
        archive=replace(catalog.CIFAR10.archive, checksum="md5:" + hashlib.md5(source.archive).hexdigest()),
        train_count=5 * CIFAR_PER_BATCH, test_count=CIFAR_TEST, val_size=CIFAR_VAL,
    )


@pytest.fixture(scope="session")
def cifar_source() -> CifarSource:
    return make_cifar()


@pytest.fixture
def cifar_server(server, cifar_source):
    """The server with the generated archive at ``/~kriz/cifar-10-python.tar.gz`` (mirror ``server.url + '/~kriz'``)."""
    server.files["/~kriz/cifar-10-python.tar.gz"] = cifar_source.archive
    return server


# ---------------------------------------------------------------------------------------------- text corpora


def _words(rng: np.random.Generator, n: int) -> list[str]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return ["".join(rng.choice(letters, size=int(rng.integers(2, 9)))) for _ in range(n)]


def make_articles(n: int, seed: int) -> list[str]:
    """WikiText-style raw articles: `` = Title = `` headings, `` = = Section = = `` subheadings, blank lines.

    Each article runs from its title line to the next title, as the real files (and so the splitter) have it.
    """
    rng = np.random.default_rng(seed)
    extra = ["the", "of", "and", "in", ",", ".", "@-@", "année", "naïve", "日本"]  # multi-byte UTF-8 too
    vocab = _words(np.random.default_rng(1234), 150) + extra
    articles = []
    for _ in range(n):
        def sentence() -> str:
            return " ".join(rng.choice(vocab, size=int(rng.integers(5, 15)))) + " ."

        title = " ".join(rng.choice(vocab, size=2))
        parts = [f" = {title} = \n", " \n", " " + " ".join(sentence() for _ in range(4)) + " \n", " \n"]
        for _ in range(int(rng.integers(1, 3))):
            parts += [f" = = {rng.choice(vocab)} = = \n", " \n", " " + " ".join(sentence() for _ in range(3)) + " \n",
                      " \n"]
        articles.append("".join(parts))
    return articles


@dataclass(frozen=True)
class WikiSource:
    archive: bytes
    splits: dict[str, list[str]]  # "train"/"valid"/"test" -> articles


@pytest.fixture(scope="session")
def wiki_source() -> WikiSource:
    splits = {"train": make_articles(30, 1), "valid": make_articles(4, 2), "test": make_articles(3, 3)}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for split, articles in splits.items():
            # like the real files: a blank line, then the articles back to back
            zf.writestr(f"wikitext-103-raw/wiki.{split}.raw", (" \n" + "".join(articles)).encode("utf-8"))
    return WikiSource(buf.getvalue(), splits)


def wiki_spec(source: WikiSource) -> catalog.TextSpec:
    """The real WikiText-103 spec with the generated zip's sha256 and size."""
    import hashlib

    remote = replace(catalog.WIKITEXT103.files[0], checksum="sha256:" + hashlib.sha256(source.archive).hexdigest(),
                     size=len(source.archive))
    return replace(catalog.WIKITEXT103, files=(remote,))


C4_TRAIN_SHARDS = 6
C4_DOCS_PER_SHARD = 12


def c4_shard(docs: list[str]) -> bytes:
    lines = [json.dumps({"text": d, "timestamp": "2019-04-25T12:00:00Z", "url": f"https://example.com/{i}"})
             for i, d in enumerate(docs)]
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"))


@pytest.fixture(scope="session")
def c4_docs() -> dict[str, list[list[str]]]:
    """Documents per shard: ``train`` (6 shards) and ``val`` (1 shard)."""
    def shard(seed: int) -> list[str]:
        return [a.replace(" = ", " ").strip() for a in make_articles(C4_DOCS_PER_SHARD, seed)]

    return {"train": [shard(100 + i) for i in range(C4_TRAIN_SHARDS)], "val": [shard(99)]}


def c4_path(split: str, i: int) -> str:
    name = f"c4-train.{i:05d}-of-01024.json.gz" if split == "train" else f"c4-validation.{i:05d}-of-00008.json.gz"
    return f"/hf/en/{name}"


@pytest.fixture
def c4_server(server, c4_docs):
    """The server with 6 train shards and the validation shard under ``/hf/en/``; mirror is ``server.url + '/hf'``."""
    for split, shards in c4_docs.items():
        for i, docs in enumerate(shards):
            server.files[c4_path(split, i)] = c4_shard(docs)
    return server


def write_text_corpus(folder, *, train_articles: int = 400, valid_articles: int = 40) -> dict[str, object]:
    """``train.txt`` and ``valid.txt`` of WikiText-style articles (multi-byte UTF-8 included) in ``folder``, as a
    user would bring them: about 250 KB and 25 KB with the defaults. Returns the two paths by split."""
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n, seed in (("train", train_articles, 11), ("valid", valid_articles, 12)):
        path = folder / f"{split}.txt"
        path.write_text("".join(make_articles(n, seed)), encoding="utf-8")
        out[split] = path
    return out
