"""The libedgetpu stand-in through the real LiteRT interpreter, one test per behaviour.

Crashes and hangs run in a child process (they would take pytest down); refusals and
the working ``ok`` mode run in-process. The model is tests/helpers/edgetpu_model.py's
tiny ``edgetpu-custom-op`` graph, which only a delegate can run.
"""

from __future__ import annotations

import ctypes
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
from helpers import standin

pytest.importorskip("ai_edge_litert.interpreter")
from ai_edge_litert.interpreter import Interpreter, load_delegate  # noqa: E402

CHILD_TIMEOUT = 60.0

# The child prints a marker after each step, so a test can tell where it died.
CHILD = r"""
import sys
from ai_edge_litert.interpreter import Interpreter, load_delegate
lib, model = sys.argv[1], sys.argv[2]
print("loading", flush=True)
delegate = load_delegate(lib, {"device": "usb"})
print("created", flush=True)
interpreter = Interpreter(model_path=model, experimental_delegates=[delegate])
print("applied", flush=True)
interpreter.allocate_tensors()
interpreter.invoke()
print("invoked", flush=True)
"""

# Markers the child prints before the stage that misbehaves, and the first it must not reach.
REACHED = {"create": ("loading", "created"), "prepare": ("created", "applied"), "invoke": ("applied", "invoked")}


def _apply(monkeypatch: pytest.MonkeyPatch, env: Dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def _child_env(env: Dict[str, str]) -> Dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGETPU_STANDIN_")}
    base.update(env)
    base["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return base


def _run_child(lib: Path, model: Path, env: Dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, str(lib), str(model)],
        env=_child_env(env),
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
    )


def _interpreter(lib: Path, model: Path, options: Dict[str, str] | None = None) -> Interpreter:
    delegate = load_delegate(str(lib), options)
    interpreter = Interpreter(model_path=str(model), experimental_delegates=[delegate])
    interpreter.allocate_tensors()
    return interpreter


def _feed(interpreter: Interpreter) -> np.ndarray:
    detail = interpreter.get_input_details()[0]
    data = (np.arange(int(np.prod(detail["shape"]))) * 7 % 256).astype(np.uint8).reshape(detail["shape"])
    interpreter.set_tensor(detail["index"], data)
    return data


def _output(interpreter: Interpreter) -> np.ndarray:
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


# --- the model ---------------------------------------------------------------------------


def test_tiny_model_has_one_edgetpu_custom_op_and_uint8_io(tiny_model: Path) -> None:
    from compiler import tflite

    model = tflite.read(tiny_model)
    assert [c.name for c in model.operator_codes] == ["edgetpu-custom-op"]
    (graph,) = model.subgraphs
    assert len(graph.operators) == 1
    assert [(t.type, t.shape) for t in graph.tensors] == [("UINT8", (1, 8, 8, 3)), ("UINT8", (1, 10))]


def test_without_the_delegate_the_interpreter_fails_on_the_unresolved_custom_op(tiny_model: Path) -> None:
    with pytest.raises(RuntimeError, match="unresolved custom op: edgetpu-custom-op"):
        interpreter = Interpreter(model_path=str(tiny_model))
        interpreter.allocate_tensors()


# --- ok mode -----------------------------------------------------------------------------


def test_ok_mode_claims_the_custom_op_and_invoke_copies_the_input_prefix(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, standin_env)
    interpreter = _interpreter(standin_lib, tiny_model)
    data = _feed(interpreter)
    interpreter.invoke()
    out = _output(interpreter)
    assert out.dtype == np.uint8 and out.shape == (1, 10)
    assert out.ravel().tolist() == data.ravel()[:10].tolist()
    interpreter.invoke()
    assert _output(interpreter).tolist() == out.tolist()  # deterministic


def test_ok_mode_zeros_output_writes_zeros(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("ok", output="zeros")})
    interpreter = _interpreter(standin_lib, tiny_model)
    _feed(interpreter)
    interpreter.invoke()
    assert not _output(interpreter).any()


def test_ok_mode_invoke_takes_about_the_configured_latency(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("ok", latency_us=20_000)})
    interpreter = _interpreter(standin_lib, tiny_model)
    _feed(interpreter)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    assert 0.019 <= statistics.median(times) < 0.2


def test_ok_mode_default_latency_is_2500_us(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, standin_env)
    interpreter = _interpreter(standin_lib, tiny_model)
    _feed(interpreter)
    start = time.perf_counter()
    for _ in range(10):
        interpreter.invoke()
    per_invoke = (time.perf_counter() - start) / 10
    assert 0.0024 <= per_invoke < 0.05


def test_ok_mode_log_records_options_the_claimed_node_and_each_invoke(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("ok", latency_us=0)})
    interpreter = _interpreter(standin_lib, tiny_model, {"device": "usb:0"})
    interpreter.invoke()
    interpreter.invoke()
    lines = standin.read_log(Path(standin_env["EDGETPU_STANDIN_LOG"]))
    assert lines[0] == "create mode=ok stage=create options=1 device=usb:0"
    assert "prepare nodes=1 claimed=1" in lines
    assert [line.split()[1] for line in lines if line.startswith("invoke")] == ["1", "2"]


# --- edgetpu_c.h symbols via ctypes ------------------------------------------------------


def test_edgetpu_version_defaults_to_the_stock_16_string_and_follows_the_env_override(
    standin_lib: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = ctypes.CDLL(str(standin_lib))
    lib.edgetpu_version.restype = ctypes.c_char_p
    assert lib.edgetpu_version().decode() == standin.STOCK_16_VERSION
    monkeypatch.setenv("EDGETPU_STANDIN_VERSION", standin.SOURCE_BUILD_VERSION)
    assert lib.edgetpu_version().decode() == standin.SOURCE_BUILD_VERSION


class _Device(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("path", ctypes.c_char_p)]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, [(1, "/sys/bus/usb/devices/2-1")]),
        ("", []),
        ("pci:/dev/apex_0,usb:/sys/bus/usb/devices/1-1", [(0, "/dev/apex_0"), (1, "/sys/bus/usb/devices/1-1")]),
    ],
)
def test_edgetpu_list_devices_reports_the_configured_devices(
    standin_lib: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch, spec, expected
) -> None:
    if spec is not None:
        monkeypatch.setenv("EDGETPU_STANDIN_DEVICES", spec)
    lib = ctypes.CDLL(str(standin_lib))
    lib.edgetpu_list_devices.restype = ctypes.POINTER(_Device)
    lib.edgetpu_list_devices.argtypes = [ctypes.POINTER(ctypes.c_size_t)]
    lib.edgetpu_free_devices.argtypes = [ctypes.POINTER(_Device)]
    count = ctypes.c_size_t()
    devices = lib.edgetpu_list_devices(ctypes.byref(count))
    try:
        got = [(devices[i].type, devices[i].path.decode()) for i in range(count.value)]
    finally:
        lib.edgetpu_free_devices(devices)
    assert got == expected


# --- refuse: Python errors, in-process ---------------------------------------------------


def test_refuse_at_create_makes_load_delegate_raise_value_error_without_a_message_like_the_real_library(
    standin_lib: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("refuse")})
    with pytest.raises(ValueError) as caught:
        load_delegate(str(standin_lib))
    assert str(caught.value) == f"Failed to load delegate from {standin_lib}\n"
    assert standin.read_log(Path(standin_env["EDGETPU_STANDIN_LOG"]))[-1] == "refused: no Edge TPU"


def test_refuse_at_prepare_makes_interpreter_construction_raise_runtime_error(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("refuse", stage="prepare")})
    delegate = load_delegate(str(standin_lib))
    with pytest.raises(RuntimeError, match="prepare refused"):
        Interpreter(model_path=str(tiny_model), experimental_delegates=[delegate])


def test_refuse_at_invoke_makes_invoke_raise_runtime_error(
    standin_lib: Path, tiny_model: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, **standin.environment("refuse", stage="invoke")})
    interpreter = _interpreter(standin_lib, tiny_model)
    with pytest.raises(RuntimeError, match="invoke refused"):
        interpreter.invoke()


def test_unknown_mode_is_refused_at_create(
    standin_lib: Path, standin_env: Dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _apply(monkeypatch, {**standin_env, "EDGETPU_STANDIN_MODE": "explode"})
    with pytest.raises(ValueError, match="unknown EDGETPU_STANDIN_MODE"):
        load_delegate(str(standin_lib))


# --- crashes and hangs: child processes --------------------------------------------------


def test_ok_mode_child_runs_to_the_end(standin_lib: Path, tiny_model: Path, tmp_path: Path) -> None:
    proc = _run_child(standin_lib, tiny_model, standin.environment("ok", log=tmp_path / "log"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["loading", "created", "applied", "invoked"]


@pytest.mark.parametrize("stage", standin.STAGES)
@pytest.mark.parametrize(("mode", "signum"), [("segfault", signal.SIGSEGV), ("abort", signal.SIGABRT)])
def test_crash_modes_kill_the_child_with_their_signal_at_their_stage(
    standin_lib: Path, tiny_model: Path, tmp_path: Path, mode: str, signum: int, stage: str
) -> None:
    log = tmp_path / "log"
    proc = _run_child(standin_lib, tiny_model, standin.environment(mode, stage=stage, log=log))
    assert proc.returncode == -signum, (proc.returncode, proc.stderr[-2000:])
    last, never = REACHED[stage]
    printed = proc.stdout.split()
    assert printed[-1] == last and never not in printed
    assert standin.read_log(log)[-1] == mode


@pytest.mark.parametrize("stage", standin.STAGES)
def test_hang_mode_blocks_the_child_at_its_stage_until_killed(
    standin_lib: Path, tiny_model: Path, tmp_path: Path, stage: str
) -> None:
    log = tmp_path / "log"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(standin_lib), str(tiny_model)],
        env=_child_env(standin.environment("hang", stage=stage, log=log)),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline = time.monotonic() + CHILD_TIMEOUT
        while "hang" not in standin.read_log(log):
            assert proc.poll() is None, "child exited instead of hanging"
            assert time.monotonic() < deadline, "child never reached the hang"
            time.sleep(0.05)
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1.0)
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=CHILD_TIMEOUT)
    assert proc.returncode == -signal.SIGKILL
    last, never = REACHED[stage]
    printed = out.split()
    assert printed[-1] == last and never not in printed
