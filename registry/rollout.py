"""The rollout controller: canary waves over MQTT, an abort threshold, rollback orders.

A rollout sends a signed ``install`` command to each device on its own retained topic,
wave by wave: first the canary wave (``canary_pct`` of the devices), then waves of
``wave_size``. It watches ``<prefix>/+/rollout/status`` and moves on when every device
of a wave has finished (``active``, or a failure) or ``wave_timeout`` has passed
(devices still silent count as failed). When failed / touched devices exceeds
``abort_above_pct`` it aborts: every touched device gets a signed ``rollback`` order.
After the last wave the command is also retained on the fleet topic, so devices that
join later converge on the release.

The state (plan, waves, every device's last status) is written to
``<state_dir>/rollouts/<id>.json`` after every change, so ``resume`` continues a
rollout after the controller restarts, and ``edge-registry status`` reads it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release_contract.errors import ProtocolError, RolloutError
from release_contract.files import atomic_write
from release_contract.protocol import Command, parse_model, parse_status
from release_contract.topics import BrokerUrlError, device_topic, fleet_topic, parse_broker_url, status_topic

log = logging.getLogger(__name__)

#: Progress categories shown to the operator, from device states.
VIEW = {
    "received": "downloading",
    "downloading": "downloading",
    "verifying": "verifying",
    "validating": "verifying",
    "activating": "verifying",
    "health_check": "verifying",
    "active": "active",
    "rejected": "failed",
    "failed": "failed",
    "timed_out": "failed",
    "rolled_back": "rolled_back",
}
CATEGORIES = ("pending", "downloading", "verifying", "active", "failed", "rolled_back")
FAILED = ("rejected", "failed", "rolled_back", "timed_out")


@dataclass
class RolloutState:
    """Everything a rollout needs to resume; saved as JSON."""

    id: str
    name: str
    version: str
    store: str
    prefix: str
    fleet: str
    devices: List[str]
    waves: List[List[str]]
    abort_above_pct: float
    wave_timeout: float
    wave: int = 0
    status: str = "running"  # running | aborting | succeeded | aborted
    reason: str = ""
    devices_state: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sent: List[str] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    finished_at: Optional[float] = None

    def counts(self) -> Dict[str, int]:
        """Devices per progress category (pending, downloading, verifying, active, failed, rolled_back)."""
        out = dict.fromkeys(CATEGORIES, 0)
        for dev in self.devices:
            state = self.devices_state.get(dev, {}).get("state")
            out[VIEW.get(state, "pending") if state else "pending"] += 1
        return out

    def failures(self) -> List[str]:
        """Touched devices whose install failed (rejected, failed, rolled back, timed out)."""
        return [d for d in self.sent if self.devices_state.get(d, {}).get("state") in FAILED]


def plan_waves(devices: List[str], canary_pct: float, wave_size: int) -> List[List[str]]:
    """Split ``devices`` into a canary wave (``canary_pct`` %, at least one) and waves of ``wave_size``."""
    if not devices:
        raise RolloutError("no devices to roll out to: check --fleet / --devices and that devices are online")
    if wave_size < 1:
        raise RolloutError("--wave-size must be at least 1")
    canary = min(len(devices), max(1, math.ceil(len(devices) * canary_pct / 100))) if canary_pct > 0 else 0
    waves = [devices[:canary]] if canary else []
    rest = devices[canary:]
    waves += [rest[i : i + wave_size] for i in range(0, len(rest), wave_size)]
    return waves


def state_path(state_dir: Path, rollout_id: str) -> Path:
    """``<state_dir>/rollouts/<id>.json``."""
    return Path(state_dir) / "rollouts" / f"{rollout_id}.json"


def save_state(state_dir: Path, state: RolloutState) -> None:
    """Write the state atomically (a crash leaves the old state or the new one, never half)."""
    path = state_path(state_dir, state.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(state), indent=1, sort_keys=True).encode())


def load_state(state_dir: Path, rollout_id: Optional[str] = None) -> RolloutState:
    """Load rollout ``rollout_id``, or the most recently started one; raise RolloutError if none."""
    folder = Path(state_dir) / "rollouts"
    if rollout_id:
        path = state_path(state_dir, rollout_id)
    else:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not files:
            raise RolloutError(f"no rollout recorded in {folder}")
        path = files[-1]
    try:
        return RolloutState(**json.loads(path.read_text("utf-8")))
    except FileNotFoundError as exc:
        raise RolloutError(f"no rollout {rollout_id!r} in {folder}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise RolloutError(f"cannot read rollout state {path}: {exc}") from exc


class Controller:
    """Runs one rollout against a broker. Not thread-safe: drive it from one thread.

    ``on_change(state)`` is called after every status change (for a progress view).
    """

    def __init__(
        self,
        broker: str,
        key: Optional[Ed25519PrivateKey],
        state_dir: Path,
        on_change: Optional[Callable[[RolloutState], None]] = None,
        client_id: str = "",
    ) -> None:
        self.broker = broker
        self.key = key
        self.state_dir = Path(state_dir)
        self.on_change = on_change
        self.client_id = client_id or f"edge-registry-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self._events: queue.Queue[Tuple[str, bytes]] = queue.Queue()
        self._client: Any = None

    def _signing_key(self) -> Ed25519PrivateKey:
        if self.key is None:
            raise RolloutError("this controller was opened without a signing key: it can only read")
        return self.key

    # -- MQTT -------------------------------------------------------------------------------------------
    def connect(self, timeout: float = 10.0) -> None:
        """Connect to the broker; raise RolloutError when it is unreachable or refuses us."""
        import paho.mqtt.client as mqtt

        try:
            address = parse_broker_url(self.broker if "://" in self.broker else f"mqtt://{self.broker}")
        except BrokerUrlError as exc:
            raise RolloutError(f"invalid broker URL {exc}") from None
        host, port, tls = address.host, address.port, address.tls
        user, password = address.username, address.password
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id)
        client.max_inflight_messages_set(100)
        if user:
            client.username_pw_set(user, password)
        if tls:
            client.tls_set()
        connected: queue.Queue[Any] = queue.Queue()
        client.on_connect = lambda c, u, f, rc, p: connected.put(rc)
        client.on_message = lambda c, u, m: self._events.put((m.topic, bytes(m.payload)))
        try:
            client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise RolloutError(f"cannot reach the MQTT broker {host}:{port}: {exc}") from exc
        client.loop_start()
        try:
            rc = connected.get(timeout=timeout)
        except queue.Empty:
            client.loop_stop()
            raise RolloutError(f"no answer from the MQTT broker {host}:{port} within {timeout:g} s") from None
        if rc.is_failure:
            client.loop_stop()
            raise RolloutError(f"the MQTT broker {host}:{port} refused the connection: {rc}")
        self._client = client

    def close(self) -> None:
        """Disconnect from the broker."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None

    def _publish(self, topic: str, payload: bytes) -> None:
        info = self._client.publish(topic, payload, qos=1, retain=True)
        info.wait_for_publish(timeout=30)
        if not info.is_published():
            raise RolloutError(f"the broker did not acknowledge the command on {topic}")

    # -- discovery --------------------------------------------------------------------------------------
    def discover(self, prefix: str, fleet: str, quiet: float = 2.0, limit: float = 120.0) -> List[str]:
        """Devices whose retained ``<prefix>/<device>/model`` names ``fleet``.

        Collects announcements until none has arrived for ``quiet`` seconds (at most ``limit``).
        """
        found = self.announcements(prefix, quiet, limit)
        return sorted(d for d, msg in found.items() if msg["fleet"] == fleet)

    def announcements(self, prefix: str, quiet: float = 2.0, limit: float = 120.0) -> Dict[str, Dict[str, Any]]:
        """Device id -> its retained model announcement (``release_contract.protocol.parse_model``).

        Collects announcements until none has arrived for ``quiet`` seconds (at most ``limit``).
        """
        self._client.subscribe(f"{prefix}/+/model", qos=1)
        found: Dict[str, Dict[str, Any]] = {}
        end = time.monotonic() + limit
        while time.monotonic() < end:
            try:
                topic, payload = self._events.get(timeout=quiet)
            except queue.Empty:
                break
            try:
                msg = parse_model(payload)
            except ProtocolError:
                continue
            device = topic[len(prefix) + 1 : -len("/model")]
            if topic.startswith(f"{prefix}/") and device and "/" not in device:
                found[device] = msg
        self._client.unsubscribe(f"{prefix}/+/model")
        return found

    def publish_retained(self, topic: str, payload: bytes) -> None:
        """Publish ``payload`` retained at QoS 1 and wait for the broker's acknowledgement (30 s at most).

        Raises RolloutError when the broker does not acknowledge it.
        """
        self._publish(topic, payload)

    # -- the rollout ------------------------------------------------------------------------------------
    def run(self, state: RolloutState, poll: float = 0.5) -> RolloutState:
        """Drive ``state`` to ``succeeded`` or ``aborted`` (also after a restart); return it."""
        self._client.subscribe(f"{state.prefix}/+/rollout/status", qos=1)
        self._save(state)
        while state.status == "running" and state.wave < len(state.waves):
            wave = state.waves[state.wave]
            for device in wave:
                if device not in state.sent:
                    self._publish(device_topic(state.prefix, device), self._command(state, "install"))
                    state.sent.append(device)
            self._save(state)
            deadline = time.time() + state.wave_timeout
            while not self._wave_done(state, wave) and time.time() < deadline and not self._over(state):
                self._drain(state, poll)
            if self._over(state):
                break
            for device in wave:  # silent devices count as failed
                if self._state_of(state, device) not in ("active", *FAILED):
                    reason = f"no final status within {state.wave_timeout:g} s"
                    state.devices_state[device] = {"state": "timed_out", "reason": reason, "time": time.time()}
            state.wave += 1
            self._save(state)
            if self._over(state):
                break
        if state.status == "running" and self._over(state):
            state.status = "aborting"
            state.reason = (
                f"{len(state.failures())} of {len(state.sent)} devices failed, above the "
                f"{state.abort_above_pct:g}% threshold"
            )
            self._save(state)
        if state.status == "aborting":
            self._abort(state, poll)
        elif state.status == "running":
            if state.fleet:
                self._publish(fleet_topic(state.prefix, state.fleet), self._command(state, "install"))
            state.status = "succeeded"
            state.finished_at = time.time()
            self._save(state)
        return state

    def _abort(self, state: RolloutState, poll: float) -> None:
        log.warning("aborting rollout %s: %s", state.id, state.reason)
        order = self._command(state, "rollback")
        for device in state.sent:
            self._publish(device_topic(state.prefix, device), order)
        deadline = time.time() + state.wave_timeout
        while time.time() < deadline and not all(self._rolled_back(state, d) for d in state.sent):
            self._drain(state, poll)
        state.status = "aborted"
        state.finished_at = time.time()
        self._save(state)

    def _command(self, state: RolloutState, action: str) -> bytes:
        return Command(
            id=state.id,
            action=action,
            name=state.name,
            version=state.version,
            store=state.store,
            issued_at=int(time.time()),
        ).sign(self._signing_key())

    @staticmethod
    def _state_of(state: RolloutState, device: str) -> Optional[str]:
        return state.devices_state.get(device, {}).get("state")

    @staticmethod
    def _rolled_back(state: RolloutState, device: str) -> bool:
        info = state.devices_state.get(device, {})
        return info.get("action") == "rollback" and info.get("state") in ("rolled_back", "rejected", "failed")

    def _wave_done(self, state: RolloutState, wave: List[str]) -> bool:
        return all(self._state_of(state, d) in ("active", *FAILED) for d in wave)

    @staticmethod
    def _over(state: RolloutState) -> bool:
        return bool(state.sent) and len(state.failures()) * 100.0 / len(state.sent) > state.abort_above_pct

    def _drain(self, state: RolloutState, timeout: float) -> None:
        """Apply the status messages that arrive within ``timeout`` seconds."""
        changed = False
        end = time.monotonic() + timeout
        while True:
            try:
                topic, payload = self._events.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            try:
                msg = parse_status(payload)
            except ProtocolError as exc:
                log.debug("ignoring a status on %s: %s", topic, exc)
                continue
            device = msg["device"]
            if msg["rollout"] != state.id or device not in state.devices or topic != status_topic(state.prefix, device):
                continue
            if state.status == "aborting" and msg["action"] == "install" and msg["state"] == "active":
                continue  # a late success does not undo the rollback order
            state.devices_state[device] = {
                "state": msg["state"],
                "reason": msg.get("reason", ""),
                "action": msg["action"],
                "time": msg.get("time"),
            }
            changed = True
        if changed:
            self._save(state)

    def _save(self, state: RolloutState) -> None:
        save_state(self.state_dir, state)
        if self.on_change is not None:
            self.on_change(state)


def new_rollout(
    rollout_id: str,
    name: str,
    version: str,
    store: str,
    prefix: str,
    fleet: str,
    devices: List[str],
    canary_pct: float,
    wave_size: int,
    abort_above_pct: float,
    wave_timeout: float,
) -> RolloutState:
    """A fresh rollout state with its waves planned."""
    return RolloutState(
        id=rollout_id,
        name=name,
        version=version,
        store=store,
        prefix=prefix,
        fleet=fleet,
        devices=list(devices),
        waves=plan_waves(list(devices), canary_pct, wave_size),
        abort_above_pct=abort_above_pct,
        wave_timeout=wave_timeout,
    )
