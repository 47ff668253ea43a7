"""The ``[[inputs]]`` tables of the config: several cameras or streams in one agent.

Each table names one source::

    [[inputs]]
    name = "front"                         # in results ("input"), stats and Home Assistant
    url = "rtsp://user:pass@10.0.0.5/stream"   # or http(s)://, /dev/videoN, cam:N, a file or folder
    max_fps = 5                            # cap for this source (0 = the top-level max_fps)
    transport = "udp"                      # RTSP transport (default: rtsp_transport, tcp)
    connect_timeout = 5                    # seconds (default: connect_timeout, 10)
    stall_timeout = 3                      # seconds without a frame before reconnecting (default 5)
    width = 1280                           # camera resolution and rate to request (V4L2)
    height = 720
    fps = 15
    crop = "0,0,640,480"                   # x,y,width,height of the region to classify

``-i/--input`` may be repeated instead; ``-i front=rtsp://...`` names a source on the
command line. A source without a name is named by its URL without credentials.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from edge_agent.errors import ConfigError
from edge_agent.inference.sources import redact_url

TRANSPORTS = ("tcp", "udp")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_NAMED_SPEC = re.compile(r"^([A-Za-z0-9_.-]{1,64})=(.+)$")


@dataclass
class InputConfig:
    """One source of frames and how to read it (None = the top-level setting)."""

    name: str = ""  # default: the URL without credentials
    url: str = ""
    max_fps: float = 0.0
    transport: Optional[str] = None
    connect_timeout: Optional[float] = None
    stall_timeout: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None
    crop: Optional[str] = None

    @property
    def crop_box(self) -> Optional[Tuple[int, int, int, int]]:
        """(x, y, width, height) of ``crop`` in pixels, or None."""
        if not self.crop:
            return None
        x, y, w, h = (int(v) for v in self.crop.split(","))
        return x, y, w, h


def input_from_spec(spec: str) -> Dict[str, Any]:
    """A ``-i`` value as an ``[[inputs]]`` table: ``name=url`` names it, anything else is the URL."""
    match = _NAMED_SPEC.match(spec)
    if match and "://" not in match.group(1):
        return {"name": match.group(1), "url": match.group(2)}
    return {"url": spec}


def default_name(url: str) -> str:
    """The name of a source given without one: its URL (or path) without credentials."""
    return redact_url(url)


def parse_inputs(value: Any, origin: str, convert: Any) -> List[InputConfig]:
    """The ``inputs`` array of tables as InputConfigs; ``convert(name, hint, value, origin)`` is the
    config's value converter. Raises ConfigError naming the table and field."""
    if not isinstance(value, Sequence) or isinstance(value, (str, bytes)):
        raise ConfigError(f"inputs ({origin}): expected an array of tables ([[inputs]])")
    hints = {f.name: f.type for f in dataclasses.fields(InputConfig)}
    resolved = _hints()
    out = []
    for number, table in enumerate(value, 1):
        if not isinstance(table, Mapping):
            raise ConfigError(f"inputs[{number}] ({origin}): expected a table")
        item = InputConfig()
        for key, raw in table.items():
            if key not in hints:
                raise ConfigError(f"inputs[{number}].{key} ({origin}): unknown setting")
            setattr(item, key, convert(f"inputs[{number}].{key}", resolved[key], raw, origin))
        out.append(item)
    return out


def _hints() -> Dict[str, Any]:
    from typing import get_type_hints

    return get_type_hints(InputConfig)


def validate_inputs(inputs: Sequence[InputConfig]) -> None:
    """Fill in default names and check each input; raise ConfigError naming the first bad one,
    including two sources with the same name."""
    seen: Dict[str, int] = {}
    for number, item in enumerate(inputs, 1):
        where = f"inputs[{number}]"
        if not item.url:
            raise ConfigError(f"{where}.url is required (a stream URL, /dev/videoN, cam:N or a file)")
        if not item.name:
            item.name = default_name(item.url)
        elif not _NAME_RE.match(item.name):
            raise ConfigError(f"{where}.name must be 1-64 letters, digits, '_', '.' or '-', got {item.name!r}")
        if item.name in seen:
            raise ConfigError(
                f"two inputs are named {item.name!r} (inputs {seen[item.name]} and {number}): names must differ"
            )
        seen[item.name] = number
        if item.max_fps < 0:
            raise ConfigError(f"{where}.max_fps must be >= 0, got {item.max_fps}")
        if item.transport is not None and item.transport not in TRANSPORTS:
            raise ConfigError(f"{where}.transport must be tcp or udp, got {item.transport!r}")
        for field_name in ("connect_timeout", "stall_timeout", "fps"):
            value = getattr(item, field_name)
            if value is not None and not value > 0:
                raise ConfigError(f"{where}.{field_name} must be a positive number of seconds, got {value}")
        for field_name in ("width", "height"):
            value = getattr(item, field_name)
            if value is not None and value < 1:
                raise ConfigError(f"{where}.{field_name} must be at least 1, got {value}")
        if item.crop is not None:
            try:
                box = item.crop_box
            except ValueError:
                box = None
            if box is None or box[0] < 0 or box[1] < 0 or box[2] < 1 or box[3] < 1:
                raise ConfigError(f"{where}.crop must be 'x,y,width,height' in pixels, got {item.crop!r}")
