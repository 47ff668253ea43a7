"""Small real models for the compiler tests, built once with TensorFlow, and quantize tests.

The builders run real TensorFlow conversion and cache the resulting ``.tflite`` files under
``.cache/compiler-tests/`` (keyed by TensorFlow version and a recipe version), so a rerun
reads them back. Other ``test_compiler_*`` modules import the fixtures from here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import pytest
from click.testing import CliRunner

from compiler import calibration, tflite
from compiler.cli import main
from compiler.errors import CalibrationError, ModelSourceError
from compiler.inspect import inspect_file

ROOT = Path(__file__).resolve().parent.parent
RECIPE_VERSION = "5"
SIZE = 32


def _cache_dir() -> Path:
    import tensorflow as tf

    path = ROOT / ".cache" / "compiler-tests" / f"tf{tf.__version__}-r{RECIPE_VERSION}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _write_digit_pngs(folder: Path, count: int, size: int = SIZE) -> Path:
    """sklearn's 8x8 digits, scaled to ``size`` RGB PNGs: a tiny, real image set."""
    from PIL import Image
    from sklearn.datasets import load_digits

    folder.mkdir(parents=True, exist_ok=True)
    digits = load_digits().images[:count]
    for i, img in enumerate(digits):
        pixels = (img * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels).convert("RGB").resize((size, size)).save(folder / f"digit_{i:03d}.png")
    return folder


def _convert(keras_model: object, quantize: bool, fixed_batch: bool = True, float_fallback: bool = False) -> bytes:
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


def _mobilenet(path: Path) -> None:
    import tensorflow as tf

    model = tf.keras.applications.MobileNetV2(
        input_shape=(SIZE, SIZE, 3), alpha=0.35, weights=None, classes=10
    )
    model.save(path)


def _small_net(middle: Callable[[object], object], size: int = 16) -> object:
    """conv -> ``middle`` -> conv -> pooling -> dense: the op under test sits mid-graph."""
    import tensorflow as tf

    layers = tf.keras.layers
    inp = tf.keras.Input((size, size, 3))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = middle(x)
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, layers.Dense(4)(x))


def _max_over_axis1(x: object) -> object:
    """REDUCE_MAX over axis 1 of a 5-D tensor: an Edge TPU op on a tensor of rank > 3."""
    import tensorflow as tf

    return tf.keras.layers.Lambda(lambda t: tf.reduce_max(t, axis=1))(x)


def _build_all(cache: Path) -> Dict[str, Path]:
    import tensorflow as tf

    layers = tf.keras.layers
    paths = {
        name: cache / f"{name}.tflite"
        for name in (
            "mobilenet_int8", "float", "leaky_int8", "rank5_int8", "dynamic_int8", "exp_int8", "grouped_int8",
            "partly_float",
        )
    }
    keras_path = cache / "mobilenet.keras"
    if not keras_path.exists():
        _mobilenet(keras_path)
    if not paths["mobilenet_int8"].exists():
        model = tf.keras.models.load_model(keras_path, compile=False)
        paths["mobilenet_int8"].write_bytes(_convert(model, quantize=True))
    recipes = {
        "float": (lambda: _small_net(lambda x: x), False, True),
        "leaky_int8": (lambda: _small_net(layers.LeakyReLU(negative_slope=0.1)), True, True),
        "rank5_int8": (
            lambda: _small_net(lambda x: _max_over_axis1(layers.Reshape((2, 8, 16, 8))(x))),
            True,
            True,
        ),
        "dynamic_int8": (lambda: _small_net(lambda x: x), True, False),
        "exp_int8": (lambda: _small_net(layers.Activation("exponential")), True, True),
        "grouped_int8": (lambda: _small_net(layers.Conv2D(8, 3, groups=2, padding="same")), True, True),
    }
    for name, (make, quantize, fixed) in recipes.items():
        if not paths[name].exists():
            tf.keras.utils.set_random_seed(0)
            paths[name].write_bytes(_convert(make(), quantize, fixed))
    if not paths["partly_float"].exists():  # SIN has no int8 kernel
        sin = layers.Lambda(lambda t: tf.math.sin(t))
        paths["partly_float"].write_bytes(_convert(_small_net(sin), True, float_fallback=True))
    paths["mobilenet_keras"] = keras_path
    return paths


@pytest.fixture(scope="session")
def compiler_models() -> Dict[str, Path]:
    """name -> path of the real converted test models (see ``_build_all``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return _build_all(_cache_dir())


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 15 digit PNGs (32x32 RGB)."""
    return _write_digit_pngs(tmp_path_factory.mktemp("digits"), 15)


@pytest.mark.slow
def test_quantize_keras_model_gives_uint8_batch1_model_and_fidelity(
    compiler_models: Dict[str, Path], digit_images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mobilenet_int8.tflite"
    result = CliRunner().invoke(
        main,
        ["quantize", str(compiler_models["mobilenet_keras"]), "-o", str(out), "--calib", str(digit_images),
         "--range", "[-1,1]", "--json"],
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["calibration_images"] == 12  # 3 of 15 held back for the fidelity check
    assert payload["fidelity"]["images"] == 3
    assert 0.0 <= payload["fidelity"]["top1_agreement"] <= 1.0
    assert payload["fidelity"]["mean_abs_diff"] < 0.1  # softmax scores: int8 follows float closely
    model = tflite.read(out)
    sg = model.subgraphs[0]
    assert sg.tensors[sg.inputs[0]].type == "UINT8"
    assert sg.tensors[sg.outputs[0]].type == "UINT8"
    assert sg.tensors[sg.inputs[0]].shape_signature == (1, SIZE, SIZE, 3)


@pytest.mark.slow
def test_quantize_int8_io_with_separate_eval_folder(
    compiler_models: Dict[str, Path], digit_images: Path, tmp_path: Path
) -> None:
    from compiler import quantize

    evals = _write_digit_pngs(tmp_path / "eval", 4)
    images = calibration.list_images(digit_images)
    result = quantize.quantize(
        compiler_models["mobilenet_keras"], tmp_path / "m.tflite", images[:5], calibration.list_images(evals),
        calibration.Normalization(0.0, 255.0), io_type="int8",
    )
    assert result.fidelity is not None and result.fidelity.images == 4
    sg = tflite.read(result.output).subgraphs[0]
    assert sg.tensors[sg.inputs[0]].type == "INT8"


@pytest.mark.slow
def test_quantize_saved_model_directory(digit_images: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    from compiler import quantize

    tf.keras.utils.set_random_seed(0)
    model = _small_net(lambda x: x, size=SIZE)
    model.export(str(tmp_path / "saved"))  # type: ignore[attr-defined]
    images = calibration.list_images(digit_images)
    result = quantize.quantize(
        tmp_path / "saved", tmp_path / "s.tflite", images[:4], images[4:6], calibration.Normalization()
    )
    assert result.input_shape == (SIZE, SIZE, 3)
    assert result.fidelity is not None and result.fidelity.top1_agreement >= 0.5


@pytest.mark.slow
def test_quantize_hub_style_saved_model_needs_and_uses_input_size(digit_images: Path, tmp_path: Path) -> None:
    """A TF Hub image model: no signature, a traced ``__call__`` on any image size."""
    import tensorflow as tf

    from compiler import quantize

    class HubModule(tf.Module):
        def __init__(self, model: object) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x: object) -> object:
            return self.model(tf.image.resize(x, (SIZE, SIZE)), training=False)  # type: ignore[operator]

    tf.keras.utils.set_random_seed(0)
    tf.saved_model.save(HubModule(_small_net(lambda x: x, size=SIZE)), str(tmp_path / "hub"), signatures={})
    images = calibration.list_images(digit_images)
    with pytest.raises(ModelSourceError, match="--input-size"):
        quantize.load_float_model(tmp_path / "hub")
    result = quantize.quantize(
        tmp_path / "hub", tmp_path / "h.tflite", images[:3], images[3:5], calibration.Normalization(),
        input_size=(48, 48),
    )
    assert result.input_shape == (48, 48, 3)
    sg = tflite.read(result.output).subgraphs[0]
    assert sg.tensors[sg.inputs[0]].shape_signature == (1, 48, 48, 3)


@pytest.mark.slow
def test_quantize_refuses_to_calibrate_without_images(compiler_models: Dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    missing = runner.invoke(main, ["quantize", str(compiler_models["mobilenet_keras"])])
    assert missing.exit_code == 2 and "--calib random" in missing.output
    none = runner.invoke(main, ["quantize", str(compiler_models["mobilenet_keras"]), "--calib", str(empty)])
    assert none.exit_code == 2 and "no images in" in none.output
    assert "Traceback" not in none.output


@pytest.mark.slow
def test_quantize_with_random_calibration_warns_accuracy_is_meaningless(
    compiler_models: Dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "r.tflite"
    result = CliRunner().invoke(
        main,
        ["quantize", str(compiler_models["mobilenet_keras"]), "--calib", "random", "--calib-count", "3",
         "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "meaningless" in result.stderr
    assert "fidelity: not measured" in result.stdout
    assert tflite.read(out).subgraphs[0].tensors[0].type in ("UINT8", "INT8")


@pytest.mark.slow
def test_float_tflite_with_float32_weights_is_quantized(
    compiler_models: Dict[str, Path], digit_images: Path, tmp_path: Path
) -> None:
    from compiler import quantize

    evals = _write_digit_pngs(tmp_path / "eval", 3, size=16)
    images = calibration.list_images(digit_images)
    result = quantize.quantize(
        compiler_models["float"], tmp_path / "f_int8.tflite", images[:4], calibration.list_images(evals),
        calibration.Normalization(),
    )
    assert result.input_shape == (16, 16, 3)
    assert result.fidelity is not None and result.fidelity.images == 3
    report = inspect_file(result.output)
    assert report.quantized and report.compilable


@pytest.mark.slow
def test_tflite_that_cannot_be_requantized_names_the_source_to_give(
    compiler_models: Dict[str, Path], tmp_path: Path
) -> None:
    import tensorflow as tf

    from compiler import quantize

    conv = tf.lite.TFLiteConverter.from_keras_model(_small_net(lambda x: x))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    fp16 = tmp_path / "fp16.tflite"
    fp16.write_bytes(conv.convert())
    with pytest.raises(ModelSourceError, match=r"FLOAT16 weights .* Keras \(.keras/.h5\) or SavedModel"):
        quantize.load_float_model(fp16)
    with pytest.raises(ModelSourceError, match="already integer-quantized"):
        quantize.load_float_model(compiler_models["mobilenet_int8"])


def test_normalization_presets_and_conflicts() -> None:
    assert calibration.Normalization.from_options("[0,1]", None, None) == calibration.Normalization(0.0, 255.0)
    norm = calibration.Normalization.from_options("[-1,1]", None, None)
    assert norm.apply(np.array([0, 255], dtype=np.uint8)).tolist() == [-1.0, 1.0]
    with pytest.raises(CalibrationError, match="not both"):
        calibration.Normalization.from_options("[0,1]", 1.0, None)
    with pytest.raises(CalibrationError, match="std"):
        calibration.Normalization.from_options(None, 0.0, 0.0)


def test_holdout_keeps_every_fifth_image_for_evaluation() -> None:
    images = [Path(f"{i}.png") for i in range(10)]
    calib, held = calibration.split_holdout(images)
    assert held == [Path("4.png"), Path("9.png")]
    assert len(calib) == 8 and not set(calib) & set(held)
    assert calibration.split_holdout(images[:1]) == (images[:1], [])
