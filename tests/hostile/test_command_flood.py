"""Issue item 4: a flood of garbage rollout commands must not drop real ones nor flood the log.

The attack: 2,000 garbage commands produced 8,909 log lines, and real commands were
dropped. Here 2,000 garbage commands of every kind arrive on a device's topic over a
real Mosquitto, with real commands in between; both real commands are applied and the
warnings stay a handful.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import List

import paho.mqtt.client as paho
import pytest
from helpers.commands import make_command, signed
from helpers.fleet import SimDevice, make_release_dir, push_version, sample_inputs
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber

from registry.store import open_store
from release_contract.manifest import canonical_json
from release_contract.ratelimit import RateLimitedWarning
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.topics import device_topic, status_topic


def garbage(i: int, key: object, stranger: object, store: str) -> bytes:
    """The i-th garbage command: ten kinds, from random bytes to validly signed but mis-targeted."""
    kind = i % 10
    if kind == 0:
        return bytes((i * 7 + n) % 256 for n in range(64))
    if kind == 1:
        return b"{" * 50
    if kind == 2:
        return b"x" * 20_000
    if kind == 3:
        return json.dumps({"schema": "edgetpu.rollout/1", "id": f"g{i}"}).encode()
    if kind == 4:
        return json.dumps({"schema": "edgetpu.rollout/2", "id": f"g{i}", "junk": i}).encode()
    if kind == 5:
        body = make_command(f"g{i}", "install", "1", store, device="cam-1").to_dict()
        return canonical_json({**body, "signatures": []})
    if kind == 6:
        return signed(stranger, f"g{i}", "install", "1", store, device="cam-1")  # type: ignore[arg-type]
    if kind == 7:
        return signed(key, f"g{i}", "install", "1", store, device="cam-2")  # type: ignore[arg-type]
    if kind == 8:
        return json.dumps([i]).encode()
    body = make_command(f"g{i}", "install", "1", store, device="cam-1").to_dict()
    return canonical_json({**body, "signatures": [{"keyid": "0" * 64, "sig": "AAAA"}]})


def test_two_thousand_garbage_commands_do_not_drop_real_ones_or_flood_the_log(
    tmp_path: Path, mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    stranger = load_private_key(generate_keypair(tmp_path / "stranger")[0])
    store = open_store(str(tmp_path / "store"))
    folder = make_release_dir(tmp_path / "build")
    for version in ("1", "2"):
        push_version(store, key, folder, version)
    caplog.set_level(logging.WARNING)
    device = SimDevice(
        "cam-1",
        tmp_path / "cam-1",
        mosquitto.host,
        mosquitto.port,
        TrustedKeys.from_paths([pub]),
        inputs=sample_inputs(1),
    )
    device.start()
    watch = Subscriber(mosquitto.host, mosquitto.port, status_topic("edgetpu", "cam-1"))
    attacker = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="attacker")
    attacker.max_inflight_messages_set(200)
    attacker.connect(mosquitto.host, mosquitto.port, 30)
    attacker.loop_start()
    topic = device_topic("edgetpu", "cam-1")
    real = {
        1000: signed(key, "r1", "install", "1", store.url, device="cam-1"),
        2000: signed(key, "r2", "install", "2", store.url, device="cam-1"),
    }
    try:
        infos = []
        for i in range(1, 2001):
            infos.append(attacker.publish(topic, garbage(i, key, stranger, store.url), qos=1))
            if i in real:
                infos.append(attacker.publish(topic, real[i], qos=1, retain=True))
        for info in infos:
            info.wait_for_publish(30)
        assert all(info.is_published() for info in infos)

        def done(s: Subscriber) -> bool:
            return [m.get("rollout") for m in s.json_on("/rollout/status") if m["state"] == "active"] == ["r1", "r2"]

        assert watch.wait_until(done, 180)
    finally:
        attacker.disconnect()
        attacker.loop_stop()
        watch.close()
        device.stop()
    assert device.commands >= 2002  # every message reached the device: nothing was lost on the way
    assert device.active() == {"name": "digits", "version": "2"}
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("edge_agent")]
    assert 1 <= len(warnings) <= 25, [r.getMessage() for r in warnings]
    rejected: List[dict] = [m for m in watch.json_on("/rollout/status") if m["state"] == "rejected"]
    assert 1 <= len(rejected) <= 25


def test_rate_limited_warning_logs_once_per_reason_per_interval_and_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    warn = RateLimitedWarning(logging.getLogger("hostile.flood"), interval=60.0, max_reasons=2, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="hostile.flood")
    assert [warn("a", "bad %s", "a") for _ in range(5)] == [True, False, False, False, False]
    # past max_reasons, new reasons share one slot: c is logged, d is counted with it
    assert warn("b", "bad b") and warn("c", "bad c") and not warn("d", "bad d")
    assert warn.suppressed() == 5
    now[0] = 61.0
    assert warn("a", "bad %s", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "bad a",
        "bad b",
        "bad c",
        "bad a (4 more like it in the last 60 s)",
    ]
