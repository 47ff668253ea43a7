"""Where a model runs: the Edge TPU delegate path (real OSError here), CPU fallback, model checks."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge_agent.errors import ConfigError, DelegateError, ModelError
from edge_agent.inference.runtime import (
    TpuSettings,
    delegate_library,
    open_runtime,
    runtime_version,
    select_backend,
)
from release_contract.models import cpu_twin, is_edgetpu_model

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "digits_int8.tflite"
MISSING = ROOT / "tests" / "no-libedgetpu" / "libedgetpu.so.1"
#: no Edge TPU runtime, even on a machine that has one
NO_TPU = TpuSettings(library=str(MISSING))


@pytest.fixture
def compiled_pair(tmp_path: Path) -> Path:
    """A CPU model and a stand-in for its compiled twin (the CPU model plus the custom op's name,
    which is what marks a compiled model); returns the compiled one."""
    shutil.copy(DEMO, tmp_path / "digits.tflite")
    compiled = tmp_path / "digits_edgetpu.tflite"
    compiled.write_bytes(DEMO.read_bytes() + b"edgetpu-custom-op")
    return compiled


def test_a_missing_runtime_library_has_no_version():
    assert runtime_version(str(MISSING)) is None
    assert delegate_library() == "libedgetpu.so.1"


def test_compiled_model_falls_back_to_its_cpu_twin_with_one_warning(compiled_pair: Path, caplog):
    with caplog.at_level(logging.WARNING):
        rt = open_runtime(compiled_pair, device="auto", tpu=NO_TPU)
    assert rt.backend == "cpu"
    assert rt.model_path == compiled_pair.with_name("digits.tflite")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"Edge TPU runtime not found ({MISSING})" in warnings[0]
    assert "running the CPU model digits.tflite instead" in warnings[0]


def test_delegate_failure_is_the_real_oserror_translated(compiled_pair: Path):
    with pytest.raises(DelegateError) as info:
        open_runtime(compiled_pair, device="usb", tpu=NO_TPU)
    assert "install a libedgetpu that matches the interpreter" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)
    assert "libedgetpu.so.1" in str(info.value.__cause__)


# LiteRT's Delegate.__del__ raises on a half-built object when the library is missing: the
# reason runtime.load_edgetpu_delegate dlopens the library itself first.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_raw_load_delegate_raises_oserror_for_a_missing_library():
    backend = select_backend("litert")
    with pytest.raises((OSError, ValueError)):
        backend.load_delegate(str(MISSING), {"device": "usb"})


@pytest.mark.parametrize("device", ["usb", "usb:0", "pci", "pci:1", ":0"])
def test_a_tpu_asked_for_by_name_never_falls_back(compiled_pair: Path, device: str):
    with pytest.raises(DelegateError):
        open_runtime(compiled_pair, device=device, tpu=NO_TPU)


def test_compiled_model_without_cpu_twin_is_an_error(compiled_pair: Path):
    compiled_pair.with_name("digits.tflite").unlink()
    with pytest.raises(ModelError, match="no CPU model digits.tflite beside it"):
        open_runtime(compiled_pair, tpu=NO_TPU)


def test_device_cpu_uses_the_cpu_twin_of_a_compiled_model(compiled_pair: Path):
    rt = open_runtime(compiled_pair, device="cpu")
    assert rt.backend == "cpu" and rt.model_path.name == "digits.tflite"


def test_plain_model_with_a_tpu_device_switches_to_its_compiled_sibling_and_needs_the_tpu(compiled_pair: Path, caplog):
    caplog.set_level(logging.INFO, logger="edge_agent.inference.runtime")
    with pytest.raises(DelegateError):  # no Edge TPU here: the sibling needs the delegate, no CPU fallback
        open_runtime(compiled_pair.with_name("digits.tflite"), device="usb", tpu=NO_TPU)
    assert f"using the compiled model {compiled_pair}" in caplog.text


def test_plain_model_without_compiled_sibling_and_tpu_device_is_an_error():
    with pytest.raises(ModelError, match="not compiled for the Edge TPU"):
        open_runtime(DEMO, device="pci")


def test_invalid_device_and_runtime_names_are_config_errors():
    with pytest.raises(ConfigError):
        open_runtime(DEMO, device="gpu")
    with pytest.raises(ConfigError, match="tflite-runtime is not installed|invalid --runtime"):
        open_runtime(DEMO, runtime="tflite-runtime")


def test_runtime_describes_the_demo_model():
    rt = open_runtime(DEMO)
    assert rt.input_size == (32, 32) and rt.channels == 3
    assert rt.input_dtype == np.uint8 and rt.num_classes == 10
    assert not is_edgetpu_model(DEMO.read_bytes())
    assert cpu_twin(Path("a/m_edgetpu.tflite")) == Path("a/m.tflite")
    out = rt.invoke(np.zeros((1, 32, 32, 3), np.uint8))
    assert out.shape == (10,) and out.dtype == np.uint8


def test_directory_as_model_is_refused(tmp_path: Path):
    with pytest.raises(ModelError, match="directory"):
        open_runtime(tmp_path)


@pytest.mark.slow
def test_model_whose_input_is_not_an_image_is_refused(test_models):
    with pytest.raises(ModelError, match="not an image tensor"):
        open_runtime(test_models["vector"])


@pytest.mark.slow
def test_int8_and_grayscale_models_run(test_models):
    from edge_agent.inference.classifier import build_classifier
    from edge_agent.inference.images import load_image

    image = load_image(ROOT / "images" / "digit_5_0.png")
    for name, classes in (("int8_io", 5), ("gray", 4)):
        clf = build_classifier(test_models[name], None, k=classes)
        tensor, spec = clf.prepare(image)
        assert tensor.dtype == clf.runtime.input_dtype
        assert tensor.shape == clf.runtime.input_shape
        from edge_agent.inference.sources import Frame

        result = clf.classify(Frame(image, "x", 0, 0.0), tensor, spec)
        scores = [c.score for c in result.top_k]
        assert len(scores) == classes and abs(sum(scores) - 1.0) < 0.05


@pytest.mark.slow
def test_tensorflow_runtime_gives_the_same_scores_as_litert():
    tensor = np.full((1, 32, 32, 3), 90, np.uint8)
    litert = open_runtime(DEMO, runtime="litert")
    tf_rt = open_runtime(DEMO, runtime="tensorflow")
    assert tf_rt.interpreter_name == "tensorflow"
    assert np.array_equal(litert.invoke(tensor), tf_rt.invoke(tensor))
