"""The agent's configuration: one typed tree, loaded in order of precedence.

1. defaults (below, next to each field),
2. a TOML file (``edge-agent run --config FILE``; sections ``[mqtt]``, ``[outbox]``, ``[updates]``),
3. the environment: ``EDGE_AGENT_<FIELD>`` for top-level fields and
   ``EDGE_AGENT_<SECTION>_<FIELD>`` for the others, e.g. ``EDGE_AGENT_DEVICE_ID``,
   ``EDGE_AGENT_MQTT_URL``, ``EDGE_AGENT_MQTT_PASSWORD``, ``EDGE_AGENT_OUTBOX_MAX_MESSAGES``,
4. command-line flags.

Every value is converted to its field's type and checked when loaded; a bad one
raises :class:`~edge_agent.errors.ConfigError` naming the field and where it came
from. Only this module reads the environment, and only the mapping it is given.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union, get_type_hints

from edge_agent.errors import ConfigError
from release_contract.topics import BrokerUrlError, parse_broker_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

ENV_PREFIX = "EDGE_AGENT_"
MAX_THREADS = 64  # interpreter threads; far more than any board has cores
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_FLEET_RE = re.compile(r"^[A-Za-z0-9_.-]*$")


#: Interpreter packages (``--runtime``); ``auto`` takes the first importable one, in this order.
RUNTIMES = ("auto", "litert", "tflite-runtime", "tensorflow")
_DEVICE_RE = re.compile(r"auto|cpu|usb(:\d+)?|pci(:\d+)?|:\d+")


def validate_device(device: str) -> str:
    """Return ``device`` if it is one of auto, cpu, usb, usb:N, pci, pci:N, :N; raise ConfigError otherwise."""
    if not isinstance(device, str) or not _DEVICE_RE.fullmatch(device):
        raise ConfigError(
            f"invalid --device {device!r} (device in a config): use auto, cpu, usb, usb:N, pci, pci:N or :N"
        )
    return device


def default_device_id() -> str:
    """The hostname, made safe for an MQTT topic level (no ``/``, ``+``, ``#``)."""
    return _TOPIC_UNSAFE.sub("-", socket.gethostname()) or "edge-agent"


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``/var/lib/edge-agent`` when running as root, else ``$XDG_STATE_HOME/edge-agent``
    (``~/.local/state/edge-agent``)."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/edge-agent")
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent"


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


@dataclass
class UpdatesConfig:
    """Over-the-air model updates (off by default)."""

    enabled: bool = False
    trust: Optional[Path] = None  # signing.pub of the release signer, or a folder of *.pub
    fleet: str = ""  # the fleet this device belongs to (rollouts with --fleet)
    runtime_version: Optional[int] = None  # Edge TPU runtime version; None = do not check
    health_inferences: int = 3  # inferences the new runtime must pass before it serves frames
    validation_timeout: float = 60.0  # seconds for the sandboxed validation of a new model
    validation_memory_mb: int = 1024  # address-space limit of the validation process
    download_timeout: float = 30.0  # read timeout of release downloads, seconds

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if self.enabled and self.trust is None:
            raise ConfigError(
                "updates.trust is required when updates are enabled: the signing.pub whose releases this device accepts"
            )
        if self.enabled and self.trust is not None and not self.trust.exists():
            raise ConfigError(f"updates.trust: {self.trust} does not exist")
        if not _FLEET_RE.match(self.fleet):
            raise ConfigError(f"updates.fleet must be letters, digits, '_', '.' or '-', got {self.fleet!r}")
        if self.health_inferences < 1:
            raise ConfigError(f"updates.health_inferences must be at least 1, got {self.health_inferences}")
        if self.validation_timeout <= 0 or self.download_timeout <= 0:
            raise ConfigError("updates.validation_timeout and updates.download_timeout must be positive")
        if self.validation_memory_mb < 64:
            raise ConfigError(f"updates.validation_memory_mb must be at least 64, got {self.validation_memory_mb}")


@dataclass
class Config:
    """The whole agent configuration (see the module docstring for precedence)."""

    model: Optional[Path] = None  # None = the bundled demo model
    labels: Optional[Path] = None
    input: Optional[str] = None  # image, directory, video, camera index or rtsp:// URL; None = bundled images
    device_id: str = field(default_factory=default_device_id)
    device: str = "auto"  # auto, cpu, usb, usb:N, pci, pci:N or :N (as `edge-agent classify --device`)
    runtime: str = "auto"  # interpreter package: auto, litert, tflite-runtime
    threads: int = 2  # CPU interpreter threads
    top_k: int = 3
    threshold: float = 0.0  # leave out classes scoring below this
    max_fps: float = 0.0  # frames per second limit; 0 = as fast as the source delivers
    mean: Optional[float] = None  # pixel mean the model expects (with std); None = the model's quantization
    std: Optional[float] = None
    keep_aspect: bool = False  # pad instead of stretching when resizing
    max_pixels: int = 50_000_000  # images larger than this are refused (decompression bombs)
    state_dir: Optional[Path] = None  # None = default_state_dir()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if not self.device_id or _TOPIC_UNSAFE.search(self.device_id):
            raise ConfigError(f"device_id must be letters, digits, '_', '.' or '-', got {self.device_id!r}")
        if self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 1 <= self.threads <= MAX_THREADS:
            raise ConfigError(f"threads must be 1..{MAX_THREADS}, got {self.threads}")
        validate_device(self.device)
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}")
        if not math.isfinite(self.max_fps) or self.max_fps < 0:
            raise ConfigError(f"max_fps must be a number >= 0, got {self.max_fps}")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both --mean and --std (mean and std in the config), or neither")
        if (
            self.mean is not None
            and self.std is not None
            and not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std != 0)
        ):
            raise ConfigError(f"mean and std must be finite numbers and std not 0, got {self.mean}, {self.std}")
        if self.max_pixels < 1:
            raise ConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")
        self.mqtt.validate()
        self.outbox.validate()
        self.updates.validate()
        if self.updates.enabled and not self.mqtt.url:
            raise ConfigError("updates.enabled needs mqtt.url: rollout commands arrive over MQTT")

    @property
    def state_path(self) -> Path:
        """The state directory (``load_config`` fills in the default)."""
        assert self.state_dir is not None, "load_config() fills state_dir"
        return self.state_dir

    @property
    def outbox_path(self) -> Path:
        """Where the outbox database lives (inside the state directory)."""
        return self.state_path / "outbox.sqlite"


_SECTIONS: Dict[str, Any] = {"mqtt": MqttConfig, "outbox": OutboxConfig, "updates": UpdatesConfig}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _convert(name: str, hint: Any, value: Any, origin: str) -> Any:
    """Convert ``value`` to the type ``hint`` of field ``name`` or raise ConfigError."""
    optional = getattr(hint, "__origin__", None) is Union and type(None) in hint.__args__
    if optional:
        if value is None or (isinstance(value, str) and value == ""):
            return None
        hint = next(a for a in hint.__args__ if a is not type(None))
    try:
        if hint is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError("expected true or false")
        if hint is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError("expected an integer")
            return int(value)
        if hint is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if hint is Path:
            return Path(os.path.expanduser(str(value)))
        if hint is str:
            if isinstance(value, (dict, list)):
                raise ValueError("expected a string")
            return str(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} ({origin}): invalid value {value!r}: {exc}") from None
    raise ConfigError(f"{name} ({origin}): unsupported type {hint!r}")  # pragma: no cover


def _apply(target: Any, values: Mapping[str, Any], section: str, origin: str) -> None:
    hints = get_type_hints(type(target))
    names = {f.name for f in dataclasses.fields(target)}
    for key, value in values.items():
        dotted = f"{section}.{key}" if section else key
        if key in _SECTIONS and not section:
            if not isinstance(value, dict):
                raise ConfigError(f"{dotted} ({origin}): expected a table")
            _apply(getattr(target, key), value, key, origin)
            continue
        if key not in names:
            raise ConfigError(f"{dotted} ({origin}): unknown setting")
        setattr(target, key, _convert(dotted, hints[key], value, origin))


def _from_environ(environ: Mapping[str, str]) -> Dict[str, Any]:
    """Pick EDGE_AGENT_* variables and nest them like the TOML file."""
    out: Dict[str, Any] = {}
    top = {f.name for f in dataclasses.fields(Config)} - set(_SECTIONS)
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        for section, cls in _SECTIONS.items():
            if name.startswith(section + "_"):
                sub = name[len(section) + 1 :]
                if sub in {f.name for f in dataclasses.fields(cls)}:
                    out.setdefault(section, {})[sub] = value
                    break
        else:
            if name in top:
                out[name] = value
            else:
                raise ConfigError(f"{key} (environment): unknown setting")
    return out


def read_toml(path: Union[str, Path]) -> Dict[str, Any]:
    """Parse a TOML config file; raise ConfigError with the file and the parser's reason."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_config(
    path: Optional[Union[str, Path]] = None,
    environ: Optional[Mapping[str, str]] = None,
    overrides: Optional[Mapping[str, Any]] = None,
) -> Config:
    """Build and validate the Config: defaults, then ``path``, then ``environ``, then ``overrides``.

    Args:
        path: a TOML file, or None; ``EDGE_AGENT_CONFIG`` in ``environ`` names one when None.
        environ: the environment to read ``EDGE_AGENT_*`` from (the caller passes ``os.environ``).
        overrides: flag values keyed like the TOML file (``{"mqtt": {"qos": 2}, "device_id": "cam1"}``);
            keys whose value is None were not given and are ignored.

    Raises:
        ConfigError: an unreadable file, an unknown setting or an invalid value, naming the field.
    """
    environ = environ if environ is not None else {}
    config = Config()
    if path is None and environ.get(ENV_PREFIX + "CONFIG"):
        path = environ[ENV_PREFIX + "CONFIG"]
    if path is not None:
        _apply(config, read_toml(path), "", f"config file {path}")
    _apply(config, _from_environ(environ), "", "environment")
    if overrides:
        _apply(config, _drop_none(overrides), "", "command line")
    if config.state_dir is None:
        config.state_dir = default_state_dir(environ)
    config.validate()
    return config


def _drop_none(values: Mapping[str, Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            nested = _drop_none(value)
            if nested:
                out[key] = nested
        elif value is not None:
            out[key] = value
    return out
