"""The agent's configuration: one typed tree, loaded in order of precedence.

1. defaults (below, next to each field),
2. a TOML file (``edge-agent run --config FILE``; sections ``[mqtt]``, ``[outbox]``, ``[updates]``,
   ``[capture]``),
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
from typing import Any, Dict, List, Mapping, Optional, Union, get_type_hints

from edge_agent.capture.settings import CaptureConfig
from edge_agent.errors import ConfigError
from edge_agent.input_config import TRANSPORTS, InputConfig, default_name, parse_inputs, validate_inputs
from edge_agent.publishing.settings import MqttConfig, OutboxConfig, publish_policy
from edge_agent.updating.settings import UpdatesConfig
from release_contract.files import open_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11 only
    import tomli as tomllib

__all__ = ["Config", "MqttConfig", "OutboxConfig", "UpdatesConfig", "load_config", "publish_policy"]

ENV_PREFIX = "EDGE_AGENT_"
MAX_THREADS = 64  # interpreter threads; far more than any board has cores
_TOPIC_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


#: Interpreter packages (``--runtime``); ``auto`` takes the first importable one, in this order.
RUNTIMES = ("auto", "litert", "tflite-runtime", "tensorflow")
#: ``--resize``: fast = OpenCV bilinear (TensorFlow's default); coral = Pillow Lanczos, as Coral's examples
RESIZE_MODES = ("fast", "coral")
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


@dataclass
class Config:
    """The whole agent configuration (see the module docstring for precedence)."""

    model: Optional[Path] = None  # None = the bundled demo model
    labels: Optional[Path] = None
    input: Optional[str] = None  # image, directory, video, camera index or rtsp:// URL; None = bundled images
    inputs: List[InputConfig] = field(default_factory=list)  # [[inputs]]: several sources (replaces input)
    rtsp_transport: str = "tcp"  # tcp or udp, for every RTSP input that does not set its own
    connect_timeout: float = 10.0  # seconds to open a stream
    stall_timeout: float = 5.0  # seconds without a frame before a live source is reopened
    device_id: str = field(default_factory=default_device_id)
    device: str = "auto"  # auto, cpu, usb, usb:N, pci, pci:N or :N (as `edge-agent classify --device`)
    runtime: str = "auto"  # interpreter package: auto, litert, tflite-runtime
    edgetpu_library: Optional[str] = None  # libedgetpu to load (path or name); None = libedgetpu.so.1
    probe_timeout: float = 30.0  # seconds the child probe of the Edge TPU delegate may take
    probe_cache: bool = True  # remember probe verdicts per (runtime, interpreter, model) in the state dir
    resize: str = "fast"  # fast (OpenCV bilinear) or coral (Pillow Lanczos, as Coral's classify_image.py)
    threads: int = 2  # CPU interpreter threads
    top_k: int = 3
    threshold: float = 0.0  # leave out classes scoring below this
    max_fps: float = 0.0  # frames per second limit; 0 = as fast as the source delivers
    mean: Optional[float] = None  # pixel mean the model expects (with std); None = the model's quantization
    std: Optional[float] = None
    keep_aspect: bool = False  # pad instead of stretching when resizing
    max_pixels: int = (
        24_000_000  # larger images, or ones costing more memory than 8-bit RGB ones of this size, are refused
    )
    max_model_memory_mb: int = 256  # models whose tensors need more are refused (fits a 1 GB board)
    state_dir: Optional[Path] = None  # None = default_state_dir()
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    updates: UpdatesConfig = field(default_factory=UpdatesConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)

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
        if self.resize not in RESIZE_MODES:
            raise ConfigError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if not math.isfinite(self.probe_timeout) or self.probe_timeout <= 0:
            raise ConfigError(f"probe_timeout must be a positive number of seconds, got {self.probe_timeout}")
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
        if self.max_model_memory_mb < 1:
            raise ConfigError(f"max_model_memory_mb must be at least 1, got {self.max_model_memory_mb}")
        if self.rtsp_transport not in TRANSPORTS:
            raise ConfigError(f"rtsp_transport must be tcp or udp, got {self.rtsp_transport!r}")
        if not (self.connect_timeout > 0 and self.stall_timeout > 0):
            raise ConfigError("connect_timeout and stall_timeout must be positive numbers of seconds")
        validate_inputs(self.inputs)
        self.mqtt.validate()
        self.outbox.validate()
        self.updates.validate()
        self.capture.validate()
        if self.updates.enabled and not self.mqtt.url:
            raise ConfigError("updates.enabled needs mqtt.url: rollout commands arrive over MQTT")

    def input_list(self) -> List[InputConfig]:
        """The sources to read: ``inputs``, else one for ``input``; [] means the bundled images."""
        if self.inputs:
            return self.inputs
        if self.input:
            return [InputConfig(name=default_name(self.input), url=self.input)]
        return []

    @property
    def state_path(self) -> Path:
        """The state directory (``load_config`` fills in the default)."""
        assert self.state_dir is not None, "load_config() fills state_dir"
        return self.state_dir

    @property
    def probe_cache_path(self) -> Optional[Path]:
        """Where Edge TPU probe verdicts are cached (None when ``probe_cache`` is off)."""
        return self.state_path / "probe-cache.json" if self.probe_cache else None

    @property
    def outbox_path(self) -> Path:
        """Where the outbox database lives (inside the state directory)."""
        return self.state_path / "outbox.sqlite"


_SECTIONS: Dict[str, Any] = {
    "mqtt": MqttConfig,
    "outbox": OutboxConfig,
    "updates": UpdatesConfig,
    "capture": CaptureConfig,
}
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
            number = float(value)
            if not math.isfinite(number):  # no setting means anything by inf or nan
                raise ValueError("expected a finite number")
            return number
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
        if key == "inputs" and not section:  # a later layer's inputs replace the earlier input(s)
            target.inputs, target.input = parse_inputs(value, origin, _convert), None
            continue
        if key == "input" and not section:
            target.inputs = []
        setattr(target, key, _convert(dotted, hints[key], value, origin))
    if not section and "input" in values and "inputs" in values:
        raise ConfigError(f"input and inputs ({origin}): give one of them")


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
        with open_regular(Path(path)) as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {exc.start})") from exc


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
