"""The model updater probes a release's compiled model with the Edge TPU delegate (in a child,
through the libedgetpu stand-in) before it activates it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
from helpers import standin
from helpers.commands import signed
from helpers.fleet import make_release_dir, push_version

from edge_agent.inference.runtime import TpuSettings, probe_compiled_model
from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from registry.store import open_store
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key


def _updater(tmp_path: Path, tiny_model: Path, lib: Path, require_tpu: bool) -> tuple[Updater, bytes, List[Any]]:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    store = open_store(str(tmp_path / "store"))
    folder = make_release_dir(tmp_path / "build")
    shutil.copy(tiny_model, folder / "digits_edgetpu.tflite")
    push_version(store, key, folder, "1")
    activated: List[Optional[ActiveRelease]] = []
    statuses: List[Dict[str, Any]] = []
    tpu = TpuSettings(str(lib), probe_timeout=5)

    def activate(release: Optional[ActiveRelease]) -> bool:
        activated.append(release)
        return True

    updater = Updater(
        tmp_path / "state",
        TrustedKeys.from_paths([pub]),
        "cam-1",
        14,
        statuses.append,
        activate,
        probe=lambda compiled: probe_compiled_model(compiled, "usb" if require_tpu else "auto", "litert", tpu),
        require_tpu=require_tpu,
    )
    updater.start()
    command = signed(key, "r1", "install", "1", store.url, device="cam-1")
    return updater, command, activated


@pytest.mark.parametrize("mode", ["segfault", "hang", "refuse"])
def test_a_release_whose_compiled_model_fails_the_probe_is_rejected_when_a_tpu_is_required(
    tmp_path: Path, tiny_model: Path, standin_lib: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    for key, value in standin.environment(mode, stage="prepare").items():
        monkeypatch.setenv(key, value)
    updater, command, activated = _updater(tmp_path, tiny_model, standin_lib, require_tpu=True)
    final = updater.process(command)
    assert final is not None and final["state"] == "rejected"
    assert final["reason"].startswith("Edge TPU probe failed: Edge TPU runtime")
    assert activated == [] and updater.active_release() is None


def test_in_auto_a_release_that_fails_the_probe_is_activated_on_its_cpu_model(
    tmp_path: Path,
    tiny_model: Path,
    standin_lib: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for key, value in standin.environment("abort", stage="invoke").items():
        monkeypatch.setenv(key, value)
    updater, command, activated = _updater(tmp_path, tiny_model, standin_lib, require_tpu=False)
    final = updater.process(command)
    assert final is not None and final["state"] == "active"
    assert [r.version for r in activated if r] == ["1"]
    assert any("will run on its CPU model" in r.getMessage() and "SIGABRT" in r.getMessage() for r in caplog.records)


def test_a_release_whose_compiled_model_passes_the_probe_is_activated(
    tmp_path: Path, tiny_model: Path, standin_lib: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_MODE", "ok")
    updater, command, activated = _updater(tmp_path, tiny_model, standin_lib, require_tpu=True)
    final = updater.process(command)
    assert final is not None and final["state"] == "active"
    release = updater.active_release()
    assert release is not None and release.edgetpu_model is not None and activated == [release]
