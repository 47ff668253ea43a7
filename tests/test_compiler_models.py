"""Quantize tests on small real models built once with TensorFlow.

The builders run real TensorFlow conversion and cache the resulting ``.tflite`` files under
``.cache/compiler-tests/`` (keyed by TensorFlow version and a recipe version), so a rerun
reads them back. The builders are in ``helpers/compiler_models.py``, the fixtures in ``conftest.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.compiler_models import SIZE, small_net, write_digit_pngs

from compiler import calibration, tflite
from compiler.cli import main
from compiler.errors import CalibrationError, ModelSourceError
from compiler.inspect import inspect_file


@pytest.mark.slow
def test_quantize_keras_model_gives_uint8_batch1_model_and_fidelity(
    compiler_models: Dict[str, Path], digit_images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "mobilenet_int8.tflite"
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(compiler_models["mobilenet_keras"]),
            "-o",
            str(out),
            "--calib",
            str(digit_images),
            "--range",
            "[-1,1]",
            "--json",
        ],
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

    evals = write_digit_pngs(tmp_path / "eval", 4)
    images = calibration.list_images(digit_images)
    result = quantize.quantize(
        compiler_models["mobilenet_keras"],
        tmp_path / "m.tflite",
        images[:5],
        calibration.list_images(evals),
        calibration.Normalization(0.0, 255.0),
        io_type="int8",
    )
    assert result.fidelity is not None and result.fidelity.images == 4
    sg = tflite.read(result.output).subgraphs[0]
    assert sg.tensors[sg.inputs[0]].type == "INT8"


@pytest.mark.slow
def test_quantize_saved_model_directory(digit_images: Path, tmp_path: Path) -> None:
    import tensorflow as tf

    from compiler import quantize

    tf.keras.utils.set_random_seed(0)
    model = small_net(lambda x: x, size=SIZE)
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
    tf.saved_model.save(HubModule(small_net(lambda x: x, size=SIZE)), str(tmp_path / "hub"), signatures={})
    images = calibration.list_images(digit_images)
    with pytest.raises(ModelSourceError, match="--input-size"):
        quantize.load_float_model(tmp_path / "hub")
    result = quantize.quantize(
        tmp_path / "hub",
        tmp_path / "h.tflite",
        images[:3],
        images[3:5],
        calibration.Normalization(),
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
        [
            "quantize",
            str(compiler_models["mobilenet_keras"]),
            "--calib",
            "random",
            "--calib-count",
            "3",
            "-o",
            str(out),
        ],
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

    evals = write_digit_pngs(tmp_path / "eval", 3, size=16)
    images = calibration.list_images(digit_images)
    result = quantize.quantize(
        compiler_models["float"],
        tmp_path / "f_int8.tflite",
        images[:4],
        calibration.list_images(evals),
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

    conv = tf.lite.TFLiteConverter.from_keras_model(small_net(lambda x: x))
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
