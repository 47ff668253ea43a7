"""A store in a local directory (also over NFS or on a USB stick).

Layout::

    <root>/<name>/<version>/release.json     the signed envelope
    <root>/<name>/<version>/<file>           the files it lists
    <root>/<name>/channels.json              {"canary": "3", "stable": "2"}
    <root>/<name>/yanked.json                ["1"]

A version directory appears with one rename, so readers never see half a release.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Mapping

from registry.store.base import CHANNELS, Store, sort_versions
from release_contract.errors import AlreadyExists, NotFound, StoreError
from release_contract.files import DIR_MODE, FILE_MODE, atomic_write
from release_contract.manifest import ENVELOPE_NAME, check_filename, check_name, check_version


class LocalStore(Store):
    """Releases in a directory tree; see the module docstring for the layout."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.url = str(self.root.resolve())

    def _name_dir(self, name: str, must_exist: bool = True) -> Path:
        path = self.root / check_name(name)
        if must_exist and not path.is_dir():
            if not self.root.is_dir():
                raise StoreError(f"store directory {self.root} does not exist")
            raise NotFound(f"no release named {name!r} in {self.root}")
        return path

    def push(self, envelope: bytes, files: Mapping[str, Path], name: str, version: str) -> None:
        final = self._name_dir(name, must_exist=False) / check_version(version)
        if final.exists():
            raise AlreadyExists(
                f"{name}:{version} already exists in {self.root}: versions are immutable, push a higher version"
            )
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".push-{version}-"))
            try:
                os.chmod(staging, DIR_MODE)  # mkdtemp makes it 0700: other users could not read the release
                for fname, src in files.items():
                    shutil.copyfile(src, staging / check_filename(fname))
                (staging / ENVELOPE_NAME).write_bytes(envelope)
                for written in staging.iterdir():
                    os.chmod(written, FILE_MODE)
                try:
                    os.rename(staging, final)
                except OSError as exc:
                    if final.exists():
                        raise AlreadyExists(f"{name}:{version} already exists in {self.root}") from exc
                    raise
            finally:
                if staging.exists():
                    shutil.rmtree(staging, ignore_errors=True)
        except FileNotFoundError as exc:
            raise StoreError(f"file not found: {exc.filename}") from exc
        except OSError as exc:
            raise StoreError(f"cannot write to store {self.root}: {exc.strerror or exc}") from exc

    def names(self) -> List[str]:
        if not self.root.is_dir():
            raise StoreError(f"store directory {self.root} does not exist")
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> List[str]:
        base = self._name_dir(name)
        return sort_versions([p.name for p in base.iterdir() if (p / ENVELOPE_NAME).is_file()])

    def release_dir(self, name: str, version: str) -> Path:
        """Directory of ``name:version``; raises NotFound if absent."""
        path = self._name_dir(name) / check_version(version)
        if not (path / ENVELOPE_NAME).is_file():
            raise NotFound(f"{name}:{version} is not in {self.root}")
        return path

    def envelope(self, name: str, version: str) -> bytes:
        try:
            return (self.release_dir(name, version) / ENVELOPE_NAME).read_bytes()
        except OSError as exc:
            raise StoreError(f"cannot read {name}:{version}: {exc.strerror or exc}") from exc

    def _read_json(self, path: Path, default: object) -> object:
        try:
            return json.loads(path.read_text("utf-8"))
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc

    def channels(self, name: str) -> Dict[str, str]:
        data = self._read_json(self._name_dir(name) / "channels.json", {})
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def set_channel(self, name: str, version: str, channel: str) -> None:
        if channel not in CHANNELS:
            raise StoreError(f"unknown channel {channel!r}: use one of {', '.join(CHANNELS)}")
        self.release_dir(name, version)
        if version in self.yanked(name):
            raise StoreError(f"{name}:{version} is yanked and cannot be promoted")
        chans = self.channels(name)
        chans[channel] = version
        atomic_write(self._name_dir(name) / "channels.json", json.dumps(chans, sort_keys=True).encode())

    def yanked(self, name: str) -> List[str]:
        data = self._read_json(self._name_dir(name) / "yanked.json", [])
        return [str(v) for v in data] if isinstance(data, list) else []

    def yank(self, name: str, version: str) -> None:
        self.release_dir(name, version)
        yanked = sorted(set(self.yanked(name)) | {version})
        atomic_write(self._name_dir(name) / "yanked.json", json.dumps(yanked).encode())
        chans = {c: v for c, v in self.channels(name).items() if v != version}
        atomic_write(self._name_dir(name) / "channels.json", json.dumps(chans, sort_keys=True).encode())
