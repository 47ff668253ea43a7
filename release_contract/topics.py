"""MQTT topic names and broker addresses: the one place both the agent and the controller read them.

Topics (``prefix`` defaults to ``edgetpu``)::

    <prefix>/<device>/classification    one JSON result per frame
    <prefix>/<device>/status            retained birth ``online`` / last-will ``offline``
    <prefix>/<device>/stats             periodic figures
    <prefix>/<device>/model             the device's active release (retained)
    <prefix>/<device>/rollout           rollout command for one device (retained)
    <prefix>/<device>/rollout/status    the device's progress on its latest command (retained)
    <prefix>/fleet/<fleet>/rollout      rollout command for every device of a fleet (retained)
    <prefix>/<device>/collect           signed collect command for one device (retained)
    <prefix>/fleet/<fleet>/collect      signed collect command for every device of a fleet (retained)
    <prefix>/<device>/collect/status    the device's progress on its latest collect command (retained)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import unquote, urlsplit

from release_contract.errors import ProtocolError

DEFAULT_PREFIX = "edgetpu"
_TOPIC_SAFE = re.compile(r"[^/#+\x00]{1,128}")


class BrokerUrlError(ProtocolError):
    """A broker URL that cannot be used; the message says what is wrong."""


def _segment(value: str, what: str) -> str:
    if not isinstance(value, str) or not _TOPIC_SAFE.fullmatch(value):
        raise ProtocolError(f"invalid {what} {value!r} for an MQTT topic")
    return value


def fleet_topic(prefix: str, fleet: str) -> str:
    """``<prefix>/fleet/<fleet>/rollout``."""
    return f"{prefix}/fleet/{_segment(fleet, 'fleet')}/rollout"


def device_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/rollout``."""
    return f"{prefix}/{_segment(device, 'device id')}/rollout"


def status_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/rollout/status``."""
    return f"{device_topic(prefix, device)}/status"


def model_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/model``."""
    return f"{prefix}/{_segment(device, 'device id')}/model"


def collect_device_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/collect``."""
    return f"{prefix}/{_segment(device, 'device id')}/collect"


def collect_fleet_topic(prefix: str, fleet: str) -> str:
    """``<prefix>/fleet/<fleet>/collect``."""
    return f"{prefix}/fleet/{_segment(fleet, 'fleet')}/collect"


def collect_status_topic(prefix: str, device: str) -> str:
    """``<prefix>/<device>/collect/status``."""
    return f"{collect_device_topic(prefix, device)}/status"


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
        return model_topic(self.prefix, self.device)

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def rollout(self) -> str:
        return device_topic(self.prefix, self.device)

    @property
    def rollout_status(self) -> str:
        return status_topic(self.prefix, self.device)


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

    ``tcp://`` and ``ssl://`` are accepted as aliases. Raises :class:`BrokerUrlError`
    naming what is wrong, e.g. ``unsupported scheme 'http'``.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
        raise BrokerUrlError(
            f"{url!r}: unsupported scheme {parts.scheme!r} (use mqtt://host:1883 or mqtts://host:8883)"
        )
    try:
        port = parts.port
    except ValueError:
        raise BrokerUrlError(f"{url!r}: the port is not a number in 1..65535") from None
    if not parts.hostname:
        raise BrokerUrlError(f"{url!r}: no host (example: mqtt://192.168.1.10:1883)")
    if parts.path not in ("", "/") or parts.query:
        raise BrokerUrlError(f"{url!r}: unexpected path or query; give only scheme, host and port")
    tls = scheme in ("mqtts", "ssl")
    return BrokerAddress(
        host=parts.hostname,
        port=port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
