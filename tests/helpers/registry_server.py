"""Start the CNCF distribution registry (Debian's ``docker-registry``) on a free loopback port.

Storage is a temporary directory, deletes are enabled (for channel tags), and the
process is stopped by PID. Used by the OCI store tests and ``bench/rollout.py``.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Optional

from helpers.mosquitto import free_port, terminate, wait_for_port

BINARY = Path("/usr/bin/docker-registry")


class RegistryServer:
    """A distribution registry owned by the caller: ``start()``, ``stop()``, ``url``."""

    def __init__(self, workdir: Path, port: Optional[int] = None, auth: str = "") -> None:
        """``auth`` is an ``auth:`` section for config.yml (see :func:`htpasswd_auth`, ``TokenServer``)."""
        self.auth = auth
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.log_path = self.workdir / "registry.log"

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``."""
        return f"127.0.0.1:{self.port}"

    def store_url(self, repo: str = "models") -> str:
        """The ``oci://`` store URL for repository prefix ``repo``."""
        return f"oci://{self.host}/{repo}"

    def start(self) -> RegistryServer:
        if not BINARY.exists():
            raise RuntimeError(
                "docker-registry is not installed: run `make test` as root or `apt-get install docker-registry`"
            )
        storage = self.workdir / "storage"
        storage.mkdir(exist_ok=True)
        conf = self.workdir / "config.yml"
        conf.write_text(
            "version: 0.1\n"
            "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n" + self.auth
        )
        with self.log_path.open("wb") as logf:
            self.proc = subprocess.Popen([str(BINARY), "serve", str(conf)], stdout=logf, stderr=logf)
        try:
            wait_for_port("127.0.0.1", self.port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"http://{self.host}/v2/", timeout=2):  # noqa: S310
                        break
                except urllib.error.HTTPError as exc:
                    if exc.code == 401:  # up, and asking for a login
                        break
                    raise
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        except (TimeoutError, OSError):
            self.stop()
            raise RuntimeError(f"docker-registry did not start: {self.log_path.read_text()[-2000:]}") from None
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        terminate(self.proc)
        self.proc = None

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def htpasswd_auth(workdir: Path, users: Dict[str, str]) -> str:
    """Write a bcrypt htpasswd file for ``users`` and return the registry's ``auth:`` section for it."""
    import bcrypt

    path = Path(workdir) / "htpasswd"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=5)).decode()}" for u, p in users.items()]
    path.write_text("\n".join(lines) + "\n")
    return f"auth:\n  htpasswd:\n    realm: edge-test\n    path: {path}\n"
