"""Live sources that come back: RTSP/HTTP streams and V4L2 cameras, reopened when they drop.

:class:`LiveStream` is a :class:`~edge_agent.inference.sources.Source` whose ``frames()``
opens the stream or camera through OpenCV and, when it stalls (no frame for
``stall_timeout`` seconds) or disconnects, closes it and reopens it after a backoff that
starts at ``backoff_min`` and doubles to at most ``backoff_max`` seconds. Each change of
state (connecting, streaming, reconnecting, failed) is logged once, not once per attempt.
:class:`StreamHealth` holds what the stats report: state, reconnects, the last error.

A source that cannot be opened the first time is, with ``retry_first_open=False`` (as
``classify`` uses it), an :class:`~edge_agent.errors.InputError` that says why (see
:func:`edge_agent.inference.stream_probe.explain_open_failure`); with ``True`` (``run``) it is
retried like a dropped one and reported as ``failed`` meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, Optional, Union

from edge_agent.errors import InputError
from edge_agent.inference.sources import STREAM_SCHEMES, Frame, Source, camera_index, redact_url
from edge_agent.inference.stream_probe import explain_open_failure

log = logging.getLogger(__name__)

TRANSPORTS = ("tcp", "udp")


@dataclass(frozen=True)
class StreamOptions:
    """How to open and watch a live source.

    ``transport``: RTSP over ``tcp`` or ``udp``. ``connect_timeout`` and ``stall_timeout``
    are seconds; ``width``/``height``/``fps`` are requested from a camera (None = its default).
    """

    transport: str = "tcp"
    connect_timeout: float = 10.0
    stall_timeout: float = 5.0
    backoff_min: float = 0.5
    backoff_max: float = 10.0
    retry_first_open: bool = True
    width: Optional[int] = None
    height: Optional[int] = None
    fps: Optional[float] = None


@dataclass
class StreamHealth:
    """The state of a live source as the stats report it; written by its reader thread."""

    state: str = "connecting"  # connecting | streaming | reconnecting | failed (never opened yet)
    reconnects: int = 0
    error: Optional[str] = None
    since: float = field(default_factory=time.time)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready: state, reconnects and the last error (None while streaming)."""
        return {"state": self.state, "reconnects": self.reconnects, "error": self.error}


def ffmpeg_capture_options(transport: str, connect_timeout: float) -> str:
    """The ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` value for an RTSP transport and a connect timeout
    (seconds): ``rtsp_transport;tcp|stimeout;5000000|timeout;5000000`` (microseconds)."""
    micros = int(connect_timeout * 1_000_000)
    return f"rtsp_transport;{transport}|stimeout;{micros}|timeout;{micros}"


class _CaptureOptions:
    """``OPENCV_FFMPEG_CAPTURE_OPTIONS`` is process-wide and read while a stream opens: opens that
    need the same value run at once, one that needs another value waits until they are done. Sources
    sharing a transport and timeouts (the usual case) therefore never wait for each other."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._value: Optional[str] = None
        self._users = 0

    @contextlib.contextmanager
    def using(self, value: str) -> Iterator[None]:
        with self._cond:
            while self._users and self._value != value:
                self._cond.wait()
            if self._value != value:
                os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = self._value = value
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                self._cond.notify_all()


_CAPTURE_OPTIONS = _CaptureOptions()


def _quiet_opencv(cv2: Any) -> None:
    """Keep OpenCV's and FFmpeg's own messages off stderr: the agent says what failed in one line.
    ``OPENCV_FFMPEG_LOGLEVEL`` set by the user (e.g. 48 for debug) is left alone."""
    os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # AV_LOG_QUIET
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)


def _open_capture(target: Union[int, str], options: StreamOptions) -> Any:
    """An opened cv2.VideoCapture, or None when it does not open."""
    import cv2

    _quiet_opencv(cv2)

    if isinstance(target, int):
        cap = cv2.VideoCapture(target, cv2.CAP_V4L2) if os.name == "posix" else cv2.VideoCapture(target)
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, options.width),
            (cv2.CAP_PROP_FRAME_HEIGHT, options.height),
            (cv2.CAP_PROP_FPS, options.fps),
        ):
            if value and cap.isOpened():
                cap.set(prop, float(value))
    else:
        timeouts = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(options.connect_timeout * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(options.stall_timeout * 1000),
        ]
        with _CAPTURE_OPTIONS.using(ffmpeg_capture_options(options.transport, options.connect_timeout)):
            cap = cv2.VideoCapture(target, cv2.CAP_FFMPEG, timeouts)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class LiveStream(Source):
    """A camera (``target`` an int, /dev/videoN) or a stream URL that is reopened when it drops.

    ``name`` is what results and logs show (the URL without credentials). :meth:`stop` ends
    ``frames()`` from another thread within about ``stall_timeout`` seconds.
    """

    live = True

    def __init__(
        self, target: Union[int, str], name: str, options: Optional[StreamOptions] = None, input_name: str = ""
    ) -> None:
        self.target = target
        self.name = name
        self.input_name = input_name  # the configured name, for logs
        self.options = options or StreamOptions()
        self.health = StreamHealth()
        self._stop = threading.Event()
        self._cap: Any = None

    @property
    def kind(self) -> str:
        return "camera" if isinstance(self.target, int) else "stream"

    def _set_state(self, state: str, error: Optional[str] = None) -> None:
        if state == self.health.state and error == self.health.error:
            return
        previous = self.health.state
        self.health.state, self.health.error, self.health.since = state, error, time.time()
        who = f"input {self.input_name}" if self.input_name else f"{self.kind} {self.name}"
        if state == "streaming":
            log.info("%s: streaming%s", who, " again" if previous != "connecting" else "")
        elif state in ("reconnecting", "failed") and previous != state:
            action = "reconnecting" if state == "reconnecting" else "retrying"
            log.warning("%s: %s; %s", who, error, action)

    def _why_not_open(self) -> str:
        if isinstance(self.target, int):
            device = f"/dev/video{self.target}"
            if os.name == "posix" and not os.path.exists(device):
                return f"camera {device} not found (unplugged?)"
            return f"cannot open camera {device} (busy or not a capture device?)"
        reason = explain_open_failure(self.target, self.options.connect_timeout)
        return f"cannot open stream {self.name}: {reason}"

    def frames(self) -> Iterator[Frame]:
        """Frames until :meth:`stop`; reconnects on drops. Raises InputError only when the first
        open fails and ``retry_first_open`` is False."""
        import cv2

        index = 0
        delay = self.options.backoff_min
        opened_once = False
        while not self._stop.is_set():
            self._cap = _open_capture(self.target, self.options)
            if self._cap is None:
                reason = self._why_not_open()
                if not opened_once and not self.options.retry_first_open:
                    self.health.state, self.health.error = "failed", reason  # the caller reports it
                    raise InputError(reason)
                self._set_state("failed" if not opened_once else "reconnecting", reason)
            else:
                got_frame = False
                try:
                    while not self._stop.is_set():
                        ok, bgr = self._cap.read()
                        if not ok or bgr is None:
                            break
                        if not got_frame:
                            self.health.reconnects += 1 if opened_once else 0
                            got_frame, opened_once, delay = True, True, self.options.backoff_min
                            self._set_state("streaming")
                        yield Frame(
                            image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB),
                            source=self.name,
                            index=index,
                            captured_at=time.time(),
                        )
                        index += 1
                finally:
                    self.close()
                if self._stop.is_set():
                    break
                reason = (
                    f"no frame for {self.options.stall_timeout:g} s or disconnected"
                    if got_frame
                    else "opened but no frame could be decoded (unsupported codec or not a video stream?)"
                )
                if not opened_once and not self.options.retry_first_open:
                    self.health.state, self.health.error = "failed", reason  # the caller reports it
                    raise InputError(f"{self.kind} {self.name}: {reason}")
                self._set_state("reconnecting" if opened_once else "failed", reason)
            if self._stop.wait(delay):
                break
            delay = min(delay * 2, self.options.backoff_max)

    def stop(self) -> None:
        """Make ``frames()`` return at its next frame or backoff; safe from any thread."""
        self._stop.set()

    def close(self) -> None:
        """Release the capture (the reconnect loop opens a new one)."""
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()


def open_live(spec: str, options: StreamOptions, input_name: str = "") -> Optional[LiveStream]:
    """A :class:`LiveStream` for a camera or stream ``spec`` (``input_name`` names it in logs), or
    None when ``spec`` is a file."""
    cam = camera_index(spec)
    if cam is not None:
        device = f"/dev/video{cam}"
        if not options.retry_first_open and os.name == "posix" and not os.path.exists(device):
            raise InputError(f"camera {device} not found (is it connected? see `edge-agent devices`)")
        return LiveStream(cam, device, options, input_name)
    if spec.lower().startswith(STREAM_SCHEMES):
        return LiveStream(spec, redact_url(spec), options, input_name)
    return None
