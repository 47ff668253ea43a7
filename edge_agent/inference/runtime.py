"""The interpreter and the Edge TPU delegate: the only module that knows about them.

``open_runtime(model, device, runtime)`` decides where a model runs:

* a compiled ``*_edgetpu.tflite`` model runs on the Edge TPU when the delegate loads;
  on the CPU it cannot run (it contains ``edgetpu-custom-op``), so ``device="auto"``
  falls back to the plain int8 model beside it (``name_edgetpu.tflite`` ->
  ``name.tflite``) with one warning, and fails when there is none;
* a plain model runs on the CPU, unless a TPU device is asked for and a compiled
  sibling exists;
* asking for a TPU device explicitly (``usb``, ``pci:0``...) never falls back.

Before the delegate is loaded in this process, :mod:`edge_agent.inference.probe` loads it
and runs the compiled model once in a child process with a deadline: a runtime that
crashes, hangs or refuses there becomes one line (and the CPU twin in ``auto`` mode)
instead of a dead agent.

Interpreter backends (:mod:`edge_agent.inference.backends`): ``auto`` takes LiteRT
(``ai_edge_litert``), ``tflite_runtime``, TensorFlow, in that order for CPU models; for a
compiled model it first prefers the one known to work with the installed libedgetpu
(:mod:`edge_agent.inference.pairings`).
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from edge_agent.config import validate_device
from edge_agent.errors import ConfigError, DelegateError, ModelError
from edge_agent.inference import pairings
from edge_agent.inference.backends import Backend, installed_backends, select_backend
from edge_agent.inference.model_memory import DEFAULT_MAX_MODEL_MEMORY_MB, check_model_memory
from edge_agent.inference.probe import DEFAULT_TIMEOUT_S, probe_delegate
from release_contract.files import open_regular
from release_contract.models import compiled_twin, cpu_twin, is_edgetpu_model, is_tflite

log = logging.getLogger(__name__)
__all__ = [
    "Runtime",
    "TpuSettings",
    "delegate_library",
    "interpreter_order",
    "open_runtime",
    "probe_compiled_model",
    "read_model",
    "select_backend",
]

MAX_MODEL_BYTES = 512 * 1024 * 1024


def delegate_library() -> str:
    """File name of the Edge TPU runtime library on this operating system."""
    return {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}.get(
        platform.system(), "libedgetpu.so.1"
    )


def read_model(path: Path, max_memory_mb: int = DEFAULT_MAX_MODEL_MEMORY_MB) -> bytes:
    """Read a .tflite file and check it is one, before any native code parses it.

    Raises ModelError for a missing, empty, huge, non-regular (a FIFO) or non-TFLite file,
    and for a model whose tensors would need more than ``max_memory_mb`` MiB
    (:func:`~edge_agent.inference.model_memory.check_model_memory`).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from exc
    if path.is_dir():
        raise ModelError(f"model path is a directory, not a .tflite file: {path}")
    if size > MAX_MODEL_BYTES:
        raise ModelError(f"model {path} is {size} bytes, more than the {MAX_MODEL_BYTES} byte limit")
    try:
        with open_regular(path) as fh:
            data = fh.read(MAX_MODEL_BYTES + 1)
    except OSError as exc:
        raise ModelError(f"cannot read model {path}: {exc.strerror}") from exc
    if len(data) < 16 or not is_tflite(data):
        raise ModelError(f"{path} is not a TFLite model (no TFL3 flatbuffer identifier)")
    check_model_memory(data, max_memory_mb, str(path))
    return data


@dataclass(frozen=True)
class TpuSettings:
    """How to reach the Edge TPU runtime.

    ``library``: the libedgetpu to load (a file path or a name the dynamic loader finds;
    None = :func:`delegate_library`). ``probe_timeout``: seconds the child probe may take.
    ``probe_cache``: JSON file of cached probe verdicts (None = probe every time).
    """

    library: Optional[str] = None
    probe_timeout: float = DEFAULT_TIMEOUT_S
    probe_cache: Optional[Path] = None

    @property
    def library_name(self) -> str:
        """The library to load: ``library`` or the operating system's default name."""
        return self.library or delegate_library()


def load_edgetpu_delegate(backend: Backend, device: str, library: Optional[str] = None) -> Any:
    """Load the Edge TPU delegate for ``device`` (``usb``, ``usb:0``, ``pci``, ``:0``; ``auto`` = any).

    Raises DelegateError with what to do when the runtime library is missing or no
    matching Edge TPU is attached.
    """
    options: Dict[str, str] = {} if device in ("auto", "") else {"device": device}
    lib = library or delegate_library()
    try:
        # The same dlopen the interpreter's load_delegate does first. Doing it here gives
        # the real OSError without LiteRT's half-built Delegate printing a traceback later.
        ctypes.CDLL(lib)
    except OSError as exc:
        raise DelegateError(
            f"Edge TPU runtime not found ({lib}): install a libedgetpu that matches the interpreter "
            "(see README, 'Support matrix'), then `edge-agent doctor`"
        ) from exc
    try:
        return backend.load_delegate(lib, options)
    except (OSError, ValueError, RuntimeError) as exc:
        where = "any Edge TPU" if not options else f"Edge TPU {device!r}"
        raise DelegateError(
            f"{lib} loaded but {where} could not be opened: check the USB cable/PCIe driver and `edge-agent devices`"
        ) from exc


@dataclass
class Runtime:
    """A ready interpreter and what it runs.

    ``backend`` is ``"edgetpu"`` or ``"cpu"``; ``model_path`` is the file actually
    loaded (the CPU fallback when the compiled model could not run).
    """

    interpreter: Any
    backend: str
    model_path: Path
    digest: str
    interpreter_name: str
    input_index: int
    input_shape: Tuple[int, ...]
    input_dtype: Any
    input_quant: Tuple[float, int]
    output_index: int
    output_quant: Tuple[float, int]
    num_classes: int

    @property
    def input_size(self) -> Tuple[int, int]:
        """(width, height) of the model's input image in pixels."""
        return int(self.input_shape[2]), int(self.input_shape[1])

    @property
    def channels(self) -> int:
        return int(self.input_shape[3])

    def invoke(self, tensor: np.ndarray) -> np.ndarray:
        """Run one inference on a (1, H, W, C) tensor of the input dtype; return the raw output (N,).

        ``set_tensor`` copies the tensor into the interpreter's own input buffer in one C call
        (measured cheaper per frame than writing through a numpy view of that buffer, which
        also has to be released before the interpreter runs); the output is a new (N,) array
        the caller owns (a few bytes per class). A tensor of the wrong shape or type is a
        ValueError that says so.
        """
        interp = self.interpreter
        interp.set_tensor(self.input_index, tensor)
        interp.invoke()
        return interp.get_tensor(self.output_index).reshape(-1)

    def new_input(self) -> np.ndarray:
        """A new, zeroed array shaped and typed like the model's input, for pre-processing into."""
        return np.zeros(self.input_shape, dtype=self.input_dtype)


def _build(backend: Backend, path: Path, data: bytes, delegates: List[Any], threads: int, hw: str) -> Runtime:
    try:
        kwargs: Dict[str, Any] = {"model_content": data, "num_threads": threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        interp = backend.interpreter(**kwargs)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "edgetpu-custom-op" in str(exc):
            raise ModelError(f"{path} is compiled for the Edge TPU and cannot run on the CPU") from exc
        raise ModelError(f"cannot load model {path}: {first}") from exc
    inputs, outputs = interp.get_input_details(), interp.get_output_details()
    if len(inputs) != 1:
        raise ModelError(f"{path} has {len(inputs)} inputs; an image classifier has exactly one")
    inp, out = inputs[0], outputs[0]
    shape = tuple(int(d) for d in inp["shape"])
    if len(shape) != 4 or shape[0] != 1 or shape[3] not in (1, 3) or min(shape) < 1:
        raise ModelError(f"{path} input {list(shape)} is not an image tensor [1, height, width, 1|3]")
    if inp["dtype"] not in (np.uint8, np.int8, np.float32):
        raise ModelError(f"{path} input type {np.dtype(inp['dtype']).name} is not uint8, int8 or float32")
    out_shape = [int(d) for d in out["shape"]]
    num_classes = int(np.prod(out_shape))
    if num_classes < 1 or max(out_shape) != num_classes:
        raise ModelError(f"{path} output {out_shape} is not a vector of class scores")
    return Runtime(
        interpreter=interp,
        backend=hw,
        model_path=path,
        digest="sha256:" + hashlib.sha256(data).hexdigest(),
        interpreter_name=backend.name,
        input_index=int(inp["index"]),
        input_shape=shape,
        input_dtype=inp["dtype"],
        input_quant=(float(inp["quantization"][0]), int(inp["quantization"][1])),
        output_index=int(out["index"]),
        output_quant=(float(out["quantization"][0]), int(out["quantization"][1])),
        num_classes=num_classes,
    )


def open_runtime(
    model: Path,
    device: str = "auto",
    runtime: str = "auto",
    threads: int = 2,
    tpu: Optional[TpuSettings] = None,
    max_memory_mb: int = DEFAULT_MAX_MODEL_MEMORY_MB,
) -> Runtime:
    """Load ``model`` on the Edge TPU or the CPU following the rules in the module docstring.

    ``tpu`` says which libedgetpu to load and how to probe it (defaults: the system's
    library, a 30 s probe, no cache). A model whose tensors would need more than
    ``max_memory_mb`` MiB is refused before any interpreter allocates them.

    Raises ModelError (bad or unsuitable model), DelegateError (TPU asked for and not
    usable), ConfigError (bad device or runtime name).
    """
    validate_device(device)
    tpu = tpu or TpuSettings()
    path = Path(model)
    data = read_model(path, max_memory_mb)
    compiled = is_edgetpu_model(data)
    if device == "cpu" or (not compiled and device == "auto"):
        backend = select_backend(runtime)
        if compiled:
            return _cpu_fallback(backend, path, threads, "--device cpu was asked for", max_memory_mb)
        return _build(backend, path, data, [], threads, "cpu")
    if not compiled:
        sibling = compiled_twin(path)
        if not sibling.exists():
            raise ModelError(
                f"{path} is not compiled for the Edge TPU and there is no {sibling.name} beside it: "
                "compile it with `edge-compile`, or use --device cpu"
            )
        log.info("using the compiled model %s for --device %s", sibling, device)
        path, data = sibling, read_model(sibling, max_memory_mb)
    backend = select_backend(runtime, interpreter_order(tpu.library_name) if runtime == "auto" else ())
    try:
        delegate = _probed_delegate(backend, path, data, device, tpu)
    except DelegateError as exc:
        if device != "auto":
            raise
        return _cpu_fallback(backend, path, threads, str(exc), max_memory_mb)
    return _build(backend, path, data, [delegate], threads, "edgetpu")


def interpreter_order(library: str) -> List[str]:
    """Installed interpreters for ``--runtime auto`` with a compiled model: the one known to work
    with ``library`` (a libedgetpu name or path) first, see :mod:`edge_agent.inference.pairings`."""
    lib = pairings.describe_libedgetpu(pairings.dpkg_libedgetpu(), pairings.library_version(library))
    order = pairings.backend_order(lib, installed_backends())
    log.debug("interpreter order for %s: %s", lib.label, order)
    return order


def _probed_delegate(
    backend: Backend, path: Path, data: bytes, device: str, tpu: TpuSettings, load: bool = True
) -> Any:
    """The delegate, loaded in this process (``load``) only after the child probe ran the model with it."""
    lib = tpu.library_name
    library_file = pairings.library_path(lib)
    if library_file is None:
        return load_edgetpu_delegate(backend, device, lib)  # raises the "not found" DelegateError
    verdict = probe_delegate(
        lib,
        library_file,
        path,
        "sha256:" + hashlib.sha256(data).hexdigest(),
        device,
        backend.name,
        backend.label,
        timeout=tpu.probe_timeout,
        cache=tpu.probe_cache,
    )
    if not verdict.ok:
        raise DelegateError(verdict.message())
    return load_edgetpu_delegate(backend, device, lib) if load else None


def probe_compiled_model(
    compiled: Path, device: str = "auto", runtime: str = "auto", tpu: Optional[TpuSettings] = None
) -> Optional[str]:
    """Run the compiled model ``compiled`` once with the Edge TPU delegate in a child process.

    Returns None when it ran, else one line saying why not (no runtime, crash, hang,
    refusal). The model updater calls it before it activates a compiled model.
    """
    tpu = tpu or TpuSettings()
    path = Path(compiled)
    try:
        data = read_model(path)
        backend = select_backend(runtime, interpreter_order(tpu.library_name) if runtime == "auto" else ())
        _probed_delegate(backend, path, data, "auto" if device == "cpu" else device, tpu, load=False)
    except (DelegateError, ModelError, ConfigError) as exc:
        return str(exc)
    return None


def _cpu_fallback(backend: Backend, compiled: Path, threads: int, reason: str, max_memory_mb: int) -> Runtime:
    cpu = cpu_twin(compiled)
    if cpu == compiled or not cpu.exists():
        raise ModelError(
            f"{reason}; {compiled.name} cannot run on the CPU and there is no CPU model {cpu.name} beside it"
        )
    log.warning("%s; running the CPU model %s instead (slower)", reason, cpu.name)
    return _build(backend, cpu, read_model(cpu, max_memory_mb), [], threads, "cpu")


def runtime_version(library: Optional[str] = None) -> Optional[str]:
    """``edgetpu_version()`` of the Edge TPU runtime, or None when it is not installed."""
    return pairings.library_version(library or delegate_library())
