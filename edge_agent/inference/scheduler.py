"""Several sources, one classifier: fair scheduling of frames onto one interpreter (one Edge TPU).

Each source has a reader thread that reads, crops and pre-processes its frames into a slot:
a live source's slot holds only its newest frame (an unread one it replaces is counted as
dropped), a file source's slot holds a few frames and makes the reader wait (files drop
nothing). An ``inference`` thread takes frames round-robin, one per source with a frame
ready, so a fast camera cannot starve a slow one, and runs the model on them; the caller's
thread hands each result, named after its source (``result.input``), to the sinks.

Three stages overlap: the readers decode and pre-process, the inference thread runs the
model (the interpreter releases the GIL while it runs), and the caller's thread scores each
raw output (top-k) and calls the sinks, so a frame's publishing never delays the next
inference. Sinks are called on the caller's thread, in inference order.

A source that fails (a stream that never opens with ``classify``'s settings, an unreadable
file) ends on its own: with one source the error is raised on the caller's thread, with
several it is logged once, kept in :attr:`SourceSlot.error` and the others go on.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from edge_agent.errors import InputError
from edge_agent.inference.classifier import Classifier
from edge_agent.inference.loop import LoopStats, Sink
from edge_agent.inference.sources import Source
from edge_agent.inference.streams import LiveStream

log = logging.getLogger(__name__)

FILE_QUEUE = 4  # frames a file source's reader may read ahead
RESULT_QUEUE = 4  # inferred frames waiting to be scored and handed to the sinks


@dataclass
class NamedSource:
    """A source with its name, its own frame-rate cap (0 = none) and an optional crop (x, y, w, h)."""

    name: str
    source: Source
    max_fps: float = 0.0
    crop: Optional[Tuple[int, int, int, int]] = None


@dataclass
class SourceSlot:
    """The scheduler's view of one source: its pending frames and counters (read by the stats)."""

    named: NamedSource
    frames: int = 0  # classified
    dropped: int = 0  # delivered but replaced by a newer frame before classification
    last_frame_at: Optional[float] = None  # wall-clock time of the newest frame read
    error: Optional[str] = None
    done: bool = False
    pending: Deque[Any] = field(default_factory=collections.deque)

    @property
    def name(self) -> str:
        return self.named.name

    def report(self, now: Optional[float] = None) -> Dict[str, Any]:
        """JSON-ready counters: frames, dropped_frames, last_frame_age_s, reconnects, state, error."""
        now = time.time() if now is None else now
        source = self.named.source
        health = source.health.to_dict() if isinstance(source, LiveStream) else {"state": "reading", "reconnects": 0}
        if self.error:
            health["state"] = "failed"
        elif self.done and not isinstance(source, LiveStream):  # a stopped live source keeps its last state
            health["state"] = "ended"
        age = None if self.last_frame_at is None else round(max(0.0, now - self.last_frame_at), 3)
        return {
            "frames": self.frames,
            "dropped_frames": self.dropped,
            "last_frame_age_s": age,
            "reconnects": health.get("reconnects", 0),
            "state": health["state"],
            "error": self.error or health.get("error"),
        }


@dataclass
class SchedulerStats(LoopStats):
    """:class:`LoopStats` plus the names of the sources that failed."""

    failed: List[str] = field(default_factory=list)


def crop_image(image: Any, box: Optional[Tuple[int, int, int, int]]) -> Any:
    """``image[y:y+h, x:x+w]`` (clipped to the image); the image itself when ``box`` is None."""
    if box is None:
        return image
    x, y, w, h = box
    return image[y : y + h, x : x + w]


class SourceScheduler:
    """Runs one classifier over several sources and hands each result to the sinks.

    ``count`` stops after that many results in all; ``stop`` (an Event) ends the run from another
    thread. With ``reduced_decode`` sources without a crop may decode frames at a reduced size,
    never below the model's input (an MJPEG video's JPEGs in the DCT domain); turn it off when
    full-size frames are needed (captured frames for retraining). :meth:`reports` gives
    per-source counters at any time (for the stats).
    """

    def __init__(
        self,
        classifier: Classifier,
        sources: Sequence[NamedSource],
        sinks: Sequence[Sink],
        count: Optional[int] = None,
        stop: Optional[threading.Event] = None,
        reduced_decode: bool = True,
    ) -> None:
        self.classifier = classifier
        self.reduced_decode = reduced_decode
        self.slots = [SourceSlot(named) for named in sources]
        self.sinks = list(sinks)
        self.count = count
        self.stop = stop or threading.Event()
        self.stats = SchedulerStats()
        self._cond = threading.Condition()
        self._done = threading.Event()
        self._next = 0
        self._out = threading.Condition()  # guards _inferred and _inference_ended
        self._inferred: Deque[Tuple[Optional[SourceSlot], Any]] = collections.deque()
        self._inference_ended = False

    @property
    def dropped(self) -> int:
        """Frames dropped by all live sources so far."""
        return sum(slot.dropped for slot in self.slots)

    def reports(self) -> Dict[str, Dict[str, Any]]:
        """Per-source counters keyed by source name (see :meth:`SourceSlot.report`)."""
        now = time.time()
        return {slot.name: slot.report(now) for slot in self.slots}

    def _halted(self) -> bool:
        return self.stop.is_set() or self._done.is_set()

    def _offer(self, slot: SourceSlot, item: Any) -> None:
        with self._cond:
            if slot.named.source.live:
                if slot.pending:
                    slot.pending.clear()
                    slot.dropped += 1
            else:
                while len(slot.pending) >= FILE_QUEUE and not self._halted():
                    self._cond.wait(0.1)
            slot.pending.append(item)
            self._cond.notify_all()

    def _read(self, slot: SourceSlot) -> None:
        named = slot.named
        interval = 1.0 / named.max_fps if named.max_fps else 0.0
        last = 0.0
        if self.reduced_decode and named.crop is None:  # the source may decode cheaper, down to the model's input
            named.source.size_hint = self.classifier.input_spec()[0]
        try:
            for frame in named.source.frames():
                if self._halted():
                    break
                slot.last_frame_at = frame.captured_at
                if interval:
                    wait = last + interval - time.monotonic()
                    if wait > 0:
                        if named.source.live:
                            continue  # a newer frame comes soon; this one is over the cap
                        if self.stop.wait(wait):
                            break
                    last = time.monotonic()
                if named.crop is not None:
                    frame = replace(frame, image=crop_image(frame.image, named.crop))
                t0 = time.perf_counter()
                tensor, spec = self.classifier.prepare(frame.image)
                self._offer(slot, (frame, tensor, spec, (time.perf_counter() - t0) * 1000))
        except InputError as exc:
            slot.error = str(exc)
            if len(self.slots) > 1:
                log.error("input %s: %s", slot.name, exc)
        except BaseException as exc:  # a bug: handed to the caller's thread, which re-raises it
            slot.error = str(exc)
            with self._cond:
                slot.pending.append(exc)
        finally:
            named.source.close()
            with self._cond:
                slot.done = True
                self._cond.notify_all()

    def _take(self) -> Tuple[Optional[SourceSlot], Any]:
        """The next ready frame, round-robin; (None, None) when none is ready. Holds the lock."""
        n = len(self.slots)
        for offset in range(n):
            slot = self.slots[(self._next + offset) % n]
            if slot.pending:
                self._next = (self._next + offset + 1) % n
                item = slot.pending.popleft()
                self._cond.notify_all()
                return slot, item
        return None, None

    def _finished(self) -> bool:
        return all(slot.done and not slot.pending for slot in self.slots)

    def run(self) -> SchedulerStats:
        """Run until every source ends, ``count`` results, or ``stop``; return the stats.

        Raises the source's InputError when there is one source and it fails; with several,
        the failed ones are named in ``stats.failed``. Frames already inferred when ``stop`` is
        set are still scored and handed to the sinks."""
        readers = [
            threading.Thread(target=self._read, args=(slot,), name=f"reader-{slot.name}", daemon=True)
            for slot in self.slots
        ]
        for reader in readers:
            reader.start()
        inference = threading.Thread(target=self._infer, name="inference", daemon=True)
        inference.start()
        try:
            while self.count is None or self.stats.frames < self.count:
                with self._out:
                    while not self._inferred and not self._inference_ended:
                        self._out.wait(0.2)
                    if not self._inferred:
                        break  # inference ended and everything it did was handed on
                    slot, item = self._inferred.popleft()
                    self._out.notify_all()
                if isinstance(item, BaseException):
                    raise item
                assert slot is not None  # only an exception comes without its slot
                result = self.classifier.finish(item)
                result.input = slot.name
                slot.frames += 1
                self.stats.frames += 1
                for sink in self.sinks:
                    sink(result)
        finally:
            self._end([inference, *readers])
        failed = [slot for slot in self.slots if slot.error]
        self.stats.failed = [slot.name for slot in failed]
        if len(self.slots) == 1 and failed:
            raise InputError(failed[0].error or f"input {failed[0].name} failed")
        return self.stats

    def _infer(self) -> None:
        """The inference thread: frames round-robin from the slots onto the model, each raw output
        handed on to the caller's thread, which scores it and calls the sinks meanwhile."""
        taken = 0
        try:
            while not self._halted() and (self.count is None or taken < self.count):
                with self._cond:
                    slot, item = self._take()
                    if slot is None:
                        if self._finished():
                            return
                        self._cond.wait(0.2)
                        continue
                if isinstance(item, BaseException):
                    self._hand_on(slot, item)
                    return
                frame, tensor, spec, pre_ms = item
                done = self.classifier.infer(frame, tensor, spec, pre_ms)
                taken += 1
                self._hand_on(slot, done)
        except BaseException as exc:  # handed to the caller's thread, which re-raises it
            self._hand_on(None, exc)
        finally:
            with self._out:
                self._inference_ended = True
                self._out.notify_all()

    def _hand_on(self, slot: Optional[SourceSlot], item: Any) -> None:
        with self._out:
            while len(self._inferred) >= RESULT_QUEUE and not self._done.is_set():
                self._out.wait(0.1)
            self._inferred.append((slot, item))
            self._out.notify_all()

    def _end(self, threads: List[threading.Thread]) -> None:
        self._done.set()
        for slot in self.slots:
            if isinstance(slot.named.source, LiveStream):
                slot.named.source.stop()
        with self._cond:
            self._cond.notify_all()
        with self._out:
            self._out.notify_all()
        for thread in threads:
            thread.join(timeout=10)
        self.stats.dropped = self.dropped
        self.stats.skipped = sum(slot.named.source.failures for slot in self.slots)


ReportFn = Callable[[], Dict[str, Dict[str, Any]]]
