"""Download a release, verify it, and only then write it into its target directory.

Device side: needs only the standard library and :mod:`cryptography`. The sources it
reads from (a store directory, an OCI registry) are in :mod:`release_contract.stores`.

Every file is streamed with a length cap (a server that sends more than the signed
size is cut off), a read timeout, a time budget (120 s plus 20 kB/s of its size, so a
server cannot drip bytes forever), and resumption from a ``.part`` file (HTTP
``Range``). Nothing reaches the target directory before the signature, sizes and
sha256 of every file have been checked.

Partial files are created mode 0600 (never through a link) in a 0700 work directory.
Only an interrupted transfer keeps its ``.part`` to resume from; any other failure
removes the release's partial files, and a resumed file that does not match its
sha256 is downloaded once more from zero before it is refused.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, Optional

from release_contract.errors import DownloadError, StoreError, VerificationError
from release_contract.files import DIR_MODE, FILE_MODE, fsync_dir, sha256_file
from release_contract.manifest import (
    ENVELOPE_NAME,
    FileEntry,
    Manifest,
    check_filename,
    check_name,
    check_version,
)
from release_contract.signing import TrustedKeys, verify_envelope
from release_contract.stores import LocalSource, OciSource, Source, open_source, store_kind

__all__ = ["LocalSource", "OciSource", "Source", "PullResult", "open_source", "pull_release", "store_kind"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
MIN_SECONDS = 120.0  # every file gets this long, plus its size at MIN_RATE bytes/s
MIN_RATE = 20_000.0
Progress = Callable[[int], None]


@dataclass
class PullResult:
    """What :func:`pull_release` fetched: the manifest and the bytes actually transferred."""

    manifest: Manifest
    bytes_downloaded: int


def check_manifest(
    manifest: Manifest, name: str, version: str, runtime_version: Optional[int] = None, now: Optional[datetime] = None
) -> None:
    """Refuse a manifest for another release, an expired one, or one the runtime cannot run."""
    if (manifest.name, manifest.version) != (name, version):
        raise VerificationError(
            f"asked for {name}:{version} but the store served the signed manifest of {manifest.ref}"
        )
    if manifest.expired(now or datetime.now(timezone.utc)):
        raise VerificationError(f"{manifest.ref} expired at {manifest.expires_at}")
    if runtime_version is not None and manifest.min_runtime > runtime_version:
        raise VerificationError(
            f"{manifest.ref} needs Edge TPU runtime {manifest.min_runtime}, this device has {runtime_version}"
        )


def _open_part(part: Path) -> BinaryIO:
    """Open (or create) a partial download, readable by its owner only, never through a link."""
    fd = os.open(part, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.fchmod(fd, 0o600)  # a .part left by an older version may be world-readable
        return os.fdopen(fd, "r+b")
    except BaseException:
        os.close(fd)
        raise


def _download_file(
    source: Source, name: str, version: str, entry: FileEntry, part: Path, progress: Optional[Progress], attempts: int
) -> int:
    """Fill ``part`` with ``entry``; resume what is there. Returns bytes transferred."""
    transferred = 0
    # a server that drips bytes just fast enough to dodge the read timeout is cut off too
    budget = MIN_SECONDS + entry.size / MIN_RATE
    for attempt in range(attempts):
        deadline = time.monotonic() + budget
        have = part.stat().st_size if part.exists() else 0
        if have > entry.size:
            part.unlink()
            have = 0
        if have == entry.size:
            break
        stream, start = source.open(name, version, entry, have)
        try:
            with stream, _open_part(part) as out:
                out.seek(start)
                out.truncate()
                pos = start
                read = getattr(stream, "read1", stream.read)  # returns what has arrived, not a full chunk
                while True:
                    chunk = read(CHUNK)
                    if not chunk:
                        break
                    if pos + len(chunk) > entry.size:
                        raise DownloadError(
                            f"{entry.path}: the server sent more than the signed size of {entry.size} bytes"
                        )
                    if time.monotonic() > deadline:
                        raise DownloadError(
                            f"{entry.path}: the server is too slow ({pos} of {entry.size} bytes after {budget:.0f} s)"
                        )
                    out.write(chunk)
                    pos += len(chunk)
                    transferred += len(chunk)
                    if progress:
                        progress(len(chunk))
                out.flush()
                os.fsync(out.fileno())
            if pos < entry.size:
                raise DownloadError(f"{entry.path}: stream ended at {pos} of {entry.size} bytes")
            break
        except DownloadError as exc:
            if "more than the signed size" in str(exc) or attempt == attempts - 1:
                if "more than" in str(exc):
                    part.unlink(missing_ok=True)
                raise
            log.info("download of %s interrupted (%s); resuming", entry.path, exc)
        except (TimeoutError, OSError) as exc:
            if attempt == attempts - 1:
                raise DownloadError(f"{entry.path}: download failed: {exc}") from exc
            log.info("download of %s interrupted (%s); resuming", entry.path, exc)
    return transferred


def pull_release(
    source: Source,
    name: str,
    version: str,
    trusted: TrustedKeys,
    target: Path,
    work_dir: Path,
    *,
    runtime_version: Optional[int] = None,
    on_manifest: Optional[Callable[[Manifest], None]] = None,
    progress: Optional[Progress] = None,
    attempts: int = 3,
) -> PullResult:
    """Download ``name:version`` from ``source`` and install it as directory ``target``.

    Order: fetch and verify the signed envelope (signature, name/version, expiry,
    runtime) -> call ``on_manifest`` (a last chance to refuse, e.g. an older version)
    -> stream every file into ``work_dir/<sha256>.part`` (capped at its signed size,
    resumed after an interruption) -> check size and sha256 -> assemble a staging
    directory next to ``target``, fsync, and rename it to ``target``. ``target`` must
    not exist yet. Raises :class:`VerificationError`, :class:`DownloadError`,
    :class:`~release_contract.errors.ManifestError` or :class:`StoreError`; on any error
    ``target`` is left untouched.
    """
    name, version = check_name(name), check_version(version)
    raw = source.fetch_envelope(name, version)
    manifest = verify_envelope(raw, trusted)
    check_manifest(manifest, name, version, runtime_version)
    if on_manifest:
        on_manifest(manifest)
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    transferred = 0
    parts: Dict[str, Path] = {}
    try:
        for entry in manifest.files.values():
            part = work_dir / f"{entry.sha256}.part"
            parts[entry.path] = part
            transferred += _fetch_verified(source, name, version, entry, part, progress, attempts)
        install_verified(raw, parts, target)
    except DownloadError as exc:
        # an interrupted transfer keeps its .part to resume from; anything else leaves nothing behind
        if "more than the signed size" in str(exc):
            _remove(parts.values())
        raise
    except BaseException:
        _remove(parts.values())
        raise
    return PullResult(manifest, transferred)


def _fetch_verified(
    source: Source, name: str, version: str, entry: FileEntry, part: Path, progress: Optional[Progress], attempts: int
) -> int:
    """Download ``entry`` into ``part`` and check its size and sha256; returns bytes transferred.

    A resumed download whose result does not match is fetched once more from zero: the
    prefix it resumed from may be stale or planted. Raises VerificationError when a
    download from zero does not match either.
    """
    had = part.stat().st_size if part.exists() else 0
    transferred = _download_file(source, name, version, entry, part, progress, attempts)
    if had and (part.stat().st_size != entry.size or sha256_file(part) != entry.sha256):
        log.warning("%s: the resumed download does not match its signed sha256; downloading it again", entry.path)
        part.unlink(missing_ok=True)
        transferred += _download_file(source, name, version, entry, part, progress, attempts)
    if part.stat().st_size != entry.size:
        raise VerificationError(f"{entry.path}: size differs from the signed manifest")
    if sha256_file(part) != entry.sha256:
        raise VerificationError(f"{entry.path}: sha256 differs from the signed manifest")
    return transferred


def _remove(parts: Iterable[Path]) -> None:
    for part in parts:
        try:
            part.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("cannot remove %s: %s", part, exc)


def install_verified(envelope: bytes, parts: Dict[str, Path], target: Path) -> None:
    """Move verified files and their envelope into ``target`` with one directory rename."""
    if target.exists():
        raise StoreError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    # a part serves every file with its sha256 (the same labels twice): move it for the last one only
    uses = Counter(parts.values())
    try:
        os.chmod(staging, DIR_MODE)  # not mkdtemp's 0700: a pulled release is readable by every user
        for fname, part in parts.items():
            dest = staging / check_filename(fname)
            uses[part] -= 1
            if uses[part]:
                shutil.copyfile(part, dest)
                continue
            try:
                os.replace(part, dest)
            except OSError:
                shutil.copyfile(part, dest)
        (staging / ENVELOPE_NAME).write_bytes(envelope)
        for f in staging.iterdir():
            os.chmod(f, FILE_MODE)
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(staging)
        os.rename(staging, target)
        fsync_dir(target.parent)
    except OSError as exc:
        raise StoreError(f"cannot install into {target}: {exc.strerror or exc}") from exc
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "LocalSource",
    "OciSource",
    "PullResult",
    "open_source",
    "pull_release",
    "check_manifest",
    "install_verified",
]
