"""Item 6: a small model declaring huge tensors is refused from its flatbuffer, before any interpreter allocates."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers.edgetpu_model import build as build_compiled
from helpers.hostile_release import LABELS, MODEL, Device, Signer
from helpers.model_bombs import memory_bomb

from edge_agent.cli import main
from edge_agent.config import Config, load_config
from edge_agent.errors import ModelError
from edge_agent.inference.model_memory import DEFAULT_MAX_MODEL_MEMORY_MB, estimate_model_memory
from edge_agent.inference.runtime import open_runtime

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "models" / "digits_int8.tflite"


def test_memory_bomb_is_refused_by_classify_with_one_line_naming_the_tensor_and_the_limit(tmp_path: Path) -> None:
    bomb = memory_bomb(DEMO, tmp_path / "bomb.tflite")
    assert bomb.stat().st_size < 20_000
    result = CliRunner().invoke(main, ["classify", "-m", str(bomb), "-i", str(ROOT / "images" / "digit_7_0.png")])
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "1x16000x16000x3" in lines[0] and f"limit of {DEFAULT_MAX_MODEL_MEMORY_MB} MiB" in lines[0]


def test_estimate_counts_activations_and_not_weights() -> None:
    memory = estimate_model_memory(DEMO.read_bytes())
    # the digits model: 32x32x3 uint8 input, 16x16x16 activations...; its weights are constant buffers
    assert 3 * 32 * 32 <= memory.total_bytes < 64 * 1024
    assert memory.largest.shape == (1, 16, 16, 16)


def test_model_memory_limit_is_configurable_from_the_environment(tmp_path: Path) -> None:
    bomb = memory_bomb(DEMO, tmp_path / "bomb.tflite", side=600)  # two ~1 MiB tensors
    with pytest.raises(ModelError, match="limit of 1 MiB"):
        open_runtime(bomb, device="cpu", max_memory_mb=1)
    config = load_config(environ={"EDGE_AGENT_MAX_MODEL_MEMORY_MB": "64"})
    assert config.max_model_memory_mb == 64
    assert Config().max_model_memory_mb == DEFAULT_MAX_MODEL_MEMORY_MB


@pytest.mark.parametrize("cut", [20, 200, 5000])
def test_truncated_flatbuffer_is_a_model_error_not_a_crash(cut: int) -> None:
    with pytest.raises(ModelError):
        estimate_model_memory(DEMO.read_bytes()[:cut])


def test_release_with_a_compiled_memory_bomb_is_rejected_in_the_sandboxed_validation(tmp_path: Path) -> None:
    signer = Signer(tmp_path / "keys")
    store = tmp_path / "store"
    compiled = build_compiled(16000, 16000, 10)
    signer.release(
        store,
        "3",
        {"model.tflite": MODEL, "model_edgetpu.tflite": compiled, "labels.txt": LABELS},
        {"cpu_model": "model.tflite", "edgetpu_model": "model_edgetpu.tflite", "labels": "labels.txt"},
    )
    device = Device(tmp_path / "state", signer)
    final = device.install(signer.command("3", str(store)))
    assert final["state"] == "rejected"
    assert final["reason"].startswith("validation failed: ") and "model_edgetpu.tflite needs about" in final["reason"]
    assert device.updater.active_release() is None


def test_release_whose_compiled_model_is_not_compiled_is_rejected(tmp_path: Path) -> None:
    signer = Signer(tmp_path / "keys")
    store = tmp_path / "store"
    signer.release(
        store,
        "3",
        {"model.tflite": MODEL, "model_edgetpu.tflite": MODEL + b"\0", "labels.txt": LABELS},
        {"cpu_model": "model.tflite", "edgetpu_model": "model_edgetpu.tflite", "labels": "labels.txt"},
    )
    final = Device(tmp_path / "state", signer).install(signer.command("3", str(store)))
    assert final["state"] == "rejected" and "is not compiled for the Edge TPU" in final["reason"]


def test_release_with_a_sound_compiled_model_passes_validation(tmp_path: Path) -> None:
    signer = Signer(tmp_path / "keys")
    store = tmp_path / "store"
    signer.release(
        store,
        "3",
        {"model.tflite": MODEL, "model_edgetpu.tflite": build_compiled(32, 32, 10), "labels.txt": LABELS},
        {"cpu_model": "model.tflite", "edgetpu_model": "model_edgetpu.tflite", "labels": "labels.txt"},
    )
    final = Device(tmp_path / "state", signer).install(signer.command("3", str(store)))
    assert final["state"] == "active", final
