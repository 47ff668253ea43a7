"""Hostile brokers and neighbours: one that accepts TCP and never answers, a plain port given
as mqtts://, a wrong password, and a second agent with the same device id."""

from __future__ import annotations

import logging
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from click.testing import CliRunner
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber

from edge_agent.cli import main
from edge_agent.config import MqttConfig
from edge_agent.errors import PublishError
from edge_agent.publishing.broker import Backoff, SessionWatch
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.outbox import Outbox


@pytest.fixture
def silent_broker() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    yield server.getsockname()[1]
    server.close()


def test_short_keepalive_against_a_silent_broker_warns_and_queues(
    silent_broker: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    publisher = MqttPublisher(MqttConfig(url=f"mqtt://127.0.0.1:{silent_broker}", keepalive=2), "cam1", box)
    try:
        publisher.start(connect_timeout=10)  # paho gives up after the 2 s keepalive: not an error
        publisher.enqueue(publisher.topics.classification, b"{}")
        assert len(box) == 1 and not publisher.connected
    finally:
        publisher.stop(flush_timeout=0.5)
        box.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("did not answer; retrying" in w for w in warnings)
    assert not any("TLS" in r.getMessage() for r in caplog.records)


def test_short_keepalive_run_against_a_silent_broker_keeps_classifying(silent_broker: int, tmp_path: Path) -> None:
    out = CliRunner().invoke(
        main,
        [
            "classify",
            "--mqtt",
            f"mqtt://127.0.0.1:{silent_broker}",
            "--mqtt-keepalive",
            "2",
            "--state-dir",
            str(tmp_path / "state"),
        ],
    )
    assert out.exit_code == 0, out.output
    assert "TLS" not in out.output


def test_mqtts_to_a_plain_port_is_a_tls_error_at_once(mosquitto: Mosquitto, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.sqlite")
    publisher = MqttPublisher(MqttConfig(url=f"mqtts://{mosquitto.host}:{mosquitto.port}"), "cam1", box)
    started = time.monotonic()
    try:
        with pytest.raises(PublishError, match="TLS connection .* failed: .*plain MQTT port"):
            publisher.start()
    finally:
        box.close()
    assert time.monotonic() - started < 10
    out = CliRunner().invoke(
        main, ["classify", "--mqtt", f"mqtts://{mosquitto.host}:{mosquitto.port}", "--state-dir", str(tmp_path / "s")]
    )
    assert out.exit_code == 1 and "plain MQTT port" in out.output and "Traceback" not in out.output


def test_wrong_password_is_an_error_without_a_retrying_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "agent", "right"], check=True, capture_output=True)
    with Mosquitto(tmp_path / "b", extra_config=[f"password_file {passwd}", "allow_anonymous false"]) as broker:
        box = Outbox(tmp_path / "outbox.sqlite")
        config = MqttConfig(url=broker.url, username="agent", password="wrong")  # noqa: S106
        try:
            with pytest.raises(PublishError, match="refused the login"):
                MqttPublisher(config, "cam1", box).start()
        finally:
            box.close()
    assert not any("retrying" in r.getMessage() or "trying again" in r.getMessage() for r in caplog.records)


def test_two_agents_with_one_device_id_notice_the_clash_and_back_off(
    mosquitto: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/status")
    boxes = [Outbox(tmp_path / f"a{i}" / "outbox.sqlite") for i in range(2)]
    publishers: List[MqttPublisher] = []
    try:
        for box in boxes:
            publishers.append(MqttPublisher(MqttConfig(url=mosquitto.url, keepalive=5), "cam1", box))
            publishers[-1].start()
        time.sleep(15)
        flips = len(sub.on("/status"))
    finally:
        for publisher in publishers:
            publisher.stop(flush_timeout=0.5)
        for box in boxes:
            box.close()
        sub.close()
    clash = [
        r.getMessage() for r in caplog.records if "another client probably uses the same client id" in r.getMessage()
    ]
    assert 1 <= len(clash) <= 2, "one line per agent that notices"
    assert "--device-id cam1" in clash[0]
    # without back-off the two agents flip about 80 times in 15 s (158 in 30 s were seen); the bound
    # is loose so that a loaded machine's slower reconnects cannot make it fail
    assert flips < 40, f"{flips} online/offline flips in 15 s: no back-off"


def test_session_watch_backs_off_on_a_clash_and_recovers_after_a_stable_connection() -> None:
    backoff = Backoff(initial=0.5, cap=30.0)
    watch = SessionWatch(backoff, short=5.0, limit=3)
    clashes = []
    for start in (0.0, 10.0, 20.0):  # three connections closed after a second each
        watch.connected(start)
        clashes.append(watch.lost(start + 1.0))
    assert clashes == [False, False, True] and backoff.cap == 300.0
    watch.connected(100.0)
    assert not watch.lost(160.0)  # a minute online: not a clash any more
    assert backoff.cap == 30.0 and watch.short_lived == 0
