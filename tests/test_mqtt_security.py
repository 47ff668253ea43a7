"""Login and TLS against a real Mosquitto: clear errors for refusals, bad URLs and bad files."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber
from helpers.tlscerts import TlsFiles, make_tls_files

from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError, PublishError
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.outbox import Outbox
from release_contract.topics import parse_broker_url


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "outbox.sqlite")
    yield box
    box.close()


@pytest.fixture
def password_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "agent", "s3cret"], check=True, capture_output=True)
    broker = Mosquitto(tmp_path / "pw", extra_config=[f"password_file {passwd}", "allow_anonymous false"])
    broker.start()
    yield broker
    broker.stop()


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
def tls_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    broker = Mosquitto(
        tmp_path / "tls-broker",
        extra_config=[
            f"cafile {tls_files.ca_cert}",
            f"certfile {tls_files.server_cert}",
            f"keyfile {tls_files.server_key}",
        ],
    )
    broker.start()
    yield broker
    broker.stop()


def test_wrong_password_is_refused_with_a_clear_error(password_broker: Mosquitto, outbox: Outbox) -> None:
    cfg = MqttConfig(url=password_broker.url, username="agent", password="wrong")
    publisher = MqttPublisher(cfg, "cam1", outbox)
    with pytest.raises(PublishError, match=r"refused the login: .*(Not authorized|Bad user name)") as err:
        publisher.start()
    assert "wrong" not in str(err.value), "the password never appears in messages"


def test_right_password_is_accepted(password_broker: Mosquitto, outbox: Outbox) -> None:
    sub = Subscriber(password_broker.host, password_broker.port, "edgetpu/#", username="agent", password="s3cret")
    publisher = MqttPublisher(MqttConfig(url=password_broker.url, username="agent", password="s3cret"), "cam1", outbox)
    publisher.start()
    try:
        publisher.enqueue(publisher.topics.classification, b'{"ok": 1}')
        assert sub.wait_until(lambda s: s.on("/classification") == [b'{"ok": 1}'])
    finally:
        publisher.stop()
        sub.close()


def test_tls_broker_accepts_the_agent_with_the_ca(tls_broker: Mosquitto, tls_files: TlsFiles, outbox: Outbox) -> None:
    sub = Subscriber("127.0.0.1", tls_broker.port, "edgetpu/#", ca_file=str(tls_files.ca_cert))
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    publisher = MqttPublisher(MqttConfig(url=url, ca_file=tls_files.ca_cert), "cam1", outbox)
    publisher.start()
    try:
        assert publisher.connected
        publisher.enqueue(publisher.topics.classification, b"{}")
        assert sub.wait_until(lambda s: s.on("/classification") == [b"{}"])
    finally:
        publisher.stop()
        sub.close()


# paho leaves the TLS socket of a failed handshake to the garbage collector (a ResourceWarning).
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_tls_broker_refuses_the_agent_without_the_ca(tls_broker: Mosquitto, outbox: Outbox) -> None:
    url = f"mqtts://127.0.0.1:{tls_broker.port}"
    publisher = MqttPublisher(MqttConfig(url=url), "cam1", outbox)
    with pytest.raises(PublishError, match="TLS connection to 127.0.0.1:.* failed: TLS certificate not trusted"):
        publisher.start()


def test_plain_mqtt_to_a_tls_listener_is_a_clear_error(tls_broker: Mosquitto, outbox: Outbox) -> None:
    publisher = MqttPublisher(MqttConfig(url=tls_broker.url), "cam1", outbox)
    with pytest.raises(PublishError, match="closed the connection without answering .*use mqtts://"):
        publisher.start(connect_timeout=5)


@pytest.fixture
def client_cert_broker(tmp_path: Path, tls_files: TlsFiles) -> Iterator[Mosquitto]:
    broker = Mosquitto(
        tmp_path / "mtls-broker",
        extra_config=[
            f"cafile {tls_files.ca_cert}",
            f"certfile {tls_files.server_cert}",
            f"keyfile {tls_files.server_key}",
            "require_certificate true",
        ],
    )
    broker.start()
    yield broker
    broker.stop()


def test_broker_requiring_a_client_certificate_accepts_the_agents(
    client_cert_broker: Mosquitto, tls_files: TlsFiles, outbox: Outbox
) -> None:
    cfg = MqttConfig(
        url=f"mqtts://127.0.0.1:{client_cert_broker.port}",
        ca_file=tls_files.ca_cert,
        cert_file=tls_files.client_cert,
        key_file=tls_files.client_key,
    )
    publisher = MqttPublisher(cfg, "cam1", outbox)
    publisher.start()
    try:
        assert publisher.connected
    finally:
        publisher.stop()


def test_broker_requiring_a_client_certificate_refuses_the_agent_without_one(
    client_cert_broker: Mosquitto, tls_files: TlsFiles, outbox: Outbox
) -> None:
    cfg = MqttConfig(url=f"mqtts://127.0.0.1:{client_cert_broker.port}", ca_file=tls_files.ca_cert)
    with pytest.raises(PublishError, match="closed the connection without answering .*client certificate"):
        MqttPublisher(cfg, "cam1", outbox).start()


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://broker:1883", "unsupported scheme"),
        ("mqtt://:1883", "no host"),
        ("mqtt://broker:99999", "port"),
        ("mqtt://broker:1883/topic", "unexpected path"),
        ("broker:1883", "unsupported scheme"),
    ],
)
def test_bad_broker_urls_are_config_errors_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"mqtt.url .*{message}"):
        MqttConfig(url=url).validate()


def test_broker_url_defaults_and_credentials() -> None:
    assert parse_broker_url("mqtt://h").port == 1883
    tls = parse_broker_url("mqtts://u:p%40ss@h")
    assert (tls.port, tls.tls, tls.username, tls.password) == (8883, True, "u", "p@ss")


def test_missing_ca_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mqtt.ca_file: no such file"):
        MqttConfig(url="mqtts://h", ca_file=tmp_path / "nope.pem").validate()
