"""The capture sink: keeps the frames the model is unsure of (and a sample of the rest) for retraining.

:class:`CaptureSink` is a frame-loop sink (``sink(result)``). On the loop's thread it only decides
(top-1 score below ``below``, or the random ``sample`` share), applies the rate limit and hands the
frame to a bounded queue; a writer thread encodes and writes it (:mod:`edge_agent.capture.archive`
has the layout) and deletes the oldest captures past ``max_mb``. A capture directory that cannot be
written, or a full disk, stops capturing with one warning: classifying and publishing go on.
"""

from __future__ import annotations

import collections
import errno
import hashlib
import io
import json
import logging
import os
import queue
import random
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Deque, Dict, Optional, Tuple

import numpy as np

from edge_agent.capture import archive
from edge_agent.capture.settings import CaptureConfig
from edge_agent.inference.result import Classification

log = logging.getLogger(__name__)

QUEUE_SIZE = 16  # frames waiting for the writer; more are dropped (and counted)
MAX_ORIGINAL_BYTES = 64 << 20  # an image file larger than this is re-encoded as JPEG instead
JPEG_QUALITY = 90
_Pending = Tuple[str, Optional[Path], np.ndarray]  # (reason, image file or None, pixels)


def _stamp(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%Y%m%dT%H%M%S%fZ")


class CaptureSink:
    """Keep uncertain frames in ``config.dir``; see the module docstring. Thread-safe ``__call__``.

    Call :meth:`start` before the frame loop and :meth:`close` after it. ``rng`` decides the sample.
    Counters: ``captured``, ``dropped`` (queue full), ``limited`` (over the rate).
    """

    def __init__(self, config: CaptureConfig, rng: Optional[random.Random] = None) -> None:
        if config.dir is None:
            raise ValueError("CaptureSink needs capture.dir")
        self.config = config
        self.folder = Path(config.dir)
        self.max_bytes = int(config.max_mb * 1024 * 1024)
        self.captured = self.dropped = self.limited = 0
        self.stopped_reason = ""
        self._rng = rng or random.Random()  # noqa: S311 (a sample of frames, not a secret)
        self._recent: Deque[float] = collections.deque()
        self._queue: queue.Queue[Tuple[Classification, Tuple[str, Optional[Path], np.ndarray]]] = queue.Queue(
            maxsize=QUEUE_SIZE
        )
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._kept: Deque[archive.Capture] = collections.deque()
        self._total = 0

    def start(self) -> CaptureSink:
        """Check that the directory can be written (else: one warning, capturing off); start the writer."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = self.folder / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            self._give_up(exc)
            return self
        self._kept.extend(archive.iter_captures(self.folder))
        self._total = sum(c.size for c in self._kept)
        self._thread = threading.Thread(target=self._run, name="capture-writer", daemon=True)
        self._thread.start()
        return self

    @property
    def active(self) -> bool:
        """True while frames are being captured."""
        return self._thread is not None and not self.stopped_reason

    def __call__(self, result: Classification) -> None:
        if not self.active:
            return
        top = result.top1
        score = round(float(top.score), 6) if top is not None else 0.0  # as the payload shows it
        if score < self.config.below:
            reason = "below"
        elif self.config.sample > 0 and self._rng.random() * 100.0 < self.config.sample:
            reason = "sample"
        else:
            return
        if not self._allowed(result.captured_at):
            self.limited += 1
            return
        frame = result.frame_ref
        if frame is None:
            return
        # image files: the writer reads the original bytes; other frames: a copy of the pixels, as a
        # live source may reuse its buffer
        pixels = frame.image if frame.path is not None else np.array(frame.image, copy=True)
        try:
            self._queue.put_nowait((result, (reason, frame.path, pixels)))
        except queue.Full:
            self.dropped += 1

    def _allowed(self, now: float) -> bool:
        """At most ``rate`` captures in any 60 seconds."""
        with self._lock:
            while self._recent and self._recent[0] <= now - 60.0:
                self._recent.popleft()
            if len(self._recent) >= max(1.0, self.config.rate):
                return False
            self._recent.append(now)
            return True

    def _run(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                result, (reason, path, pixels) = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            if self.stopped_reason:
                continue
            try:
                self._write(result, reason, path, pixels)
            except OSError as exc:
                self._give_up(exc)

    @staticmethod
    def _encode(path: Optional[Path], pixels: np.ndarray) -> Tuple[bytes, str]:
        """(bytes, suffix): the image file's own bytes, else (or when it is gone) the pixels as JPEG."""
        if path is not None:
            try:
                if path.stat().st_size <= MAX_ORIGINAL_BYTES:
                    return path.read_bytes(), path.suffix.lower() or ".img"
            except OSError as exc:
                log.debug("cannot re-read %s (%s): capturing its decoded pixels", path, exc)
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        return buffer.getvalue(), ".jpg"

    def _write(self, result: Classification, reason: str, path: Optional[Path], pixels: np.ndarray) -> None:
        data, suffix = self._encode(path, pixels)
        name = archive.capture_name(_stamp(result.captured_at), result.message_id)
        record: Dict[str, Any] = {
            "schema": archive.SCHEMA,
            "file": name + suffix,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "reason": reason,
            "result": result.to_payload(),
        }
        encoded = json.dumps(record, sort_keys=True).encode()
        self._make_room(len(data) + len(encoded))
        image = self.folder / record["file"]
        _write_file(image, data)
        try:
            _write_file(self.folder / f"{name}.json", encoded)
        except OSError:
            image.unlink(missing_ok=True)
            raise
        self._kept.append(archive.Capture(self.folder / f"{name}.json", image, record))
        self._total += len(data) + len(encoded)
        self.captured += 1

    def _make_room(self, needed: int) -> None:
        """Delete the oldest captures until ``needed`` more bytes fit under ``max_mb``."""
        while self._kept and self._total + needed > self.max_bytes:
            oldest = self._kept.popleft()
            self._total -= oldest.size
            archive.delete(oldest)

    def _give_up(self, exc: OSError) -> None:
        if self.stopped_reason:
            return
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        what = "is full" if full else f"cannot be written ({exc.strerror or exc})"
        self.stopped_reason = f"capture directory {self.folder} {what}"
        log.warning("%s: capturing stopped; classifying and publishing go on", self.stopped_reason)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the writer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.captured or self.dropped or self.limited:
            log.info(
                "captured %d frames in %s (%d over the rate limit, %d dropped: writer busy)",
                self.captured,
                self.folder,
                self.limited,
                self.dropped,
            )


def _write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename (0644)."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
