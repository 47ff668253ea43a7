"""The ``collect`` command: devices upload their captured frames to the release store.

A command (schema ``edgetpu.collect/1``, at most 16 KiB, unknown fields refused) is signed like a
manifest, ed25519 over the canonical JSON of every field but ``signatures``::

    {"schema": "edgetpu.collect/1", "target": "fleet:farm" | "device:cam-1", "id": "collect-20261123T0200",
     "issued_at": 1795400000, "expires_at": 1795403600, "since": 1795300000, "max_bytes": 104857600,
     "store": "/srv/registry", "signatures": [...]}

It travels on ``<prefix>/<device>/collect`` or ``<prefix>/fleet/<fleet>/collect``
(:mod:`release_contract.topics`). A device obeys it only when it is signed by a key it trusts,
not expired, and addressed to it or its fleet; it uploads the captures taken at or after ``since``
(seconds since the epoch, 0 = all), oldest first, up to ``max_bytes``, as one batch per device
and command. Progress goes to ``<prefix>/<device>/collect/status`` (schema
``edgetpu.collect-status/1``).

A batch in a local store directory::

    <store>/.captures/<device>/<id>/batch.json      the index (schema edgetpu.capture-batch/1)
    <store>/.captures/<device>/<id>/<capture files>  each image and its JSON record

It appears with one rename, so a reader never sees half a batch; ``.captures`` cannot clash with a
release name (those start with a letter or digit). In an OCI store a batch is the artifact
``<repo>/captures/<device>:<id>`` instead (:mod:`release_contract.capture_artifact`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release_contract.errors import ManifestError, ProtocolError, VerificationError
from release_contract.manifest import canonical_json, check_filename
from release_contract.signing import TrustedKeys, sign_payload

SCHEMA = "edgetpu.collect/1"
STATUS_SCHEMA = "edgetpu.collect-status/1"
BATCH_SCHEMA = "edgetpu.capture-batch/1"
MAX_COMMAND_BYTES = 16 * 1024
MAX_BATCH_BYTES = 4 << 20
CAPTURES_DIR = ".captures"
BATCH_NAME = "batch.json"
#: How far in the future ``issued_at`` may lie (clock skew between the operator and a device).
MAX_CLOCK_SKEW = 300
STATES = ("received", "uploading", "uploaded", "retrying", "rejected", "failed")
_LABEL_UNSAFE = re.compile(r"[^A-Za-z0-9 _.+-]")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TARGET_RE = re.compile(r"^(device|fleet):([A-Za-z0-9_.-]{1,128})$")
_FIELDS = {
    "schema": str,
    "target": str,
    "id": str,
    "issued_at": int,
    "expires_at": int,
    "since": int,
    "max_bytes": int,
    "store": str,
    "signatures": list,
}


@dataclass(frozen=True)
class CollectCommand:
    """Upload the captures taken since ``since`` (up to ``max_bytes``) to ``store``."""

    target: str  # "device:<id>" or "fleet:<name>"
    id: str
    issued_at: int
    expires_at: int
    since: int
    max_bytes: int
    store: str

    def to_dict(self) -> Dict[str, Any]:
        """The signed fields."""
        return {
            "schema": SCHEMA,
            "target": self.target,
            "id": self.id,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "since": self.since,
            "max_bytes": self.max_bytes,
            "store": self.store,
        }

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        """The signed JSON payload to publish."""
        body = self.to_dict()
        return canonical_json({**body, "signatures": [sign_payload(canonical_json(body), key)]})

    def addressed_to(self, device: str, fleet: str) -> bool:
        """True when the command names ``device`` or (a non-empty) ``fleet``."""
        kind, _, name = self.target.partition(":")
        return (kind == "device" and name == device) or (kind == "fleet" and bool(fleet) and name == fleet)


def target_of(device: Optional[str], fleet: Optional[str]) -> str:
    """``device:<id>`` or ``fleet:<name>``; exactly one must be given. Raises ProtocolError."""
    if bool(device) == bool(fleet):
        raise ProtocolError("a collect command targets exactly one device or one fleet")
    target = f"device:{device}" if device else f"fleet:{fleet}"
    if not _TARGET_RE.match(target):
        raise ProtocolError(f"invalid collect target {target!r}: letters, digits, '_', '.' or '-'")
    return target


def parse_collect(
    payload: bytes, trusted: TrustedKeys, device: str, fleet: str, now: Optional[float] = None
) -> CollectCommand:
    """Parse, verify and check a collect command for this ``device`` of ``fleet``.

    Raises:
        ProtocolError: malformed, oversized, or addressed to another device or fleet.
        VerificationError: unsigned, signed by an untrusted key, altered, expired or issued in the future.
    """
    if len(payload) > MAX_COMMAND_BYTES:
        raise ProtocolError(f"collect command of {len(payload)} bytes exceeds the {MAX_COMMAND_BYTES}-byte limit")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError("collect command is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ProtocolError("collect command is not a JSON object")
    if not data.get("signatures"):
        raise VerificationError("collect command is not signed: refused")
    unknown = set(data) - set(_FIELDS)
    if unknown:
        raise ProtocolError(f"collect command has unknown fields: {', '.join(sorted(unknown))}")
    for key, typ in _FIELDS.items():
        if key not in data:
            raise ProtocolError(f"collect command lacks {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise ProtocolError(f"collect command field {key!r} must be {typ.__name__}")
    if data["schema"] != SCHEMA:
        raise ProtocolError(f"unsupported collect command schema {data['schema']!r}")
    sigs = data.pop("signatures")
    if not all(isinstance(s, dict) for s in sigs):
        raise ProtocolError("collect command signatures must be objects")
    trusted.verify(canonical_json(data), sigs)
    if not _ID_RE.match(data["id"]) or not _TARGET_RE.match(data["target"]):
        raise ProtocolError(f"collect command has an invalid id {data['id']!r} or target {data['target']!r}")
    if not data["store"] or len(data["store"]) > 1024 or data["max_bytes"] < 1 or data["since"] < 0:
        raise ProtocolError("collect command needs a store, max_bytes >= 1 and since >= 0")
    command = CollectCommand(**{k: v for k, v in data.items() if k != "schema"})
    clock = time.time() if now is None else now
    if command.expires_at <= clock:
        raise VerificationError(f"collect command {command.id} expired at {command.expires_at}: refused")
    if command.issued_at > clock + MAX_CLOCK_SKEW:
        raise VerificationError(f"collect command {command.id} is issued in the future: refused")
    if not command.addressed_to(device, fleet):
        raise ProtocolError(f"collect command {command.id} is for {command.target}, not this device: ignored")
    return command


def status_message(device: str, command_id: str, state: str, reason: str = "", **extra: Any) -> Dict[str, Any]:
    """A ``<prefix>/<device>/collect/status`` payload (schema ``edgetpu.collect-status/1``)."""
    if state not in STATES:
        raise ValueError(f"unknown collect state {state!r}")
    return {
        "schema": STATUS_SCHEMA,
        "device": device,
        "id": command_id,
        "state": state,
        "reason": reason,
        "time": round(time.time(), 3),
        **extra,
    }


def batch_index(device: str, fleet: str, command_id: str, files: List[Dict[str, Any]]) -> bytes:
    """The ``batch.json`` of an upload: who sent it, for which command, and every file's size and sha256."""
    body = {
        "schema": BATCH_SCHEMA,
        "device": device,
        "fleet": fleet,
        "collect": command_id,
        "created": round(time.time(), 3),
        "files": files,
    }
    return json.dumps(body, indent=1, sort_keys=True).encode()


def parse_batch(raw: bytes) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """(header, files) of a ``batch.json``; raise ManifestError when malformed or a file name is unsafe."""
    if len(raw) > MAX_BATCH_BYTES:
        raise ManifestError(f"{BATCH_NAME} is larger than {MAX_BATCH_BYTES} bytes")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{BATCH_NAME} is not valid JSON") from exc
    if not isinstance(data, dict) or data.get("schema") != BATCH_SCHEMA or not isinstance(data.get("files"), list):
        raise ManifestError(f"{BATCH_NAME} has an unknown schema or no file list")
    files = data["files"]
    for entry in files:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("size"), int)
            and isinstance(entry.get("sha256"), str)
            and isinstance(entry.get("path"), str)
        ):
            raise ManifestError(f"{BATCH_NAME} lists a malformed file entry")
        check_filename(entry["path"])
    return data, files


def dataset_label(record: Any) -> str:
    """The folder a capture record goes to in a dataset: its predicted top-1 label (or class id),
    made safe as a folder name; ``unknown`` without one. Device export and operator pull both use it."""
    result = record.get("result") if isinstance(record, dict) else None
    top = result.get("top_k") if isinstance(result, dict) else None
    if not isinstance(top, list) or not top or not isinstance(top[0], dict):
        return "unknown"
    label = str(top[0].get("label") or top[0].get("id", "unknown"))
    return _LABEL_UNSAFE.sub("_", label).strip(" .")[:64] or "unknown"
