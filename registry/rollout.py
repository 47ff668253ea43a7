"""The rollout controller: canary waves over MQTT, an abort threshold, rollback orders.

A rollout sends a signed ``install`` command to each device on its own retained topic,
wave by wave: first the canary wave (``canary_pct`` of the devices), then waves of
``wave_size``. It watches ``<prefix>/+/rollout/status`` and moves on when every device
of a wave has finished (``active``, or a failure) or ``wave_timeout`` has passed
(devices still silent count as failed). When failed / touched devices exceeds
``abort_above_pct`` it aborts: every touched device gets a signed ``rollback`` order.
After the last wave the command is also retained on the fleet topic, so devices that
join later converge on the release.

The state (plan, waves, every device's last status; :mod:`registry.rollout_state`) is
written to ``<state_dir>/rollouts/<id>.json`` after every change, so ``resume``
continues a rollout after the controller restarts, and ``edge-registry status`` reads it.

Every command is signed for one target (a device, or the fleet), with a validity window
of ``command_ttl`` seconds and the next number of the key's durable sequence
(:mod:`registry.sequence`), so devices can refuse replays. Every status message read is
validated; bad ones are ignored with a rate-limited warning.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.rollout_state import CATEGORIES, FAILED, RolloutState, load_state, new_rollout, save_state
from registry.sequence import next_sequence
from release_contract.errors import ProtocolError, RolloutError
from release_contract.protocol import Command, device_target, fleet_target, parse_model, parse_status
from release_contract.ratelimit import RateLimitedWarning
from release_contract.signing import key_id
from release_contract.topics import BrokerUrlError, device_topic, fleet_topic, parse_broker_url, status_topic

log = logging.getLogger(__name__)

# the state's names are re-exported: the controller's callers use them together
__all__ = ["CATEGORIES", "Controller", "RolloutState", "load_state", "new_rollout"]


class Controller:
    """Runs one rollout against a broker. Not thread-safe: drive it from one thread.

    ``on_change(state)`` is called after every status change (for a progress view).
    Every message read is validated; bad ones are ignored with a warning logged at most
    once per kind every ``warning_interval`` seconds.
    """

    def __init__(
        self,
        broker: str,
        key: Optional[Ed25519PrivateKey],
        state_dir: Path,
        on_change: Optional[Callable[[RolloutState], None]] = None,
        client_id: str = "",
        warning_interval: float = 60.0,
    ) -> None:
        self.broker = broker
        self.key = key
        self.state_dir = Path(state_dir)
        self.on_change = on_change
        self.client_id = client_id or f"edge-registry-{os.getpid()}-{int(time.time() * 1000) % 100000}"
        self._events: queue.Queue[Tuple[str, bytes]] = queue.Queue(maxsize=10_000)
        self._warn = RateLimitedWarning(log, warning_interval)
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
        client.on_message = lambda c, u, m: self._enqueue(m.topic, bytes(m.payload))
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

    def _enqueue(self, topic: str, payload: bytes) -> None:
        """Network thread: keep a message for the controller's thread; a flood is dropped, not hoarded."""
        try:
            self._events.put_nowait((topic, payload))
        except queue.Full:
            self._warn("flood", "dropping messages: %d are already waiting to be read", self._events.qsize())

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
                    self._publish(
                        device_topic(state.prefix, device), self._command(state, "install", device_target(device))
                    )
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
                self._publish(
                    fleet_topic(state.prefix, state.fleet), self._command(state, "install", fleet_target(state.fleet))
                )
            state.status = "succeeded"
            state.finished_at = time.time()
            self._save(state)
        return state

    def _abort(self, state: RolloutState, poll: float) -> None:
        log.warning("aborting rollout %s: %s", state.id, state.reason)
        for device in state.sent:
            self._publish(device_topic(state.prefix, device), self._command(state, "rollback", device_target(device)))
        deadline = time.time() + state.wave_timeout
        while time.time() < deadline and not all(self._rolled_back(state, d) for d in state.sent):
            self._drain(state, poll)
        state.status = "aborted"
        state.finished_at = time.time()
        self._save(state)

    def _command(self, state: RolloutState, action: str, target: str) -> bytes:
        """A signed command for ``target``, with the next sequence number of the controller's key."""
        now = int(time.time())
        return Command(
            id=state.id,
            action=action,
            name=state.name,
            version=state.version,
            store=state.store,
            target=target,
            issued_at=now,
            expires_at=now + int(state.command_ttl),
            seq=next_sequence(self.state_dir, key_id(self._signing_key().public_key())),
            allow_downgrade=state.allow_downgrade,
            allow_model_change=state.allow_model_change,
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
                self._warn(str(exc)[:60], "ignoring a malformed status on %s: %s", topic[:200], exc)
                continue
            device = msg["device"]
            if device not in state.devices or topic != status_topic(state.prefix, device):
                if msg["rollout"] == state.id:
                    self._warn("foreign", "ignoring a status for %s on %s", device[:128], topic[:200])
                continue
            if msg["rollout"] != state.id:
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
