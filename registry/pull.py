"""Download a release, verify it, and only then write it into its target directory.

Device side: needs only the standard library and :mod:`cryptography`. Two sources:

* :class:`LocalSource` reads a store directory (local disk, NFS, USB stick);
* :class:`OciSource` speaks the OCI distribution API over HTTP(S) with ``urllib``
  (``oci://host[:port]/repo``; plain HTTP for loopback hosts and ``oci+http://``),
  including the anonymous bearer-token handshake used by public registries.

Every file is streamed with a length cap (a server that sends more than the signed
size is cut off), a read timeout, a time budget (120 s plus 20 kB/s of its size, so a
server cannot drip bytes forever), and resumption from a ``.part`` file (HTTP
``Range``). Nothing reaches the target directory before the signature, sizes and
sha256 of every file have been checked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Callable, Dict, Optional, Protocol, Tuple

from registry.errors import DownloadError, NotFound, StoreError, VerificationError
from registry.files import fsync_dir, sha256_file
from registry.manifest import (
    ENVELOPE_NAME,
    MAX_ENVELOPE_BYTES,
    FileEntry,
    Manifest,
    check_filename,
    check_name,
    check_version,
)
from registry.signing import TrustedKeys, verify_envelope

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MIN_SECONDS = 120.0  # every file gets this long, plus its size at MIN_RATE bytes/s
MIN_RATE = 20_000.0
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
Progress = Callable[[int], None]


class Source(Protocol):
    """Where a release's envelope and files are read from."""

    url: str

    def fetch_envelope(self, name: str, version: str) -> bytes:
        """The raw ``release.json`` of ``name:version`` (at most MAX_ENVELOPE_BYTES)."""

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        """A stream of ``entry`` starting at the returned offset (``offset`` or 0)."""


class LocalSource:
    """Reads releases from a local store directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _dir(self, name: str, version: str) -> Path:
        if not self.root.is_dir():
            raise StoreError(f"store directory {self.root} does not exist")
        return self.root / check_name(name) / check_version(version)

    def fetch_envelope(self, name: str, version: str) -> bytes:
        path = self._dir(name, version) / ENVELOPE_NAME
        try:
            with path.open("rb") as fh:
                return _read_capped(fh, MAX_ENVELOPE_BYTES, "release.json")
        except FileNotFoundError as exc:
            raise NotFound(f"{name}:{version} is not in {self.root}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        path = self._dir(name, version) / check_filename(entry.path)
        try:
            fh = path.open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"{entry.path} of {name}:{version} is missing from {self.root}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror or exc}") from exc
        fh.seek(offset)
        return fh, offset


def _read_capped(fh: IO[bytes], cap: int, what: str) -> bytes:
    data = fh.read(cap + 1)
    if len(data) > cap:
        raise DownloadError(f"{what} is larger than {cap} bytes: refusing it")
    return data


def parse_oci_url(url: str) -> Tuple[str, str]:
    """``oci://host[:port]/repo`` -> (``http[s]://host[:port]``, ``repo``).

    Loopback hosts and ``oci+http://`` use plain HTTP, everything else HTTPS.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("oci", "oci+http") or not parsed.netloc or not parsed.path.strip("/"):
        raise StoreError(f"invalid OCI store URL {url!r}: expected oci://host[:port]/repository")
    host = parsed.hostname or ""
    plain = parsed.scheme == "oci+http" or host in ("localhost", "::1") or host.startswith("127.")
    return f"{'http' if plain else 'https'}://{parsed.netloc}", parsed.path.strip("/")


class OciSource:
    """Reads releases from an OCI registry: ``<repo>/<name>:<version>`` artifacts."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.base, self.repo = parse_oci_url(url)
        self.timeout = timeout
        self._tokens: Dict[str, str] = {}

    def _request(self, path: str, headers: Dict[str, str], repo: str) -> IO[bytes]:
        url = f"{self.base}/v2/{repo}/{path}"
        for attempt in range(2):
            hdrs = dict(headers)
            if repo in self._tokens:
                hdrs["Authorization"] = f"Bearer {self._tokens[repo]}"
            req = urllib.request.Request(url, headers=hdrs)  # noqa: S310 (scheme checked in parse_oci_url)
            try:
                resp: IO[bytes] = urllib.request.urlopen(req, timeout=self.timeout)  # noqa: S310
                return resp
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 0 and self._authenticate(exc, repo):
                    continue
                if exc.code == 404:
                    raise NotFound(f"{repo}/{path} not found on {self.base}") from exc
                raise DownloadError(f"{self.base} answered HTTP {exc.code} for {repo}/{path}") from exc
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise DownloadError(f"cannot reach the registry {self.base}: {reason}") from exc
        raise DownloadError(f"{self.base} refused access to {repo}")

    def _authenticate(self, exc: urllib.error.HTTPError, repo: str) -> bool:
        # Anonymous bearer token (public repositories on Docker Hub, GHCR, Harbor...).
        challenge = exc.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        if "realm" not in params or not params["realm"].startswith(("https://", "http://")):
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{repo}:pull")
        token_url = f"{params['realm']}?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(token_url, timeout=self.timeout) as resp:  # noqa: S310
                body = json.loads(_read_capped(resp, 1 << 16, "token"))
        except (OSError, ValueError):
            return False
        token = body.get("token") or body.get("access_token")
        if not token:
            return False
        self._tokens[repo] = str(token)
        return True

    def fetch_envelope(self, name: str, version: str) -> bytes:
        repo = f"{self.repo}/{check_name(name)}"
        with self._request(f"manifests/{check_version(version)}", {"Accept": OCI_MANIFEST}, repo) as resp:
            try:
                manifest = json.loads(_read_capped(resp, 1 << 20, "OCI manifest"))
            except (ValueError, socket.timeout) as exc:
                raise DownloadError(f"bad OCI manifest for {name}:{version}: {exc}") from exc
        layers = manifest.get("layers", []) if isinstance(manifest, dict) else []
        digest = next((layer.get("digest") for layer in layers if isinstance(layer, dict)
                       and layer.get("annotations", {}).get(TITLE) == ENVELOPE_NAME), None)
        if not isinstance(digest, str) or not digest.startswith("sha256:"):
            raise NotFound(f"{name}:{version} in {self.url} is not a release (no {ENVELOPE_NAME} layer)")
        with self._request(f"blobs/{digest}", {}, repo) as resp:
            raw = _read_capped(resp, MAX_ENVELOPE_BYTES, ENVELOPE_NAME)
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise VerificationError(f"{ENVELOPE_NAME} of {name}:{version} does not match its OCI digest")
        return raw

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._request(f"blobs/sha256:{entry.sha256}", headers, f"{self.repo}/{check_name(name)}")
        status = getattr(resp, "status", 200)
        return resp, (offset if status == 206 else 0)


def open_source(url: str, timeout: float = 30.0) -> LocalSource | OciSource:
    """The download source for a store URL (a path or ``oci://...``)."""
    if url.startswith(("oci://", "oci+http://")):
        return OciSource(url, timeout=timeout)
    return LocalSource(Path(url.removeprefix("file://")))


@dataclass
class PullResult:
    """What :func:`pull_release` fetched: the manifest and the bytes actually transferred."""

    manifest: Manifest
    bytes_downloaded: int


def check_manifest(manifest: Manifest, name: str, version: str, runtime_version: Optional[int] = None,
                   now: Optional[datetime] = None) -> None:
    """Refuse a manifest for another release, an expired one, or one the runtime cannot run."""
    if (manifest.name, manifest.version) != (name, version):
        raise VerificationError(f"asked for {name}:{version} but the store served the signed manifest of "
                                f"{manifest.ref}")
    if manifest.expired(now or datetime.now(timezone.utc)):
        raise VerificationError(f"{manifest.ref} expired at {manifest.expires_at}")
    if runtime_version is not None and manifest.min_runtime > runtime_version:
        raise VerificationError(f"{manifest.ref} needs Edge TPU runtime {manifest.min_runtime}, this device "
                                f"has {runtime_version}")


def _download_file(source: Source, name: str, version: str, entry: FileEntry, part: Path,
                   progress: Optional[Progress], attempts: int) -> int:
    """Fill ``part`` with ``entry``; resume what is there. Returns bytes transferred."""
    transferred = 0
    # a server that drips bytes just fast enough to dodge the read timeout is cut off too
    budget = MIN_SECONDS + entry.size / MIN_RATE
    for attempt in range(attempts):
        deadline = time.monotonic() + budget
        have = part.stat().st_size if part.exists() else 0
        if have > entry.size:
            part.unlink()
            have = 0
        if have == entry.size:
            break
        stream, start = source.open(name, version, entry, have)
        try:
            with stream, part.open("r+b" if part.exists() else "wb") as out:
                out.seek(start)
                out.truncate()
                pos = start
                read = getattr(stream, "read1", stream.read)  # returns what has arrived, not a full chunk
                while True:
                    chunk = read(CHUNK)
                    if not chunk:
                        break
                    if pos + len(chunk) > entry.size:
                        raise DownloadError(f"{entry.path}: the server sent more than the signed size of "
                                            f"{entry.size} bytes")
                    if time.monotonic() > deadline:
                        raise DownloadError(f"{entry.path}: the server is too slow ({pos} of {entry.size} "
                                            f"bytes after {budget:.0f} s)")
                    out.write(chunk)
                    pos += len(chunk)
                    transferred += len(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if pos < entry.size:
                raise DownloadError(f"{entry.path}: stream ended at {pos} of {entry.size} bytes")
            break
        except DownloadError as exc:
            if "more than the signed size" in str(exc) or attempt == attempts - 1:
                if "more than" in str(exc):
                    part.unlink(missing_ok=True)
                raise
            log.info("download of %s interrupted (%s); resuming", entry.path, exc)
        except (OSError, socket.timeout) as exc:
            if attempt == attempts - 1:
                raise DownloadError(f"{entry.path}: download failed: {exc}") from exc
            log.info("download of %s interrupted (%s); resuming", entry.path, exc)
    return transferred


def pull_release(source: Source, name: str, version: str, trusted: TrustedKeys, target: Path,
                 work_dir: Path, *, runtime_version: Optional[int] = None,
                 on_manifest: Optional[Callable[[Manifest], None]] = None,
                 progress: Optional[Progress] = None, attempts: int = 3) -> PullResult:
    """Download ``name:version`` from ``source`` and install it as directory ``target``.

    Order: fetch and verify the signed envelope (signature, name/version, expiry,
    runtime) -> call ``on_manifest`` (a last chance to refuse, e.g. an older version)
    -> stream every file into ``work_dir/<sha256>.part`` (capped at its signed size,
    resumed after an interruption) -> check size and sha256 -> assemble a staging
    directory next to ``target``, fsync, and rename it to ``target``. ``target`` must
    not exist yet. Raises :class:`VerificationError`, :class:`DownloadError`,
    :class:`~registry.errors.ManifestError` or :class:`StoreError`; on any error
    ``target`` is left untouched.
    """
    raw = source.fetch_envelope(check_name(name), check_version(version))
    manifest = verify_envelope(raw, trusted)
    check_manifest(manifest, name, version, runtime_version)
    if on_manifest:
        on_manifest(manifest)
    work_dir.mkdir(parents=True, exist_ok=True)
    transferred = 0
    parts: Dict[str, Path] = {}
    for entry in manifest.files.values():
        part = work_dir / f"{entry.sha256}.part"
        transferred += _download_file(source, name, version, entry, part, progress, attempts)
        if part.stat().st_size != entry.size:
            part.unlink(missing_ok=True)
            raise VerificationError(f"{entry.path}: size differs from the signed manifest")
        if sha256_file(part) != entry.sha256:
            part.unlink(missing_ok=True)
            raise VerificationError(f"{entry.path}: sha256 differs from the signed manifest")
        parts[entry.path] = part
    install_verified(raw, parts, target)
    return PullResult(manifest, transferred)


def install_verified(envelope: bytes, parts: Dict[str, Path], target: Path) -> None:
    """Move verified files and their envelope into ``target`` with one directory rename."""
    if target.exists():
        raise StoreError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    try:
        for fname, part in parts.items():
            dest = staging / check_filename(fname)
            try:
                os.replace(part, dest)
            except OSError:
                shutil.copyfile(part, dest)
        (staging / ENVELOPE_NAME).write_bytes(envelope)
        for f in staging.iterdir():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(staging)
        os.rename(staging, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise StoreError(f"cannot install into {target}: {exc.strerror or exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


__all__ = ["LocalSource", "OciSource", "PullResult", "open_source", "pull_release", "check_manifest",
           "install_verified"]
