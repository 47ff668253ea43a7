"""The ``[updates]`` section of the agent's configuration (see :mod:`edge_agent.config`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from edge_agent.errors import ConfigError
from release_contract.credentials import Login, read_password_file
from release_contract.errors import CredentialsError

_FLEET_RE = re.compile(r"[A-Za-z0-9_.-]*")  # fullmatch: no trailing newline


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
    # read-only registry login for oci:// stores: a username + a file holding its password or
    # token, or a Docker config.json (auths, credHelpers, credsStore); none = anonymous
    registry_username: str = ""
    registry_password_file: Optional[Path] = None
    registry_docker_config: Optional[Path] = None

    def registry_login(self) -> Login:
        """The registry login for release downloads; reads the password file (first line, at most 64 KiB)."""
        password: Optional[str] = None
        if self.registry_password_file is not None:
            try:
                password = read_password_file(self.registry_password_file)
            except CredentialsError as exc:
                raise ConfigError(f"updates.registry_password_file: {exc}") from exc
        return Login(
            username=self.registry_username or None,
            password=password,
            docker_config=self.registry_docker_config,
        )

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid field."""
        if bool(self.registry_username) != (self.registry_password_file is not None):
            raise ConfigError("updates.registry_username and updates.registry_password_file go together")
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
