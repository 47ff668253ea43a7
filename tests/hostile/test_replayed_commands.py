"""Issue item 1: signed rollout commands captured and replayed must not move a device.

Each test reproduces an attack from the issue: a rollback captured on one device's topic
and republished on another's, an old install of another model replayed, and replays
taking a device from v2 back to v1. Devices answer each with a ``rejected`` status
that says why, and keep running what they ran.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.commands import signed
from helpers.fleet import SimDevice, make_release_dir, push_version, run_model, sample_inputs
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber

from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from registry.sequence import next_sequence
from registry.store import open_store
from release_contract.manifest import canonical_json
from release_contract.protocol import CLOCK_TOLERANCE_S, fleet_target
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, sign_payload
from release_contract.topics import device_topic, status_topic


class Device:
    """A real updater on its own state directory, its health check a real interpreter run."""

    def __init__(self, state: Path, pub: Path, device_id: str = "cam-1", **kwargs: Any) -> None:
        self.statuses: List[Dict[str, Any]] = []
        self.inputs = sample_inputs(1)
        self.updater = Updater(
            state, TrustedKeys.from_paths([pub]), device_id, 14, self.statuses.append, self.activate, **kwargs
        )
        self.updater.start()

    def activate(self, release: Optional[ActiveRelease]) -> bool:
        if release is not None:
            run_model(release.cpu_model, self.inputs)
        return True

    def active(self) -> Optional[Dict[str, str]]:
        release = self.updater.active_release()
        return release.pointer if release else None


@pytest.fixture
def world(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path, str]:
    """A signing key, its public key and a store with digits:1, digits:2 and other:1."""
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    store = open_store(str(tmp_path / "store"))
    folder = make_release_dir(tmp_path / "build")
    for version in ("1", "2"):
        push_version(store, key, folder, version)
    push_version(store, key, folder, "1", name="other")
    return key, pub, store.url


def final(device: Device, payload: bytes) -> Dict[str, Any]:
    status = device.updater.process(payload)
    assert status is not None
    return status


V1 = {"name": "digits", "version": "1"}
V2 = {"name": "digits", "version": "2"}


def test_rollback_captured_on_one_device_topic_and_republished_on_another_is_refused(
    tmp_path: Path, mosquitto: Mosquitto, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    trusted = TrustedKeys.from_paths([pub])
    devices = [SimDevice(d, tmp_path / d, mosquitto.host, mosquitto.port, trusted) for d in ("cam-a", "cam-b")]
    for device in devices:
        device.start()
    watch = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/+/rollout/status")
    sender = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam-a/rollout")
    try:
        for device in devices:
            sender.client.publish(
                device_topic("edgetpu", device.device_id),
                signed(key, "r1", "install", "1", store, device=device.device_id),
                qos=1,
                retain=True,
            )
        assert watch.wait_until(lambda s: [m["state"] for m in s.json_on("/rollout/status")].count("active") == 2)
        rollback = signed(key, "r1", "rollback", "1", store, device="cam-a")
        sender.client.publish(device_topic("edgetpu", "cam-a"), rollback, qos=1, retain=True)
        assert sender.wait_until(lambda s: rollback in s.on("/cam-a/rollout"))
        captured = sender.on("/cam-a/rollout")[-1]
        assert watch.wait_until(lambda s: any(m["state"] == "rolled_back" for m in s.json_on("cam-a/rollout/status")))
        # the attacker republishes the captured rollback on cam-b's topic
        sender.client.publish(device_topic("edgetpu", "cam-b"), captured, qos=1, retain=True)
        assert watch.wait_until(lambda s: s.json_on(status_topic("edgetpu", "cam-b"))[-1]["state"] == "rejected")
    finally:
        watch.close()
        sender.close()
        for device in devices:
            device.stop()
    refusal = watch.json_on(status_topic("edgetpu", "cam-b"))[-1]
    assert "device:cam-a, not for this device" in refusal["reason"]
    assert devices[1].active() == V1
    assert devices[0].active() is None


def test_old_install_of_another_model_replayed_is_refused(
    tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    device = Device(tmp_path / "state", pub)
    old_other = signed(key, "r-other", "install", "1", store, device="cam-1", name="other")
    assert final(device, signed(key, "r2", "install", "2", store, device="cam-1"))["state"] == "active"
    status = final(device, old_other)
    assert status["state"] == "rejected"
    assert "replayed or stale command" in status["reason"]
    assert device.active() == V2


def test_fresh_install_of_another_model_needs_the_signed_allow_model_change(
    tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    device = Device(tmp_path / "state", pub)
    assert final(device, signed(key, "r2", "install", "2", store, device="cam-1"))["state"] == "active"
    status = final(device, signed(key, "r-other", "install", "1", store, device="cam-1", name="other"))
    assert status["state"] == "rejected" and "allow_model_change" in status["reason"]
    assert device.active() == V2
    switched = signed(key, "r-other2", "install", "1", store, device="cam-1", name="other", allow_model_change=True)
    assert final(device, switched)["state"] == "active"
    # back to digits: a model change, and version 1 is below the 2 this device already ran
    back = signed(key, "r-back", "install", "1", store, device="cam-1", allow_model_change=True)
    status = final(device, back)
    assert status["state"] == "rejected" and "allow_downgrade" in status["reason"]
    assert device.active() == {"name": "other", "version": "1"}


def test_replays_alone_cannot_take_a_device_from_v2_to_v1(
    tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    device = Device(tmp_path / "state", pub, fleet="farm")
    install_1 = signed(key, "r1", "install", "1", store, device="cam-1")
    fleet_1 = signed(key, "r1", "install", "1", store, target=fleet_target("farm"))
    downgrade_1 = signed(key, "r-down", "install", "1", store, device="cam-1", allow_downgrade=True)
    assert final(device, install_1)["state"] == "active"
    install_2 = signed(key, "r2", "install", "2", store, device="cam-1")
    assert final(device, install_2)["state"] == "active"
    rollback_2 = signed(key, "r2", "rollback", "2", store, device="cam-1")
    # every command signed before, replayed: none moves the device
    status = final(device, downgrade_1)
    assert status["state"] == "rejected" and "replayed or stale" in status["reason"], status
    # the command it finished, and an older copy of that rollout step: redeliveries, nothing to do
    assert device.updater.process(install_1) is None
    assert device.updater.process(fleet_1) is None
    assert device.active() == V2
    # a restarted device remembers the highest sequence it accepted
    device.updater.close()
    device = Device(tmp_path / "state", pub, fleet="farm")
    # a rollback signed before the install it would undo, held back and sent afterwards
    assert final(device, signed(key, "r3", "install", "2", store, device="cam-1"))["state"] == "active"
    status = final(device, rollback_2)
    assert status["state"] == "rejected" and "replayed or stale" in status["reason"]
    assert device.active() == V2


def test_commands_outside_their_validity_window_are_refused_with_the_clock_tolerance(
    tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    now = time.time()
    device = Device(tmp_path / "state", pub, clock=lambda: now)
    expired = signed(key, "r-old", "install", "1", store, device="cam-1", issued_at=int(now) - 7200, ttl=3600)
    status = final(device, expired)
    assert status["state"] == "rejected" and "expired" in status["reason"]
    future = signed(key, "r-future", "install", "1", store, device="cam-1", issued_at=int(now) + 3600)
    status = final(device, future)
    assert status["state"] == "rejected" and "in the future" in status["reason"]
    skewed = signed(key, "r-skew", "install", "1", store, device="cam-1", issued_at=int(now) + CLOCK_TOLERANCE_S - 5)
    assert final(device, skewed)["state"] == "active"


def test_unbound_commands_of_the_old_schema_are_refused_with_the_reason(
    tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]
) -> None:
    key, pub, store = world
    device = Device(tmp_path / "state", pub)
    body = {
        "schema": "edgetpu.rollout/1",
        "id": "r1",
        "action": "install",
        "name": "digits",
        "version": "1",
        "store": store,
        "issued_at": int(time.time()),
        "allow_downgrade": False,
    }
    old = canonical_json({**body, "signatures": [sign_payload(canonical_json(body), key)]})
    status = final(device, old)
    assert status["state"] == "rejected"
    assert "edgetpu.rollout/1" in status["reason"] and "no longer accepted" in status["reason"]
    assert device.active() is None


def test_a_tampered_target_breaks_the_signature(tmp_path: Path, world: Tuple[Ed25519PrivateKey, Path, str]) -> None:
    key, pub, store = world
    device = Device(tmp_path / "state", pub)
    moved = json.loads(signed(key, "r1", "install", "1", store, device="cam-9"))
    moved["target"] = "device:cam-1"
    status = final(device, json.dumps(moved).encode())
    assert status["state"] == "rejected" and "bad signature" in status["reason"]


def test_controller_sequence_grows_across_rollouts_restarts_and_a_clock_stepping_back(tmp_path: Path) -> None:
    first = next_sequence(tmp_path / "ctl", "k1")
    second = next_sequence(tmp_path / "ctl", "k1")  # a second rollout, or a restarted controller
    assert second > first
    stepped_back = next_sequence(tmp_path / "ctl", "k1", clock=lambda: 1.0)
    assert stepped_back == second + 1
    assert next_sequence(tmp_path / "ctl", "k2", clock=lambda: 1.0) == 1000  # per key
