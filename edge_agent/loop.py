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
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .bundled import bundled
from .classify import Normalization, check_labels, dequantize, preprocess, top_k
from .result import Classification, ModelInfo
from .runtime import Runtime
from .sources import Frame, Source

log = logging.getLogger(__name__)

Sink = Callable[[Classification], None]


class Classifier:
    """A runtime plus everything needed to turn a frame into a :class:`Classification`.

    ``swap()`` replaces the runtime (for a model update) between two inferences;
    it is safe to call from another thread.
    """

    def __init__(self, runtime: Runtime, labels: Dict[int, str], model: ModelInfo, device_id: str,
                 norm: Optional[Normalization] = None, keep_aspect: bool = False, k: int = 3,
                 threshold: float = 0.0, labels_path: Optional[Path] = None) -> None:
        self.device_id = device_id
        self.norm = norm or Normalization()
        self.keep_aspect = keep_aspect
        self.k = k
        self.threshold = threshold
        self._lock = threading.Lock()
        self.runtime = runtime
        self.labels = labels
        self.model = model
        if labels_path is not None:
            check_labels(labels, runtime.num_classes, labels_path)

    def swap(self, runtime: Runtime, labels: Dict[int, str], model: ModelInfo) -> None:
        """Use a new runtime, labels and model identity from the next frame on."""
        with self._lock:
            self.runtime, self.labels, self.model = runtime, labels, model
        log.info("now running %s %s on %s", model.name, model.version, runtime.backend)

    def input_spec(self) -> Tuple[Tuple[int, int], int, Any, Tuple[float, int]]:
        """(size, channels, dtype, quantization) of the current model's input."""
        rt = self.runtime
        return rt.input_size, rt.channels, rt.input_dtype, rt.input_quant

    def prepare(self, image: np.ndarray) -> Tuple[np.ndarray, Tuple[Any, ...]]:
        """Pre-process an RGB image for the current model; returns (tensor, input spec used)."""
        spec = self.input_spec()
        size, channels, dtype, quant = spec
        return preprocess(image, size, channels, dtype, quant, self.norm, self.keep_aspect), spec

    def classify(self, frame: Frame, tensor: Optional[np.ndarray] = None, spec: Optional[Tuple[Any, ...]] = None,
                 preprocess_ms: float = 0.0) -> Classification:
        """Classify one frame; ``tensor`` is the output of :meth:`prepare` when done ahead."""
        with self._lock:
            runtime, labels, model = self.runtime, self.labels, self.model
            if tensor is None or spec != self.input_spec():
                t0 = time.perf_counter()
                tensor, _ = self.prepare(frame.image)
                preprocess_ms = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            raw = runtime.invoke(tensor)
            t2 = time.perf_counter()
        classes = top_k(dequantize(raw, runtime.output_quant), self.k, self.threshold, labels)
        inference_ms = (t2 - t1) * 1000
        total_ms = preprocess_ms + inference_ms + (time.perf_counter() - t2) * 1000
        return Classification(
            device=self.device_id, model=model, backend=runtime.backend, source=frame.source,
            frame=frame.index, captured_at=frame.captured_at, preprocess_ms=preprocess_ms,
            inference_ms=inference_ms, total_ms=total_ms, top_k=classes,
        )


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

    def __init__(self, classifier: Classifier, source: Source, sinks: List[Sink], count: Optional[int] = None,
                 fps: Optional[float] = None, stop: Optional[threading.Event] = None) -> None:
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


def model_info(runtime: Runtime, name: Optional[str] = None, version: str = "local") -> ModelInfo:
    """Identity of the model a runtime runs: name from the file (without ``_edgetpu``), version, digest."""
    stem = runtime.model_path.name.replace("_edgetpu.tflite", "").replace(".tflite", "")
    return ModelInfo(name=name or stem, version=version, digest=runtime.digest)



def default_labels(model: Path) -> Optional[Path]:
    """Labels to use when none are given: ``labels.txt`` or ``<name>_labels.txt`` / ``<name>.txt``
    beside the model, or the bundled labels for the bundled demo model."""
    stem = model.name.replace("_edgetpu.tflite", ".tflite").replace(".tflite", "")
    candidates = [model.parent / f"{stem}_labels.txt", model.parent / f"{stem}.txt", model.parent / "labels.txt"]
    if stem.endswith("_int8"):
        candidates.append(bundled("labels", f"{stem[:-5]}.txt"))
    return next((c for c in candidates if c.is_file()), None)


def build_classifier(model: Path, labels: Optional[Path], device: str = "auto", runtime: str = "auto",
                     threads: int = 2, norm: Optional[Normalization] = None, keep_aspect: bool = False,
                     k: int = 3, threshold: float = 0.0, device_id: str = "local",
                     name: Optional[str] = None, version: str = "local") -> Classifier:
    """Open the model (Edge TPU or CPU, see :func:`edge_agent.runtime.open_runtime`) and its labels.

    Raises ModelError, DelegateError or ConfigError.
    """
    from .classify import load_labels
    from .runtime import open_runtime

    rt = open_runtime(Path(model), device=device, runtime=runtime, threads=threads)
    labels_path = labels or default_labels(Path(model))
    label_map = load_labels(labels_path) if labels_path else {}
    if labels_path is None:
        log.info("no labels file given or found beside %s: classes show as numbers", model)
    return Classifier(rt, label_map, model_info(rt, name, version), device_id, norm=norm,
                      keep_aspect=keep_aspect, k=k, threshold=threshold, labels_path=labels_path)
