"""Issue item 3: one retained, malformed status message must not crash the rollout controller.

The attack: ``{"schema":"edgetpu.rollout-status/1","state":"active"}`` retained on
``edgetpu/evil/rollout/status`` crashed ``edge-registry rollout`` and ``--resume last``
with ``KeyError: 'device'`` after the canary had been sent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Tuple

import paho.mqtt.client as paho
import pytest
from click.testing import CliRunner
from helpers.fleet import SimDevice, make_release_dir, push_version, sample_inputs
from helpers.mosquitto import Mosquitto

from registry.cli import main
from registry.rollout import Controller, new_rollout
from registry.rollout_state import save_state
from registry.store import open_store
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key

EVIL = b'{"schema":"edgetpu.rollout-status/1","state":"active"}'
MALFORMED = [
    EVIL,
    b"not json",
    b"[1, 2]",
    b'{"schema":"edgetpu.rollout-status/1","state":"active","device":7,"rollout":"x","action":"install"}',
    b'{"schema":"edgetpu.rollout-status/1","state":"active","device":"cam-1","rollout":null,"action":"install"}',
    b'{"schema":"edgetpu.rollout-status/1","state":"active","device":"","rollout":"r","action":"install"}',
    b'{"schema":"edgetpu.rollout-status/1","state":"active","device":"cam-1","rollout":"r","action":"install",'
    b'"time":"soon"}',
]


def retain(broker: Mosquitto, messages: List[Tuple[str, bytes]]) -> None:
    """Publish retained messages as an attacker with broker access would."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="attacker")
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=True).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.fixture
def setup(tmp_path: Path, mosquitto: Mosquitto) -> Tuple[Path, Path, SimDevice]:
    """A key file, a store with digits:1 and one simulated device, cam-1, on the broker."""
    priv, pub = generate_keypair(tmp_path / "keys")
    push_version(open_store(str(tmp_path / "store")), load_private_key(priv), make_release_dir(tmp_path / "b"), "1")
    device = SimDevice(
        "cam-1",
        tmp_path / "cam-1",
        mosquitto.host,
        mosquitto.port,
        TrustedKeys.from_paths([pub]),
        inputs=sample_inputs(1),
    )
    return priv, tmp_path / "store", device


def rollout_args(tmp_path: Path, priv: Path, store: Path, broker: Mosquitto) -> List[str]:
    return ["--key", str(priv), "--broker", broker.url, "--state-dir", str(tmp_path / "ctl"), "--store", str(store)]


def test_retained_status_without_a_device_does_not_crash_rollout_or_resume(
    tmp_path: Path, mosquitto: Mosquitto, setup: Tuple[Path, Path, SimDevice]
) -> None:
    priv, store, device = setup
    retain(mosquitto, [("edgetpu/evil/rollout/status", EVIL)])
    device.start()
    try:
        common = rollout_args(tmp_path, priv, store, mosquitto)
        res = CliRunner().invoke(main, ["rollout", "digits:1", "--devices", "cam-1", "--wave-timeout", "120", *common])
        assert res.exit_code == 0, res.output
        assert "succeeded" in res.output and "Traceback" not in res.output
        # an interrupted rollout resumed with the evil message still retained
        retain(mosquitto, [("edgetpu/evil/rollout/status", EVIL)])
        state = new_rollout("r-resume", "digits", "1", str(store), "edgetpu", "", ["cam-1"], 100, 1, 0, 120)
        save_state(tmp_path / "ctl", state)
        resumed = CliRunner().invoke(main, ["rollout", "--resume", "last", *common])
        assert resumed.exit_code == 0, resumed.output
        assert "r-resume: succeeded" in resumed.output
    finally:
        device.stop()
    assert device.active() == {"name": "digits", "version": "1"}


def test_malformed_status_messages_are_ignored_with_rate_limited_warnings(
    tmp_path: Path, mosquitto: Mosquitto, setup: Tuple[Path, Path, SimDevice], caplog: pytest.LogCaptureFixture
) -> None:
    priv, store, device = setup
    flood = [(f"edgetpu/evil-{i}/rollout/status", MALFORMED[i % len(MALFORMED)]) for i in range(300)]
    flood += [("edgetpu/cam-1/rollout/status", m) for m in MALFORMED]
    retain(mosquitto, flood)
    device.start()
    controller = Controller(mosquitto.url, load_private_key(priv), tmp_path / "ctl")
    caplog.set_level(logging.WARNING, logger="registry.rollout")
    controller.connect()
    try:
        state = new_rollout("r1", "digits", "1", str(store), "edgetpu", "", ["cam-1"], 100, 1, 0, 120)
        final = controller.run(state)
    finally:
        controller.close()
        device.stop()
    assert final.status == "succeeded", final.reason
    assert final.devices_state["cam-1"]["state"] == "active"
    warnings = [r for r in caplog.records if r.name == "registry.rollout"]
    assert 1 <= len(warnings) <= len(MALFORMED) + 2
