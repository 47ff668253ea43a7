"""Where frames come from: image files, folders and globs, video files, cameras, streams.

``open_source(spec)`` parses an ``--input`` value and returns a :class:`Source`
whose ``frames()`` yields :class:`Frame` objects (RGB uint8). Files are read in
full, one frame each; live sources (cameras, streams) are marked ``live`` so the
frame loop can keep only the newest frame. OpenCV is imported only for video,
cameras and streams; still images are decoded by :mod:`edge_agent.inference.images`.
"""

from __future__ import annotations

import glob as globmod
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from edge_agent.errors import InputError
from edge_agent.inference.images import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, load_image
from edge_agent.inference.videos import check_complete, quiet_decoder

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg", ".h264"}
STREAM_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://", "rtmp://")


@dataclass
class Frame:
    """One frame: ``image`` is RGB uint8 (H, W, 3); ``captured_at`` is seconds since the epoch;
    ``path`` is the image file it was decoded from (None for video, cameras and streams)."""

    image: np.ndarray
    source: str
    index: int
    captured_at: float
    path: Optional[Path] = None


class Source:
    """A source of frames. ``live`` sources may drop frames; file sources never do."""

    name: str = ""
    live: bool = False
    failures: int = 0  # inputs skipped because they could not be read (folders only)
    #: (width, height) the frames are resized to next; a source may decode cheaper down to it
    #: (set by the frame loop; None = full size, for example when a crop or capture needs it)
    size_hint: Optional[Tuple[int, int]] = None

    def frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Release the device or file; safe to call twice."""


class ImageFiles(Source):
    """A list of image files; one that cannot be read is skipped with a warning when
    there are several, and is an error when it is the only one."""

    def __init__(self, paths: List[Path], name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.paths = paths
        self.name = name
        self.max_pixels = max_pixels
        self.failures = 0

    def frames(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = load_image(path, self.max_pixels, self.size_hint)
            except InputError as exc:
                if len(self.paths) == 1:
                    raise
                self.failures += 1
                log.warning("skipped %s", exc)
                continue
            yield Frame(image=image, source=str(path), index=index, captured_at=time.time(), path=path)


class VideoCapture(Source):
    """Frames from OpenCV: a video file (every frame), a V4L2 camera or a stream (live)."""

    def __init__(self, target: Any, name: str, live: bool, open_timeout_ms: int = 10000) -> None:
        self.target = target
        self.name = name
        self.live = live
        self.open_timeout_ms = open_timeout_ms
        self._cap: Any = None

    def _open(self) -> Any:
        import cv2

        quiet_decoder()

        if isinstance(self.target, int):
            cap = cv2.VideoCapture(self.target, cv2.CAP_V4L2) if os.name == "posix" else cv2.VideoCapture(self.target)
        elif self.live:
            cap = cv2.VideoCapture(
                self.target,
                cv2.CAP_FFMPEG,
                [
                    cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
                    self.open_timeout_ms,
                    cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                    self.open_timeout_ms,
                ],
            )
        else:
            cap = cv2.VideoCapture(str(self.target))
        if not cap.isOpened():
            cap.release()
            kind = "camera" if isinstance(self.target, int) else ("stream" if self.live else "video file")
            raise InputError(f"cannot open {kind} {self.name}")
        return cap

    def frames(self) -> Iterator[Frame]:
        import cv2

        self._cap = self._open()
        reduce_flag = self._reduced_decoding(cv2)
        rgb_out = reduce_flag is not None and rgb_decoding(cv2)  # the decoder writes RGB: no conversion pass
        index = 0
        try:
            while True:
                if reduce_flag is not None:
                    ok, packet = self._cap.read()
                    bgr = cv2.imdecode(packet, reduce_flag) if ok and packet is not None else None
                else:
                    ok, bgr = self._cap.read()
                if not ok or bgr is None:
                    if self.live:
                        raise InputError(f"{self.name} stopped delivering frames (disconnected?)")
                    if index == 0:
                        raise InputError(f"{self.name}: no frame could be decoded")
                    check_complete(self._cap, index, self.name)
                    return
                rgb = bgr if rgb_out else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield Frame(image=rgb, source=self.name, index=index, captured_at=time.time())
                index += 1
        finally:
            self.close()

    def _reduced_decoding(self, cv2: Any) -> Optional[int]:
        """For an MJPEG video file, when ``size_hint`` allows it: switch the capture to raw packets
        and return the imdecode flag that decodes each JPEG at 1/2, 1/4 or 1/8 of its size in the
        DCT domain (several times cheaper), never below ``size_hint``, straight to RGB where OpenCV
        can (:func:`rgb_decoding`). None: decode as usual."""
        if self.live or self.size_hint is None or not isinstance(self.target, (str, Path)):
            return None
        width, height = self._cap.get(cv2.CAP_PROP_FRAME_WIDTH), self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
        codec = int(self._cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("latin-1").upper()
        factor = reduction_factor((int(width), int(height)), self.size_hint)
        if codec not in ("MJPG", "JPEG") or factor == 1 or not self._cap.set(cv2.CAP_PROP_FORMAT, -1):
            return None
        flag: int = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}[
            factor
        ]
        return (flag & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB if rgb_decoding(cv2) else flag

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def rgb_decoding(cv2: Any) -> bool:
    """Whether this OpenCV's imdecode can write RGB itself (``IMREAD_COLOR_RGB``, OpenCV 4.11 and later)."""
    return isinstance(getattr(cv2, "IMREAD_COLOR_RGB", None), int)


def reduction_factor(frame: Tuple[int, int], target: Tuple[int, int]) -> int:
    """The largest JPEG DCT scale-down (8, 4, 2, else 1) that keeps ``frame`` (width, height) at
    least ``target`` (width, height) in both dimensions."""
    for factor in (8, 4, 2):
        if frame[0] // factor >= target[0] and frame[1] // factor >= target[1]:
            return factor
    return 1


def redact_url(url: str) -> str:
    """The URL without its ``user:password@`` part, for logs and result payloads."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def camera_index(spec: str) -> Optional[int]:
    """N for ``cam`` (0), ``cam:N`` or ``/dev/videoN``; None for anything else."""
    if spec == "cam":
        return 0
    if spec.startswith("cam:") and spec[4:].isdigit():
        return int(spec[4:])
    if spec.startswith("/dev/video") and spec[10:].isdigit():
        return int(spec[10:])
    return None


def open_source(spec: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Source:
    """Parse an ``--input`` value into a Source.

    Accepts an image file, a directory, a glob (``'photos/*.jpg'``), a video file,
    ``cam``/``cam:N``/``/dev/videoN``, or an ``rtsp://``/``http(s)://`` URL.
    Raises InputError when nothing matches.
    """
    if not spec:
        raise InputError("no --input given")
    cam = camera_index(spec)
    if cam is not None:
        device = f"/dev/video{cam}"
        if os.name == "posix" and not os.path.exists(device):
            raise InputError(f"camera {device} not found (is it connected? see `ls /dev/video*`)")
        return VideoCapture(cam, name=device, live=True)
    if spec.lower().startswith(STREAM_SCHEMES):
        return VideoCapture(spec, name=redact_url(spec), live=True)
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not files:
            raise InputError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in directory {path}")
        return ImageFiles(files, name=str(path), max_pixels=max_pixels)
    if any(ch in spec for ch in "*?["):
        files = sorted(Path(p) for p in globmod.glob(spec) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise InputError(f"no images match {spec}")
        return ImageFiles(files, name=spec, max_pixels=max_pixels)
    if not path.exists():
        raise InputError(f"input not found: {spec}")
    if path.suffix.lower() in VIDEO_EXTENSIONS:
        if not path.is_file():  # a FIFO would hang the decoder
            raise InputError(f"{spec} is not a regular file (a FIFO, device or socket?)")
        return VideoCapture(path, name=str(path), live=False)
    return ImageFiles([path], name=str(path), max_pixels=max_pixels)
