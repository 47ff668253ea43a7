"""Small TFLite models built with real TensorFlow for the tests, cached under .cache/test-models.

Building needs the `compiler` extra (TensorFlow); the cache key is the builder's
name plus the TensorFlow version, so a changed builder or TF gives a new file.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict

import numpy as np

CACHE = Path(__file__).resolve().parents[2] / ".cache" / "test-models"


def _cached(name: str, build: Callable[[], bytes]) -> Path:
    import tensorflow as tf

    path = CACHE / f"{name}-tf{tf.__version__}.tflite"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(build())
        os.replace(tmp, path)
    return path


def _int8(model: object, shape: tuple, io_type: str) -> bytes:
    import tensorflow as tf

    rng = np.random.default_rng(0)

    def rep():  # calibration on noise: these models test plumbing, not accuracy
        for _ in range(16):
            yield [rng.random((1, *shape), dtype=np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = rep
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = getattr(tf, io_type)
    conv.inference_output_type = getattr(tf, io_type)
    return conv.convert()


def build_test_models() -> Dict[str, Path]:
    """{name: path} of: ``int8_io`` (int8 in/out image classifier, 48x64x3, 5 classes),
    ``gray`` (uint8, 24x24x1, 4 classes), ``vector`` (input [1, 10], not an image)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    def image_model(h: int, w: int, c: int, classes: int) -> tf.keras.Model:
        tf.keras.utils.set_random_seed(1)
        inp = tf.keras.Input(shape=(h, w, c), batch_size=1)
        x = tf.keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
        x = tf.keras.layers.GlobalAveragePooling2D()(x)
        out = tf.keras.layers.Dense(classes, activation="softmax")(x)
        return tf.keras.Model(inp, out)

    def vector_model() -> tf.keras.Model:
        inp = tf.keras.Input(shape=(10,), batch_size=1)
        return tf.keras.Model(inp, tf.keras.layers.Dense(3, activation="softmax")(inp))

    return {
        "int8_io": _cached("int8_io", lambda: _int8(image_model(48, 64, 3, 5), (48, 64, 3), "int8")),
        "gray": _cached("gray", lambda: _int8(image_model(24, 24, 1, 4), (24, 24, 1), "uint8")),
        "vector": _cached("vector", lambda: _int8(vector_model(), (10,), "uint8")),
    }
