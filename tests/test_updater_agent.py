"""Updates inside a running agent: real broker, real publishing session, real classifier swap."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Tuple

import paho.mqtt.client as paho
import pytest
from helpers.commands import signed
from helpers.fleet import ROOT, make_release_dir, push_version
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import UpdatesConfig, load_config
from edge_agent.errors import ConfigError
from edge_agent.inference.classifier import build_classifier
from edge_agent.publishing.session import PublishingSession, model_announcement
from edge_agent.service import release_opener
from edge_agent.updating.agent import AgentUpdates
from registry.rollout import Controller
from registry.store import open_store
from release_contract.protocol import fleet_target
from release_contract.signing import generate_keypair, load_private_key
from release_contract.topics import fleet_topic

MODEL = ROOT / "models" / "digits_int8.tflite"


def send(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-controller")
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    info = client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(10)
    assert info.is_published()
    client.disconnect()
    client.loop_stop()


@pytest.fixture
def agent(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Tuple[AgentUpdates, object, Path, str]]:
    priv, pub = generate_keypair(tmp_path / "keys")
    store = open_store(str(tmp_path / "store"))
    push_version(store, load_private_key(priv), make_release_dir(tmp_path / "build"), "1")
    config = load_config(
        environ={},
        overrides={
            "mqtt": {"url": mosquitto.url},
            "device_id": "cam-1",
            "state_dir": str(tmp_path / "state"),
            "updates": {"enabled": True, "trust": str(pub), "fleet": "farm"},
        },
    )
    classifier = build_classifier(MODEL, None, device="cpu", device_id="cam-1")
    session = PublishingSession(config, model_announcement(classifier.model, classifier.runtime.backend)).start()
    updates = AgentUpdates(config, session, classifier, release_opener(config))
    updates.start()
    try:
        yield updates, classifier, priv, store.url
    finally:
        updates.close()
        session.stop(5)


def test_fleet_command_swaps_the_running_classifier_and_rollback_restores_it(
    agent: Tuple[AgentUpdates, object, Path, str], mosquitto: Mosquitto
) -> None:
    updates, classifier, priv, store = agent
    builtin = classifier.runtime  # type: ignore[attr-defined]
    key = load_private_key(priv)
    watch = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam-1/#")
    send(
        mosquitto,
        fleet_topic("edgetpu", "farm"),
        signed(key, "r1", "install", "1", store, target=fleet_target("farm")),
    )
    assert watch.wait_until(lambda s: any(m["state"] == "active" for m in s.json_on("rollout/status")), 120)
    assert [m["state"] for m in watch.json_on("rollout/status")][-1] == "active"
    assert classifier.model.version == "1"  # type: ignore[attr-defined]
    assert classifier.runtime is not builtin  # type: ignore[attr-defined]
    assert "updates" in str(classifier.runtime.model_path)  # type: ignore[attr-defined]
    assert watch.wait_until(lambda s: any(m.get("version") == "1" for m in s.json_on("/model")), 30)
    announced = [m for m in watch.json_on("/model") if m.get("version") == "1"][-1]
    assert announced["fleet"] == "farm" and announced["digest"].startswith("sha256:")

    send(mosquitto, "edgetpu/cam-1/rollout", signed(key, "r1", "rollback", "1", store, device="cam-1"))
    assert watch.wait_until(lambda s: s.json_on("rollout/status")[-1]["state"] == "rolled_back", 60)
    assert classifier.runtime is builtin  # type: ignore[attr-defined]
    watch.client.disconnect()
    watch.client.loop_stop()


def test_controller_discovers_the_agent_by_its_fleet(
    agent: Tuple[AgentUpdates, object, Path, str], mosquitto: Mosquitto, tmp_path: Path
) -> None:
    _updates, _classifier, priv, _store = agent
    controller = Controller(mosquitto.url, load_private_key(priv), tmp_path / "ctl")
    controller.connect()
    try:
        assert controller.discover("edgetpu", "farm") == ["cam-1"]
    finally:
        controller.close()


def test_updates_need_a_trusted_key() -> None:
    with pytest.raises(ConfigError, match="updates.trust"):
        UpdatesConfig(enabled=True).validate()
    with pytest.raises(ConfigError, match="updates.fleet"):
        UpdatesConfig(fleet="a/b").validate()
