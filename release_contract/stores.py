"""The read side of the two stores, for devices: a local store directory and an OCI registry.

* :class:`LocalSource` reads a store directory (local disk, NFS, USB stick);
* :class:`OciSource` speaks the OCI distribution API over HTTP(S) with ``urllib``
  (``oci://host[:port]/repo``; plain HTTP for loopback hosts and ``oci+http://``),
  including the anonymous bearer-token handshake used by public registries.

:func:`store_kind` is the one place a store URL is told apart; the operator's stores
(``registry.store``) use it too.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Dict, Protocol, Tuple, Union

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

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
TITLE = "org.opencontainers.image.title"


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
    symbolic link planted in the store is refused, not read.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root)

    def _open(self, name: str, version: str, filename: str) -> IO[bytes]:
        if not self.root.is_dir():
            raise StoreError(f"store directory {self.root} does not exist")
        parts = (check_name(name), check_version(version), filename)
        try:
            return open_beneath(self.root, *parts)
        except FileNotFoundError as exc:
            raise NotFound(f"{filename} of {name}:{version} is missing from {self.root}") from exc
        except LinkRefused as exc:
            raise StoreError(f"refusing {name}:{version} in {self.root}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {'/'.join(parts)} in {self.root}: {exc.strerror or exc}") from exc

    def fetch_envelope(self, name: str, version: str) -> bytes:
        try:
            fh = self._open(name, version, ENVELOPE_NAME)
        except NotFound as exc:
            raise NotFound(f"{name}:{version} is not in {self.root}") from exc
        with fh:
            return _read_capped(fh, MAX_ENVELOPE_BYTES, "release.json")

    def open(self, name: str, version: str, entry: FileEntry, offset: int) -> Tuple[IO[bytes], int]:
        fh = self._open(name, version, check_filename(entry.path))
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
            except (TimeoutError, ValueError) as exc:
                raise DownloadError(f"bad OCI manifest for {name}:{version}: {exc}") from exc
        layers = manifest.get("layers", []) if isinstance(manifest, dict) else []
        digest = next(
            (
                layer.get("digest")
                for layer in layers
                if isinstance(layer, dict) and layer.get("annotations", {}).get(TITLE) == ENVELOPE_NAME
            ),
            None,
        )
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


def store_kind(url: str) -> Tuple[str, str]:
    """Which store a URL names: (``"oci"``, url) for ``oci://`` / ``oci+http://``, else
    (``"local"``, path) for a directory (``file://`` accepted). The one place store URLs are told apart."""
    if url.startswith(("oci://", "oci+http://")):
        return "oci", url
    return "local", url.removeprefix("file://")


def open_source(url: str, timeout: float = 30.0) -> Union[LocalSource, OciSource]:
    """The download source for a store URL (a path or ``oci://...``)."""
    kind, location = store_kind(url)
    if kind == "oci":
        return OciSource(location, timeout=timeout)
    return LocalSource(Path(location))
