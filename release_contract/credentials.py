"""Registry credentials, found the same way by ``edge-registry`` and by devices.

A :class:`Login` holds what the user gave; :meth:`Login.for_host` returns the
:class:`Credentials` for one registry host, looked up in this order:

1. explicit ones (``--username`` + ``--password-stdin``; on a device ``[updates]``
   ``registry_username`` + ``registry_password_file``);
2. the environment the caller passed in (``EDGE_REGISTRY_USERNAME`` / ``EDGE_REGISTRY_PASSWORD``);
3. the standard Docker config (``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``):
   ``credHelpers[host]``, then ``credsStore``, each only when its ``docker-credential-<name>``
   program exists (run as ``docker-credential-<name> get`` with a timeout), then ``auths[host]``.

No lookup retries, nothing secret is logged, and :class:`Credentials` never prints its password.
A broken config (not JSON, a failing helper) raises :class:`CredentialsError`: one line.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from release_contract.errors import CredentialsError

log = logging.getLogger(__name__)

HELPER_TIMEOUT = 10.0  # seconds a docker-credential-<name> helper may take
MAX_CONFIG_BYTES = 1 << 20
ENV_USERNAME = "EDGE_REGISTRY_USERNAME"
ENV_PASSWORD = "EDGE_REGISTRY_PASSWORD"  # noqa: S105 (a variable name, not a password)
DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


@dataclass(frozen=True)
class Credentials:
    """A username and its password (or token); ``source`` says where they came from (for messages)."""

    username: str
    password: str = field(repr=False)
    source: str = "flags"

    def basic(self) -> str:
        """The value of an ``Authorization: Basic`` header."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class Login:
    """What a user gave to log in; resolved per registry host by :meth:`for_host`."""

    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    env_username: Optional[str] = None
    env_password: Optional[str] = field(default=None, repr=False)
    docker_config: Optional[Path] = None  # a config.json, or a folder holding one

    @classmethod
    def from_environment(
        cls,
        environ: Mapping[str, str],
        username: Optional[str] = None,
        password: Optional[str] = None,
        docker_config: Optional[Path] = None,
    ) -> Login:
        """A login from flags plus ``environ`` (``EDGE_REGISTRY_*``, ``DOCKER_CONFIG``, ``HOME``)."""
        if docker_config is None:
            if environ.get("DOCKER_CONFIG"):
                docker_config = Path(environ["DOCKER_CONFIG"])
            elif environ.get("HOME"):
                docker_config = Path(environ["HOME"]) / ".docker"
        return cls(
            username=username,
            password=password,
            env_username=environ.get(ENV_USERNAME) or None,
            env_password=environ.get(ENV_PASSWORD) or None,
            docker_config=docker_config,
        )

    def for_host(self, host: str) -> Optional[Credentials]:
        """Credentials for registry ``host`` (``name[:port]``), or None for anonymous access.

        Raises :class:`CredentialsError` for a username without a password, a Docker config that
        is not JSON, or a credential helper that fails.
        """
        if self.username is not None or self.password is not None:
            return _pair(self.username, self.password, "flags")
        if self.env_username is not None or self.env_password is not None:
            return _pair(self.env_username, self.env_password, f"{ENV_USERNAME}/{ENV_PASSWORD}")
        if self.docker_config is not None:
            path = self.docker_config
            return from_docker_config(path / "config.json" if path.is_dir() else path, host)
        return None


def read_password_file(path: Path) -> str:
    """The first line of ``path`` (at most 64 KiB read): a device's registry password or token.

    Raises CredentialsError naming the file (never its content) when it cannot be read.
    """
    try:
        with path.open("rb") as fh:
            lines = fh.read(65536).decode("utf-8", "replace").splitlines()
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return lines[0] if lines else ""


def _pair(username: Optional[str], password: Optional[str], source: str) -> Credentials:
    if not username or password is None:
        raise CredentialsError(f"registry login from {source}: give both a username and a password")
    return Credentials(username, password, source)


def from_docker_config(path: Path, host: str) -> Optional[Credentials]:
    """Credentials for ``host`` in a Docker ``config.json`` (None when it has none or is missing)."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CredentialsError(f"cannot read the Docker config {path}: {exc.strerror or exc}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise CredentialsError(f"the Docker config {path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"the Docker config {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    except ValueError as exc:
        raise CredentialsError(f"the Docker config {path} is not valid JSON (not UTF-8 text)") from exc
    if not isinstance(config, dict):
        raise CredentialsError(f"the Docker config {path} is not a JSON object")
    keys = _host_keys(host)
    helpers: Dict[str, Any] = config["credHelpers"] if isinstance(config.get("credHelpers"), dict) else {}
    helper = next((helpers[k] for k in keys if isinstance(helpers.get(k), str)), None)
    for name in (helper, config.get("credsStore")):
        if isinstance(name, str) and name:
            found = _from_helper(name, keys[0], path)
            if found is not None:
                return found
    auths: Dict[str, Any] = config["auths"] if isinstance(config.get("auths"), dict) else {}
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            return _from_auth_entry(entry, key, path)
    return None


def _host_keys(host: str) -> list[str]:
    """The keys a Docker config may file ``host`` under."""
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host in DOCKER_HUB_KEYS:
        keys += list(DOCKER_HUB_KEYS)
    return keys


def _from_auth_entry(entry: Dict[str, Any], key: str, path: Path) -> Optional[Credentials]:
    source = f"{path} (auths)"
    if entry.get("identitytoken"):
        raise CredentialsError(
            f"the login for {key} in {path} is an identity token, which is not supported: "
            "use --username with --password-stdin (or EDGE_REGISTRY_USERNAME/EDGE_REGISTRY_PASSWORD)"
        )
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CredentialsError(f"the login for {key} in {path} is not base64 of user:password") from exc
        if not sep or not user:
            raise CredentialsError(f"the login for {key} in {path} is not base64 of user:password")
        return Credentials(user, password, source)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"], source)
    return None


def _from_helper(name: str, host: str, path: Path) -> Optional[Credentials]:
    program = f"docker-credential-{name}"
    if not all(c.isalnum() or c in "-_." for c in name) or shutil.which(program) is None:
        log.debug("credential helper %s named in %s is not installed; skipping it", program, path)
        return None
    try:
        done = subprocess.run(
            [program, "get"], input=host.encode(), capture_output=True, timeout=HELPER_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CredentialsError(f"the credential helper {program} did not answer within {HELPER_TIMEOUT:.0f} s") from exc
    except OSError as exc:
        raise CredentialsError(f"cannot run the credential helper {program}: {exc.strerror or exc}") from exc
    out = done.stdout[:65536].decode("utf-8", "replace").strip()
    if done.returncode != 0:
        if "credentials not found" in out.lower() or "credentials not found" in done.stderr.decode(errors="replace"):
            return None
        # the helper's own output may echo a secret: say only that it failed
        raise CredentialsError(f"the credential helper {program} failed (exit {done.returncode}) for {host}")
    try:
        answer = json.loads(out)
        user, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"the credential helper {program} answered something that is not its JSON") from exc
    if not isinstance(user, str) or not isinstance(secret, str) or not secret:
        raise CredentialsError(f"the credential helper {program} answered an empty login for {host}")
    if user == "<token>":
        raise CredentialsError(f"the credential helper {program} holds an identity token for {host}: not supported")
    return Credentials(user, secret, program)
