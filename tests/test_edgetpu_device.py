"""Tests that need a physical Coral Edge TPU: deselected by default (see pyproject's addopts).

On a device with a matched runtime pair (README, "Support matrix") and an Accelerator attached
(docs/hardware.md is the whole runbook):

    make models                                  # Google's MobileNet v2, compiled + CPU twin
    .venv/bin/python -m pytest -m edgetpu tests/test_edgetpu_device.py

They are never run on the development and CI machines, which have no Edge TPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.devices import find_edgetpus
from edge_agent.inference.images import load_image
from edge_agent.inference.runtime import runtime_version
from edge_agent.inference.sources import Frame

ROOT = Path(__file__).resolve().parent.parent
COMPILED = ROOT / "models" / "mobilenet_v2_1.0_224_quant_edgetpu.tflite"
LABELS = ROOT / "labels" / "imagenet_labels.txt"

pytestmark = pytest.mark.edgetpu


def test_an_edgetpu_and_its_runtime_are_found():
    assert runtime_version() is not None
    assert find_edgetpus(), "no USB or PCIe Edge TPU visible"
    result = CliRunner().invoke(main, ["devices"])
    assert "none found" not in result.stdout


def test_compiled_model_runs_on_the_edgetpu():
    assert COMPILED.exists(), "run `make models` first"
    classifier = build_classifier(COMPILED, LABELS, device="auto")
    assert classifier.runtime.backend == "edgetpu"
    image = load_image(ROOT / "images" / "digit_3_0.png")
    result = classifier.classify(Frame(image, "digit_3_0.png", 0, 0.0))
    assert result.backend == "edgetpu" and len(result.top_k) == 3
    assert result.inference_ms < 1000


def test_doctor_finds_the_configured_path_working():
    assert COMPILED.exists(), "run `make models` first"
    result = CliRunner().invoke(main, ["doctor", "-m", str(COMPILED)])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("OK      probe:") for line in result.stdout.splitlines())
