"""Signed releases with arbitrary files, written straight into a local store, and a device to send them to."""

from __future__ import annotations

import hashlib
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from helpers.commands import signed
from release_contract.manifest import FileEntry, Manifest, format_time
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key, sign_manifest

ROOT = Path(__file__).resolve().parents[2]
MODEL = (ROOT / "models" / "digits_int8.tflite").read_bytes()
LABELS = (ROOT / "labels" / "digits.txt").read_bytes()


class Signer:
    """A fresh key pair in ``folder``: ``key`` signs, ``pub`` is what devices pin."""

    def __init__(self, folder: Path) -> None:
        priv, self.pub = generate_keypair(folder)
        self.key: Ed25519PrivateKey = load_private_key(priv)

    def release(self, store: Path, version: str, files: Dict[str, bytes], roles: Dict[str, str]) -> Manifest:
        """Sign ``files`` (file name -> bytes; ``roles``: role -> file name) as digits:``version`` in ``store``."""
        entries = {
            role: FileEntry(fname, len(files[fname]), hashlib.sha256(files[fname]).hexdigest())
            for role, fname in roles.items()
        }
        now = datetime.now(timezone.utc)
        manifest = Manifest(
            name="digits",
            version=version,
            files=entries,
            input={"shape": [1, 32, 32, 3]},
            created_at=format_time(now),
            expires_at=format_time(now + timedelta(days=1)),
        )
        folder = store / "digits" / version
        folder.mkdir(parents=True)
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        (folder / "release.json").write_bytes(sign_manifest(manifest, self.key))
        return manifest

    def command(self, version: str, store: str) -> bytes:
        """A signed install command for digits:``version`` from ``store``."""
        return signed(self.key, f"r-{version}-{time.monotonic_ns()}", "install", version, store, device="dev-1")


class Device:
    """An updater whose statuses are recorded; its health check always passes."""

    def __init__(self, state: Path, signer: Signer, **kwargs: Any) -> None:
        self.statuses: List[Dict[str, Any]] = []
        self.updater = Updater(
            state, TrustedKeys.from_paths([signer.pub]), "dev-1", None, self.statuses.append, self.activate, **kwargs
        )

    def activate(self, release: Optional[ActiveRelease]) -> bool:
        return True

    def install(self, payload: bytes) -> Dict[str, Any]:
        """Process one command synchronously; the final status."""
        final = self.updater.process(payload)
        assert final is not None
        return final
