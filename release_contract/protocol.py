"""Rollout messages on MQTT: commands to devices, device progress, the active model.

Topics (``prefix`` defaults to ``edgetpu``)::

    <prefix>/fleet/<fleet>/rollout      command for every device of a fleet (retained)
    <prefix>/<device>/rollout           command for one device (retained)
    <prefix>/<device>/rollout/status    the device's progress on its latest command (retained)
    <prefix>/<device>/model             the device's active release (retained)

A command (schema ``edgetpu.rollout/1``) is signed like a manifest: ed25519 over the
canonical JSON of every field but ``signatures``. ``action`` is ``install`` (go to
``name:version`` from ``store``; an older version only with ``allow_downgrade``) or
``rollback`` (leave ``version`` of ``name`` for the release before it). Parsing is strict:
unknown fields, wrong types and oversized payloads are refused.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release_contract.errors import ProtocolError, RegistryError
from release_contract.manifest import canonical_json, check_name, check_version
from release_contract.signing import TrustedKeys, sign_payload
from release_contract.topics import device_topic, fleet_topic, model_topic, status_topic
from release_contract.untrusted_json import loads_untrusted

__all__ = ["device_topic", "fleet_topic", "model_topic", "status_topic"]  # re-exported: callers of the protocol

COMMAND_SCHEMA = "edgetpu.rollout/1"
STATUS_SCHEMA = "edgetpu.rollout-status/1"
MODEL_SCHEMA = "edgetpu.model/1"
MAX_COMMAND_BYTES = 16 * 1024
MAX_STATUS_BYTES = 16 * 1024
ACTIONS = ("install", "rollback")
#: Device states, in the order an install passes through them; the last four are final.
STATES = (
    "received",
    "downloading",
    "verifying",
    "validating",
    "activating",
    "health_check",
    "active",
    "rejected",
    "failed",
    "rolled_back",
)
FINAL_STATES = ("active", "rejected", "failed", "rolled_back")
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")  # fullmatch: no trailing newline


@dataclass(frozen=True)
class Command:
    """A rollout command, as sent by the controller and checked by the device."""

    id: str
    action: str
    name: str
    version: str
    store: str
    issued_at: int
    allow_downgrade: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return {
            "schema": COMMAND_SCHEMA,
            "id": self.id,
            "action": self.action,
            "name": self.name,
            "version": self.version,
            "store": self.store,
            "issued_at": self.issued_at,
            "allow_downgrade": self.allow_downgrade,
        }

    def sign(self, key: Ed25519PrivateKey) -> bytes:
        """The signed JSON payload to publish."""
        body = self.to_dict()
        return canonical_json({**body, "signatures": [sign_payload(canonical_json(body), key)]})


_COMMAND_FIELDS = {
    "schema": str,
    "id": str,
    "action": str,
    "name": str,
    "version": str,
    "store": str,
    "issued_at": int,
    "allow_downgrade": bool,
    "signatures": list,
}


def _load_object(payload: bytes, limit: int, what: str) -> Dict[str, Any]:
    try:
        data = loads_untrusted(payload, what, limit)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return data


def parse_command(payload: bytes, trusted: Optional[TrustedKeys]) -> Command:
    """Parse and (with ``trusted``) verify a command; raise ProtocolError or VerificationError."""
    data = _load_object(payload, MAX_COMMAND_BYTES, "rollout command")
    unknown = set(data) - set(_COMMAND_FIELDS)
    if unknown:
        raise ProtocolError(f"rollout command has unknown fields: {', '.join(sorted(unknown))}")
    for key, typ in _COMMAND_FIELDS.items():
        if key not in data:
            raise ProtocolError(f"rollout command lacks {key!r}")
        if not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            raise ProtocolError(f"rollout command field {key!r} must be {typ.__name__}")
    if data["schema"] != COMMAND_SCHEMA:
        raise ProtocolError(f"unsupported rollout command schema {data['schema']!r}")
    if data["action"] not in ACTIONS:
        raise ProtocolError(f"unknown rollout action {data['action']!r}")
    if not _ID_RE.fullmatch(data["id"]):
        raise ProtocolError(f"invalid rollout id {data['id']!r}")
    if not data["store"] or len(data["store"]) > 1024:
        raise ProtocolError("rollout command has an empty or oversized store URL")
    try:
        check_name(data["name"])
        version = check_version(data["version"])
    except RegistryError as exc:
        raise ProtocolError(f"rollout command: {exc}") from exc
    sigs = data.pop("signatures")
    if trusted is not None:
        trusted.verify(canonical_json(data), sigs)
    return Command(
        id=data["id"],
        action=data["action"],
        name=data["name"],
        version=version,
        store=data["store"],
        issued_at=data["issued_at"],
        allow_downgrade=data["allow_downgrade"],
    )


def status_message(
    device: str,
    state: str,
    command: Optional[Command],
    active: Optional[Dict[str, str]],
    reason: str = "",
    **extra: Any,
) -> Dict[str, Any]:
    """A device status payload (schema ``edgetpu.rollout-status/1``)."""
    if state not in STATES:
        raise ValueError(f"unknown rollout state {state!r}")
    msg: Dict[str, Any] = {
        "schema": STATUS_SCHEMA,
        "device": device,
        "state": state,
        "reason": reason,
        "rollout": command.id if command else "",
        "action": command.action if command else "",
        "name": command.name if command else "",
        "version": command.version if command else "",
        "active": active,
        "time": round(time.time(), 3),
    }
    msg.update(extra)
    return msg


def parse_status(payload: bytes) -> Dict[str, Any]:
    """Parse a device status payload; raise ProtocolError if it is malformed."""
    data = _load_object(payload, MAX_STATUS_BYTES, "rollout status")
    if data.get("schema") != STATUS_SCHEMA or data.get("state") not in STATES:
        raise ProtocolError("rollout status has an unknown schema or state")
    for key in ("device", "rollout", "reason", "name", "version"):
        if not isinstance(data.get(key, ""), str):
            raise ProtocolError(f"rollout status field {key!r} must be a string")
    active = data.get("active")
    if active is not None and not (
        isinstance(active, dict) and all(isinstance(active.get(k), str) for k in ("name", "version"))
    ):
        raise ProtocolError("rollout status field 'active' must be null or {name, version}")
    return data


def model_message(device: str, fleet: str, active: Optional[Dict[str, str]], **extra: Any) -> Dict[str, Any]:
    """The retained ``<prefix>/<device>/model`` payload: the active release (None = the built-in model)."""
    msg: Dict[str, Any] = {
        "schema": MODEL_SCHEMA,
        "device": device,
        "fleet": fleet,
        "name": active["name"] if active else "",
        "version": active["version"] if active else "",
        "time": round(time.time(), 3),
    }
    msg.update(extra)
    return msg


def parse_model(payload: bytes) -> Dict[str, Any]:
    """Parse a model announcement; raise ProtocolError if malformed.

    Only ``fleet`` (a string, "" when absent) is required for discovery; the agent adds
    name, version, digest and backend, the device id is the topic's.
    """
    data = _load_object(payload, MAX_STATUS_BYTES, "model announcement")
    data.setdefault("fleet", "")
    if not all(isinstance(data.get(k, ""), str) for k in ("fleet", "name", "version")):
        raise ProtocolError("model announcement has bad fields")
    return data
