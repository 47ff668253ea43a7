"""`edge-agent run` with updates on: a rollout swaps the model under a running frame loop."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, List, Sequence

import numpy as np
import paho.mqtt.client as paho
from helpers.commands import signed
from helpers.fleet import ROOT, make_release_dir, push_version
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import load_config
from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.sources import Frame
from edge_agent.publishing.session import model_announcement
from edge_agent.service import run_service
from registry.store import open_store
from release_contract.protocol import fleet_target
from release_contract.signing import generate_keypair, load_private_key
from release_contract.topics import fleet_topic


def test_rollout_swaps_the_model_without_stopping_the_frame_loop(tmp_path: Path, mosquitto: Mosquitto) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    config = load_config(
        environ={},
        overrides={
            "mqtt": {"url": mosquitto.url},
            "device_id": "cam-9",
            "state_dir": str(tmp_path / "state"),
            "updates": {"enabled": True, "trust": str(pub), "fleet": "farm"},
        },
    )
    classifier = build_classifier(ROOT / "models" / "digits_int8.tflite", None, device="cpu", device_id="cam-9")
    versions: List[str] = []
    stop = threading.Event()

    def frame_loop(sinks: Sequence[Any], stop_event: threading.Event) -> None:
        image = np.zeros((32, 32, 3), dtype=np.uint8)
        index = 0
        while not stop_event.is_set():
            result = classifier.classify(Frame(image, "test", index, time.time()))
            versions.append(result.model.version)
            for sink in sinks:
                sink(result)
            index += 1
            stop_event.wait(0.02)

    announcement = model_announcement(classifier.model, classifier.runtime.backend)
    agent = threading.Thread(
        target=run_service,
        args=(config, frame_loop),
        kwargs={"model_info": announcement, "stop": stop, "classifier": classifier},
    )
    watch = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam-9/#")
    agent.start()
    try:
        assert watch.wait_until(lambda s: any(m.get("fleet") == "farm" for m in s.json_on("/model")), 60)
        sender = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-controller")
        sender.connect(mosquitto.host, mosquitto.port, 30)
        sender.loop_start()
        info = sender.publish(
            fleet_topic("edgetpu", "farm"),
            signed(key, "r1", "install", "1", store.url, target=fleet_target("farm")),
            qos=1,
            retain=True,
        )
        info.wait_for_publish(10)
        assert info.is_published()
        sender.disconnect()
        sender.loop_stop()
        assert watch.wait_until(lambda s: any(m["state"] == "active" for m in s.json_on("rollout/status")), 120)
        seen = len(versions)
        assert watch.wait_until(lambda s: len(versions) > seen + 3, 60)
    finally:
        stop.set()
        agent.join(30)
    assert not agent.is_alive()
    first_new = versions.index("1")
    assert first_new > 0 and all(v == "1" for v in versions[first_new:])  # one switch, no gap
    assert len(set(versions[:first_new])) == 1 and versions[0] != "1"
    announced = [m for m in watch.json_on("/model") if m.get("version") == "1"]
    assert announced and announced[-1]["fleet"] == "farm"
