"""The paho client's set-up, reconnect delays and connection-error wording.

Broker URLs and topic names are part of the release contract (:mod:`release_contract.topics`)."""

from __future__ import annotations

import random
import select
import socket
import ssl
from typing import Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError
from release_contract.topics import BrokerAddress


class Backoff:
    """Exponential reconnect delays: ``initial * 2**n`` capped at ``cap``, each drawn
    uniformly from [delay/2, delay] so a fleet does not reconnect in lockstep."""

    def __init__(self, initial: float = 0.5, cap: float = 30.0, rng: Optional[random.Random] = None) -> None:
        self.initial, self.cap = initial, cap
        self._attempt = 0
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography

    def next(self) -> float:
        """The delay in seconds before the next attempt."""
        delay = min(self.cap, self.initial * (2 ** min(self._attempt, 30)))
        self._attempt += 1
        return self._rng.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._attempt = 0


def describe_error(exc: BaseException) -> str:
    """A short reason for a connection failure, for one-line messages."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failure ({exc.reason or exc})"
    if isinstance(exc, socket.gaierror):
        return f"host name not resolved ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def make_paho_client(cfg: MqttConfig, addr: BrokerAddress, device_id: str, will_topic: str, window: int) -> paho.Client:
    """A paho client for ``cfg``: protocol, client id, credentials (``cfg`` over the URL's), TLS files,
    the ``offline`` last will on ``will_topic`` and ``window`` messages in flight. Callbacks are the
    caller's to set. Raises ConfigError for unusable TLS files or TLS files without ``mqtts://``."""
    v5 = cfg.protocol == "5"
    client_id = cfg.client_id or f"edge-agent-{device_id}"
    if v5:  # clean_session is a 3.1.1 notion; MQTT 5 sets clean_start when connecting
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311, clean_session=True
        )
    user = cfg.username if cfg.username is not None else addr.username
    password = cfg.password if cfg.password is not None else addr.password
    if user is not None:
        client.username_pw_set(user, password)
    if addr.tls:
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(cfg.key_file) if cfg.key_file else None,
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"mqtt TLS files cannot be loaded: {describe_error(exc)}") from exc
    elif cfg.ca_file or cfg.cert_file:
        raise ConfigError(f"mqtt.ca_file/cert_file are set but {cfg.url!r} is not mqtts://")
    client.will_set(will_topic, b"offline", qos=1, retain=True)
    client.max_inflight_messages_set(window)
    return client


def pump(client: paho.Client, wake: socket.socket, timeout: float) -> MQTTErrorCode:
    """One round of paho's external-loop I/O: wait up to ``timeout`` s for the broker's socket or the
    ``wake`` socket (written to when another thread queued a packet), then read, write and run
    paho's housekeeping. Returns paho's result code (``MQTT_ERR_NO_CONN`` without a socket)."""
    sock = client.socket()
    if sock is None:
        return MQTTErrorCode.MQTT_ERR_NO_CONN
    pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0  # already decrypted bytes
    try:
        readable, _, _ = select.select(
            [sock, wake], [sock] if client.want_write() else [], [], 0 if pending else timeout
        )
    except (OSError, ValueError):  # the socket was closed under us
        return MQTTErrorCode.MQTT_ERR_CONN_LOST
    if wake in readable:
        try:
            wake.recv(4096)
        except BlockingIOError:
            pass
    if pending or sock in readable:
        rc = client.loop_read()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return rc
    if client.want_write():
        rc = client.loop_write()
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return rc
    return client.loop_misc()
