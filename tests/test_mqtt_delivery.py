"""Publishing through a real Mosquitto: nothing lost across broker outages, retained status and model."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from helpers.mosquitto import Mosquitto
from helpers.results import MODEL, make_result
from helpers.subscriber import Subscriber, classification_ids

from edge_agent.config import Config, MqttConfig
from edge_agent.publishing.broker import Backoff
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.outbox import Outbox
from edge_agent.publishing.session import MqttSink, PublishingSession


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "state" / "outbox.sqlite")
    yield box
    box.close()


def make_publisher(broker: Mosquitto, outbox: Outbox, **mqtt: object) -> MqttPublisher:
    cfg = MqttConfig(url=broker.url, **mqtt)  # type: ignore[arg-type]
    return MqttPublisher(cfg, "cam1", outbox, backoff=Backoff(0.1, 1.0))


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_thousand_results_survive_a_broker_restart(
    mosquitto: Mosquitto, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edge_agent.publishing.client")
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    publisher = make_publisher(mosquitto, outbox)
    publisher.start()
    sink = MqttSink(publisher)
    produced: List[str] = []
    try:
        for frame in range(1000):
            if frame == 400:
                mosquitto.stop()
                assert wait_for(lambda: not publisher.connected)
            result = make_result(frame)
            sink(result)
            produced.append(result.message_id)
            if 400 <= frame < 700:
                time.sleep(0.01)  # the broker stays down for several seconds of production
            if frame == 699:
                assert len(outbox) >= 300, "results made during the outage wait in the outbox"
                mosquitto.start()
        assert sub.wait_until(lambda s: set(classification_ids(s)) >= set(produced), timeout=120)
        assert wait_for(lambda: len(outbox) == 0)
    finally:
        publisher.stop()
        sub.close()
    received = classification_ids(sub)
    assert set(received) == set(produced) and len(set(produced)) == 1000
    duplicates = len(received) - len(set(received))
    print(f"received {len(received)} messages, {duplicates} duplicates")
    # one line per state change, however many reconnect attempts the outage took
    changes = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]
    assert sum("lost the broker" in m for m in changes) == 1
    assert sum(m.startswith("connected to broker") for m in changes) == 2
    assert not any("cannot reach broker" in m for m in changes), "retries are logged at debug level"
    retries = [r for r in caplog.records if r.levelno == logging.DEBUG and "cannot reach broker" in r.getMessage()]
    assert len(retries) >= 2, "the outage took several attempts"


def test_results_queued_while_broker_is_down_at_startup_are_delivered_later(tmp_path: Path, outbox: Outbox) -> None:
    broker = Mosquitto(tmp_path / "late").start()
    sub = Subscriber(broker.host, broker.port, "edgetpu/#")  # a persistent session, kept while down
    broker.stop()
    publisher = make_publisher(broker, outbox)
    publisher.start()  # does not raise: the agent starts and queues
    try:
        results = [make_result(i) for i in range(20)]
        for r in results:
            publisher.enqueue(publisher.topics.classification, json.dumps(r.to_payload()).encode())
        assert len(outbox) == 20
        broker.start()
        assert sub.wait_until(lambda s: len(set(classification_ids(s))) == 20)
    finally:
        sub.close()
        publisher.stop()
        broker.stop()
    assert {r.message_id for r in results} == set(classification_ids(sub))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_status_online_while_running_and_offline_with_retained_model_after_clean_stop(
    mosquitto: Mosquitto, outbox: Outbox, protocol: str
) -> None:
    publisher = make_publisher(mosquitto, outbox, protocol=protocol)
    publisher.set_model({"name": "digits", "version": "1.0.0", "digest": MODEL.digest})
    publisher.start()
    try:
        late = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/+")
        assert late.wait_until(lambda s: len(s.on("/status")) >= 1 and len(s.on("/model")) >= 1)
        assert late.on("/status")[0] == b"online"
        late.close()
    finally:
        publisher.stop()
    after = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/+")
    try:
        assert after.wait_until(lambda s: len(s.on("/status")) >= 1 and len(s.on("/model")) >= 1)
        retained = {t: (p, r) for t, p, r in after.messages}
    finally:
        after.close()
    assert retained["edgetpu/cam1/status"] == (b"offline", True)
    model_payload, model_retained = retained["edgetpu/cam1/model"]
    assert model_retained and json.loads(model_payload)["name"] == "digits"


def test_only_label_changes_are_published_when_asked(mosquitto: Mosquitto, outbox: Outbox) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    publisher = make_publisher(mosquitto, outbox)
    publisher.start()
    sink = MqttSink(publisher, only_on_change=True)
    labels = ["seven", "seven", "one", "one", "one", "seven", "seven"]
    try:
        for i, label in enumerate(labels):
            sink(make_result(i, label))
        assert sub.wait_until(lambda s: len(s.on("/classification")) >= 3)
        assert wait_for(lambda: len(outbox) == 0)
    finally:
        publisher.stop()
        sub.close()
    assert [p["top_k"][0]["label"] for p in sub.json_on("/classification")] == ["seven", "one", "seven"]
    assert [p["frame"] for p in sub.json_on("/classification")] == [0, 2, 5]


def test_oversize_or_malformed_control_messages_do_not_crash_the_agent(mosquitto: Mosquitto, outbox: Outbox) -> None:
    handled: List[dict] = []

    def handler(topic: str, payload: bytes) -> None:
        handled.append(json.loads(payload))  # raises on malformed input

    publisher = make_publisher(mosquitto, outbox, max_payload_bytes=1024)
    publisher.start()
    publisher.subscribe("edgetpu/cam1/rollout", handler)
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    try:
        sender = Subscriber(mosquitto.host, mosquitto.port, "unused/topic")
        for payload in (b"x" * 100_000, b"{not json", b"\xff\xfe\x00", b"", b'{"version": "2.0.0"}'):
            sender.client.publish("edgetpu/cam1/rollout", payload, qos=1).wait_for_publish(10)
        sender.close()
        assert wait_for(lambda: handled == [{"version": "2.0.0"}])
        result = make_result(1)
        MqttSink(publisher)(result)
        assert sub.wait_until(lambda s: classification_ids(s) == [result.message_id])
        assert publisher.connected
    finally:
        publisher.stop()
        sub.close()


def test_home_assistant_discovery_and_stats_are_published(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "#")
    config = Config(
        device_id="cam1",
        state_dir=tmp_path / "state",
        mqtt=MqttConfig(url=mosquitto.url, ha_discovery=True, stats_interval=0.2),
    )
    session = PublishingSession(config, {"name": "digits", "version": "1", "digest": MODEL.digest}).start()
    try:
        for i in range(5):
            for sink in session.sinks:
                sink(make_result(i))
        assert sub.wait_until(lambda s: any(p.get("frames") == 5 for p in s.json_on("/stats")))
        assert sub.wait_until(lambda s: len([t for t, _p, _r in s.messages if t.startswith("homeassistant/")]) == 5)
    finally:
        session.stop()
        sub.close()
    stats = [p for p in sub.json_on("/stats") if p["frames"] == 5][0]
    assert stats["schema"] == "edgetpu.stats/1" and stats["backend"] == "cpu"
    assert stats["inference_ms"] == {"p50": 1.2, "p99": 1.2}
    assert stats["dropped_messages"] == 0 and stats["uptime_s"] >= 0
    configs = {t: json.loads(p) for t, p, _r in sub.messages if t.startswith("homeassistant/")}
    label = configs["homeassistant/sensor/edgetpu_cam1/top1_label/config"]
    assert label["state_topic"] == "edgetpu/cam1/classification"
    assert label["availability_topic"] == "edgetpu/cam1/status"
    assert configs["homeassistant/sensor/edgetpu_cam1/fps/config"]["state_topic"] == "edgetpu/cam1/stats"
    assert len({c["unique_id"] for c in configs.values()}) == 5


def test_unique_message_ids_per_result() -> None:
    assert len({make_result(i).to_payload()["id"] for i in range(100)}) == 100
    assert uuid.UUID(make_result(0).message_id)


def test_large_messages_from_several_threads_arrive_intact(mosquitto: Mosquitto, outbox: Outbox) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/#")
    publisher = make_publisher(mosquitto, outbox)
    publisher.start()
    sent: List[bytes] = []

    def blast(worker: int) -> None:
        for i in range(10):
            body = bytes([worker]) * 300_000 + f"{worker}-{i}".encode()
            sent.append(hashlib.sha256(body).digest())
            assert publisher.publish_direct(f"edgetpu/cam1/blob/{worker}", body, qos=1)

    try:
        threads = [threading.Thread(target=blast, args=(w,)) for w in range(3)]
        for t in threads:
            t.start()
        for frame in range(200):
            MqttSink(publisher)(make_result(frame))
        for t in threads:
            t.join()
        assert sub.wait_until(
            lambda s: (
                len(s.on("/classification")) >= 200
                and len(s.on("/blob/0")) + len(s.on("/blob/1")) + len(s.on("/blob/2")) >= 30
            )
        )
        assert publisher.connected
    finally:
        publisher.stop()
        sub.close()
    blobs = [hashlib.sha256(p).digest() for t, p, _r in sub.messages if "/blob/" in t]
    assert sorted(blobs) == sorted(sent)
    assert len(set(classification_ids(sub))) == 200


def test_results_beyond_the_in_memory_handoff_are_read_back_from_the_outbox_in_order(
    mosquitto: Mosquitto, outbox: Outbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("edge_agent.publishing.sender.FRESH_MAX", 5)
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    publisher = make_publisher(mosquitto, outbox)
    publisher.start()
    try:
        mosquitto.stop()
        assert wait_for(lambda: not publisher.connected)
        results = [make_result(frame) for frame in range(50)]
        sink = MqttSink(publisher)
        for result in results:
            sink(result)
        mosquitto.start()
        assert sub.wait_until(lambda s: len(set(classification_ids(s))) == 50)
    finally:
        publisher.stop()
        sub.close()
    frames = [p["frame"] for p in sub.json_on("/classification")]
    first_seen = sorted(set(frames), key=frames.index)
    assert first_seen == list(range(50)), "sent oldest first"
