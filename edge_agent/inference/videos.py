"""Video files through OpenCV: quiet decoders, and a truncated file is an error rather than a short video.

FFmpeg, inside OpenCV, writes what it thinks of a damaged file straight to stderr
(``[h264 @ 0x...] Invalid NAL unit size``). :func:`quiet_decoder` turns that off
before the first capture opens (unless ``OPENCV_FFMPEG_LOGLEVEL`` is already set), so
what a user sees is the agent's one line. :func:`check_complete` compares the frames a
video file delivered with the count in its container: a file that ends early was cut
short (a copy interrupted, a recording that crashed) and is refused.
"""

from __future__ import annotations

import os
from typing import Any

from edge_agent.errors import InputError

#: Frames a file may fall short of its container's count before it counts as truncated
#: (some containers estimate the count from duration x frame rate).
TOLERANCE_FRAMES = 2
TOLERANCE_FRACTION = 0.02


def quiet_decoder() -> None:
    """Silence FFmpeg's own log lines (``AV_LOG_QUIET``); OpenCV reads this when it opens its first capture."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")


def check_complete(cap: Any, frames: int, name: str) -> None:
    """Raise InputError when a video file delivered clearly fewer frames than its container declares."""
    import cv2

    declared = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    if not declared or declared <= 0:
        return
    expected = int(declared)
    if expected - frames > max(TOLERANCE_FRAMES, TOLERANCE_FRACTION * expected):
        raise InputError(f"{name}: the video ended after {frames} of {expected} frames (truncated or damaged file)")
