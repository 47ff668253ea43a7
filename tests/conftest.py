"""Shared fixtures: real brokers on free loopback ports, a clean environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator

import pytest
from helpers import edgetpu_model, standin
from helpers.compiler_models import build_all, cache_dir, write_digit_pngs
from helpers.mosquitto import Mosquitto

ROOT = Path(__file__).resolve().parent.parent

DEMO_MODEL = ROOT / "models" / "digits_int8.tflite"
DEMO_LABELS = ROOT / "labels" / "digits.txt"
DEMO_IMAGES = ROOT / "images"


#: A libedgetpu path that does not exist: tests that assume no Edge TPU use it, so they pass
#: on a machine that has one (tests marked ``edgetpu`` get the real library).
NO_LIBEDGETPU = ROOT / "tests" / "no-libedgetpu" / "libedgetpu.so.1"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """No test sees the developer's EDGE_AGENT_* / EDGE_REGISTRY / MQTT settings, and none but the
    ``edgetpu``-marked ones sees an installed Edge TPU runtime."""
    for key in list(os.environ):
        if key.startswith(("EDGE_AGENT_", "EDGE_REGISTRY", "EDGE_COMPILE_", "EDGETPU_STANDIN_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent/edge-tests-docker-config")  # never the developer's logins
    if request.node.get_closest_marker("edgetpu") is None:
        monkeypatch.setenv("EDGE_AGENT_EDGETPU_LIBRARY", str(NO_LIBEDGETPU))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A fresh Mosquitto broker on a free loopback port, stopped after the test."""
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def demo_model() -> Path:
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_labels() -> Path:
    return DEMO_LABELS


@pytest.fixture(scope="session")
def test_models():
    """Small models built with real TensorFlow (cached): int8_io, gray, vector."""
    from helpers.models import build_test_models

    return build_test_models()


@pytest.fixture(scope="session")
def compiler_models() -> Dict[str, Path]:
    """name -> path of the real converted test models (see ``_build_all``)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return build_all(cache_dir())


@pytest.fixture(scope="session")
def digit_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 15 digit PNGs (32x32 RGB)."""
    return write_digit_pngs(tmp_path_factory.mktemp("digits"), 15)


@pytest.fixture(scope="session")
def standin_lib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The libedgetpu stand-in (tests/stand_ins/libedgetpu), built once per session."""
    return standin.build(tmp_path_factory.mktemp("libedgetpu"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-node ``edgetpu-custom-op`` model that only the stand-in's delegate can run."""
    return edgetpu_model.write(tmp_path_factory.mktemp("model"))


@pytest.fixture
def standin_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Dict[str, str]]:
    """Clears inherited EDGETPU_STANDIN_* and gives a log path; returns the dict to fill."""
    for key in list(os.environ):
        if key.startswith("EDGETPU_STANDIN_"):
            monkeypatch.delenv(key)
    env: Dict[str, str] = {"EDGETPU_STANDIN_LOG": str(tmp_path / "standin.log")}
    yield env
