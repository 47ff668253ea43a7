"""Writing to an OCI registry: descriptors, blob uploads and manifests.

Shared by the operator's store (:mod:`registry.store.oci`, releases) and devices
(:mod:`edge_agent.capture.oci_upload`, captures), over one
:class:`~release_contract.oci_client.RegistryClient`. A blob is HEADed before it is uploaded,
so a push that stopped halfway resumes without sending again what the registry already has;
a manifest is put last, so a tag only ever names complete content.
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any, Dict, Optional, Union

from release_contract.errors import StoreError
from release_contract.oci_client import RegistryClient, expect, read_capped

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"
MAX_MANIFEST = 4 << 20  # distribution's own limit on a manifest it accepts


def descriptor(media_type: str, digest: str, size: int, title: Optional[str] = None) -> Dict[str, Any]:
    """An OCI descriptor; ``title`` becomes its ``org.opencontainers.image.title`` annotation."""
    out: Dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": size}
    if title is not None:
        out["annotations"] = {TITLE: title}
    return out


def empty_descriptor() -> Dict[str, Any]:
    """The image-spec 1.1 empty descriptor (``{}``), used as the config of an artifact."""
    return {
        "mediaType": EMPTY_TYPE,
        "digest": "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(),
        "size": len(EMPTY_BLOB),
        "data": "e30=",
    }


def push_scope(repo: str) -> str:
    """The token scope that lets a client read and write ``repo``."""
    return f"repository:{repo}:pull,push"


def upload_blob(client: RegistryClient, repo: str, digest: str, size: int, body: Union[bytes, Path]) -> bool:
    """Make sure blob ``digest`` (``size`` bytes of ``body``) is in ``repo``; False when it already was.

    One HEAD, then (when missing) a monolithic upload: POST for a location, PUT with ``?digest=``.
    Raises AuthError, DownloadError or StoreError; OSError when ``body`` cannot be read.
    """
    scope = push_scope(repo)
    head = client.request("HEAD", f"/v2/{repo}/blobs/{digest}", scope)
    head.close()
    if head.status == 200:
        return False  # already there (an earlier version, or an interrupted push)
    start = client.request("POST", f"/v2/{repo}/blobs/uploads/", scope, {"Content-Length": "0"}, b"")
    with expect(start, (202,), f"starting an upload to {repo}"):
        location = start.headers.get("Location") or ""
    if not location:
        raise StoreError(f"{client.base} started an upload without saying where to send it")
    url = urllib.parse.urljoin(client.base + "/", location)
    url += ("&" if urllib.parse.urlsplit(url).query else "?") + urllib.parse.urlencode({"digest": digest})
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    if isinstance(body, bytes):
        resp = client.request("PUT", url, scope, headers, body)
    else:
        with body.open("rb") as fh:
            resp = client.request("PUT", url, scope, headers, fh)
    expect(resp, (201,), f"uploading {digest[:19]} to {repo}").close()
    return True


def put_manifest(client: RegistryClient, repo: str, tag: str, raw: bytes, what: str) -> None:
    """Put manifest ``raw`` in ``repo`` under ``tag``; ``what`` names it in errors."""
    if len(raw) > MAX_MANIFEST:
        raise StoreError(f"{what}: its manifest would be larger than {MAX_MANIFEST} bytes")
    resp = client.request("PUT", f"/v2/{repo}/manifests/{tag}", push_scope(repo), {"Content-Type": OCI_MANIFEST}, raw)
    expect(resp, (201, 200), what).close()


def get_manifest(client: RegistryClient, repo: str, ref: str, scope: str, what: str) -> Optional[bytes]:
    """The raw manifest ``repo:ref`` (at most MAX_MANIFEST bytes), or None when there is none."""
    resp = client.request("GET", f"/v2/{repo}/manifests/{ref}", scope, {"Accept": OCI_MANIFEST})
    if resp.status == 404:
        resp.close()
        return None
    with expect(resp, (200,), what):
        return read_capped(resp, MAX_MANIFEST, what)
