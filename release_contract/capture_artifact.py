"""How a batch of captures is laid out in an OCI store (image-spec 1.1 ``artifactType``).

A device's batch for collect command ``<id>`` is the artifact ``<repo>/captures/<device>:<id>``::

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.edgetpu-fleet.captures.v1",
     "config": <the empty descriptor>,
     "layers": [batch.json (edgetpu.capture-batch/1), then per capture its image and its JSON record,
                each titled (org.opencontainers.image.title) with its file name],
     "annotations": {title: the device, io.edgetpu-fleet.fleet, io.edgetpu-fleet.collect, created}}

One layer per file: a blob is the file's sha256, so an upload that stopped halfway resumes by
HEADing each blob, and a pull verifies each file on its own. Releases live exactly one level
below ``<repo>`` (``<repo>/<name>``); captures exactly two (``<repo>/captures/<device>``), so a
capture repository can never be a release's, whatever the release is called.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any, Dict, List, Tuple

from release_contract.collect import BATCH_NAME
from release_contract.errors import ManifestError
from release_contract.manifest import check_filename
from release_contract.oci_push import CREATED, OCI_MANIFEST, TITLE, descriptor, empty_descriptor

ARTIFACT_TYPE = "application/vnd.edgetpu-fleet.captures.v1"
BATCH_TYPE = "application/vnd.edgetpu-fleet.capture-batch.v1+json"
RECORD_TYPE = "application/vnd.edgetpu-fleet.capture-record.v1+json"
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp"}
FLEET = "io.edgetpu-fleet.fleet"
COLLECT = "io.edgetpu-fleet.collect"
CAPTURES_REPO = "captures"
#: Captures in one artifact (two layers each): keeps the manifest well under the registry's 4 MiB.
MAX_CAPTURES = 2000
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*")
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")


def device_component(device: str) -> str:
    """``device`` as one repository path component (lower case, OCI's separators).

    A device id that is not one already (``Cam-1``, ``_x``) gets a sanitized name plus 8 hex digits
    of its sha256, so two ids never share a repository.
    """
    if _COMPONENT.fullmatch(device):
        return device
    safe = re.sub(r"[^a-z0-9]+", "-", device.lower()).strip("-") or "device"
    return f"{safe}-{hashlib.sha256(device.encode()).hexdigest()[:8]}"


def captures_prefix(repo: str) -> str:
    """The repositories of every device's captures start with this (``<repo>/captures/``)."""
    return f"{repo}/{CAPTURES_REPO}/"


def captures_repository(repo: str, device: str) -> str:
    """The repository holding ``device``'s batches, one tag per collect command."""
    return captures_prefix(repo) + device_component(device)


def media_type(name: str) -> str:
    """The layer media type of a capture file."""
    if name == BATCH_NAME:
        return BATCH_TYPE
    if name.endswith(".json"):
        return RECORD_TYPE
    return IMAGE_TYPES.get(name[name.rfind(".") :].lower(), "application/octet-stream")


def capture_manifest(device: str, fleet: str, command_id: str, layers: List[Tuple[str, str, int]]) -> bytes:
    """The manifest of a batch; ``layers`` are (file name, digest, size), ``batch.json`` first."""
    annotations = {
        TITLE: device,
        FLEET: fleet,
        COLLECT: command_id,
        CREATED: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_descriptor(),
        "layers": [descriptor(media_type(name), digest, size, name) for name, digest, size in layers],
        "annotations": annotations,
    }
    return json.dumps(manifest, indent=1, sort_keys=True).encode()


def capture_layers(manifest: Any) -> Dict[str, Tuple[str, int]]:
    """File name -> (digest, size) of a capture artifact's manifest (parsed JSON).

    Raises ManifestError for anything else: another artifactType, a layer without a safe title,
    a malformed digest or size, a name listed twice.
    """
    if not isinstance(manifest, dict) or manifest.get("artifactType") != ARTIFACT_TYPE:
        raise ManifestError("not a capture batch (another artifactType)")
    layers = manifest.get("layers")
    out: Dict[str, Tuple[str, int]] = {}
    for layer in layers if isinstance(layers, list) else []:
        annotations = layer.get("annotations") if isinstance(layer, dict) else None
        name = annotations.get(TITLE) if isinstance(annotations, dict) else None
        digest, size = (layer.get("digest"), layer.get("size")) if isinstance(layer, dict) else (None, None)
        if not isinstance(name, str) or not isinstance(digest, str) or not _DIGEST.fullmatch(digest):
            raise ManifestError("a capture batch lists a malformed layer")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or name in out:
            raise ManifestError(f"a capture batch lists {name!r} with a bad size or twice")
        out[check_filename(name)] = (digest, size)
    if BATCH_NAME not in out:
        raise ManifestError(f"a capture batch without {BATCH_NAME}")
    return out
