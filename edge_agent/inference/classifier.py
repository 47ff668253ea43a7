"""A classifier: a runtime plus its labels and settings, turning one frame into one result.

:func:`build_classifier` opens a model (Edge TPU or CPU, see :mod:`edge_agent.inference.runtime`)
and its labels; :meth:`Classifier.swap` replaces the model between two frames (model updates).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Set, Tuple

import numpy as np

from edge_agent.bundled import bundled
from edge_agent.errors import DelegateError
from edge_agent.inference.labels import check_labels, load_labels
from edge_agent.inference.model_memory import DEFAULT_MAX_MODEL_MEMORY_MB
from edge_agent.inference.postprocess import dequantize, top_k
from edge_agent.inference.preprocess import Normalization, preprocess
from edge_agent.inference.result import Classification, ModelInfo
from edge_agent.inference.runtime import Runtime, TpuSettings, open_runtime
from edge_agent.inference.sources import Frame
from release_contract.models import cpu_twin, model_stem

log = logging.getLogger(__name__)

#: Opens the CPU twin of a runtime whose Edge TPU stopped working (``--device auto`` only).
CpuFallback = Callable[[Runtime], Runtime]
_POOL_MAX = 8  # free input buffers kept; more are in flight only while the frame queue is full


class Inferred(NamedTuple):
    """One frame's raw model output with what :meth:`Classifier.finish` needs to score it: the
    runtime, labels and model identity it ran with (a model update may swap them meanwhile)."""

    frame: Frame
    raw: np.ndarray
    runtime: Runtime
    labels: Dict[int, str]
    model: ModelInfo
    preprocess_ms: float
    inference_ms: float


class Classifier:
    """A runtime plus everything needed to turn a frame into a :class:`Classification`.

    ``swap()`` replaces the runtime (for a model update) between two inferences;
    it is safe to call from another thread. When an Edge TPU inference fails (the
    Accelerator was unplugged or reset), ``cpu_fallback`` (given in ``--device auto``)
    opens the CPU twin and the frame is classified there; without it the failure is a
    :class:`~edge_agent.errors.DelegateError`, so a service exits and is restarted.
    """

    def __init__(
        self,
        runtime: Runtime,
        labels: Dict[int, str],
        model: ModelInfo,
        device_id: str,
        norm: Optional[Normalization] = None,
        keep_aspect: bool = False,
        k: int = 3,
        threshold: float = 0.0,
        labels_path: Optional[Path] = None,
        resize: str = "fast",
        cpu_fallback: Optional[CpuFallback] = None,
    ) -> None:
        self.device_id = device_id
        self.resize = resize
        self.cpu_fallback = cpu_fallback
        self.norm = norm or Normalization()
        self.keep_aspect = keep_aspect
        self.k = k
        self.threshold = threshold
        self._lock = threading.Lock()
        self._pool_lock = threading.Lock()
        self._pool: List[np.ndarray] = []  # input buffers of _pool_owner, free for prepare()
        self._pool_owner: Optional[Runtime] = None
        self._lent: Set[int] = set()  # ids of pool buffers handed out by prepare()
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
        """Pre-process an RGB image for the current model; returns (tensor, input spec used).

        The tensor is an input buffer from a small pool that :meth:`classify` refills once the
        interpreter has copied it, so a steady frame loop allocates no tensor-sized arrays.
        """
        runtime = self.runtime
        spec = self.input_spec()
        size, channels, dtype, quant = spec
        with self._pool_lock:
            if self._pool_owner is not runtime:
                self._pool, self._pool_owner = [], runtime
            buffer = self._pool.pop() if self._pool else runtime.new_input()
            if len(self._lent) > 4 * _POOL_MAX:  # live sources drop queued frames: forget their buffers
                self._lent.clear()
            self._lent.add(id(buffer))
        return preprocess(
            image, size, channels, dtype, quant, self.norm, self.keep_aspect, self.resize, out=buffer
        ), spec

    def _recycle(self, runtime: Runtime, tensor: np.ndarray) -> None:
        with self._pool_lock:
            if id(tensor) not in self._lent:  # not one of ours: never reuse a caller's array
                return
            self._lent.discard(id(tensor))
            if runtime is self._pool_owner and len(self._pool) < _POOL_MAX:
                self._pool.append(tensor)

    def classify(
        self,
        frame: Frame,
        tensor: Optional[np.ndarray] = None,
        spec: Optional[Tuple[Any, ...]] = None,
        preprocess_ms: float = 0.0,
    ) -> Classification:
        """Classify one frame; ``tensor`` is the output of :meth:`prepare` when done ahead."""
        return self.finish(self.infer(frame, tensor, spec, preprocess_ms))

    def infer(
        self,
        frame: Frame,
        tensor: Optional[np.ndarray] = None,
        spec: Optional[Tuple[Any, ...]] = None,
        preprocess_ms: float = 0.0,
    ) -> Inferred:
        """The first half of :meth:`classify`: run the model on one frame, keep its raw output.

        The frame loop runs this on its inference thread and :meth:`finish` on another, so the
        next inference starts while this one's result is scored and published.
        """
        with self._lock:
            runtime, labels, model = self.runtime, self.labels, self.model
            if tensor is None or spec != self.input_spec():
                t0 = time.perf_counter()
                tensor, _ = self.prepare(frame.image)
                preprocess_ms = (time.perf_counter() - t0) * 1000
            t1 = time.perf_counter()
            try:
                raw = runtime.invoke(tensor)
            except (RuntimeError, ValueError) as exc:
                runtime = self._leave_edgetpu(runtime, exc)
                tensor, _ = self.prepare(frame.image)
                raw = runtime.invoke(tensor)
            inference_ms = (time.perf_counter() - t1) * 1000
        self._recycle(runtime, tensor)
        return Inferred(frame, raw, runtime, labels, model, preprocess_ms, inference_ms)

    def finish(self, done: Inferred) -> Classification:
        """The second half of :meth:`classify`: the top classes of :meth:`infer`'s output, as a result."""
        t0 = time.perf_counter()
        runtime, frame = done.runtime, done.frame
        classes = top_k(dequantize(done.raw, runtime.output_quant), self.k, self.threshold, done.labels)
        total_ms = done.preprocess_ms + done.inference_ms + (time.perf_counter() - t0) * 1000
        return Classification(
            device=self.device_id,
            model=done.model,
            backend=runtime.backend,
            source=frame.source,
            frame=frame.index,
            captured_at=frame.captured_at,
            preprocess_ms=done.preprocess_ms,
            inference_ms=done.inference_ms,
            total_ms=total_ms,
            top_k=classes,
            frame_ref=frame,
        )

    def _leave_edgetpu(self, runtime: Runtime, exc: Exception) -> Runtime:
        """After a failed Edge TPU inference: the CPU twin (auto), else DelegateError. Lock held."""
        if runtime.backend != "edgetpu":
            raise exc
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        if self.cpu_fallback is None:
            raise DelegateError(
                f"Edge TPU inference failed ({reason}): the Accelerator was unplugged or reset; "
                "stopping (a service restarts); --device auto would go on with the CPU twin"
            ) from exc
        cpu = self.cpu_fallback(runtime)
        log.warning("Edge TPU inference failed (%s); going on with the CPU model %s", reason, cpu.model_path.name)
        self.runtime = cpu
        return cpu


def model_info(runtime: Runtime, name: Optional[str] = None, version: str = "local") -> ModelInfo:
    """Identity of the model a runtime runs: name from the file (without ``_edgetpu``), version, digest."""
    return ModelInfo(name=name or model_stem(runtime.model_path), version=version, digest=runtime.digest)


def default_labels(model: Path) -> Optional[Path]:
    """Labels to use when none are given: ``labels.txt`` or ``<name>_labels.txt`` / ``<name>.txt``
    beside the model, or the bundled labels for the bundled demo model."""
    stem = model_stem(model)
    candidates = [model.parent / f"{stem}_labels.txt", model.parent / f"{stem}.txt", model.parent / "labels.txt"]
    if stem.endswith("_int8"):
        candidates.append(bundled("labels", f"{stem[:-5]}.txt"))
    return next((c for c in candidates if c.is_file()), None)


def build_classifier(
    model: Path,
    labels: Optional[Path],
    device: str = "auto",
    runtime: str = "auto",
    threads: int = 2,
    norm: Optional[Normalization] = None,
    keep_aspect: bool = False,
    k: int = 3,
    threshold: float = 0.0,
    device_id: str = "local",
    name: Optional[str] = None,
    version: str = "local",
    max_memory_mb: int = DEFAULT_MAX_MODEL_MEMORY_MB,
    resize: str = "fast",
    tpu: Optional[TpuSettings] = None,
) -> Classifier:
    """Open the model (Edge TPU or CPU, see :func:`edge_agent.inference.runtime.open_runtime`) and its labels.

    ``resize``: ``fast`` or ``coral`` (see :func:`edge_agent.inference.preprocess.resize`);
    ``tpu``: which libedgetpu and how to probe it. Raises ModelError (also for a model needing
    more than ``max_memory_mb`` MiB), DelegateError or ConfigError.
    """
    rt = open_runtime(
        Path(model), device=device, runtime=runtime, threads=threads, tpu=tpu, max_memory_mb=max_memory_mb
    )

    def cpu_fallback(failed: Runtime) -> Runtime:
        twin = cpu_twin(failed.model_path)
        if twin == failed.model_path or not twin.is_file():
            raise DelegateError(
                f"Edge TPU inference failed and there is no CPU model {twin.name} beside {failed.model_path.name}"
            )
        return open_runtime(
            twin, device="cpu", runtime=failed.interpreter_name, threads=threads, max_memory_mb=max_memory_mb
        )

    labels_path = labels or default_labels(Path(model))
    label_map = load_labels(labels_path) if labels_path else {}
    if labels_path is None:
        log.info("no labels file given or found beside %s: classes show as numbers", model)
    return Classifier(
        rt,
        label_map,
        model_info(rt, name, version),
        device_id,
        norm=norm,
        keep_aspect=keep_aspect,
        k=k,
        threshold=threshold,
        labels_path=labels_path,
        resize=resize,
        cpu_fallback=cpu_fallback if device == "auto" else None,
    )
