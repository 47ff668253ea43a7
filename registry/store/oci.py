"""A store in any OCI registry (Docker Hub, GHCR, Harbor, ECR, a distribution registry).

A release ``name:version`` is an OCI 1.1 artifact (layout in :mod:`registry.store.oci_artifact`)
in repository ``<repo>/<name>`` tagged ``<version>``. Channels are the tags ``canary`` and
``stable``; a yanked version gets the tag ``yanked-<version>`` and its channel tags are moved to
a *withdrawn channel* artifact, so a standard client pulling ``:canary`` never gets it.

Everything goes through :class:`release_contract.oci_client.RegistryClient` (the same client
and login handling as devices): the OCI distribution API over ``urllib``, Basic and Bearer
logins, bounded timeouts, no retry loops. Nothing is ever deleted, so a pull that runs while a
tag moves reads a complete release: every blob it resolved stays where it was.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

from registry.store.base import CHANNELS, Store, sort_versions
from registry.store.oci_artifact import (
    EMPTY_BLOB,
    OCI_MANIFEST,
    release_manifest,
    release_version,
    withdrawn_manifest,
)
from release_contract.credentials import Login
from release_contract.errors import AlreadyExists, NotFound, StoreError
from release_contract.files import sha256_file
from release_contract.manifest import check_filename, check_name, check_version
from release_contract.oci_client import RegistryClient, expect, parse_json, read_capped, read_json
from release_contract.oci_push import put_manifest, upload_blob
from release_contract.stores import OciSource, parse_oci_url

log = logging.getLogger(__name__)

YANK_PREFIX = "yanked-"
MAX_MANIFEST = 1 << 20
MAX_LISTING = 4 << 20
PAGE = 1000
MAX_PAGES = 100  # 100,000 tags or repositories: a registry that pages forever is cut off


class OciStore(Store):
    """Releases as OCI artifacts; see the module docstring for the mapping.

    ``login`` gives the credentials (flags, environment, Docker config); ``timeout`` bounds every
    connect and read in seconds, so an unreachable or silent registry is one error within it.
    """

    def __init__(self, url: str, timeout: float = 10.0, login: Optional[Login] = None) -> None:
        self.url = url
        self.base, self.repo = parse_oci_url(url)
        self.timeout = timeout
        self._client = RegistryClient(self.base, login, timeout=timeout)
        self._reader = OciSource(url, timeout=timeout, login=login)

    # -- plumbing -------------------------------------------------------------------------------------
    def _repo(self, name: str) -> str:
        return f"{self.repo}/{check_name(name)}"

    def _pull(self, name: str) -> str:
        return f"repository:{self._repo(name)}:pull"

    def _paged(self, path: str, scope: str, key: str, what: str, missing: Optional[str] = None) -> List[str]:
        return paged(self._client, path, scope, key, what, missing)

    def _tags(self, name: str) -> List[str]:
        return self._paged(
            f"/v2/{self._repo(name)}/tags/list?n={PAGE}",
            self._pull(name),
            "tags",
            f"the tags of {name} in {self.url}",
            missing=f"no release named {name!r} in {self.url}",
        )

    def _manifest(self, name: str, ref: str) -> Tuple[bytes, Any]:
        resp = self._client.request(
            "GET", f"/v2/{self._repo(name)}/manifests/{ref}", self._pull(name), {"Accept": OCI_MANIFEST}
        )
        with expect(resp, (200,), f"{name}:{ref} in {self.url}"):
            raw = read_capped(resp, MAX_MANIFEST, f"the manifest of {name}:{ref}")
        return raw, parse_json(raw, f"the manifest of {name}:{ref}")

    def _put_manifest(self, name: str, tag: str, raw: bytes) -> None:
        put_manifest(self._client, self._repo(name), tag, raw, f"tagging {name}:{tag} in {self.url}")

    def _upload(self, name: str, digest: str, size: int, body: Union[bytes, Path]) -> None:
        upload_blob(self._client, self._repo(name), digest, size, body)

    # -- Store interface -------------------------------------------------------------------------------
    def push(self, envelope: bytes, files: Mapping[str, Path], name: str, version: str) -> None:
        check_version(version)
        try:
            tags = self._tags(name)
        except NotFound:
            tags = []
        if version in tags:
            raise AlreadyExists(
                f"{name}:{version} already exists in {self.url}: versions are immutable, push a higher version"
            )
        blobs: Dict[str, Tuple[str, int]] = {}
        try:
            for fname, src in files.items():
                blobs[check_filename(fname)] = ("sha256:" + sha256_file(src), src.stat().st_size)
            self._upload(name, "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(), len(EMPTY_BLOB), EMPTY_BLOB)
            self._upload(name, "sha256:" + hashlib.sha256(envelope).hexdigest(), len(envelope), envelope)
            for fname, src in files.items():
                digest, size = blobs[fname]
                self._upload(name, digest, size, src)
        except FileNotFoundError as exc:
            raise StoreError(f"file not found: {exc.filename}") from exc
        except OSError as exc:
            raise StoreError(f"cannot read {getattr(exc, 'filename', '') or 'a release file'}: {exc}") from exc
        self._put_manifest(name, version, release_manifest(envelope, blobs))  # the tag appears last

    def names(self) -> List[str]:
        what = f"the catalog of {self.base}"
        repos = self._paged(f"/v2/_catalog?n={PAGE}", "registry:catalog:*", "repositories", what)
        prefix = f"{self.repo}/"
        return sorted(r[len(prefix) :] for r in repos if r.startswith(prefix) and "/" not in r[len(prefix) :])

    def versions(self, name: str) -> List[str]:
        return sort_versions(self._tags(name))

    def envelope(self, name: str, version: str) -> bytes:
        return self._reader.fetch_envelope(name, check_version(version))

    def channels(self, name: str) -> Dict[str, str]:
        out: Dict[str, str] = {}
        tags = self._tags(name)
        yanked = {t[len(YANK_PREFIX) :] for t in tags if t.startswith(YANK_PREFIX)}
        for tag in sorted(set(tags) & set(CHANNELS)):
            version = release_version(self._manifest(name, tag)[1])
            if version and version not in yanked:
                out[tag] = version
        return out

    def set_channel(self, name: str, version: str, channel: str) -> None:
        if channel not in CHANNELS:
            raise StoreError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
        if version not in self.versions(name):
            raise NotFound(f"{name}:{version} is not in {self.url}")
        if version in self.yanked(name):
            raise StoreError(f"{name}:{version} is yanked and cannot be promoted")
        raw, _ = self._manifest(name, version)
        self._put_manifest(name, channel, raw)  # the same bytes: the tag names the same digest
        if version in self.yanked(name):  # yanked while we moved the tag: take it back off
            self._withdraw(name, channel, version)
            raise StoreError(f"{name}:{version} was yanked while it was being promoted")

    def yanked(self, name: str) -> List[str]:
        return sort_versions([t[len(YANK_PREFIX) :] for t in self._tags(name) if t.startswith(YANK_PREFIX)])

    def yank(self, name: str, version: str) -> None:
        if version not in self.versions(name):
            raise NotFound(f"{name}:{version} is not in {self.url}")
        raw, _ = self._manifest(name, version)
        self._put_manifest(name, YANK_PREFIX + version, raw)  # first hidden from this tool's readers...
        for channel in CHANNELS:  # ...then taken off the channel tags standard clients pull
            try:
                current = release_version(self._manifest(name, channel)[1])
            except NotFound:
                continue
            if current == version:
                self._withdraw(name, channel, version)

    def _withdraw(self, name: str, channel: str, version: str) -> None:
        raw = withdrawn_manifest(name, channel, version)
        self._upload(name, "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(), len(EMPTY_BLOB), EMPTY_BLOB)
        self._put_manifest(name, channel, raw)
        log.info("moved %s:%s off the yanked version %s", name, channel, version)


def paged(
    client: RegistryClient, path: str, scope: str, key: str, what: str, missing: Optional[str] = None
) -> List[str]:
    """All the strings under ``key`` of a paginated listing (``Link: rel="next"``), at most MAX_PAGES pages.

    A 404 raises NotFound(``missing``) when ``missing`` is given.
    """
    items: List[str] = []
    next_path: Optional[str] = path
    for _ in range(MAX_PAGES):
        resp = client.request("GET", next_path or path, scope)
        if resp.status == 404 and missing:
            resp.close()
            raise NotFound(missing)
        with expect(resp, (200,), f"listing {what}"):
            body = read_json(resp, MAX_LISTING, what)
            next_path = _next_page(resp.headers.get("Link", ""))
        page = body.get(key) if isinstance(body, dict) else None
        items += [item for item in page or [] if isinstance(item, str)]
        if not next_path:
            return items
    raise StoreError(f"{what} goes on for more than {MAX_PAGES} pages: refusing it")


def _next_page(link: str) -> Optional[str]:
    """The next page from a ``Link: </v2/...>; rel="next"`` header (registry-relative paths only)."""
    if 'rel="next"' not in link:
        return None
    target = link.split(";", 1)[0].strip().strip("<>")
    return target if target.startswith("/v2/") else None
