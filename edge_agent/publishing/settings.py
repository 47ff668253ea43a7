"""The ``[mqtt]`` and ``[outbox]`` sections of the agent's configuration (see :mod:`edge_agent.config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from edge_agent.errors import ConfigError
from release_contract.topics import BrokerUrlError, parse_broker_url


def publish_policy(value: str) -> Tuple[str, float]:
    """Parse ``mqtt.publish``: ``every`` (each result), ``change`` (the top-1 label changes, or the
    top-1 score crosses the threshold, which leaves no label) or ``interval:SECONDS`` (at most one
    result per SECONDS). Returns (mode, seconds); raises ConfigError."""
    text = str(value).strip().lower()
    if text in ("every", "change"):
        return text, 0.0
    if text.startswith("interval:"):
        try:
            seconds = float(text[len("interval:") :])
        except ValueError:
            seconds = -1.0
        if seconds > 0 and math.isfinite(seconds):
            return "interval", seconds
    raise ConfigError(f"mqtt.publish must be every, change or interval:SECONDS (SECONDS > 0), got {value!r}")


@dataclass
class MqttConfig:
    """How to reach the broker and what to publish there."""

    url: Optional[str] = None  # mqtt://host[:1883] or mqtts://host[:8883]; None = no publishing
    topic_prefix: str = "edgetpu"
    qos: int = 1
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    ca_file: Optional[Path] = None
    cert_file: Optional[Path] = None
    key_file: Optional[Path] = None
    protocol: str = "3.1.1"  # "3.1.1" or "5"
    keepalive: int = 60  # seconds
    client_id: Optional[str] = None  # default: edge-agent-<device id>
    publish: str = "every"  # every | change | interval:SECONDS (see publish_policy)
    only_on_change: bool = False  # the older spelling of publish = "change"
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    stats_interval: float = 30.0  # seconds between stats messages; 0 = none
    max_payload_bytes: int = 65536  # incoming control messages larger than this are dropped

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        publish_policy(self.publish)
        if self.qos not in (0, 1, 2):
            raise ConfigError(f"mqtt.qos must be 0, 1 or 2, got {self.qos}")
        if self.protocol not in ("3.1.1", "5"):
            raise ConfigError(f"mqtt.protocol must be '3.1.1' or '5', got {self.protocol!r}")
        if not 0 <= self.keepalive <= 65535:
            raise ConfigError(f"mqtt.keepalive must be 0..65535 seconds, got {self.keepalive}")
        prefix = self.topic_prefix
        if not prefix or any(c in prefix for c in "+#") or prefix.endswith("/"):
            raise ConfigError(
                f"mqtt.topic_prefix must be a topic without + # or a trailing /, got {self.topic_prefix!r}"
            )
        if self.stats_interval < 0:
            raise ConfigError(f"mqtt.stats_interval must be >= 0 seconds, got {self.stats_interval}")
        if self.max_payload_bytes < 1:
            raise ConfigError(f"mqtt.max_payload_bytes must be positive, got {self.max_payload_bytes}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ConfigError("mqtt.cert_file and mqtt.key_file must be given together")
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise ConfigError(f"mqtt.{name}: no such file: {value}")
        if self.password is not None and self.username is None:
            raise ConfigError("mqtt.password is set but mqtt.username is not")
        if self.url is not None:
            try:
                parse_broker_url(self.url)
            except BrokerUrlError as exc:
                raise ConfigError(f"mqtt.url {exc}") from None


@dataclass
class OutboxConfig:
    """The durable queue between the frame loop and the broker."""

    max_messages: int = 100_000  # the oldest are dropped first past this

    def validate(self) -> None:
        if self.max_messages < 1:
            raise ConfigError(f"outbox.max_messages must be at least 1, got {self.max_messages}")
