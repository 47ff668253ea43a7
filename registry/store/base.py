"""The store interface shared by the local directory and the OCI registry stores."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from release_contract.errors import ManifestError, NotFound
from release_contract.manifest import check_name, check_version, version_key

CHANNELS = ("canary", "stable")


@dataclass
class ReleaseInfo:
    """One release as listed by a store: its version, whether it is yanked, its channels."""

    name: str
    version: str
    yanked: bool = False
    channels: List[str] = field(default_factory=list)


class Store(abc.ABC):
    """A place releases are pushed to and pulled from.

    Versions are immutable: pushing an existing ``name:version`` raises
    :class:`~release_contract.errors.AlreadyExists`. All methods raise
    :class:`~release_contract.errors.StoreError` subclasses on failure.
    """

    #: The URL devices use to reach this store (a path or ``oci://...``).
    url: str

    @abc.abstractmethod
    def push(self, envelope: bytes, files: Mapping[str, Path], name: str, version: str) -> None:
        """Store a signed envelope and its files (keyed by their manifest file names)."""

    @abc.abstractmethod
    def names(self) -> List[str]:
        """Names of the releases in the store, sorted."""

    @abc.abstractmethod
    def versions(self, name: str) -> List[str]:
        """Versions of ``name``, oldest first; raises NotFound for an unknown name."""

    @abc.abstractmethod
    def envelope(self, name: str, version: str) -> bytes:
        """The signed ``release.json`` of ``name:version``."""

    @abc.abstractmethod
    def channels(self, name: str) -> Dict[str, str]:
        """Channel name -> version for ``name``."""

    @abc.abstractmethod
    def set_channel(self, name: str, version: str, channel: str) -> None:
        """Point ``channel`` of ``name`` at ``version``."""

    @abc.abstractmethod
    def yanked(self, name: str) -> List[str]:
        """Versions of ``name`` that were yanked."""

    @abc.abstractmethod
    def yank(self, name: str, version: str) -> None:
        """Mark ``name:version`` as yanked and take it off every channel."""

    def list(self, name: Optional[str] = None) -> List[ReleaseInfo]:
        """Every release (or every version of ``name``) with its yank flag and channels."""
        out: List[ReleaseInfo] = []
        for n in [check_name(name)] if name else self.names():
            chans, yanked = self.channels(n), set(self.yanked(n))
            for v in self.versions(n):
                out.append(ReleaseInfo(n, v, v in yanked, sorted(c for c, cv in chans.items() if cv == v)))
        return out

    def resolve(self, name: str, ref: Optional[str]) -> str:
        """Turn a version, a channel name or None (the newest unyanked version) into a version."""
        if ref in CHANNELS:
            version = self.channels(name).get(ref)
            if version is None:
                raise NotFound(
                    f"{name} has no {ref} channel: run `edge-registry promote {name}:VERSION --channel {ref}`"
                )
            return version
        if ref:
            version = check_version(ref)
            if version not in self.versions(name):
                raise NotFound(f"{name}:{version} is not in the store")
            return version
        yanked = set(self.yanked(name))
        live = [v for v in self.versions(name) if v not in yanked]
        if not live:
            raise NotFound(f"{name} has no release that is not yanked")
        return live[-1]


def sort_versions(versions: List[str]) -> List[str]:
    """Versions oldest first; names that are not versions are dropped."""
    good = []
    for v in versions:
        try:
            good.append((version_key(v), v))
        except ManifestError:
            continue
    return [v for _, v in sorted(good)]
