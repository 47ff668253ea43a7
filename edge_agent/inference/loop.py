"""The frame loop: read -> preprocess -> infer -> postprocess -> publish.

Reading and pre-processing run on a reader thread, inference and post-processing
on the caller's thread, so a slow camera or decoder does not stall inference and
inference does not stall reading. Live sources keep only the newest frame (older
ones are counted as dropped); files hand over every frame.

Sinks are callables ``sink(result: Classification) -> None`` called on the loop's
thread; they must not block (the MQTT publisher writes to its outbox and returns).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from edge_agent.inference.classifier import Classifier
from edge_agent.inference.result import Classification
from edge_agent.inference.sources import Source

log = logging.getLogger(__name__)

Sink = Callable[[Classification], None]


@dataclass
class LoopStats:
    """What a run did: frames classified, frames dropped (live sources), inputs skipped."""

    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames / elapsed if elapsed > 0 else 0.0


_END = object()


class FrameLoop:
    """Runs a classifier over a source and hands each result to the sinks.

    ``count`` stops after that many results; ``fps`` caps the rate; ``stop`` (an
    Event) ends the loop from another thread (SIGTERM). Errors from the source are
    re-raised on the caller's thread by :meth:`run`.
    """

    def __init__(
        self,
        classifier: Classifier,
        source: Source,
        sinks: List[Sink],
        count: Optional[int] = None,
        fps: Optional[float] = None,
        stop: Optional[threading.Event] = None,
    ) -> None:
        self.classifier = classifier
        self.source = source
        self.sinks = sinks
        self.count = count
        self.min_interval = 1.0 / fps if fps else 0.0
        self.stop = stop or threading.Event()
        self.stats = LoopStats()
        self._done = threading.Event()  # the loop has ended: the reader stops too
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=1 if source.live else 4)

    def _halted(self) -> bool:
        return self.stop.is_set() or self._done.is_set()

    def _put(self, item: Any) -> None:
        while not self._halted():
            if self.source.live and item is not _END and not isinstance(item, BaseException):
                try:
                    self._queue.put_nowait(item)
                    return
                except queue.Full:
                    try:
                        self._queue.get_nowait()
                        self.stats.dropped += 1
                    except queue.Empty:
                        pass
                    continue
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _read(self) -> None:
        try:
            for frame in self.source.frames():
                if self._halted():
                    break
                t0 = time.perf_counter()
                tensor, spec = self.classifier.prepare(frame.image)
                self._put((frame, tensor, spec, (time.perf_counter() - t0) * 1000))
            self._put(_END)
        except BaseException as exc:  # handed to the loop's thread, which re-raises it
            self._put(exc)
        finally:
            self.source.close()

    def run(self) -> LoopStats:
        """Run until the source ends, ``count`` results, or ``stop``; return the stats."""
        reader = threading.Thread(target=self._read, name="frame-reader", daemon=True)
        reader.start()
        last = 0.0
        try:
            while not self.stop.is_set() and (self.count is None or self.stats.frames < self.count):
                try:
                    item = self._queue.get(timeout=0.2)
                except queue.Empty:
                    continue
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                frame, tensor, spec, pre_ms = item
                if self.min_interval:
                    wait = last + self.min_interval - time.monotonic()
                    if wait > 0 and self.stop.wait(wait):
                        break
                    last = time.monotonic()
                result = self.classifier.classify(frame, tensor, spec, pre_ms)
                self.stats.frames += 1
                for sink in self.sinks:
                    sink(result)
        finally:
            self._done.set()
            reader.join(timeout=5)
            self.stats.skipped = self.source.failures
        return self.stats
