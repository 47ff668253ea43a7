"""Broker addresses, topic names and reconnect delays: the small pure parts of publishing."""

from __future__ import annotations

import random
import socket
import ssl
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from .errors import ConfigError


@dataclass(frozen=True)
class BrokerAddress:
    """Where the broker is: parsed from ``mqtt://[user[:password]@]host[:port]`` or ``mqtts://``."""

    host: str
    port: int
    tls: bool
    username: Optional[str] = None
    password: Optional[str] = None


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse a broker URL; the port defaults to 1883 (``mqtt``) or 8883 (``mqtts``).

    Raises ConfigError naming what is wrong, e.g. ``unsupported scheme 'http'``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise ConfigError(f"mqtt.url {url!r}: unsupported scheme {parts.scheme!r} (use mqtt://host:1883 "
                          f"or mqtts://host:8883)")
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"mqtt.url {url!r}: the port is not a number in 1..65535") from None
    if not parts.hostname:
        raise ConfigError(f"mqtt.url {url!r}: no host (example: mqtt://192.168.1.10:1883)")
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"mqtt.url {url!r}: unexpected path or query; give only scheme, host and port")
    tls = scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname, port=port or (8883 if tls else 1883), tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


@dataclass(frozen=True)
class Topics:
    """The topic names of one device."""

    prefix: str
    device: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def classification(self) -> str:
        return f"{self.base}/classification"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def model(self) -> str:
        return f"{self.base}/model"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"


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
