"""Resumable, checksum-verified downloads with the standard library, and atomic file writes.

A download goes to ``<name>.part`` in the destination folder. An interrupted transfer keeps the ``.part`` file and
the next attempt (or the next run) continues it with an HTTP ``Range`` request. Only when the transfer is complete
and the checksum matches is the file renamed (``os.replace``) to its final name, next to a ``<name>.sha256`` sidecar
that lets a later run trust the cached file without downloading it again. A checksum mismatch deletes the ``.part``
file (resuming corrupt bytes is pointless), so nothing under a final name is ever unverified.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optbench import __version__
from optbench.data.catalog import RemoteFile
from optbench.errors import UsageError
from optbench.store.fsutil import atomic_file  # re-exported: cifar.py and text.py import it from here

MIRROR_ENV = "OPTBENCH_MIRROR"  # overrides the base URL of every source (same as --mirror)
CHUNK = 1 << 20  # bytes per read; also the hashing block size
_USER_AGENT = f"optbench/{__version__} (+python urllib)"
_HASHES = ("md5", "sha256")  # every file gets both: md5 for CIFAR's published sum, sha256 for the manifest


def _nothing(_: str) -> None:
    """Default logger: say nothing."""


@dataclass(frozen=True, kw_only=True)
class Downloaded:
    """A verified file in the download cache.

    Attributes:
      source: the canonical URL (from the catalog).
      fetched_from: the URL actually used (differs from ``source`` under a mirror).
      path: where the file lies.
      size: bytes.
      digests: ``{"md5": hex, "sha256": hex}`` of the file.
      published: the published checksum it was verified against (``"md5:<hex>"``), or None if none is published.
    """

    source: str
    fetched_from: str
    path: Path
    size: int
    digests: dict[str, str]
    published: str | None

    def record(self) -> dict[str, Any]:
        """The manifest entry: URLs, size, sha256, and whether a published checksum was verified."""
        return {
            "url": self.source,
            "fetched_from": self.fetched_from,
            "file": self.path.name,
            "bytes": self.size,
            "sha256": self.digests["sha256"],
            "published_checksum": self.published,
            "verified": self.published is not None,
        }


@dataclass(frozen=True, kw_only=True)
class DownloadPolicy:
    """How hard to try.

    Attributes:
      attempts: transfers tried per file before giving up; each retry resumes where the last one stopped.
      backoff_s: the sleep before retry k (k >= 1) is ``backoff_s * 2**(k-1)``, capped at 30 s.
      timeout_s: socket timeout per connection and per read.
    """

    attempts: int = 3
    backoff_s: float = 1.0
    timeout_s: float = 60.0


@dataclass(frozen=True, kw_only=True)
class Fetcher:
    """Downloads catalog files into one cache folder, applying a mirror and a retry policy.

    Attributes:
      cache_dir: folder for the downloaded files (``<data_dir>/downloads/<dataset>``).
      base_url: the prefix of every source URL that ``mirror`` replaces.
      mirror: replacement for ``base_url`` (scheme+host+path), or None for the canonical URLs.
      progress: draw a rich progress bar on stderr.
      policy: retries and timeouts.
      log: receives one-line status messages.
    """

    cache_dir: Path
    base_url: str
    mirror: str | None = None
    progress: bool = False
    policy: DownloadPolicy = field(default_factory=DownloadPolicy)
    log: Callable[[str], None] = field(default=_nothing)

    def fetch(self, remote: RemoteFile) -> Downloaded:
        """Return the verified local copy of ``remote``, downloading (or resuming) it if needed.

        Args:
          remote: the catalog entry (URL, published checksum, size).
        Returns:
          The cached file with its digests.
        Raises:
          UsageError: the server refuses, the transfer keeps breaking, or the checksum does not match.
        """
        url = mirror_url(remote.url, base_url=self.base_url, mirror=self.mirror)
        dest = self.cache_dir / remote.filename
        cached = _trusted_digests(dest, remote)
        if cached is None:
            self.log(f"downloading {url}")
            self._transfer_with_retries(url, dest)
            cached = _verify_part_and_commit(url, dest, remote)
        else:
            self.log(f"using the verified download {dest}")
        return Downloaded(
            source=remote.url, fetched_from=url, path=dest, size=dest.stat().st_size,
            digests=cached, published=remote.checksum,
        )

    def forget(self, downloaded: Downloaded) -> None:
        """Delete a cached file found unusable after download (e.g. corrupt gzip), so no later run trusts it."""
        downloaded.path.unlink(missing_ok=True)
        _sidecar(downloaded.path).unlink(missing_ok=True)

    def _transfer_with_retries(self, url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = _part(dest)
        reason, attempts = "", max(1, self.policy.attempts)
        for attempt in range(attempts):
            if attempt:
                time.sleep(min(30.0, self.policy.backoff_s * 2 ** (attempt - 1)))
                kept = _size(part)
                self.log(f"retrying ({reason})" + (f"; resuming at byte {kept}" if kept else ""))
            try:
                _transfer(url, part, timeout_s=self.policy.timeout_s, progress=self.progress)
                return
            except _Interrupted as err:
                reason = str(err)
        kept = _size(part)
        hint = (f"{kept} bytes are kept in {part}: run the same command again to resume" if kept else
                "check the network or the mirror and run again")
        raise UsageError(f"download of {url} failed after {attempts} attempt(s) ({reason}); {hint}")


class _Interrupted(Exception):
    """A transfer that stopped early but may be resumed (network error, short read, server error)."""


def resolve_mirror(mirror: str | None) -> str | None:
    """The mirror to use: ``mirror`` if given, else ``$OPTBENCH_MIRROR``, else None.

    Raises:
      UsageError: the mirror is not an http(s):// or file:// URL.
    """
    mirror = mirror or os.environ.get(MIRROR_ENV) or None
    if mirror is not None and urllib.parse.urlsplit(mirror).scheme not in ("http", "https", "file"):
        raise UsageError(f"--mirror / ${MIRROR_ENV} must be an http://, https:// or file:// URL, got {mirror!r}")
    return mirror


def mirror_url(url: str, *, base_url: str, mirror: str | None) -> str:
    """Replace the ``base_url`` prefix of ``url`` by ``mirror``.

    Example: ``https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz`` with base ``https://www.cs.toronto.edu/~kriz/``
    and mirror ``http://127.0.0.1:8000/m`` becomes ``http://127.0.0.1:8000/m/cifar-10-python.tar.gz``.
    """
    if not mirror:
        return url
    if not url.startswith(base_url):
        raise ValueError(f"catalog error: {url} does not start with its base URL {base_url}")
    return mirror.rstrip("/") + "/" + url[len(base_url):]


def hash_file(path: Path) -> dict[str, str]:
    """md5 and sha256 of a file, in one pass of 1 MiB blocks."""
    hashes = {name: hashlib.new(name) for name in _HASHES}
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            for h in hashes.values():
                h.update(block)
    return {name: h.hexdigest() for name, h in hashes.items()}


def parse_checksum(checksum: str) -> tuple[str, str]:
    """Split ``"md5:<hex>"`` into ``("md5", "<hex>")``; the algorithm must be md5 or sha256."""
    algo, _, hexdigest = checksum.partition(":")
    if algo not in _HASHES or not hexdigest:
        raise ValueError(f"checksum must look like 'md5:<hex>' or 'sha256:<hex>', got {checksum!r}")
    return algo, hexdigest.lower()



def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def _part(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + ".sha256")


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _trusted_digests(dest: Path, remote: RemoteFile) -> dict[str, str] | None:
    """Digests of an already-cached ``dest`` if it can be trusted, else None (and the untrusted file is removed).

    Trusted means: it matches the published checksum, or (with none published) the sha256 recorded in its sidecar
    when it was committed. A file that fails is deleted so it cannot be mistaken for a good one later.
    """
    if not dest.is_file():
        return None
    digests = hash_file(dest)
    sidecar = _sidecar(dest)
    recorded = sidecar.read_text().split()[0] if sidecar.is_file() and sidecar.read_text().strip() else None
    if remote.checksum is not None:
        algo, want = parse_checksum(remote.checksum)
        ok = digests[algo] == want
    else:
        ok = recorded == digests["sha256"]
    if remote.size is not None and dest.stat().st_size != remote.size:
        ok = False
    if not ok:
        dest.unlink()
        sidecar.unlink(missing_ok=True)
        return None
    if recorded != digests["sha256"]:
        sidecar.write_text(f"{digests['sha256']}  {dest.name}\n")
    return digests


def _verify_part_and_commit(url: str, dest: Path, remote: RemoteFile) -> dict[str, str]:
    """Check the finished ``.part`` file against the published size/checksum, then rename it to ``dest``."""
    part = _part(dest)
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        part.unlink()
        raise UsageError(
            f"download of {url} has {size} bytes, expected {remote.size}; the file was deleted: check the URL or "
            f"mirror and run again"
        )
    digests = hash_file(part)
    if remote.checksum is not None:
        algo, want = parse_checksum(remote.checksum)
        if digests[algo] != want:
            part.unlink()
            raise UsageError(
                f"checksum mismatch for {url}: expected {algo} {want}, got {digests[algo]}; the corrupt download "
                f"was deleted: check the URL or mirror and run again"
            )
    # Sidecar first: if we die between the two writes, a sidecar without its file is harmless.
    _sidecar(dest).write_text(f"{digests['sha256']}  {dest.name}\n")
    os.replace(part, dest)
    return digests


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` (or ``bytes */TOTAL``) into ``(START, TOTAL)``; unknown parts are None."""
    if not header or not header.startswith("bytes "):
        return None, None
    span, _, total = header[6:].partition("/")
    start = int(span.split("-")[0]) if span != "*" and span.split("-")[0].isdigit() else None
    return start, int(total) if total.isdigit() else None


def _transfer(url: str, part: Path, *, timeout_s: float, progress: bool) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size with a Range request.

    Raises:
      _Interrupted: the transfer broke off but may be resumed.
      UsageError: the server refused the request for good (4xx) or the host is unknown.
    """
    offset = _size(part)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 (scheme checked by resolve_mirror)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            _, total = _content_range(err.headers.get("Content-Range"))
            if total == offset:
                return  # the .part file is already complete
            part.unlink()
            raise _Interrupted("server refused to resume; starting over") from None
        if err.code >= 500 or err.code in (408, 429):
            raise _Interrupted(f"HTTP {err.code} {err.reason}") from None
        raise UsageError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _Interrupted(f"cannot reach {urllib.parse.urlsplit(url).netloc or url}: {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise _Interrupted(f"connection failed: {err}") from None
    with response:
        total = _expected_total(response, offset)
        if getattr(response, "status", 200) != 206:
            offset = 0  # the server ignored Range (or there was none): start from scratch
        _copy_body(response, part, offset=offset, total=total, progress=progress)
    got = _size(part)
    if total is not None and got != total:
        raise _Interrupted(f"connection closed after {got} of {total} bytes")


def _expected_total(response: Any, offset: int) -> int | None:
    """Full file size implied by the response headers, or None when the server does not say."""
    if getattr(response, "status", 200) == 206:
        start, total = _content_range(response.headers.get("Content-Range"))
        if start != offset:
            raise _Interrupted(f"server resumed at byte {start}, asked for {offset}")
        return total
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def _copy_body(response: Any, part: Path, *, offset: int, total: int | None, progress: bool) -> None:
    """Append the response body to ``part`` (or overwrite it when ``offset`` is 0), drawing progress if asked."""
    with open(part, "ab" if offset else "wb") as f, _progress_bar(part.name[:-5], total, offset, progress) as advance:
        while True:
            try:
                chunk = response.read(CHUNK)
            except (OSError, http.client.HTTPException) as err:  # reset, timeout, IncompleteRead
                raise _Interrupted(f"connection lost: {err}") from None
            if not chunk:
                break
            f.write(chunk)
            advance(len(chunk))
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _progress_bar(label: str, total: int | None, done: int, enabled: bool) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(nbytes)``; a rich bar on stderr when enabled, a no-op otherwise."""
    if not enabled:
        yield lambda _n: None
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from optbench.console import console

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)
