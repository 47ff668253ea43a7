"""Full-integer post-training quantization with TensorFlow, and a fidelity check after it.

Sources: a Keras model file (``.keras``, ``.h5``), a SavedModel directory (including one
downloaded from TF Hub / Kaggle Models), or a float ``.tflite`` that still has float32
weights (see :mod:`compiler.tflite_source`). The batch dimension is fixed to 1 before
conversion, since ``edgetpu_compiler`` refuses dynamic-sized tensors. TensorFlow is
imported inside the functions that need it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from compiler.calibration import Normalization, batches
from compiler.errors import ModelSourceError, QuantizationError
from release_contract.files import atomic_write, sha256_file
from release_contract.lineage import Fidelity as LineageFidelity
from release_contract.lineage import Lineage, dataset_digest, lineage_path

log = logging.getLogger(__name__)

Shape = Tuple[int, int, int]


@dataclass
class Fidelity:
    """How closely the quantized model follows the float one on evaluation images.

    Attributes:
        images: how many images were compared.
        top1_agreement: fraction (0..1) of images whose top-1 class is the same.
        mean_abs_diff: mean absolute difference of the output scores (dequantized).
    """

    images: int
    top1_agreement: float
    mean_abs_diff: float


@dataclass
class FloatModel:
    """A loaded float model: a callable on ``(1, h, w, c)`` float32 and its input shape."""

    source: Path
    input_shape: Shape
    concrete_function: Any = None
    tflite_bytes: Optional[bytes] = None
    #: The loaded Keras model / SavedModel: it owns the variables the function reads.
    owner: Any = field(default=None, repr=False)

    _runner: Any = field(default=None, repr=False)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Float scores for one batch, as a numpy array."""
        if self.tflite_bytes is not None:
            from compiler.tflite_source import FloatTfliteRunner

            if self._runner is None:
                self._runner = FloatTfliteRunner(self.tflite_bytes)
            return np.asarray(self._runner(batch))
        import tensorflow as tf

        return np.asarray(self.concrete_function(tf.constant(batch)))


def _input_shape(shape: Sequence[Optional[int]], override: Optional[Tuple[int, int]]) -> Shape:
    dims = list(shape)[1:] if len(shape) == 4 else list(shape)
    if len(dims) != 3:
        raise ModelSourceError(f"expected an image model with input (batch, h, w, c), got {list(shape)}")
    h, w, c = dims
    if override is not None:
        h, w = override
    if h is None or w is None or c is None:
        raise ModelSourceError(f"the model's input size is not fixed ({list(shape)}): give --input-size H,W")
    return int(h), int(w), int(c)


def load_float_model(source: Path, input_size: Optional[Tuple[int, int]] = None) -> FloatModel:
    """Load a Keras file or SavedModel directory as a batch-1 float function.

    Raises:
        ModelSourceError: missing source, a kind we cannot quantize, or no image input.
    """
    source = Path(source)
    if not source.exists():
        raise ModelSourceError(f"model not found: {source}")
    if source.suffix == ".tflite":
        from compiler.tflite_source import check_float_tflite

        shape = check_float_tflite(source)
        if input_size is not None and input_size != shape[:2]:
            raise ModelSourceError(f"{source} has a fixed input of {shape[0]}x{shape[1]}; drop --input-size")
        return FloatModel(source, shape, tflite_bytes=source.read_bytes())
    import tensorflow as tf

    if source.is_dir():
        if not (source / "saved_model.pb").exists():
            raise ModelSourceError(f"{source} is a directory but not a SavedModel (no saved_model.pb)")
        try:
            loaded = tf.saved_model.load(str(source))
        except (OSError, ValueError, tf.errors.OpError) as exc:
            raise ModelSourceError(f"cannot load SavedModel {source}: {exc}") from exc
        fn, spec = _saved_model_callable(loaded, source)
        owner: Any = loaded
    elif source.suffix in (".keras", ".h5"):
        try:
            model = tf.keras.models.load_model(str(source), compile=False)
        except (OSError, ValueError, TypeError) as exc:
            raise ModelSourceError(f"cannot load Keras model {source}: {exc}") from exc
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ModelSourceError(
                f"{source} has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                "an image classifier has one of each"
            )
        fn, spec = (lambda x: model(x, training=False)), model.inputs[0].shape
        owner = model
    else:
        raise ModelSourceError(f"unsupported model {source}: give a .keras or .h5 file or a SavedModel directory")
    shape = _input_shape(tuple(spec), input_size)
    try:
        concrete = tf.function(fn).get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))
    except (ValueError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(f"cannot trace {source} at input (1, {', '.join(map(str, shape))}): {first}") from exc
    return FloatModel(source, shape, concrete, owner=owner)


def _saved_model_callable(loaded: Any, source: Path) -> Tuple[Callable[[Any], Any], Sequence[Any]]:
    """A one-input, one-output callable of a SavedModel and its input shape."""
    signatures = getattr(loaded, "signatures", {}) or {}
    if "serving_default" in signatures:
        sig = signatures["serving_default"]
        _, kwargs = sig.structured_input_signature
        if len(kwargs) != 1:
            raise ModelSourceError(f"{source}: expected one image input, found {sorted(kwargs)}")
        ((name, spec),) = kwargs.items()
        output_names = sorted(sig.structured_outputs)

        def call(x: Any) -> Any:
            return sig(**{name: x})[output_names[0]]

        return call, spec.shape
    # TF Hub style: a polymorphic __call__ traced for an image batch.
    call_fn = loaded.__call__ if callable(loaded) else None
    traced = getattr(call_fn, "concrete_functions", None) or []
    for cf in traced:
        args = cf.structured_input_signature[0]
        if args and hasattr(args[0], "shape") and len(args[0].shape) == 4:
            return (lambda x: loaded(x)), args[0].shape
    raise ModelSourceError(f"{source}: no serving_default signature or image __call__ to quantize")


def convert(
    model: FloatModel,
    calibration: Iterable[np.ndarray],
    io_type: str = "uint8",
) -> bytes:
    """Convert ``model`` to a full-integer ``.tflite`` calibrated on ``calibration`` batches.

    Args:
        model: the float model (batch 1).
        calibration: normalized float32 batches ``(1, h, w, c)``; consumed once.
        io_type: ``"uint8"`` (Coral's examples) or ``"int8"`` for the input and output.

    Raises:
        QuantizationError: the converter failed.
    """
    import tensorflow as tf

    if io_type not in ("uint8", "int8"):
        raise QuantizationError(f"io type must be uint8 or int8, not {io_type!r}")
    if model.tflite_bytes is not None:
        from compiler.tflite_source import calibrate

        return calibrate(model.tflite_bytes, calibration, io_type, model.source)

    def representative() -> Iterable[List[np.ndarray]]:
        for batch in calibration:
            yield [batch]

    # Without a trackable object the converter freezes the variables into constants;
    # with one, Keras 3 models keep READ_VARIABLE ops that calibration cannot run.
    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.concrete_function])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    dtype = tf.uint8 if io_type == "uint8" else tf.int8
    converter.inference_input_type = dtype
    converter.inference_output_type = dtype
    try:
        return bytes(converter.convert())
    except Exception as exc:  # the converter raises many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"TensorFlow could not quantize {model.source}: {first}") from exc


class QuantizedRunner:
    """Run a quantized ``.tflite`` on float inputs with LiteRT (quantize in, dequantize out)."""

    def __init__(self, model_bytes: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interp = Interpreter(model_content=model_bytes)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Dequantized scores for one float batch."""
        scale, zero = self._in["quantization"]
        dtype = self._in["dtype"]
        info = np.iinfo(dtype)
        q = np.clip(np.round(batch / scale + zero), info.min, info.max).astype(dtype)
        self._interp.set_tensor(self._in["index"], q)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out["index"]).astype(np.float32)
        out_scale, out_zero = self._out["quantization"]
        return (raw - out_zero) * out_scale


def measure_fidelity(
    model: FloatModel, model_bytes: bytes, images: Sequence[Path], norm: Normalization
) -> Optional[Fidelity]:
    """Compare float and quantized outputs on ``images``; None when there are none."""
    if not images:
        return None
    runner = QuantizedRunner(model_bytes)
    agree = 0
    diffs = []
    for batch in batches(images, model.input_shape, norm):
        ref = model(batch).reshape(-1)
        got = runner(batch).reshape(-1)
        agree += int(np.argmax(ref) == np.argmax(got))
        diffs.append(float(np.mean(np.abs(ref - got))))
    return Fidelity(len(images), agree / len(images), float(np.mean(diffs)))


@dataclass
class QuantizeResult:
    """What :func:`quantize` produced."""

    output: Path
    input_shape: Shape
    io_type: str
    calibration_images: int
    random_calibration: bool
    fidelity: Optional[Fidelity]
    lineage: Optional[Path] = None  # the lineage.json written beside ``output``


def quantize(
    source: Path,
    output: Path,
    calib_images: Optional[Sequence[Path]],
    eval_images: Sequence[Path],
    norm: Normalization,
    io_type: str = "uint8",
    input_size: Optional[Tuple[int, int]] = None,
    random_count: int = 0,
    progress: Optional[Callable[[Iterable[np.ndarray], int], Iterable[np.ndarray]]] = None,
    calib_root: Optional[Path] = None,
) -> QuantizeResult:
    """Quantize ``source`` to a full-integer ``output`` and measure its fidelity.

    Args:
        calib_images: calibration images, or None for ``random_count`` random ones.
        eval_images: images for the float-vs-int8 comparison (may be empty).
        progress: wraps the calibration iterator with a progress bar, given its length.
        calib_root: the folder the calibration images' relative paths (in the lineage digest) start
            from; default: their common parent.

    Beside ``output`` goes ``<stem>.lineage.json`` (:mod:`release_contract.lineage`): the
    calibration set's digest and size, the float and int8 models' digests and the fidelity.

    Raises:
        ModelSourceError, CalibrationError, QuantizationError.
    """
    from compiler.calibration import random_batches

    model = load_float_model(source, input_size)
    if calib_images is None:
        count = random_count
        stream: Iterable[np.ndarray] = random_batches(count, model.input_shape, norm)
    else:
        count = len(calib_images)
        stream = batches(calib_images, model.input_shape, norm)
    if progress is not None:
        stream = progress(stream, count)
    data = convert(model, stream, io_type)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(data)
    log.info("wrote %s (%d bytes)", output, len(data))
    fidelity = measure_fidelity(model, data, eval_images, norm)
    used = list(calib_images or [])
    root = Path(calib_root) if calib_root else (Path(os.path.commonpath(used)) if used else Path("."))
    if used and root in used:  # one image: its folder is the root
        root = root.parent
    try:
        lineage = write_lineage(Path(source), output, root, used, count, fidelity)
    except OSError as exc:
        raise QuantizationError(f"cannot write the lineage beside {output}: {exc.strerror or exc}") from exc
    return QuantizeResult(output, model.input_shape, io_type, count, calib_images is None, fidelity, lineage)


def write_lineage(
    source: Path, output: Path, calib_root: Path, calib_images: Sequence[Path], count: int, fidelity: Optional[Fidelity]
) -> Path:
    """Write ``<output stem>.lineage.json`` beside ``output``; return its path.

    ``calib_images`` empty means random calibration (``count`` noise images). Raises OSError.
    """
    if source.is_dir():
        float_sha = dataset_digest(source, [p for p in source.rglob("*") if p.is_file()])
    else:
        float_sha = sha256_file(source)
    record = Lineage(
        calibration_digest=dataset_digest(calib_root, calib_images),
        calibration_images=count,
        calibration_random=not calib_images,
        float_path=source.name,
        float_sha256=float_sha,
        int8_path=output.name,
        int8_sha256=sha256_file(output),
        int8_size=output.stat().st_size,
        fidelity=None
        if fidelity is None
        else LineageFidelity(fidelity.images, round(fidelity.top1_agreement, 6), round(fidelity.mean_abs_diff, 6)),
    )
    path = lineage_path(output)
    atomic_write(path, json.dumps(record.to_dict(), indent=2, sort_keys=True).encode() + b"\n")
    return path
