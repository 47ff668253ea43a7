"""The device's release directory: installed releases and the atomic active pointers.

Layout of the state directory::

    <state>/releases/<name>/<version>/   release.json + the files it lists (verified)
    <state>/current                      {"name": ..., "version": ...}: the release to run
    <state>/previous                     the release to return to (absent: the built-in model)
    <state>/trial                        present while a new release is on trial (not yet healthy)
    <state>/downloads/<sha256>.part      partial downloads, resumed after an interruption
    <state>/handled.json                 final status of the commands already handled
    <state>/admission.json               replay protection: the highest command sequence accepted
                                         per signing key, digests of finished commands, and the
                                         highest version installed per model name

Pointers are replaced atomically (write a temporary file, fsync, rename, fsync the
directory). Activation writes ``trial`` (holding the old pointers) before it touches
``current``, so a restart at any point can put the old pointers back: a device
always starts on a release that was healthy before, or on the new one once it is.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from edge_agent.errors import UpdateError
from release_contract.errors import RegistryError
from release_contract.files import atomic_write, fsync_dir, sha256_file
from release_contract.manifest import ENVELOPE_NAME, Manifest, check_name, check_version
from release_contract.signing import TrustedKeys, verify_envelope

log = logging.getLogger(__name__)

Pointer = Dict[str, str]
MAX_HANDLED = 100


@dataclass(frozen=True)
class ActiveRelease:
    """An installed, verified release: what the agent loads."""

    name: str
    version: str
    directory: Path
    manifest: Manifest

    def _file(self, role: str) -> Optional[Path]:
        entry = self.manifest.files.get(role)
        return self.directory / entry.path if entry else None

    @property
    def edgetpu_model(self) -> Optional[Path]:
        """The compiled ``_edgetpu.tflite`` model, if the release has one."""
        return self._file("edgetpu_model")

    @property
    def cpu_model(self) -> Path:
        """The plain int8 model, run when no Edge TPU is available."""
        path = self._file("cpu_model")
        assert path is not None  # required by Manifest.from_dict
        return path

    @property
    def labels(self) -> Path:
        """The labels file."""
        path = self._file("labels")
        assert path is not None
        return path

    @property
    def golden(self) -> Optional[Path]:
        """Raw bytes of the golden input tensor, if the release has one."""
        return self._file("golden")

    @property
    def digest(self) -> str:
        """``sha256:<hex>`` of the Edge TPU model, or of the CPU model when there is none."""
        entry = self.manifest.files.get("edgetpu_model") or self.manifest.files["cpu_model"]
        return f"sha256:{entry.sha256}"

    @property
    def pointer(self) -> Pointer:
        """``{"name", "version"}``."""
        return {"name": self.name, "version": self.version}


class ReleaseState:
    """The state directory of one device. Not thread-safe: the updater's worker owns it."""

    def __init__(self, state_dir: Path, trusted: TrustedKeys) -> None:
        self.root = Path(state_dir)
        self.trusted = trusted
        self.releases_dir = self.root / "releases"
        self.downloads_dir = self.root / "downloads"
        self.releases_dir.mkdir(parents=True, exist_ok=True)

    def release_dir(self, name: str, version: str) -> Path:
        """``<state>/releases/<name>/<version>`` (name and version checked first)."""
        return self.releases_dir / check_name(name) / check_version(version)

    # -- pointers -----------------------------------------------------------------------------------
    def read_pointer(self, which: str) -> Optional[Pointer]:
        """The ``current``/``previous`` pointer, or None (absent or unreadable)."""
        try:
            data = json.loads((self.root / which).read_text("utf-8"))
            return {"name": check_name(data["name"]), "version": check_version(data["version"])}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, RegistryError) as exc:
            log.warning("ignoring unreadable %s pointer: %s", which, exc)
            return None

    def write_pointer(self, which: str, pointer: Optional[Pointer]) -> None:
        """Replace a pointer atomically; None removes it (durably)."""
        path = self.root / which
        if pointer is None:
            if path.exists():
                path.unlink()
                fsync_dir(self.root)
            return
        atomic_write(path, json.dumps({"name": pointer["name"], "version": pointer["version"]}).encode())

    def load(self, pointer: Pointer) -> ActiveRelease:
        """Verify an installed release (signature, sizes, sha256) and return it; raise UpdateError."""
        directory = self.release_dir(pointer["name"], pointer["version"])
        try:
            manifest = verify_envelope((directory / ENVELOPE_NAME).read_bytes(), self.trusted)
            if (manifest.name, manifest.version) != (pointer["name"], pointer["version"]):
                raise UpdateError(f"{directory} holds {manifest.ref}")
            for entry in manifest.files.values():
                path = directory / entry.path
                if path.stat().st_size != entry.size or sha256_file(path) != entry.sha256:
                    raise UpdateError(f"{path} differs from its signed manifest")
        except FileNotFoundError as exc:
            raise UpdateError(
                f"release {pointer['name']}:{pointer['version']} is incomplete: {exc.filename} is missing"
            ) from exc
        except (OSError, RegistryError) as exc:
            raise UpdateError(f"installed release {pointer['name']}:{pointer['version']} is damaged: {exc}") from exc
        return ActiveRelease(manifest.name, manifest.version, directory, manifest)

    # -- trial ----------------------------------------------------------------------------------------
    def begin_trial(self, new: Pointer, command_key: str) -> None:
        """Record the old pointers in ``trial``, then make ``new`` current and the old one previous."""
        old_current, old_previous = self.read_pointer("current"), self.read_pointer("previous")
        atomic_write(
            self.root / "trial",
            json.dumps({"command": command_key, "current": old_current, "previous": old_previous, "new": new}).encode(),
        )
        self.write_pointer("previous", old_current)
        self.write_pointer("current", new)

    def trial(self) -> Optional[Dict[str, Any]]:
        """The open trial record, or None."""
        try:
            data = json.loads((self.root / "trial").read_text("utf-8"))
            return data if isinstance(data, dict) else None
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {"command": "", "current": None, "previous": None, "new": None}

    def commit_trial(self) -> None:
        """The new release is healthy: drop the trial record."""
        self.write_pointer("trial", None)

    def abort_trial(self) -> Optional[Dict[str, Any]]:
        """Put the pointers back as they were before the trial; return the trial record."""
        record = self.trial()
        if record is None:
            return None
        self.write_pointer("current", record.get("current"))
        self.write_pointer("previous", record.get("previous"))
        self.write_pointer("trial", None)
        return record

    # -- start-up -----------------------------------------------------------------------------------
    def clean_staging(self) -> None:
        """Remove half-assembled release directories left by a crash."""
        for staging in self.releases_dir.glob("*/.*.staging-*"):
            shutil.rmtree(staging, ignore_errors=True)

    def current_release(self) -> Optional[ActiveRelease]:
        """The release to run: ``current`` if intact, else ``previous`` (made current), else None."""
        for which in ("current", "previous"):
            pointer = self.read_pointer(which)
            if pointer is None:
                continue
            try:
                release = self.load(pointer)
            except UpdateError as exc:
                log.error("cannot use the %s release: %s", which, exc)
                continue
            if which == "previous":
                self.write_pointer("current", pointer)
                self.write_pointer("previous", None)
            return release
        if self.read_pointer("current") is not None:
            self.write_pointer("current", None)
        return None

    def prune(self) -> None:
        """Delete installed releases other than current and previous, and stale downloads."""
        pointers = (self.read_pointer("current"), self.read_pointer("previous"))
        keep = {(p["name"], p["version"]) for p in pointers if p}
        for name_dir in self.releases_dir.iterdir():
            for version_dir in name_dir.iterdir():
                if (name_dir.name, version_dir.name) not in keep:
                    shutil.rmtree(version_dir, ignore_errors=True)
        shutil.rmtree(self.downloads_dir, ignore_errors=True)

    # -- handled commands ---------------------------------------------------------------------------
    def handled(self) -> Dict[str, Any]:
        """Command key -> final status of the commands already handled."""
        try:
            data = json.loads((self.root / "handled.json").read_text("utf-8"))
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def record(self, key: str, status: Dict[str, Any]) -> None:
        """Remember the final status of a command (the newest MAX_HANDLED are kept)."""
        data = self.handled()
        data.pop(key, None)
        data[key] = status
        while len(data) > MAX_HANDLED:
            data.pop(next(iter(data)))
        atomic_write(self.root / "handled.json", json.dumps(data).encode())

    # -- replay protection --------------------------------------------------------------------------
    def admission(self) -> Dict[str, Any]:
        """The replay-protection record: ``{"keys": {key_id: {"seq", "digest"}}, "finished": [digest],
        "versions": {name: version}}``; an empty record when absent (a damaged one is logged)."""
        empty: Dict[str, Any] = {"keys": {}, "finished": [], "versions": {}}
        try:
            data = json.loads((self.root / "admission.json").read_text("utf-8"))
        except FileNotFoundError:
            return empty
        except (OSError, ValueError) as exc:
            log.error("replay-protection record is unreadable (%s): starting a new one", exc)
            return empty
        if not isinstance(data, dict):
            return empty
        return {
            "keys": data.get("keys") if isinstance(data.get("keys"), dict) else {},
            "finished": data.get("finished") if isinstance(data.get("finished"), list) else [],
            "versions": data.get("versions") if isinstance(data.get("versions"), dict) else {},
        }

    def save_admission(self, record: Dict[str, Any]) -> None:
        """Replace the replay-protection record atomically (the newest MAX_HANDLED digests are kept)."""
        record = {**record, "finished": list(record.get("finished", []))[-MAX_HANDLED:]}
        atomic_write(self.root / "admission.json", json.dumps(record, sort_keys=True).encode())
