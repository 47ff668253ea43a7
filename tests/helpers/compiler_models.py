"""Small real models for the compiler tests, built once with real TensorFlow conversion and cached
under ``.cache/compiler-tests/`` (keyed by TensorFlow version and a recipe version)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RECIPE_VERSION = "5"
SIZE = 32


def cache_dir() -> Path:
    import tensorflow as tf

    path = ROOT / ".cache" / "compiler-tests" / f"tf{tf.__version__}-r{RECIPE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_digit_pngs(folder: Path, count: int, size: int = SIZE) -> Path:
    """sklearn's 8x8 digits, scaled to ``size`` RGB PNGs: a tiny, real image set."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits().images[:count]
    for i, img in enumerate(digits):
        pixels = (img * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").resize((size, size)).save(folder / f"digit_{i:03d}.png")
    return folder


def convert(keras_model: object, quantize: bool, fixed_batch: bool = True, float_fallback: bool = False) -> bytes:
    """Convert a Keras model with real TensorFlow; int8 with random calibration if asked."""
    import tensorflow as tf

    shape = tuple(keras_model.inputs[0].shape[1:])  # type: ignore[attr-defined]
    if fixed_batch:
        fn = tf.function(lambda x: keras_model(x, training=False))  # type: ignore[operator]
        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [fn.get_concrete_function(tf.TensorSpec((1, *shape), tf.float32))]
        )
    else:
        conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if quantize:
        rng = np.random.default_rng(0)

        def rep():
            for _ in range(4):
                yield [rng.uniform(-1, 1, (1, *shape)).astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if float_fallback:  # ops without an int8 kernel stay float between (DE)QUANTIZE
            conv.target_spec.supported_ops.append(tf.lite.OpsSet.TFLITE_BUILTINS)
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    return bytes(conv.convert())


def mobilenet(path: Path) -> None:
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=10)
    model.save(path)


def small_net(middle: Callable[[object], object], size: int = 16) -> object:
    """conv -> ``middle`` -> conv -> pooling -> dense: the op under test sits mid-graph."""
    import tensorflow as tf

    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = middle(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(4)(x))


def max_over_axis1(x: object) -> object:
    """REDUCE_MAX over axis 1 of a 5-D tensor: an Edge TPU op on a tensor of rank > 3."""
    import tensorflow as tf

    return tf.keras.layers.Lambda(lambda t: tf.reduce_max(t, axis=1))(x)


def build_all(cache: Path) -> Dict[str, Path]:
    import tensorflow as tf

    layers = tf.keras.layers
    paths = {
        name: cache / f"{name}.tflite"
        for name in (
            "mobilenet_int8",
            "float",
            "leaky_int8",
            "rank5_int8",
            "dynamic_int8",
            "exp_int8",
            "grouped_int8",
            "partly_float",
        )
    }
    keras_path = cache / "mobilenet.keras"
    if not keras_path.exists():
        mobilenet(keras_path)
    if not paths["mobilenet_int8"].exists():
        model = tf.keras.models.load_model(keras_path, compile=False)
        paths["mobilenet_int8"].write_bytes(convert(model, quantize=True))
    recipes = {
        "float": (lambda: small_net(lambda x: x), False, True),
        "leaky_int8": (lambda: small_net(layers.LeakyReLU(negative_slope=0.1)), True, True),
        "rank5_int8": (
            lambda: small_net(lambda x: max_over_axis1(layers.Reshape((2, 8, 16, 8))(x))),
            True,
            True,
        ),
        "dynamic_int8": (lambda: small_net(lambda x: x), True, False),
        "exp_int8": (lambda: small_net(layers.Activation("exponential")), True, True),
        "grouped_int8": (lambda: small_net(layers.Conv2D(8, 3, groups=2, padding="same")), True, True),
    }
    for name, (make, quantize, fixed) in recipes.items():
        if not paths[name].exists():
            tf.keras.utils.set_random_seed(0)
            paths[name].write_bytes(convert(make(), quantize, fixed))
    if not paths["partly_float"].exists():  # SIN has no int8 kernel
        sin = layers.Lambda(lambda t: tf.math.sin(t))
        paths["partly_float"].write_bytes(convert(small_net(sin), True, float_fallback=True))
    paths["mobilenet_keras"] = keras_path
    return paths
