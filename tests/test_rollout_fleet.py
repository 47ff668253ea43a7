"""Rollouts to fleets of simulated devices over a real Mosquitto, from the local and OCI stores."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional, Set, Tuple

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers.commands import signed
from helpers.fleet import SimDevice, make_release_dir, push_version, sample_inputs
from helpers.mosquitto import Mosquitto
from helpers.registry_server import RegistryServer
from helpers.subscriber import Subscriber

from registry.cli import main
from registry.rollout import Controller, load_state, new_rollout
from registry.store import open_store
from release_contract.signing import TrustedKeys, generate_keypair, load_private_key
from release_contract.topics import fleet_topic

V1 = {"name": "digits", "version": "1"}


class Fleet:
    """``count`` simulated devices sharing one broker, each with its own id, state and client."""

    def __init__(
        self,
        root: Path,
        broker: Mosquitto,
        pub: Path,
        count: int,
        fleet: str = "farm",
        fail_health_for: Optional[Set[str]] = None,
        seed_state: Optional[Path] = None,
    ) -> None:
        trusted = TrustedKeys.from_paths([pub])
        inputs = sample_inputs(2)
        self.devices: List[SimDevice] = []
        for i in range(count):
            state = root / f"dev-{i:03d}"
            if seed_state is not None:
                shutil.copytree(seed_state, state)
            self.devices.append(
                SimDevice(
                    f"dev-{i:03d}",
                    state,
                    broker.host,
                    broker.port,
                    trusted,
                    fleet=fleet,
                    fail_health_for=fail_health_for,
                    inputs=inputs,
                )
            )
        watcher = Subscriber(broker.host, broker.port, "edgetpu/+/model")
        for device in self.devices:
            device.start()
        # liveness only: every device has announced itself before the controller looks for them
        assert watcher.wait_until(lambda s: len({t for t, _p, _r in s.messages}) >= count, timeout=120)
        watcher.client.disconnect()
        watcher.client.loop_stop()

    def stop(self) -> None:
        for device in self.devices:
            device.stop()


@pytest.fixture
def keys(tmp_path: Path) -> Tuple[Ed25519PrivateKey, Path]:
    priv, pub = generate_keypair(tmp_path / "keys")
    return load_private_key(priv), pub


def seeded_state(root: Path, key: Ed25519PrivateKey, pub: Path, store_url: str) -> Path:
    """A device state directory that runs digits:1, to copy into every device."""
    from edge_agent.updating.updater import Updater

    state = root / "seed"
    updater = Updater(state, TrustedKeys.from_paths([pub]), "seed", 14, lambda m: None, lambda r: True)
    updater.start()
    final = updater.process(signed(key, "seed", "install", "1", store_url, device="seed"))
    assert final is not None and final["state"] == "active"
    return state


@pytest.mark.slow
def test_fleet_of_50_devices_all_end_active_on_the_new_release(
    tmp_path: Path, mosquitto: Mosquitto, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    fleet = Fleet(tmp_path / "devices", mosquitto, pub, 50)
    controller = Controller(mosquitto.url, key, tmp_path / "ctl")
    controller.connect()
    try:
        targets = controller.discover("edgetpu", "farm")
        assert len(targets) == 50
        state = new_rollout(
            "r1",
            "digits",
            "1",
            store.url,
            "edgetpu",
            "farm",
            targets,
            canary_pct=10,
            wave_size=25,
            abort_above_pct=10,
            wave_timeout=300,
        )
        assert [len(w) for w in state.waves] == [5, 25, 20]
        final = controller.run(state)
    finally:
        controller.close()
        fleet.stop()
    assert final.status == "succeeded", final.reason
    assert final.counts()["active"] == 50
    for device in fleet.devices:
        assert device.active() == V1
        assert device.running is not None and device.running.version == "1"
    fleet_cmd = Subscriber(mosquitto.host, mosquitto.port, fleet_topic("edgetpu", "farm"))
    assert fleet_cmd.wait_until(lambda s: bool(s.messages), timeout=30)
    assert json.loads(fleet_cmd.messages[0][1])["version"] == "1" and fleet_cmd.messages[0][2]
    shown = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path / "ctl")])
    assert shown.exit_code == 0 and "succeeded" in shown.output and "active: 50" in shown.output


@pytest.mark.slow
def test_failing_canary_wave_aborts_and_every_touched_device_returns_to_the_old_release(
    tmp_path: Path, mosquitto: Mosquitto, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    folder = make_release_dir(tmp_path / "build")
    push_version(store, key, folder, "1")
    push_version(store, key, folder, "2")
    seed = seeded_state(tmp_path, key, pub, store.url)
    fleet = Fleet(tmp_path / "devices", mosquitto, pub, 50, fail_health_for={"2"}, seed_state=seed)
    controller = Controller(mosquitto.url, key, tmp_path / "ctl")
    controller.connect()
    try:
        targets = controller.discover("edgetpu", "farm")
        state = new_rollout(
            "r2",
            "digits",
            "2",
            store.url,
            "edgetpu",
            "farm",
            targets,
            canary_pct=10,
            wave_size=25,
            abort_above_pct=10,
            wave_timeout=300,
        )
        final = controller.run(state)
    finally:
        controller.close()
        fleet.stop()
    assert final.status == "aborted"
    assert "above the 10% threshold" in final.reason
    assert sorted(final.sent) == sorted(final.waves[0]) and len(final.sent) == 5
    touched = set(final.sent)
    for device in fleet.devices:
        assert device.active() == V1, device.device_id
        assert device.running is not None and device.running.version == "1"
        assert not (device.updater.state.root / "releases" / "digits" / "2").exists()
        seen = [s for s in device.statuses if s.get("rollout") == "r2"]
        if device.device_id in touched:
            assert seen[-1]["state"] == "rolled_back" and seen[-1]["action"] == "rollback"
        else:
            assert seen == []
    assert final.counts()["rolled_back"] == 5


def test_rollout_resumes_after_the_controller_is_killed(
    tmp_path: Path, mosquitto: Mosquitto, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    fleet = Fleet(tmp_path / "devices", mosquitto, pub, 8)
    ctl = tmp_path / "ctl"
    args = [
        sys.executable,
        "-m",
        "registry.cli",
        "rollout",
        "digits:1",
        "--fleet",
        "farm",
        "--canary",
        "10",
        "--wave-size",
        "1",
        "--key",
        str(tmp_path / "keys" / "signing.key"),
        "--broker",
        mosquitto.url,
        "--state-dir",
        str(ctl),
        "--store",
        store.url,
    ]
    try:
        first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # liveness: wait until the rollout is under way
            files = list((ctl / "rollouts").glob("*.json")) if (ctl / "rollouts").is_dir() else []
            if files and len(load_state(ctl).sent) >= 2:
                break
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        interrupted = load_state(ctl)
        assert interrupted.status == "running" and len(interrupted.sent) < 8
        resumed = subprocess.run(
            args[:3]
            + [
                "rollout",
                "--resume",
                "last",
                "--key",
                args[args.index("--key") + 1],
                "--broker",
                mosquitto.url,
                "--state-dir",
                str(ctl),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
    finally:
        fleet.stop()
    assert resumed.returncode == 0, resumed.stderr
    assert "succeeded" in resumed.stdout
    final = load_state(ctl)
    assert final.id == interrupted.id and final.status == "succeeded"
    assert all(device.active() == V1 for device in fleet.devices)


def test_rollout_from_the_oci_registry(
    tmp_path: Path, mosquitto: Mosquitto, keys: Tuple[Ed25519PrivateKey, Path]
) -> None:
    key, pub = keys
    server = RegistryServer(tmp_path / "oci").start()
    try:
        store = open_store(server.store_url("models"))
        push_version(store, key, make_release_dir(tmp_path / "build"), "1")
        fleet = Fleet(tmp_path / "devices", mosquitto, pub, 5)
        ids = ",".join(d.device_id for d in fleet.devices)
        res = CliRunner().invoke(
            main,
            [
                "rollout",
                "digits:1",
                "--devices",
                ids,
                "--key",
                str(tmp_path / "keys" / "signing.key"),
                "--broker",
                mosquitto.url,
                "--state-dir",
                str(tmp_path / "ctl"),
                "--store",
                store.url,
            ],
        )
        fleet.stop()
    finally:
        server.stop()
    assert res.exit_code == 0, res.output
    assert "active: 5" in res.output
    assert all(device.active() == V1 for device in fleet.devices)


def test_rollout_cli_errors_are_one_line(tmp_path: Path, keys: Tuple[Ed25519PrivateKey, Path]) -> None:
    key, pub = keys
    store = open_store(str(tmp_path / "store"))
    push_version(store, key, make_release_dir(tmp_path / "build"), "1")
    base = [
        "rollout",
        "digits:1",
        "--devices",
        "a",
        "--key",
        str(tmp_path / "keys" / "signing.key"),
        "--state-dir",
        str(tmp_path / "ctl"),
        "--store",
        store.url,
    ]
    from helpers.mosquitto import free_port

    down = CliRunner().invoke(main, base + ["--broker", f"mqtt://127.0.0.1:{free_port()}"])
    assert down.exit_code == 1 and "cannot reach the MQTT broker" in down.output
    missing = CliRunner().invoke(
        main,
        [
            "rollout",
            "digits:7",
            "--devices",
            "a",
            "--key",
            str(tmp_path / "keys" / "signing.key"),
            "--store",
            store.url,
        ],
    )
    assert missing.exit_code == 1 and "push it first" in missing.output
    open_store(store.url).yank("digits", "1")
    yanked = CliRunner().invoke(
        main,
        [
            "rollout",
            "digits:1",
            "--devices",
            "a",
            "--key",
            str(tmp_path / "keys" / "signing.key"),
            "--store",
            store.url,
        ],
    )
    assert yanked.exit_code == 1 and "is yanked" in yanked.output
    nothing = CliRunner().invoke(main, ["status", "--state-dir", str(tmp_path / "none")])
    assert nothing.exit_code == 1 and "no rollout recorded" in nothing.output
