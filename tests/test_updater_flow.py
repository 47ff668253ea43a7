"""The updater's own flow: activation, health-check rollback, rollback orders, duplicates, imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.commands import signed
from helpers.fleet import make_release_dir, push_version, run_model, sample_inputs

from edge_agent.updating.state import ActiveRelease
from edge_agent.updating.updater import Updater
from registry.store import open_store
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key


class Recorder:
    def __init__(self) -> None:
        self.statuses: List[Dict[str, Any]] = []
        self.models: List[Dict[str, Any]] = []
        self.activated: List[Optional[str]] = []
        self.healthy = True

    def activate(self, release: Optional[ActiveRelease]) -> bool:
        if release is not None:
            run_model(release.cpu_model, sample_inputs(1))
        self.activated.append(release.version if release else None)
        return self.healthy


@pytest.fixture
def env(tmp_path: Path) -> Tuple[Ed25519PrivateKey, str, Updater, Recorder]:
    priv, pub = generate_keypair(tmp_path / "keys")
    key = load_private_key(priv)
    store = open_store(str(tmp_path / "store"))
    folder = make_release_dir(tmp_path / "build")
    for version in ("1", "2", "3"):
        push_version(store, key, folder, version)
    rec = Recorder()
    updater = Updater(
        tmp_path / "state",
        TrustedKeys.from_paths([pub]),
        "cam-1",
        14,
        rec.statuses.append,
        rec.activate,
        publish_model=rec.models.append,
        fleet="farm",
    )
    assert updater.start() is None
    return key, store.url, updater, rec


def cmd(
    key: Ed25519PrivateKey, store: str, version: str, action: str = "install", rollout: str = "", **kw: Any
) -> bytes:
    return signed(key, rollout or f"r{version}{action}", action, version, store, device="cam-1", **kw)


def test_install_reports_each_step_and_announces_the_new_model(
    env: Tuple[Ed25519PrivateKey, str, Updater, Recorder],
) -> None:
    key, store, updater, rec = env
    final = updater.process(cmd(key, store, "1"))
    assert final is not None and final["state"] == "active"
    assert [s["state"] for s in rec.statuses] == [
        "received",
        "downloading",
        "verifying",
        "validating",
        "activating",
        "health_check",
        "active",
    ]
    assert rec.models[-1]["version"] == "1" and rec.models[-1]["fleet"] == "farm"
    assert rec.models[-1]["digest"].startswith("sha256:")
    release = updater.active_release()
    assert release is not None and release.cpu_model.is_file() and release.labels.is_file()
    assert release.edgetpu_model is None


def test_failed_health_check_returns_to_the_previous_release(
    env: Tuple[Ed25519PrivateKey, str, Updater, Recorder],
) -> None:
    key, store, updater, rec = env
    updater.process(cmd(key, store, "1"))
    rec.healthy = False
    final = updater.process(cmd(key, store, "2"))
    assert final is not None and final["state"] == "rolled_back"
    assert "health check" in final["reason"]
    assert rec.activated[-2:] == ["2", "1"]
    release = updater.active_release()
    assert release is not None and release.version == "1"
    assert not (updater.state.root / "releases" / "digits" / "2").exists()


def test_rollback_order_returns_to_the_release_before(env: Tuple[Ed25519PrivateKey, str, Updater, Recorder]) -> None:
    key, store, updater, rec = env
    updater.process(cmd(key, store, "1"))
    updater.process(cmd(key, store, "2"))
    final = updater.process(cmd(key, store, "2", action="rollback"))
    assert final is not None and final["state"] == "rolled_back"
    assert final["active"] == {"name": "digits", "version": "1"}
    elsewhere = updater.process(cmd(key, store, "3", action="rollback"))
    assert elsewhere is not None and "nothing to roll back" in elsewhere["reason"]


def test_first_release_rolls_back_to_the_built_in_model(env: Tuple[Ed25519PrivateKey, str, Updater, Recorder]) -> None:
    key, store, updater, rec = env
    rec.healthy = False
    final = updater.process(cmd(key, store, "1"))
    assert final is not None and final["state"] == "rolled_back"
    assert updater.active_release() is None and rec.activated[-1] is None


def test_redelivered_command_is_handled_once(env: Tuple[Ed25519PrivateKey, str, Updater, Recorder]) -> None:
    key, store, updater, rec = env
    payload = cmd(key, store, "1")
    assert updater.process(payload) is not None
    count = len(rec.statuses)
    assert updater.process(payload) is None
    assert len(rec.statuses) == count


def test_signed_downgrade_is_allowed_only_when_asked(env: Tuple[Ed25519PrivateKey, str, Updater, Recorder]) -> None:
    key, store, updater, rec = env
    updater.process(cmd(key, store, "2"))
    refused = updater.process(cmd(key, store, "1"))
    assert refused is not None and refused["state"] == "rejected"
    final = updater.process(cmd(key, store, "1", rollout="downgrade", allow_downgrade=True))
    assert final is not None and final["state"] == "active"


def test_commands_run_on_the_worker_thread(env: Tuple[Ed25519PrivateKey, str, Updater, Recorder]) -> None:
    key, store, updater, rec = env
    updater.handle_command(cmd(key, store, "1"))
    updater.handle_command(cmd(key, store, "2"))
    updater.close(timeout=120)
    assert [s["state"] for s in rec.statuses if s["state"] == "active"] == ["active", "active"]
    release = updater.active_release()
    assert release is not None and release.version == "2"


def test_device_side_imports_stay_light() -> None:
    code = (
        "import sys, edge_agent.updating.updater, edge_agent.updating.validate, release_contract.fetch, "
        "release_contract.protocol; "
        "heavy = [m for m in ('tensorflow', 'oras', 'docker', 'requests') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
