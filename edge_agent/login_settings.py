"""The registry login fields that ``[updates]`` (read-only, release downloads) and ``[capture]``
(push, capture uploads) both carry, and how they become a :class:`~release_contract.credentials.Login`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from edge_agent.errors import ConfigError
from release_contract.credentials import CredentialsError, Login, read_password_file


@dataclass
class RegistryLoginSettings:
    """A username with a file holding its password or token, or a Docker config.json (auths,
    credHelpers, credsStore); none of them = anonymous. Subclasses name their section."""

    section: ClassVar[str] = ""

    registry_username: str = ""
    registry_password_file: Optional[Path] = None
    registry_docker_config: Optional[Path] = None

    def registry_login(self) -> Login:
        """The login; reads the password file (its first line, at most 64 KiB). Raises ConfigError."""
        password: Optional[str] = None
        if self.registry_password_file is not None:
            try:
                password = read_password_file(self.registry_password_file)
            except CredentialsError as exc:
                raise ConfigError(f"{self.section}.registry_password_file: {exc}") from exc
        return Login(
            username=self.registry_username or None, password=password, docker_config=self.registry_docker_config
        )

    def validate_login(self) -> None:
        """Raise ConfigError when a username comes without its password file, or the reverse."""
        if bool(self.registry_username) != (self.registry_password_file is not None):
            raise ConfigError(f"{self.section}.registry_username and {self.section}.registry_password_file go together")
