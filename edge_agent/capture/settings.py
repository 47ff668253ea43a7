"""The ``[capture]`` section of the agent's configuration (see :mod:`edge_agent.config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from edge_agent.errors import ConfigError
from edge_agent.login_settings import RegistryLoginSettings

MAX_RATE = 6000.0  # captures per minute: 100 a second is far more than a board can encode


@dataclass
class CaptureConfig(RegistryLoginSettings):
    """Which frames are kept for retraining, where, and within which bounds (off while ``dir`` is unset).

    A frame whose top-1 score is below ``below`` is kept; ``sample`` percent of the other frames
    too (unbiased evaluation data). At most ``rate`` captures a minute; past ``max_mb`` the oldest
    captures are deleted. ``trust`` is the signing.pub whose ``collect`` commands are obeyed
    (default: ``updates.trust``); collecting needs ``mqtt.url`` as well.
    """

    #: the registry_* login fields (RegistryLoginSettings) may push to oci:// stores, where
    #: collect uploads go; none = anonymous. Not the [updates] login.
    section: ClassVar[str] = "capture"

    dir: Optional[Path] = None
    below: float = 0.5
    sample: float = 0.0  # percent of confident frames kept too
    max_mb: float = 500.0
    rate: float = 60.0  # captures per minute
    trust: Optional[Path] = None
    collect: bool = True  # obey signed collect commands (when mqtt.url and a trusted key are set)
    upload_timeout: float = 30.0  # seconds for each connect and read while uploading to a registry

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        self.validate_login()
        if not (math.isfinite(self.upload_timeout) and 0 < self.upload_timeout <= 600):
            raise ConfigError(f"capture.upload_timeout must be in (0, 600] seconds, got {self.upload_timeout}")
        if not (math.isfinite(self.below) and 0.0 <= self.below <= 1.0):
            raise ConfigError(f"capture.below must be a score in [0, 1], got {self.below}")
        if not (math.isfinite(self.sample) and 0.0 <= self.sample <= 100.0):
            raise ConfigError(f"capture.sample must be a percentage in [0, 100], got {self.sample}")
        if not (math.isfinite(self.max_mb) and 0 < self.max_mb <= 1 << 20):
            raise ConfigError(f"capture.max_mb must be more than 0 and at most 1048576, got {self.max_mb}")
        if not (math.isfinite(self.rate) and 0 < self.rate <= MAX_RATE):
            raise ConfigError(f"capture.rate must be more than 0 and at most {MAX_RATE:g} a minute, got {self.rate}")
        if self.trust is not None and not self.trust.exists():
            raise ConfigError(f"capture.trust: {self.trust} does not exist")
