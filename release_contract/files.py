"""Durable file helpers shared by the stores, the pull and the device's release state.

Light on purpose (standard library only): the device side imports it.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename inside it survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Modes of what a store or a pull writes: readable by every user (the files are not secret).
DIR_MODE = 0o755
FILE_MODE = 0o644


def atomic_write(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old file or the new one.

    Writes a temporary file beside it (with ``mode``, not mkstemp's 0600), fsyncs it,
    renames it over ``path`` and fsyncs the directory. Raises OSError from the file system.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NotRegularFile(OSError):
    """A path that names a FIFO, a device, a socket or a directory where a file is expected."""

    def __init__(self, path: Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file (a FIFO, device or socket?)", str(path))


def open_regular(path: Path) -> BinaryIO:
    """Open ``path`` for reading, refusing anything but a regular file (:class:`NotRegularFile`).

    The file is opened non-blocking and checked with ``fstat`` before anything is read, so a
    FIFO cannot hang the caller in ``open`` or ``read``. Raises OSError like ``open``.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(Path(path))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def open_beneath(root: Path, *parts: str) -> BinaryIO:
    """Open the regular file ``root/parts...`` for reading without following any link below ``root``.

    Every directory in ``parts`` and the file itself are opened with ``O_NOFOLLOW``, one
    level at a time, so a symbolic link planted inside ``root`` (``model.tflite ->
    /etc/shadow``, or a linked version directory) cannot lead outside it; ``root``
    itself may be a link. A FIFO or device file is refused without blocking. Raises
    FileNotFoundError when a part is missing, :class:`LinkRefused` for a link or a file
    that is not regular, OSError otherwise.
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if not part or part in (".", "..") or "/" in part:
                raise LinkRefused(f"{part!r} is not a plain name")
            mode = flags | (os.O_NONBLOCK if last else getattr(os, "O_DIRECTORY", 0))
            try:
                child = os.open(part, mode, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
                    raise LinkRefused(f"{part} is a symbolic link or not a {'file' if last else 'directory'}") from exc
                raise
            os.close(fd)
            fd = child
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise LinkRefused(f"{parts[-1] if parts else root} is not a regular file")
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return fh


class LinkRefused(OSError):
    """A path inside a store is a symbolic link, or not a regular file: it is not followed."""
