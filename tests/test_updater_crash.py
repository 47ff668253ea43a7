"""Crash injection: the agent SIGKILLed at each step of an update restarts into a working model.

Each run: a device process on digits:1 receives the command for digits:2 and kills
itself (SIGKILL) at one step; a fresh process boots from the same state directory and
classifies the sample images with the release it finds; a third process handles the
same (retained, redelivered) command again.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

import pytest
from helpers.commands import signed
from helpers.fleet import BUILTIN_MODEL, ROOT, make_release_dir, push_version, run_model, sample_inputs

from registry.store import open_store
from release_contract.signing import generate_keypair, load_private_key

DEVICE = ROOT / "tests" / "helpers" / "fleet.py"
V1 = {"name": "digits", "version": "1"}
V2 = {"name": "digits", "version": "2"}


def device(state: Path, pub: Path, command: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(DEVICE), str(state), str(pub), str(command), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def report(proc: subprocess.CompletedProcess[str]) -> Dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """A store with digits:1 and :2, and a state directory already running digits:1."""
    root = tmp_path_factory.mktemp("crash")
    priv, pub = generate_keypair(root / "keys")
    key = load_private_key(priv)
    store = open_store(str(root / "store"))
    folder = make_release_dir(root / "build")
    push_version(store, key, folder, "1")
    push_version(store, key, folder, "2")
    for version in ("1", "2"):
        (root / f"cmd{version}.json").write_bytes(
            signed(key, f"rollout-{version}", "install", version, store.url, device="crash-dev")
        )
    first = report(device(root / "state", pub, root / "cmd1.json"))
    assert first["active"] == V1
    return {"root": root, "pub": pub, "state": root / "state", "cmd2": root / "cmd2.json"}


# (step the agent dies at, release a retry of the same command ends on)
STEPS = [
    ("download", V2),
    ("download_chunk", V2),
    ("verify", V2),
    ("validate", V2),
    ("swap", V2),
    ("health_check", V1),
    ("health_check_running", V1),
]


@pytest.mark.parametrize(("step", "after_retry"), STEPS, ids=[s for s, _ in STEPS])
def test_agent_killed_during_an_update_restarts_into_a_working_model(
    prepared: Dict[str, Path], tmp_path: Path, step: str, after_retry: Dict[str, str]
) -> None:
    state = tmp_path / "state"
    shutil.copytree(prepared["state"], state)
    expected: List[int] = run_model(BUILTIN_MODEL, sample_inputs(2))

    killed = device(state, prepared["pub"], prepared["cmd2"], "--kill-at", step)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    booted = report(device(state, prepared["pub"], prepared["cmd2"], "--boot"))
    assert booted["active"] in (V1, V2)
    assert booted["top1"] == expected  # the interpreter runs the release it booted into
    if step.startswith("health_check"):
        # a release that never passed its health check is not trusted after a restart
        assert booted["active"] == V1
        assert booted["states"] == ["rolled_back"]

    retried = report(device(state, prepared["pub"], prepared["cmd2"]))
    assert retried["active"] == after_retry
    assert retried["top1"] == expected
    assert not (state / "trial").exists()
    assert not list((state / "releases" / "digits").glob(".*staging*"))
