"""Quantizing a float ``.tflite``: possible only when it still holds float32 weights.

TensorFlow Lite's own post-training calibrator (the step ``TFLiteConverter`` runs after
conversion) calibrates and quantizes a float flatbuffer directly. That is faithful when
every weight is float32 and the input shape is fixed. A model whose weights were already
reduced (float16, or int8 "dynamic range") has lost the precision to quantize from; for
those the user must give the Keras or SavedModel source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Tuple

import numpy as np

from compiler import tflite
from compiler.errors import ModelSourceError, QuantizationError

ASK_FOR_SOURCE = "give the Keras (.keras/.h5) or SavedModel it was converted from"


def check_float_tflite(path: Path) -> Tuple[int, int, int]:
    """The (h, w, c) input of a float ``.tflite`` that can be quantized faithfully.

    Raises:
        ModelSourceError: already quantized, reduced-precision weights, a dynamic or
            non-image input, or not a ``.tflite``; the message says what to give instead.
    """
    from compiler.inspect import analyze

    model = tflite.read(path)
    if analyze(model).quantized:
        raise ModelSourceError(f"{path} is already integer-quantized: compile it directly (edge-compile {path})")
    sg = model.subgraphs[0]
    constant_types = {
        t.type for t in sg.tensors if 0 < t.buffer < len(model.buffer_sizes) and model.buffer_sizes[t.buffer] > 0
    }
    reduced = constant_types & {"FLOAT16", "INT8", "UINT8"}
    if reduced:
        kinds = ", ".join(sorted(reduced))
        raise ModelSourceError(
            f"{path} stores {kinds} weights (float16 or dynamic-range quantized), which cannot be "
            f"re-quantized faithfully: {ASK_FOR_SOURCE}"
        )
    if len(sg.inputs) != 1:
        raise ModelSourceError(f"{path} has {len(sg.inputs)} inputs; an image classifier has one")
    tensor = sg.tensors[sg.inputs[0]]
    if tensor.type != "FLOAT32" or len(tensor.shape) != 4:
        raise ModelSourceError(f"{path}: expected a float32 (1, h, w, c) input, got {tensor.type} {list(tensor.shape)}")
    if tensor.is_dynamic and any(d < 0 for d in tensor.shape_signature[1:]):
        raise ModelSourceError(f"{path} has a dynamic input size {list(tensor.shape_signature)}: {ASK_FOR_SOURCE}")
    _, h, w, c = tensor.shape
    return int(h), int(w), int(c)


class FloatTfliteRunner:
    """Run a float ``.tflite`` with LiteRT on ``(1, h, w, c)`` float32 batches."""

    def __init__(self, model_bytes: bytes) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interp = Interpreter(model_content=model_bytes)
        self._interp.allocate_tensors()
        self._in = self._interp.get_input_details()[0]["index"]
        self._out = self._interp.get_output_details()[0]["index"]

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """The model's float output for ``batch``."""
        self._interp.set_tensor(self._in, batch.astype(np.float32))
        self._interp.invoke()
        return np.asarray(self._interp.get_tensor(self._out))


def calibrate(model_bytes: bytes, calibration: Iterable[np.ndarray], io_type: str, source: Path) -> bytes:
    """Full-integer quantize a float flatbuffer with TensorFlow Lite's calibrator.

    Raises:
        QuantizationError: the calibrator is unavailable in this TensorFlow or failed.
    """
    try:
        import tensorflow as tf
        from tensorflow.lite.python.optimize import calibrator
    except ImportError as exc:
        raise QuantizationError(f"this TensorFlow cannot quantize a .tflite: {ASK_FOR_SOURCE}") from exc

    def dataset() -> Iterable[List[np.ndarray]]:
        for batch in calibration:
            yield [batch]

    dtype = tf.uint8 if io_type == "uint8" else tf.int8
    try:
        quantized = calibrator.Calibrator(model_bytes).calibrate_and_quantize(
            dataset, dtype, dtype, False, activations_type=tf.int8, bias_type=tf.int32
        )
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise QuantizationError(f"TensorFlow Lite could not quantize {source}: {first}") from exc
    return bytes(quantized)
