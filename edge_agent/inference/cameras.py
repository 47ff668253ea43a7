"""V4L2 cameras on this machine: ``/dev/videoN`` with their names and pixel formats.

:func:`list_cameras` reads ``<sysfs>/videoN/name`` (``/sys/class/video4linux`` on Linux) and asks
each ``<dev>/videoN`` for its formats with the ``VIDIOC_ENUM_FMT`` ioctl. A node that cannot be
opened (busy, no permission, not a capture node, as the second node of many UVC webcams) is
listed with the reason instead of formats.
"""

from __future__ import annotations

import errno
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

SYSFS_ROOT = Path("/sys/class/video4linux")
DEV_ROOT = Path("/dev")

# struct v4l2_fmtdesc: index, type, flags, description[32], pixelformat, mbus_code, reserved[3]
_FMTDESC = struct.Struct("=III32sII3I")
_VIDIOC_ENUM_FMT = (3 << 30) | (_FMTDESC.size << 16) | (ord("V") << 8) | 2  # _IOWR('V', 2, v4l2_fmtdesc)
_CAPTURE = 1  # V4L2_BUF_TYPE_VIDEO_CAPTURE
_MAX_FORMATS = 64


@dataclass
class Camera:
    """One ``/dev/videoN``: its driver's name, its capture formats (FourCC and description), or
    why they could not be read."""

    path: str
    name: str
    formats: List[str] = field(default_factory=list)
    problem: Optional[str] = None


def _fourcc(code: int) -> str:
    return code.to_bytes(4, "little").decode("ascii", "replace").strip()


def capture_formats(device: Path) -> List[str]:
    """``["MJPG (Motion-JPEG)", "YUYV (YUYV 4:2:2)"]`` for a V4L2 capture node. Raises OSError
    when it cannot be opened or is not a V4L2 device."""
    import fcntl

    formats = []
    fd = os.open(device, os.O_RDWR | os.O_NONBLOCK)
    try:
        for index in range(_MAX_FORMATS):
            buf = bytearray(_FMTDESC.pack(index, _CAPTURE, 0, b"", 0, 0, 0, 0, 0))
            try:
                fcntl.ioctl(fd, _VIDIOC_ENUM_FMT, buf)
            except OSError as exc:
                if exc.errno == errno.EINVAL:  # past the last format
                    break
                raise
            _, _, _, description, pixelformat, *_ = _FMTDESC.unpack(buf)
            text = description.split(b"\0", 1)[0].decode("utf-8", "replace")
            formats.append(f"{_fourcc(pixelformat)} ({text})")
    finally:
        os.close(fd)
    return formats


def list_cameras(sysfs_root: Path = SYSFS_ROOT, dev_root: Path = DEV_ROOT) -> List[Camera]:
    """Every ``videoN`` under ``sysfs_root``, in numeric order, with its name and formats."""
    try:
        entries = [p for p in sysfs_root.iterdir() if re.fullmatch(r"video\d+", p.name)]
    except OSError:
        return []
    cameras = []
    for entry in sorted(entries, key=lambda p: int(p.name[5:])):
        try:
            name = (entry / "name").read_text().strip()
        except OSError:
            name = "?"
        device = dev_root / entry.name
        camera = Camera(path=str(device), name=name)
        try:
            camera.formats = capture_formats(device)
            if not camera.formats:
                camera.problem = "no capture formats (a metadata or output node)"
        except OSError as exc:
            camera.problem = f"cannot query formats: {exc.strerror or exc}"
        cameras.append(camera)
    return cameras
