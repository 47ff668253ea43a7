"""The batches devices uploaded to an OCI store, for ``edge-registry captures pull``.

Each batch is an artifact ``<repo>/captures/<device>:<collect id>``
(:mod:`release_contract.capture_artifact`). With ``--device`` only that device's repository is
listed (its tags); otherwise the registry's catalog (``/v2/_catalog``) names the capture
repositories. Every blob is checked against its digest and size while it is downloaded, and
every file against the batch's ``batch.json``; a file that does not match is left out (the
caller counts it as refused).
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from registry.store.oci import PAGE, paged
from release_contract.capture_artifact import capture_layers, captures_prefix, captures_repository
from release_contract.collect import BATCH_NAME, MAX_BATCH_BYTES, parse_batch
from release_contract.credentials import Login
from release_contract.errors import DownloadError, ManifestError, NotFound, StoreError, VerificationError
from release_contract.oci_client import RegistryClient, expect, parse_json, read_capped
from release_contract.oci_push import get_manifest
from release_contract.stores import parse_oci_url

log = logging.getLogger(__name__)

Batch = Tuple[Path, List[Dict[str, Any]]]
CHUNK = 1 << 16


def oci_batches(
    url: str, fleet: str, device: Optional[str], login: Optional[Login], timeout: float, present: Set[str]
) -> Iterator[Batch]:
    """(folder, files of its batch.json) for each batch of ``fleet`` (or ``device``) in the OCI store ``url``.

    The folder is temporary and holds the batch's verified files, except those named in ``present``
    (already in the dataset: not downloaded again); it is gone once the next batch is asked for.
    """
    base, repo = parse_oci_url(url)
    client = RegistryClient(base, login, timeout=timeout)
    repos = [captures_repository(repo, device)] if device else _capture_repositories(client, base, repo)
    for name in repos:
        scope = f"repository:{name}:pull"
        try:
            tags = paged(client, f"/v2/{name}/tags/list?n={PAGE}", scope, "tags", f"the tags of {name}")
        except NotFound:
            continue  # a device that never uploaded
        for tag in sorted(tags):
            where = f"{name}:{tag}"
            try:
                layers, files = _batch(client, name, tag, scope, where, fleet, device)
            except (ManifestError, VerificationError, DownloadError) as exc:
                log.warning("skipped %s: %s", where, exc)
                continue
            if files is None:
                continue
            with tempfile.TemporaryDirectory(prefix="edge-registry-captures-") as tmp:
                for entry in files:
                    if entry["path"] not in present:
                        _download(client, name, scope, layers, entry, Path(tmp), where)
                yield Path(tmp), files


def _capture_repositories(client: RegistryClient, base: str, repo: str) -> List[str]:
    prefix = captures_prefix(repo)
    try:
        names = paged(client, f"/v2/_catalog?n={PAGE}", "registry:catalog:*", "repositories", f"the catalog of {base}")
    except (NotFound, DownloadError) as exc:
        raise StoreError(f"{base} does not list its repositories ({exc}): pass --device to pull one device") from exc
    return sorted(n for n in names if n.startswith(prefix) and "/" not in n[len(prefix) :])


def _batch(
    client: RegistryClient, name: str, tag: str, scope: str, where: str, fleet: str, device: Optional[str]
) -> Tuple[Dict[str, Tuple[str, int]], Optional[List[Dict[str, Any]]]]:
    """The layers and the batch.json files of ``name:tag``; files None when it is another fleet's or device's."""
    raw = get_manifest(client, name, tag, scope, f"the manifest of {where}")
    if raw is None:
        return {}, None
    layers = capture_layers(parse_json(raw, f"the manifest of {where}"))
    digest, size = layers[BATCH_NAME]
    if size > MAX_BATCH_BYTES:
        raise ManifestError(f"{BATCH_NAME} is larger than {MAX_BATCH_BYTES} bytes")
    resp = client.request("GET", f"/v2/{name}/blobs/{digest}", scope)
    with expect(resp, (200,), f"{BATCH_NAME} of {where}"):
        body = read_capped(resp, size, f"{BATCH_NAME} of {where}")
    if len(body) != size or "sha256:" + hashlib.sha256(body).hexdigest() != digest:
        raise VerificationError(f"{BATCH_NAME} does not match its digest")
    header, files = parse_batch(body)
    if header.get("fleet") != fleet or (device and header.get("device") != device):
        return layers, None
    return layers, files


def _download(
    client: RegistryClient,
    name: str,
    scope: str,
    layers: Dict[str, Tuple[str, int]],
    entry: Dict[str, Any],
    folder: Path,
    where: str,
) -> None:
    """``entry``'s blob into ``folder``, when it is the layer the batch describes and matches its digest."""
    fname = entry["path"]
    digest, size = layers.get(fname, ("", -1))
    if digest != "sha256:" + entry["sha256"] or size != entry["size"]:
        log.warning("skipped %s in %s: the manifest and batch.json disagree on it", fname, where)
        return
    hasher, got = hashlib.sha256(), 0
    part = folder / f".{fname}.part"
    try:
        resp = client.request("GET", f"/v2/{name}/blobs/{digest}", scope)
        with expect(resp, (200,), f"{fname} of {where}"), part.open("wb") as out:
            while got <= size:
                chunk = resp.read(CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                hasher.update(chunk)
                out.write(chunk)
    except (DownloadError, NotFound, OSError) as exc:
        log.warning("skipped %s in %s: %s", fname, where, exc)
        return
    if got != size or "sha256:" + hasher.hexdigest() != digest:
        log.warning("skipped %s in %s: it does not match its digest", fname, where)
        return
    part.rename(folder / fname)
