"""Rollout messages on MQTT: commands to devices, device progress, the active model.

Topics (``prefix`` defaults to ``edgetpu``)::

    <prefix>/fleet/<fleet>/rollout      command for every device of a fleet (retained)
    <prefix>/<device>/rollout           command for one device (retained)
    <prefix>/<device>/rollout/status    the device's progress on its latest command (retained)
    <prefix>/<device>/model             the device's active release (retained)

A command (schema ``edgetpu.rollout/2``) is signed like a manifest: ed25519 over the
canonical JSON of every field but ``signatures``. ``action`` is ``install`` (go to
``name:version`` from ``store``; an older version only with ``allow_downgrade``, another
model name only with ``allow_model_change``) or ``rollback`` (leave ``version`` of
``name`` for the release before it). Every command is bound to its ``target``
(``device:<id>`` or ``fleet:<fleet>``), its rollout ``id``, a validity window
(``issued_at`` .. ``expires_at``, Unix seconds) and ``seq``, a number that grows with
every command signed by the same key: devices refuse mis-targeted, expired and replayed
commands (see :func:`check_admission`). Parsing is strict: unknown fields, wrong types,
the unbound schema ``edgetpu.rollout/1`` and oversized payloads are refused.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Dict, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release_contract.errors import ProtocolError, RegistryError, VerificationError
from release_contract.manifest import canonical_json, check_name, check_version
from release_contract.signing import TrustedKeys, sign_payload
from release_contract.topics import device_topic, fleet_topic, model_topic, status_topic
from release_contract.untrusted_json import loads_untrusted

__all__ = ["device_topic", "fleet_topic", "model_topic", "status_topic"]  # re-exported: callers of the protocol

COMMAND_SCHEMA = "edgetpu.rollout/2"
OLD_COMMAND_SCHEMAS = ("edgetpu.rollout/1",)
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
_TARGET_RE = re.compile(r"(device|fleet):[^/#+\x00\n]{1,128}")  # fullmatch
#: Accepted difference between the controller's clock and the device's, in seconds.
CLOCK_TOLERANCE_S = 300
#: The longest validity window a device accepts (issued_at to expires_at), in seconds.
MAX_LIFETIME_S = 90 * 86400


@dataclass(frozen=True)
class Command:
    """A rollout command, as sent by the controller and checked by the device."""

    id: str
    action: str
    name: str
    version: str
    store: str
    target: str
    issued_at: int
    expires_at: int
    seq: int
    allow_downgrade: bool = False
    allow_model_change: bool = False

    def to_dict(self) -> Dict[str, Any]:
        """The signed fields, as a JSON-ready dict (without ``signatures``)."""
        return {
            "schema": COMMAND_SCHEMA,
            "id": self.id,
            "action": self.action,
            "name": self.name,
            "version": self.version,
            "store": self.store,
            "target": self.target,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "seq": self.seq,
            "allow_downgrade": self.allow_downgrade,
            "allow_model_change": self.allow_model_change,
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
    "target": str,
    "issued_at": int,
    "expires_at": int,
    "seq": int,
    "allow_downgrade": bool,
    "allow_model_change": bool,
    "signatures": list,
}


def device_target(device: str) -> str:
    """The ``target`` of a command for one device."""
    return f"device:{device}"


def fleet_target(fleet: str) -> str:
    """The ``target`` of a command for every device of a fleet."""
    return f"fleet:{fleet}"


def _load_object(payload: bytes, limit: int, what: str) -> Dict[str, Any]:
    try:
        data = loads_untrusted(payload, what, limit)
    except ValueError as exc:
        raise ProtocolError(str(exc)) from exc
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} is not a JSON object")
    return data


@dataclass(frozen=True)
class SignedCommand:
    """A parsed command and the id of the trusted key that signed it ("" when not verified)."""

    command: Command
    key_id: str


def parse_command(payload: bytes, trusted: Optional[TrustedKeys]) -> Command:
    """Parse and (with ``trusted``) verify a command; raise ProtocolError or VerificationError."""
    return parse_signed_command(payload, trusted).command


def parse_signed_command(payload: bytes, trusted: Optional[TrustedKeys]) -> SignedCommand:
    """Parse a command, verify its signature with ``trusted`` and say which key signed it.

    Raises :class:`ProtocolError` (malformed, oversized, the old unbound schema) or
    :class:`VerificationError` (unsigned, untrusted key, bad signature).
    """
    data = _load_object(payload, MAX_COMMAND_BYTES, "rollout command")
    if data.get("schema") in OLD_COMMAND_SCHEMAS:
        raise ProtocolError(
            f"rollout command schema {data['schema']!r} is no longer accepted: it is not bound to a device, "
            f"time and sequence (send {COMMAND_SCHEMA} with a current edge-registry)"
        )
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
    if not _TARGET_RE.fullmatch(data["target"]):
        raise ProtocolError(f"invalid rollout target {data['target'][:140]!r}: expected device:<id> or fleet:<fleet>")
    if data["seq"] < 1 or data["issued_at"] < 0 or not 0 < data["expires_at"] - data["issued_at"] <= MAX_LIFETIME_S:
        raise ProtocolError("rollout command has a bad sequence number or validity window")
    try:
        check_name(data["name"])
        version = check_version(data["version"])
    except RegistryError as exc:
        raise ProtocolError(f"rollout command: {exc}") from exc
    sigs = data.pop("signatures")
    if not all(isinstance(sig, dict) for sig in sigs):
        raise ProtocolError("rollout command signatures must be objects")
    signer = trusted.verify(canonical_json(data), sigs) if trusted is not None else ""
    command = Command(
        id=data["id"],
        action=data["action"],
        name=data["name"],
        version=version,
        store=data["store"],
        target=data["target"],
        issued_at=data["issued_at"],
        expires_at=data["expires_at"],
        seq=data["seq"],
        allow_downgrade=data["allow_downgrade"],
        allow_model_change=data["allow_model_change"],
    )
    return SignedCommand(command, signer)


def check_admission(command: Command, device: str, fleet: str, now: float) -> None:
    """Refuse a command meant for another device or fleet, or outside its validity window.

    ``now`` is the device's clock (Unix seconds); the window is widened by
    CLOCK_TOLERANCE_S on both sides for clocks that disagree. Raises
    :class:`VerificationError` with the reason.
    """
    if command.target not in (device_target(device), *((fleet_target(fleet),) if fleet else ())):
        raise VerificationError(
            f"command for {command.target}, not for this device ({device_target(device)}"
            + (f" or {fleet_target(fleet)}" if fleet else "")
            + "): replayed from another topic?"
        )
    if command.issued_at > now + CLOCK_TOLERANCE_S:
        raise VerificationError(
            f"command issued {command.issued_at - now:.0f} s in the future: "
            "the controller's or this device's clock is wrong"
        )
    if command.expires_at < now - CLOCK_TOLERANCE_S:
        raise VerificationError(f"command expired {now - command.expires_at:.0f} s ago (replayed or delayed)")


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
    """Parse a device status payload; raise ProtocolError if it is malformed.

    ``schema``, ``state``, ``device`` (non-empty), ``rollout`` and ``action`` are required;
    ``reason``, ``name`` and ``version`` default to "" and must be strings when present.
    """
    data = _load_object(payload, MAX_STATUS_BYTES, "rollout status")
    if data.get("schema") != STATUS_SCHEMA or data.get("state") not in STATES:
        raise ProtocolError("rollout status has an unknown schema or state")
    for key in ("device", "rollout", "action"):
        if not isinstance(data.get(key), str):
            raise ProtocolError(f"rollout status lacks the string field {key!r}")
    if not data["device"]:
        raise ProtocolError("rollout status names no device")
    for key in ("reason", "name", "version"):
        if not isinstance(data.setdefault(key, ""), str):
            raise ProtocolError(f"rollout status field {key!r} must be a string")
    if not isinstance(data.get("time"), (int, float, type(None))) or isinstance(data.get("time"), bool):
        raise ProtocolError("rollout status field 'time' must be a number")
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
