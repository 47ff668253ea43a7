"""TF Hub models: SavedModel folders on disk quantize offline; handles are downloaded, or fail in one line.

The SavedModels are written here with TensorFlow; nothing is downloaded. "No network" is a
proxy on a closed loopback port, so a download attempt fails at once and never leaves the machine.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers.compiler_models import SIZE, small_net

from compiler import hub
from compiler.cli import main
from compiler.errors import ModelSourceError


def quantize(*args: str) -> Result:
    return CliRunner().invoke(main, ["quantize", *args], catch_exceptions=False)


def one_line(res: Result) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1 and "Traceback" not in res.output, res.output
    return lines[0]


def write_hub_module(folder: Path) -> None:
    """A TF Hub style classifier: a tf.Module whose ``__call__`` returns class probabilities, no signature."""
    import tensorflow as tf

    class HubModule(tf.Module):
        def __init__(self, model: object) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32)])
        def __call__(self, x: object) -> object:
            return tf.nn.softmax(self.model(x, training=False))  # type: ignore[operator]

    tf.keras.utils.set_random_seed(0)
    tf.saved_model.save(HubModule(small_net(lambda x: x, size=SIZE)), str(folder), signatures={})


def test_hub_handles_and_urls_are_told_apart_from_paths() -> None:
    assert hub.kaggle_handle("google/mobilenet-v2/tensorFlow2/100-224-classification/2") == (
        "google/mobilenet-v2/tensorFlow2/100-224-classification/2"
    )
    assert hub.kaggle_handle("https://www.kaggle.com/models/google/mobilenet-v2/TensorFlow2/100-224-classification/2")
    assert hub.is_hub_reference("https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5")
    for path in ("model.keras", "saved_model/", "build/a/b.tflite", "/abs/model", "a/b/c"):
        assert not hub.is_hub_reference(path)


def test_a_downloaded_folder_without_a_savedmodel_is_refused(tmp_path: Path) -> None:
    (tmp_path / "one" / "inner").mkdir(parents=True)
    (tmp_path / "one" / "inner" / "saved_model.pb").write_bytes(b"")
    assert hub.saved_model_folder(tmp_path / "one", "x") == tmp_path / "one" / "inner"
    with pytest.raises(ModelSourceError, match="no TensorFlow SavedModel"):
        hub.saved_model_folder(tmp_path, "x")


def test_a_kaggle_handle_without_a_network_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, f"http://127.0.0.1:{port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out" / "m.tflite"
    line = one_line(quantize("google/mobilenet-v2/tensorFlow2/100-224-classification/2", "-o", str(out)))
    assert "cannot download" in line and "SavedModel folder" in line
    assert not out.parent.exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorflow_hub") is not None, reason="tensorflow_hub is installed")
def test_a_tfhub_url_without_tensorflow_hub_says_what_to_give_instead(tmp_path: Path) -> None:
    url = "https://tfhub.dev/google/imagenet/mobilenet_v2_100_224/classification/5"
    line = one_line(quantize(url, "-o", str(tmp_path / "m.tflite")))
    assert "tensorflow_hub" in line and "Kaggle Models handle" in line
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_a_hub_savedmodel_with_a_serving_signature_quantizes_offline(tmp_path: Path) -> None:
    import tensorflow as tf

    write_hub_module(tmp_path / "hub")
    module = tf.saved_model.load(str(tmp_path / "hub"))
    serving = module.__call__.get_concrete_function(tf.TensorSpec([None, SIZE, SIZE, 3], tf.float32))
    tf.saved_model.save(module, str(tmp_path / "classifier"), signatures={"serving_default": serving})
    out = tmp_path / "classifier_int8.tflite"
    res = quantize(str(tmp_path / "classifier"), "-o", str(out), "--calib", "random", "--calib-count", "4")
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[4:8] == b"TFL3"


@pytest.mark.slow
def test_a_hub_savedmodel_wrapped_as_a_keras_layer_quantizes_offline(tmp_path: Path) -> None:
    import tensorflow as tf

    write_hub_module(tmp_path / "hub")
    loaded = tf.saved_model.load(str(tmp_path / "hub"))

    class HubLayer(tf.keras.layers.Layer):  # what hub.KerasLayer does: call the module
        def __init__(self, module: object) -> None:
            super().__init__()
            self.module = module

        def call(self, x: object) -> object:
            return self.module(x)  # type: ignore[operator]

    inputs = tf.keras.Input((SIZE, SIZE, 3))
    tf.keras.Model(inputs, HubLayer(loaded)(inputs)).export(str(tmp_path / "wrapped"))
    out = tmp_path / "wrapped_int8.tflite"
    res = quantize(str(tmp_path / "wrapped"), "-o", str(out), "--calib", "random", "--calib-count", "4")
    assert res.exit_code == 0, res.output
    assert f"input {SIZE}x{SIZE}x3" in res.output
