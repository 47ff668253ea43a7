"""The ``[updates]`` section of the agent's configuration (see :mod:`edge_agent.config`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from edge_agent.errors import ConfigError
from edge_agent.login_settings import RegistryLoginSettings

_FLEET_RE = re.compile(r"[A-Za-z0-9_.-]*")  # fullmatch: no trailing newline


@dataclass
class UpdatesConfig(RegistryLoginSettings):
    """Over-the-air model updates (off by default)."""

    #: the registry_* login fields (RegistryLoginSettings) are read-only ones for downloading
    #: releases from oci:// stores; none = anonymous
    section: ClassVar[str] = "updates"

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
        self.validate_login()
        if self.enabled and self.trust is None:
            raise ConfigError(
                "updates.trust is required when updates are enabled: the signing.pub whose releases this device accepts"
            )
        if self.enabled and self.trust is not None and not self.trust.exists():
            raise ConfigError(f"updates.trust: {self.trust} does not exist")
        if not _FLEET_RE.fullmatch(self.fleet):
            raise ConfigError(f"updates.fleet must be letters, digits, '_', '.' or '-', got {self.fleet!r}")
        if self.health_inferences < 1:
            raise ConfigError(f"updates.health_inferences must be at least 1, got {self.health_inferences}")
        if self.validation_timeout <= 0 or self.download_timeout <= 0:
            raise ConfigError("updates.validation_timeout and updates.download_timeout must be positive")
        if self.validation_memory_mb < 64:
            raise ConfigError(f"updates.validation_memory_mb must be at least 64, got {self.validation_memory_mb}")
