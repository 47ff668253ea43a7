"""The publish policy: every result, label changes, or at most one per interval; stats count every frame."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

import pytest
from click.testing import CliRunner
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber

from edge_agent.cli import main
from edge_agent.config import Config, MqttConfig, publish_policy
from edge_agent.errors import ConfigError
from edge_agent.inference.result import Class, Classification, ModelInfo
from edge_agent.publishing.session import MqttSink
from edge_agent.service import run_pipeline


def result(frame: int, label: str) -> Classification:
    top = [Class(1, 0.9, label)] if label else []
    return Classification("cam1", ModelInfo("m", "1", ""), "cpu", "s", frame, time.time(), 0.1, 1.0, 1.2, top)


def chosen(sink: MqttSink, labels: List[str]) -> List[int]:
    return [i for i, label in enumerate(labels) if sink.wanted(result(i, label))]


def test_publish_values_parse_to_a_mode_and_seconds() -> None:
    assert publish_policy("every") == ("every", 0.0)
    assert publish_policy("change") == ("change", 0.0)
    assert publish_policy("interval:2.5") == ("interval", 2.5)
    for bad in ("sometimes", "interval:", "interval:0", "interval:-1", "interval:nan"):
        with pytest.raises(ConfigError, match="mqtt.publish"):
            publish_policy(bad)


def test_change_publishes_label_changes_and_threshold_crossings() -> None:
    sink = MqttSink(publisher=None, policy=("change", 0.0))  # type: ignore[arg-type]
    # "" is a frame whose top-1 fell below the threshold: no label, so crossing it is a change
    assert chosen(sink, ["cat", "cat", "dog", "", "", "dog", "dog"]) == [0, 2, 3, 5]


def test_only_on_change_is_the_change_policy() -> None:
    sink = MqttSink(publisher=None, only_on_change=True)  # type: ignore[arg-type]
    assert (sink.mode, chosen(sink, ["a", "a", "b"])) == ("change", [0, 2])


def test_interval_publishes_at_most_one_result_per_interval() -> None:
    now = [0.0]
    sink = MqttSink(publisher=None, policy=("interval", 1.0), clock=lambda: now[0])  # type: ignore[arg-type]
    sent = []
    for i in range(30):  # 30 frames at 10 frames/s
        now[0] = i * 0.1
        if sink.wanted(result(i, "a")):
            sent.append(i)
    assert sent == [0, 10, 20]


def test_unknown_publish_value_is_one_line_and_exit_2() -> None:
    out = CliRunner().invoke(main, ["classify", "--publish", "sometimes", "--mqtt", "mqtt://127.0.0.1:1"])
    assert out.exit_code == 2
    assert "mqtt.publish must be every, change or interval:SECONDS" in out.output
    assert "Traceback" not in out.output


def test_stats_count_every_frame_while_only_changes_are_published(
    mosquitto: Mosquitto, tmp_path: Path, demo_model: Path
) -> None:
    config = Config(
        device_id="cam1",
        state_dir=tmp_path / "state",
        model=demo_model,
        mqtt=MqttConfig(url=mosquitto.url, publish="interval:3600", stats_interval=3600),
    )
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/#")
    try:
        loop = run_pipeline(config)  # 20 sample images; the final stats message is sent on stop
        assert sub.wait_until(lambda s: len(s.on("/stats")) >= 1)
    finally:
        sub.close()
    assert loop.frames == 20
    assert len(sub.on("/classification")) == 1
    assert sub.json_on("/stats")[-1]["frames"] == 20
