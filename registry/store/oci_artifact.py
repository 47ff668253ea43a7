"""How a release is laid out as an OCI 1.1 artifact (image-spec 1.1 ``artifactType``).

::

    {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
     "artifactType": "application/vnd.edgetpu-fleet.release.v1",
     "config": <the empty descriptor, application/vnd.oci.empty.v1+json, "{}">,
     "layers": [release.json (the signed envelope), then each file, with its own media type
                and an org.opencontainers.image.title annotation = its file name],
     "annotations": {title, version, created, the source model's digest}}

A blob's digest is its file's sha256, as the signed manifest lists it. A channel tag taken off a
yanked release points at a *withdrawn channel* artifact: no release in it, its own artifactType.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

from release_contract.manifest import ENVELOPE_NAME
from release_contract.oci_push import (  # noqa: F401 (re-exported: the layout's building blocks)
    CREATED,
    EMPTY_BLOB,
    EMPTY_TYPE,
    OCI_MANIFEST,
    TITLE,
    descriptor,
    empty_descriptor,
)

ARTIFACT_TYPE = "application/vnd.edgetpu-fleet.release.v1"
WITHDRAWN_TYPE = "application/vnd.edgetpu-fleet.channel.withdrawn.v1"
ENVELOPE_TYPE = "application/vnd.edgetpu-fleet.release.envelope.v1+json"
#: Media type of each file, by its role in the signed manifest.
FILE_TYPES = {
    "edgetpu_model": "application/vnd.edgetpu-fleet.model.edgetpu.v1.tflite",
    "cpu_model": "application/vnd.edgetpu-fleet.model.cpu.v1.tflite",
    "labels": "application/vnd.edgetpu-fleet.labels.v1.txt",
    "golden": "application/vnd.edgetpu-fleet.golden-input.v1.bin",
}
OTHER_FILE_TYPE = "application/octet-stream"

VERSION = "org.opencontainers.image.version"
SOURCE_DIGEST = "io.edgetpu-fleet.source.digest"
WITHDRAWN_FROM = "io.edgetpu-fleet.channel.withdrawn"


def file_types(envelope: bytes) -> Dict[str, str]:
    """File name -> media type, from the roles in the envelope's signed ``files``."""
    signed = json.loads(envelope).get("signed", {})
    files = signed.get("files", {}) if isinstance(signed, dict) else {}
    return {
        entry["path"]: FILE_TYPES.get(role, OTHER_FILE_TYPE)
        for role, entry in (files.items() if isinstance(files, dict) else [])
        if isinstance(entry, dict) and isinstance(entry.get("path"), str)
    }


def release_manifest(envelope: bytes, blobs: Mapping[str, Tuple[str, int]]) -> bytes:
    """The artifact manifest of a release; ``blobs`` maps each file name to (digest, size)."""
    signed = json.loads(envelope)["signed"]
    types = file_types(envelope)
    layers: List[Dict[str, Any]] = [
        descriptor(ENVELOPE_TYPE, "sha256:" + hashlib.sha256(envelope).hexdigest(), len(envelope), ENVELOPE_NAME)
    ]
    for fname, (digest, size) in blobs.items():
        layers.append(descriptor(types.get(fname, OTHER_FILE_TYPE), digest, size, fname))
    annotations = {TITLE: str(signed["name"]), VERSION: str(signed["version"])}
    if signed.get("created_at"):
        annotations[CREATED] = str(signed["created_at"])
    if signed.get("source_sha256"):
        annotations[SOURCE_DIGEST] = "sha256:" + str(signed["source_sha256"])
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": empty_descriptor(),
        "layers": layers,
        "annotations": annotations,
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def withdrawn_manifest(name: str, channel: str, version: str) -> bytes:
    """What a channel tag points at once its release was yanked: an artifact with no release in it."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": WITHDRAWN_TYPE,
        "config": empty_descriptor(),
        "layers": [empty_descriptor()],
        "annotations": {TITLE: f"{name} {channel}: withdrawn", WITHDRAWN_FROM: version},
    }
    return json.dumps(manifest, indent=2, sort_keys=True).encode()


def release_version(manifest: Any) -> Optional[str]:
    """The version a release artifact's manifest is tagged with; None for anything else (a withdrawn channel)."""
    if not isinstance(manifest, dict) or manifest.get("artifactType") == WITHDRAWN_TYPE:
        return None
    version = (manifest.get("annotations") or {}).get(VERSION)
    return str(version) if isinstance(version, str) else None
