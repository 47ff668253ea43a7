"""Upload a batch of captures to an OCI store: one artifact per device and collect command.

The layout is :mod:`release_contract.capture_artifact` (``<repo>/captures/<device>:<id>``, one
layer per file, ``batch.json`` first). Every blob is HEADed before it is sent, so an upload that
stopped halfway resumes where it stopped; the manifest is put last. :func:`upload_batch` returns
the names of the files the registry holds under the tag: the caller deletes only those captures,
and only after this returns.
"""

from __future__ import annotations

import hashlib
import logging
from typing import List, Optional, Set, Tuple

from edge_agent.capture import archive
from release_contract.capture_artifact import capture_layers, capture_manifest, captures_repository
from release_contract.collect import BATCH_NAME, batch_index
from release_contract.credentials import Login
from release_contract.errors import AuthError, CredentialsError, ManifestError, RegistryError
from release_contract.files import sha256_file
from release_contract.oci_client import RegistryClient, parse_json
from release_contract.oci_push import EMPTY_BLOB, get_manifest, push_scope, put_manifest, upload_blob
from release_contract.stores import parse_oci_url

log = logging.getLogger(__name__)


class LoginRefused(Exception):
    """The registry refused the device's login (or the login could not be read): retrying cannot help."""


class OciUploadError(Exception):
    """An upload that did not complete (unreachable registry, timeout, unreadable file); it is retried."""


def upload_batch(
    url: str,
    login: Optional[Login],
    timeout: float,
    device: str,
    fleet: str,
    command_id: str,
    captures: List[archive.Capture],
) -> Set[str]:
    """Upload ``captures`` as ``device``'s batch for ``command_id`` to the OCI store ``url``.

    Returns the file names the artifact holds: when the tag exists already (uploaded before a
    restart), its own list, without uploading again. Raises LoginRefused or OciUploadError.
    """
    try:
        base, repo = parse_oci_url(url)
        client = RegistryClient(base, login, timeout=timeout)
        target = captures_repository(repo, device)
        where = f"{target}:{command_id} on {base}"
        present = _existing(client, target, command_id, where)
        if present is not None:
            log.info("collect %s: %s is already in the registry", command_id, where)
            return present
        layers = _upload_files(client, target, captures)
        index = batch_index(device, fleet, command_id, [{"path": n, "size": s, "sha256": d[7:]} for n, d, s in layers])
        batch_digest = "sha256:" + hashlib.sha256(index).hexdigest()
        upload_blob(client, target, batch_digest, len(index), index)
        upload_blob(client, target, "sha256:" + hashlib.sha256(EMPTY_BLOB).hexdigest(), len(EMPTY_BLOB), EMPTY_BLOB)
        manifest = capture_manifest(device, fleet, command_id, [(BATCH_NAME, batch_digest, len(index))] + layers)
        put_manifest(client, target, command_id, manifest, f"putting the manifest of {where}")
    except (AuthError, CredentialsError) as exc:
        raise LoginRefused(str(exc)) from exc
    except RegistryError as exc:
        raise OciUploadError(str(exc)) from exc
    except OSError as exc:
        raise OciUploadError(f"cannot read a capture: {exc.strerror or exc}") from exc
    return {name for name, _, _ in layers}


def _existing(client: RegistryClient, target: str, tag: str, where: str) -> Optional[Set[str]]:
    """The file names of the batch already tagged ``tag``, or None when there is none."""
    raw = get_manifest(client, target, tag, push_scope(target), f"the manifest of {where}")
    if raw is None:
        return None
    try:
        return set(capture_layers(parse_json(raw, f"the manifest of {where}")))
    except ManifestError as exc:
        raise OciUploadError(f"{where} exists and is not this device's batch: {exc}") from exc


def _upload_files(client: RegistryClient, target: str, captures: List[archive.Capture]) -> List[Tuple[str, str, int]]:
    layers: List[Tuple[str, str, int]] = []
    sent = 0
    for capture in captures:
        for path in (capture.image_path, capture.record_path):
            size = path.stat().st_size
            digest = "sha256:" + sha256_file(path)
            if upload_blob(client, target, digest, size, path):
                sent += 1
            layers.append((path.name, digest, size))
    log.debug("collect: %d of %d files sent to %s (the others were there already)", sent, len(layers), target)
    return layers
