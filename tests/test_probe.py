"""The Edge TPU probe: a runtime that crashes, hangs or refuses, seen through the real LiteRT
interpreter and the libedgetpu stand-in, becomes one line, and ``auto`` runs the CPU twin.

Library-level tests call open_runtime (the crash happens in the probe's child, never in
pytest); command-level tests run ``edge-agent classify`` / ``run`` as a user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
from helpers import standin

from edge_agent.errors import DelegateError
from edge_agent.inference.backends import select_backend
from edge_agent.inference.probe import ProbeVerdict, probe_delegate
from edge_agent.inference.runtime import TpuSettings, open_runtime

ROOT = Path(__file__).resolve().parent.parent
AGENT = [str(Path(sys.executable).with_name("edge-agent"))]
LITERT = select_backend("litert").label
FAILURES = [
    ("segfault", "create", "crashed (SIGSEGV while loading the delegate)"),
    ("abort", "prepare", "crashed (SIGABRT while applying the delegate)"),
    ("segfault", "invoke", "crashed (SIGSEGV while running one inference)"),
    ("hang", "invoke", "hung (no answer within 3 s while running one inference)"),
    ("refuse", "create", "found no usable Edge TPU (ValueError: Failed to load delegate"),
]


@pytest.fixture
def pair(tmp_path: Path, tiny_model: Path) -> Path:
    """A compiled model with its CPU twin and labels beside it, as a release ships them."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny_edgetpu.tflite")
    shutil.copy(ROOT / "models" / "digits_int8.tflite", folder / "tiny.tflite")
    shutil.copy(ROOT / "labels" / "digits.txt", folder / "labels.txt")
    return folder / "tiny_edgetpu.tflite"


def _use(monkeypatch: pytest.MonkeyPatch, mode: str, stage: str = "create") -> None:
    for key, value in standin.environment(mode, stage=stage, latency_us=0).items():
        monkeypatch.setenv(key, value)


@pytest.mark.parametrize(("mode", "stage", "said"), FAILURES)
def test_a_tpu_asked_for_by_name_fails_with_one_line_naming_runtime_and_interpreter(
    standin_lib: Path, pair: Path, monkeypatch: pytest.MonkeyPatch, mode: str, stage: str, said: str
) -> None:
    _use(monkeypatch, mode, stage)
    with pytest.raises(DelegateError) as info:
        open_runtime(pair, device="usb", tpu=TpuSettings(str(standin_lib), probe_timeout=3))
    message = str(info.value)
    assert "\n" not in message
    assert said in message
    assert standin.STOCK_16_VERSION in message or mode in ("segfault",) and stage == "create"
    assert LITERT in message and "edge-agent doctor" in message


@pytest.mark.parametrize(("mode", "stage", "said"), FAILURES)
def test_auto_runs_the_cpu_twin_with_one_warning_when_the_probe_fails(
    standin_lib: Path, pair: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode, stage, said
) -> None:
    _use(monkeypatch, mode, stage)
    with caplog.at_level("WARNING"):
        rt = open_runtime(pair, device="auto", tpu=TpuSettings(str(standin_lib), probe_timeout=3))
    assert rt.backend == "cpu" and rt.model_path.name == "tiny.tflite"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and said in warnings[0] and "running the CPU model tiny.tflite" in warnings[0]


def test_a_runtime_that_passes_the_probe_runs_the_compiled_model_in_process(
    standin_lib: Path, pair: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, "ok")
    rt = open_runtime(pair, device="usb", tpu=TpuSettings(str(standin_lib)))
    assert rt.backend == "edgetpu" and rt.model_path == pair
    data = (np.arange(8 * 8 * 3) % 256).astype(np.uint8).reshape(1, 8, 8, 3)
    assert rt.invoke(data).tolist() == data.ravel()[:10].tolist()


def test_ok_and_crash_verdicts_are_cached_and_a_hang_is_probed_again(
    standin_lib: Path, pair: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "probe-cache.json"

    def probe(digest: str) -> ProbeVerdict:
        return probe_delegate(
            str(standin_lib), str(standin_lib), pair, digest, "usb", "litert", LITERT, timeout=2, cache=cache
        )

    _use(monkeypatch, "ok")
    first = probe("sha256:a")
    _use(monkeypatch, "segfault")
    again = probe("sha256:a")  # same library, interpreter and model: the cached verdict
    assert first.ok and not first.cached and again.ok and again.cached and again.seconds == first.seconds
    crash = probe("sha256:b")
    assert crash.kind == "crash" and probe("sha256:b").cached
    _use(monkeypatch, "hang", "invoke")
    assert probe("sha256:c").kind == "hang" and not probe("sha256:c").cached


# --- the commands, as a user runs them ------------------------------------------------------


def _agent(args: List[str], env: Dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("EDGETPU_STANDIN_")}
    full.update(env)
    full["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([*AGENT, *args], env=full, cwd=cwd, capture_output=True, text=True, timeout=120)


def _agent_lines(stderr: str) -> List[str]:
    return [line for line in stderr.splitlines() if line.startswith(("edge-agent:", "Error:", "Traceback"))]


def _env(lib: Path, tmp_path: Path, mode: str, stage: str = "create") -> Dict[str, str]:
    return {
        **standin.environment(mode, stage=stage, latency_us=0),
        "EDGE_AGENT_EDGETPU_LIBRARY": str(lib),
        "EDGE_AGENT_STATE_DIR": str(tmp_path / "state"),
        "EDGE_AGENT_PROBE_TIMEOUT": "3",
    }


@pytest.mark.parametrize(("mode", "stage"), [("segfault", "prepare"), ("hang", "create"), ("refuse", "invoke")])
def test_classify_auto_goes_on_on_the_cpu_twin_and_a_named_tpu_exits_1(
    standin_lib: Path, pair: Path, tmp_path: Path, mode: str, stage: str
) -> None:
    args = ["classify", "-m", str(pair), "-i", str(ROOT / "images"), "-n", "3", "-o", "jsonl"]
    auto = _agent(args, _env(standin_lib, tmp_path, mode, stage), tmp_path)
    assert auto.returncode == 0, auto.stderr
    assert [json.loads(x)["backend"] for x in auto.stdout.splitlines()] == ["cpu"] * 3
    (warning,) = _agent_lines(auto.stderr)
    assert warning.startswith("edge-agent: WARNING: Edge TPU runtime") and "tiny.tflite" in warning
    named = _agent([*args, "--device", "usb"], _env(standin_lib, tmp_path, mode, stage), tmp_path)
    assert named.returncode == 1 and named.stdout == ""
    (error,) = _agent_lines(named.stderr)
    assert error.startswith("Error: Edge TPU runtime") and "core dumped" not in named.stderr


def test_an_accelerator_that_fails_mid_run_sends_auto_to_the_cpu_twin_and_stops_a_named_tpu(
    standin_lib: Path, pair: Path, tmp_path: Path
) -> None:
    args = ["classify", "-m", str(pair), "-i", str(ROOT / "images"), "-n", "4", "-o", "jsonl"]
    first = _agent([*args, "-d", "usb"], _env(standin_lib, tmp_path, "ok"), tmp_path)
    assert first.returncode == 0, first.stderr  # the verdict is now cached: later runs skip the probe
    assert {json.loads(x)["backend"] for x in first.stdout.splitlines()} == {"edgetpu"}
    unplugged = _env(standin_lib, tmp_path, "refuse", "invoke")
    auto = _agent(args, unplugged, tmp_path)
    assert auto.returncode == 0, auto.stderr
    assert [json.loads(x)["backend"] for x in auto.stdout.splitlines()] == ["cpu"] * 4
    (warning,) = _agent_lines(auto.stderr)
    assert "Edge TPU inference failed" in warning and "going on with the CPU model tiny.tflite" in warning
    named = _agent([*args, "-d", "usb"], unplugged, tmp_path)
    assert named.returncode == 1 and named.stdout == ""
    (error,) = _agent_lines(named.stderr)
    assert error.startswith("Error: Edge TPU inference failed") and "a service restarts" in error


def test_run_as_a_service_uses_the_cpu_twin_when_the_runtime_crashes_and_exits_1_for_a_named_tpu(
    standin_lib: Path, pair: Path, tmp_path: Path
) -> None:
    env = {**_env(standin_lib, tmp_path, "abort", "invoke"), "EDGE_AGENT_MODEL": str(pair)}
    env["EDGE_AGENT_INPUT"] = str(ROOT / "images" / "digit_3_0.png")
    auto = _agent(["run"], env, tmp_path)
    assert auto.returncode == 0, auto.stderr
    assert any("crashed (SIGABRT while running one inference)" in x for x in _agent_lines(auto.stderr))
    named = _agent(["run", "--device", "pci"], env, tmp_path)
    assert named.returncode == 1
    assert [x for x in _agent_lines(named.stderr) if x.startswith(("Error", "Traceback"))] == [
        next(x for x in _agent_lines(named.stderr) if x.startswith("Error: Edge TPU runtime"))
    ]
