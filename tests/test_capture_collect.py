"""Collect: a signed command over a real Mosquitto makes a running agent upload its captures to the
store; `edge-registry captures pull` turns the uploads into a dataset that quantize can read."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Sequence

import paho.mqtt.client as paho
from click.testing import CliRunner
from helpers.fleet import ROOT
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber
from paho.mqtt.enums import CallbackAPIVersion

from compiler.calibration import list_images
from edge_agent.capture import archive
from edge_agent.capture.collect import CollectWorker
from edge_agent.cli import main as agent_main
from edge_agent.config import load_config
from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.sources import open_source
from edge_agent.service import run_service
from registry.captures import collect_command
from registry.cli import main as registry_main
from release_contract.collect import BATCH_NAME, CAPTURES_DIR, CollectCommand
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.topics import collect_device_topic, collect_fleet_topic


def _capture_all(folder: Path) -> None:
    run = CliRunner().invoke(
        agent_main, ["classify", "-o", "none", "--device", "cpu", "--capture-dir", str(folder), "--capture-below", "1"]
    )
    assert run.exit_code == 0, run.output
    assert len(list(archive.iter_captures(folder))) == 20


def _publish(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-op-{time.monotonic_ns()}")
    client.connect(broker.host, broker.port, 30)
    client.loop_start()
    info = client.publish(topic, payload, qos=1, retain=True)
    info.wait_for_publish(10)
    assert info.is_published()
    client.disconnect()
    client.loop_stop()


def test_a_signed_collect_uploads_the_captures_and_pull_makes_a_dataset(tmp_path: Path, mosquitto: Mosquitto) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    captures, store = tmp_path / "captures", tmp_path / "store"
    store.mkdir()
    _capture_all(captures)
    config = load_config(
        environ={},
        overrides={
            "mqtt": {"url": mosquitto.url},
            "device_id": "cam-1",
            "state_dir": str(tmp_path / "state"),
            "updates": {"fleet": "farm"},
            "capture": {"dir": str(captures), "trust": str(pub), "below": 0.0},
        },
    )
    classifier = build_classifier(ROOT / "models" / "digits_int8.tflite", None, device="cpu", device_id="cam-1")
    frames = list(open_source(str(ROOT / "images")).frames())
    classified: List[int] = []

    def frame_loop(sinks: Sequence[Any], stop_event: threading.Event) -> None:
        while not stop_event.is_set():  # the agent keeps classifying while it handles commands
            result = classifier.classify(frames[len(classified) % len(frames)])
            classified.append(1)
            for sink in sinks:
                sink(result)
            stop_event.wait(0.02)

    stop = threading.Event()
    agent = threading.Thread(target=run_service, args=(config, frame_loop), kwargs={"stop": stop})
    watch = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam-1/collect/status")
    agent.start()
    try:
        assert watch.wait_until(lambda s: len(classified) > 3, 60)
        unsigned = json.loads(collect_command(str(store), fleet="farm").sign(key))
        unsigned["signatures"] = []
        _publish(mosquitto, collect_fleet_topic("edgetpu", "farm"), json.dumps(unsigned).encode())
        assert watch.wait_until(lambda s: any("not signed" in m["reason"] for m in s.json_on("status")), 30)
        expired = collect_command(str(store), fleet="farm", now=time.time() - 7200, expires_in=3600)
        _publish(mosquitto, collect_fleet_topic("edgetpu", "farm"), expired.sign(key))
        assert watch.wait_until(lambda s: any("expired" in m["reason"] for m in s.json_on("status")), 30)
        other = collect_command(str(store), device="cam-2")
        _publish(mosquitto, collect_device_topic("edgetpu", "cam-1"), other.sign(key))  # on our topic, for cam-2
        seen = len(classified)
        assert watch.wait_until(lambda s: len(classified) > seen + 3, 30)  # still classifying
        assert not (store / CAPTURES_DIR).exists() and len(list(archive.iter_captures(captures))) == 20
        sent = CliRunner().invoke(
            registry_main,
            ["captures", "collect", "--fleet", "farm", "--key", str(priv), "--broker", mosquitto.url]
            + ["--store", str(store)],
        )
        assert sent.exit_code == 0, sent.output
        assert watch.wait_until(lambda s: any(m["state"] == "uploaded" for m in s.json_on("status")), 60)
    finally:
        stop.set()
        agent.join(30)
        watch.close()
    assert not agent.is_alive()
    (done,) = [m for m in watch.json_on("status") if m["state"] == "uploaded"]
    assert done["captures"] == 20 and done["device"] == "cam-1"
    assert list(archive.iter_captures(captures)) == []  # deleted on the device once the store had them
    (batch,) = (store / CAPTURES_DIR / "cam-1").iterdir()
    assert (batch / BATCH_NAME).stat().st_mode & 0o777 == 0o644 and batch.stat().st_mode & 0o777 == 0o755
    pulled = CliRunner().invoke(
        registry_main, ["captures", "pull", "--fleet", "farm", "--to", str(tmp_path / "ds"), "--store", str(store)]
    )
    assert pulled.exit_code == 0, pulled.output
    assert "20 new captures from 1 batches" in pulled.stdout
    dataset = tmp_path / "ds"
    for image in dataset.rglob("*.png"):
        record = json.loads(image.with_suffix(".json").read_text())
        assert record["result"]["top_k"][0]["label"] == image.parent.name
    assert len(list_images(dataset)) == 20  # what edge-compile quantize --calib reads
    relabelled = next(dataset.rglob("*.png"))
    (dataset / "zero").mkdir(exist_ok=True)
    shutil.move(str(relabelled), str(dataset / "zero" / relabelled.name))
    again = CliRunner().invoke(
        registry_main, ["captures", "pull", "--fleet", "farm", "--to", str(dataset), "--store", str(store)]
    )
    assert "0 new captures" in again.stdout and not (relabelled.parent / relabelled.name).exists()


def test_an_upload_that_fails_halfway_keeps_the_captures_and_resumes_later(tmp_path: Path) -> None:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    captures, store = tmp_path / "captures", tmp_path / "store"
    _capture_all(captures)
    command: CollectCommand = collect_command(str(store), device="cam-1")
    staging = store / CAPTURES_DIR / "cam-1" / f".{command.id}.part"
    (staging / BATCH_NAME).mkdir(parents=True)  # the index cannot be written: the upload stops halfway
    statuses: List[Dict[str, Any]] = []
    done = threading.Event()
    first_copies: Dict[str, int] = {}

    def publish(msg: Dict[str, Any]) -> None:
        statuses.append(msg)
        if msg["state"] == "retrying":
            first_copies.update({p.name: p.stat().st_ino for p in staging.glob("*.png")})
            shutil.rmtree(staging / BATCH_NAME)  # the store is fixed before the next attempt
        if msg["state"] in ("uploaded", "failed"):
            done.set()

    worker = CollectWorker(captures, tmp_path / "state", TrustedKeys.from_paths([pub]), "cam-1", "", publish, [0.1])
    try:
        worker.handle(command.sign(key))
        assert done.wait(60)
    finally:
        worker.close()
    states = [m["state"] for m in statuses]
    assert states == ["received", "uploading", "retrying", "uploading", "uploaded"]
    assert "cannot write to the store" in statuses[2]["reason"]
    assert list(archive.iter_captures(captures)) == []
    final = {p.name: p.stat().st_ino for p in (store / CAPTURES_DIR / "cam-1" / command.id).glob("*.png")}
    assert len(final) == 20 and final == first_copies  # resumed: the files of the first attempt were kept
