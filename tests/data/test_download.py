"""Downloads: resume with Range, checksum verification, nothing untrusted under a final name, mirrors."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from optbench.data.catalog import RemoteFile
from optbench.data.download import DownloadPolicy, Fetcher, mirror_url, resolve_mirror
from optbench.errors import UsageError

from .conftest import FAST

BASE = "https://files.example.org/pub/"
PAYLOAD = bytes(range(256)) * 4000  # 1,024,000 bytes: several read chunks
PATH = "/mirror/sub/blob.bin"


def _remote(checksum: str | None = "auto") -> RemoteFile:
    if checksum == "auto":
        checksum = "sha256:" + hashlib.sha256(PAYLOAD).hexdigest()
    return RemoteFile(url=BASE + "sub/blob.bin", checksum=checksum)


def _fetcher(server, tmp_path, policy: DownloadPolicy = FAST) -> Fetcher:
    return Fetcher(cache_dir=tmp_path / "cache", base_url=BASE, mirror=server.url + "/mirror", policy=policy)


def test_download_verifies_and_reuses_the_cached_file(server, tmp_path):
    server.files[PATH] = PAYLOAD
    fetcher = _fetcher(server, tmp_path)
    got = fetcher.fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD
    assert got.digests["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert got.digests["md5"] == hashlib.md5(PAYLOAD).hexdigest()
    assert got.fetched_from == server.url + "/mirror/sub/blob.bin" and got.source == BASE + "sub/blob.bin"
    assert got.record()["verified"] is True
    assert not list(got.path.parent.glob("*.part"))
    again = fetcher.fetch(_remote())
    assert again.path == got.path
    assert len(server.requests) == 1  # the verified cache answered


def test_checksum_mismatch_is_an_error_and_leaves_nothing(server, tmp_path):
    server.files[PATH] = PAYLOAD[:-1] + b"X"  # one corrupt byte
    fetcher = _fetcher(server, tmp_path)
    with pytest.raises(UsageError, match="checksum mismatch.*expected sha256"):
        fetcher.fetch(_remote())
    assert list((tmp_path / "cache").iterdir()) == []  # no final file, no .part, no sidecar


def test_published_size_mismatch_is_an_error(server, tmp_path):
    server.files[PATH] = PAYLOAD
    with pytest.raises(UsageError, match="has 1024000 bytes, expected 5;"):
        _fetcher(server, tmp_path).fetch(replace(_remote(None), size=5))
    assert list((tmp_path / "cache").iterdir()) == []


def test_truncated_download_errors_then_the_next_run_resumes(server, tmp_path):
    server.files[PATH] = PAYLOAD
    cut = 300_000
    server.cut[PATH] = (cut, 10)  # every response breaks off after 300,000 bytes
    fetcher = _fetcher(server, tmp_path, replace(FAST, attempts=2))
    with pytest.raises(UsageError, match=r"failed after 2 attempt\(s\) .*closed after 600000 of 1024000 bytes.*resume"):
        fetcher.fetch(_remote())
    cache = tmp_path / "cache"
    assert not (cache / "blob.bin").exists()  # never under the final name
    assert (cache / "blob.bin.part").stat().st_size == 2 * cut
    assert server.requested(PATH) == [None, f"bytes={cut}-"]  # the retry asked for the rest

    server.cut.clear()  # the network is back: a new run continues from the kept bytes
    got = fetcher.fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD
    assert server.requested(PATH)[-1] == f"bytes={2 * cut}-"
    assert not (cache / "blob.bin.part").exists()


def test_a_dropped_connection_is_resumed_within_one_run(server, tmp_path):
    server.files[PATH] = PAYLOAD
    server.cut[PATH] = (123_457, 1)
    got = _fetcher(server, tmp_path, replace(FAST, attempts=3)).fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD
    assert server.requested(PATH) == [None, "bytes=123457-"]


def test_resume_survives_a_redirect(server, tmp_path):
    server.files["/cdn/blob"] = PAYLOAD
    server.redirects[PATH] = "/cdn/blob"
    server.cut["/cdn/blob"] = (200_000, 1)
    got = _fetcher(server, tmp_path, replace(FAST, attempts=2)).fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD
    assert server.requested("/cdn/blob") == [None, "bytes=200000-"]  # the Range header followed the redirect


def test_a_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.files[PATH] = PAYLOAD
    server.ranges = False
    server.cut[PATH] = (500_000, 1)
    got = _fetcher(server, tmp_path, replace(FAST, attempts=2)).fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD  # the 200 answer to the Range request replaced the partial bytes


def test_complete_part_file_is_committed_after_416(server, tmp_path):
    server.files[PATH] = PAYLOAD
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "blob.bin.part").write_bytes(PAYLOAD)  # a run died after the last byte, before rename
    got = _fetcher(server, tmp_path).fetch(_remote())
    assert got.path.read_bytes() == PAYLOAD
    assert server.requested(PATH) == [f"bytes={len(PAYLOAD)}-"]


def test_http_errors_are_usage_errors(server, tmp_path):
    with pytest.raises(UsageError, match="HTTP 404"):
        _fetcher(server, tmp_path).fetch(_remote())


def test_unreachable_host_is_a_usage_error(tmp_path):
    fetcher = Fetcher(cache_dir=tmp_path, base_url=BASE, mirror="http://127.0.0.1:9", policy=FAST)
    with pytest.raises(UsageError, match="cannot reach 127.0.0.1:9.*check the network or the mirror"):
        fetcher.fetch(_remote())


def test_unverifiable_cached_file_is_downloaded_again(server, tmp_path):
    server.files[PATH] = PAYLOAD
    fetcher = _fetcher(server, tmp_path)
    got = fetcher.fetch(_remote(None))  # no published checksum: trust rests on the recorded sha256
    assert got.record()["verified"] is False and got.record()["sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    got.path.write_bytes(b"tampered")
    again = fetcher.fetch(_remote(None))
    assert again.path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_mirror_replaces_the_base_url(monkeypatch):
    url = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    assert mirror_url(url, base_url="https://www.cs.toronto.edu/~kriz/", mirror=None) == url
    assert mirror_url(url, base_url="https://www.cs.toronto.edu/~kriz/", mirror="http://h:1/m/") == \
        "http://h:1/m/cifar-10-python.tar.gz"
    monkeypatch.setenv("OPTBENCH_MIRROR", "http://env:2/x")
    assert resolve_mirror(None) == "http://env:2/x"
    assert resolve_mirror("http://flag:3") == "http://flag:3"
    with pytest.raises(UsageError, match="must be an http"):
        resolve_mirror("ftp://nope")
