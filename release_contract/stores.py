"""The read side of the two stores, for devices: a local store directory and an OCI registry.

* :class:`LocalSource` reads a store directory (local disk, NFS, USB stick);
* :class:`OciSource` speaks the OCI distribution API over HTTP(S) with ``urllib``
  (``oci://host[:port]/repo``; plain HTTP for loopback hosts and ``oci+http://``),
  answering Basic and Bearer-token login challenges with :mod:`release_contract.oci_client`.

:func:`store_kind` is the one place a store URL is told apart; the operator's stores
(``registry.store``) use it too.
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.parse
from pathlib import Path
from typing import IO, Any, Dict, Optional, Protocol, Tuple, Union, cast

from release_contract.credentials import Login
from release_contract.deadlines import DeadlineReader, Readable, call_with_deadline, read_capped
from release_contract.errors import DownloadError, NotFound, StoreError, VerificationError
from release_contract.files import LinkRefused, open_beneath
from release_contract.manifest import (
    ENVELOPE_NAME,
    MAX_ENVELOPE_BYTES,
    FileEntry,
    check_filename,
    check_name,
    check_version,
)
from release_contract.oci_client import RegistryClient, expect, is_loopback
from release_contract.untrusted_json import loads_untrusted

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"
_DIGEST_RE = re.compile(r"sha256:[0-9a-f]{64}")


class Source(Protocol):
    """Where a release's envelope and files are read from."""

    url: str

    def fetch_envelope(self, name: str, version: str) -> bytes:
        """The raw ``release.json`` of ``name:version`` (at most MAX_ENVELOPE_BYTES)."""

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        """A stream of ``entry`` starting at the returned offset (``offset`` or 0)."""


class LocalSource:
    """Reads releases from a local store directory.

    Links are never followed below the store's root (see :func:`open_beneath`): a
    symbolic link planted in the store is refused, not read. Only regular files are read, and
    every open and read waits at most ``timeout`` seconds, so a mount that stops answering
    cannot hang the reader.
    """

    def __init__(self, root: Path, timeout: float = 30.0) -> None:
        self.root = Path(root)
        self.url = str(self.root)
        self.timeout = timeout

    def _open(self, name: str, version: str, filename: str) -> IO[bytes]:
        path = self.root / check_name(name) / check_version(version) / filename
        parts = (check_name(name), check_version(version), filename)

        def open_file() -> IO[bytes]:
            if not self.root.is_dir():
                raise StoreError(f"store directory {self.root} does not exist")
            return open_beneath(self.root, *parts)

        try:
            raw = call_with_deadline(open_file, self.timeout, f"the store {self.root}")
        except FileNotFoundError as exc:
            raise NotFound(f"{filename} of {name}:{version} is missing from {self.root}") from exc
        except LinkRefused as exc:
            raise StoreError(f"refusing {name}:{version} in {self.root}: {exc}") from exc
        except (TimeoutError, OSError) as exc:
            raise StoreError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from exc
        return raw

    def fetch_envelope(self, name: str, version: str) -> bytes:
        try:
            raw = self._open(name, version, ENVELOPE_NAME)
        except NotFound as exc:
            raise NotFound(f"{name}:{version} is not in {self.root}") from exc
        with DeadlineReader(raw, self.timeout, f"{self.root}: {ENVELOPE_NAME}") as fh:
            return _read_capped(fh, MAX_ENVELOPE_BYTES, ENVELOPE_NAME, self.timeout)

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        raw = self._open(name, version, check_filename(entry.path))
        raw.seek(offset)
        return DeadlineReader(raw, self.timeout, f"{self.root}: {entry.path}"), offset  # type: ignore[return-value]


def _read_capped(fh: Readable, cap: int, what: str, seconds: float = 60.0) -> bytes:
    """All of a small document: at most ``cap`` bytes within ``seconds``; DownloadError otherwise."""
    try:
        return read_capped(fh, cap, seconds, what)
    except (TimeoutError, ValueError) as exc:
        raise DownloadError(str(exc)) from exc
    except OSError as exc:
        raise DownloadError(f"{what}: {exc.strerror or exc}") from exc


def parse_oci_url(url: str) -> Tuple[str, str]:
    """``oci://host[:port]/repo`` -> (``http[s]://host[:port]``, ``repo``).

    Loopback hosts and ``oci+http://`` use plain HTTP, everything else HTTPS.
    """
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("oci", "oci+http") or not parsed.netloc or not parsed.path.strip("/"):
        raise StoreError(f"invalid OCI store URL {url!r}: expected oci://host[:port]/repository")
    host = parsed.hostname or ""
    plain = parsed.scheme == "oci+http" or is_loopback(host)
    return f"{'http' if plain else 'https'}://{parsed.netloc}", parsed.path.strip("/")


class OciSource:
    """Reads releases from an OCI registry: ``<repo>/<name>:<version>`` artifacts.

    ``login`` gives read-only credentials (see :mod:`release_contract.credentials`); Basic and
    Bearer-token challenges are answered by :class:`~release_contract.oci_client.RegistryClient`.
    """

    def __init__(self, url: str, timeout: float = 30.0, login: Optional[Login] = None) -> None:
        self.url = url
        self.base, self.repo = parse_oci_url(url)
        self.timeout = timeout
        self._client = RegistryClient(self.base, login, timeout=timeout)

    def _request(self, path: str, headers: Dict[str, str], repo: str) -> IO[bytes]:
        resp = self._client.request("GET", f"/v2/{repo}/{path}", f"repository:{repo}:pull", headers)
        return cast(IO[bytes], expect(resp, (200, 206), f"{repo}/{path} on {self.base}"))

    def fetch_envelope(self, name: str, version: str) -> bytes:
        repo = f"{self.repo}/{check_name(name)}"
        with self._request(f"manifests/{check_version(version)}", {"Accept": OCI_MANIFEST}, repo) as resp:
            raw_manifest = _read_capped(resp, 1 << 20, "OCI manifest", self.timeout)
        try:
            manifest = loads_untrusted(raw_manifest, f"the OCI manifest of {name}:{version}", 1 << 20)
        except ValueError as exc:
            raise DownloadError(str(exc)) from exc
        digest = envelope_digest(manifest)
        if digest is None:
            raise NotFound(f"{name}:{version} in {self.url} is not a release (no {ENVELOPE_NAME} layer)")
        with self._request(f"blobs/{digest}", {}, repo) as resp:
            raw = _read_capped(resp, MAX_ENVELOPE_BYTES, ENVELOPE_NAME, self.timeout)
        if "sha256:" + hashlib.sha256(raw).hexdigest() != digest:
            raise VerificationError(f"{ENVELOPE_NAME} of {name}:{version} does not match its OCI digest")
        return raw

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        resp = self._request(f"blobs/sha256:{entry.sha256}", headers, f"{self.repo}/{check_name(name)}")
        status = getattr(resp, "status", 200)
        return resp, (offset if status == 206 else 0)


def envelope_digest(manifest: Any) -> Optional[str]:
    """The ``sha256:<hex>`` digest of the layer titled ``release.json`` in an OCI manifest, or None.

    Anything else than ``{"layers": [{"digest": ..., "annotations": {title: ...}}]}`` counts as no such layer.
    """
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        if isinstance(annotations, dict) and annotations.get(TITLE) == ENVELOPE_NAME:
            digest = layer.get("digest")
            return digest if isinstance(digest, str) and _DIGEST_RE.fullmatch(digest) else None
    return None


def store_kind(url: str) -> Tuple[str, str]:
    """Which store a URL names: (``"oci"``, url) for ``oci://`` / ``oci+http://``, else
    (``"local"``, path) for a directory (``file://`` accepted). The one place store URLs are told apart."""
    if url.startswith(("oci://", "oci+http://")):
        return "oci", url
    return "local", url.removeprefix("file://")


def open_source(url: str, timeout: float = 30.0, login: Optional[Login] = None) -> Union[LocalSource, OciSource]:
    """The download source for a store URL (a path or ``oci://...``); ``login`` is used for OCI registries."""
    kind, location = store_kind(url)
    if kind == "oci":
        return OciSource(location, timeout=timeout, login=login)
    return LocalSource(Path(location), timeout=timeout)
