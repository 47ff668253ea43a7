"""The paho client's set-up, reconnect delays and connection-error wording.

Broker URLs and topic names are part of the release contract (:mod:`release_contract.topics`)."""

from __future__ import annotations

import random
import socket
import ssl
from typing import Optional

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

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


def make_paho_client(cfg: MqttConfig, addr: BrokerAddress, device_id: str, will_topic: str,
                     window: int) -> paho.Client:
    """A paho client for ``cfg``: protocol, client id, credentials (``cfg`` over the URL's), TLS files,
    the ``offline`` last will on ``will_topic`` and ``window`` messages in flight. Callbacks are the
    caller's to set. Raises ConfigError for unusable TLS files or TLS files without ``mqtts://``."""
    v5 = cfg.protocol == "5"
    client_id = cfg.client_id or f"edge-agent-{device_id}"
    if v5:  # clean_session is a 3.1.1 notion; MQTT 5 sets clean_start when connecting
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311,
                             clean_session=True)
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
