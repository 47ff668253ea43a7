"""Installing on a device as people do today: a virtualenv under /opt (PEP 668 refuses system pip),
a hardened systemd unit checked by systemd-analyze, and a udev rule for the Accelerator."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "edge-agent.service"
RULE = ROOT / "deploy" / "99-edgetpu-accelerator.rules"
EXPOSURE_TARGET = 4.0


def _analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        pytest.fail("systemd-analyze is missing: `make system-deps` installs the systemd package")
    return found


def _unit_with_real_binary(tmp_path: Path) -> Path:
    """The unit as installed, its ExecStart pointing at this checkout's edge-agent (verify checks it exists)."""
    unit = tmp_path / "edge-agent.service"
    agent = Path(sys.executable).with_name("edge-agent")
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/edge-agent", str(agent)))
    return unit


def _settings() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = subprocess.run(
        [_analyze(), "verify", str(_unit_with_real_binary(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert "edge-agent.service" not in proc.stderr, proc.stderr


def test_the_systemd_unit_exposure_is_4_or_better(tmp_path: Path) -> None:
    proc = subprocess.run(
        [_analyze(), "security", "--offline=true", str(_unit_with_real_binary(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for edge-agent\.service: (\d+\.\d+)", proc.stdout)
    assert match, proc.stdout[-2000:] + proc.stderr
    assert float(match.group(1)) <= EXPOSURE_TARGET


def test_the_service_is_not_root_and_reaches_only_the_tpu_cameras_and_the_network() -> None:
    s = _settings()
    assert s["ExecStart"] == ["/usr/local/bin/edge-agent run --config /etc/edge-agent/config.toml"]
    assert s["DynamicUser"] == ["yes"] and s["SupplementaryGroups"] == ["plugdev video"]
    assert s["DevicePolicy"] == ["closed"]
    assert s["DeviceAllow"] == ["char-usb_device rw", "char-apex rw", "char-video4linux rw"]
    assert s["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]  # netlink: libusb hotplug
    assert s["ProtectSystem"] == ["strict"] and s["PrivateTmp"] == ["yes"] and s["StateDirectory"] == ["edge-agent"]
    assert s["Environment"][0].startswith("EDGE_AGENT_STATE_DIR=%S/edge-agent")


def test_a_start_that_keeps_failing_stops_instead_of_restarting_forever() -> None:
    s = _settings()
    assert s["Restart"] == ["on-failure"] and s["StartLimitBurst"] == ["5"] and s["StartLimitIntervalSec"] == ["600"]
    assert s["RestartPreventExitStatus"] == ["2 4"]  # bad config, refused verification: same result every time
    assert s["KillSignal"] == ["SIGTERM"] and s["EnvironmentFile"] == ["-/etc/edge-agent/env"]


def test_the_udev_rule_gives_plugdev_both_usb_ids_and_pcie_modules() -> None:
    rules = [line for line in RULE.read_text().splitlines() if line and not line.startswith("#")]
    assert rules == [
        'SUBSYSTEM=="usb", ATTRS{idVendor}=="1a6e", ATTRS{idProduct}=="089a", MODE="0664", GROUP="plugdev"',
        'SUBSYSTEM=="usb", ATTRS{idVendor}=="18d1", ATTRS{idProduct}=="9302", MODE="0664", GROUP="plugdev"',
        'SUBSYSTEM=="apex", MODE="0660", GROUP="plugdev"',
    ]


def _install_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MAKEFLAGS")}
    env.update(
        PREFIX=str(tmp_path / "opt" / "edge-agent"),
        BINDIR=str(tmp_path / "bin"),
        SYSCONFDIR=str(tmp_path / "etc"),
        UNITDIR=str(tmp_path / "systemd"),
        UDEVDIR=str(tmp_path / "udev"),
    )
    return env


def test_install_device_into_a_folder_it_may_not_write_says_so_in_one_line(tmp_path: Path) -> None:
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run as another user")
    env = {**_install_env(tmp_path), "PREFIX": "/opt/edge-agent-test-not-writable"}
    proc = subprocess.run(
        ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", "bash", "scripts/install-device.sh"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "install-device: cannot write to /opt/edge-agent-test-not-writable: run with sudo, or set PREFIX= and BINDIR= "
        "to your own folders"
    ]


@pytest.mark.slow
def test_make_install_device_makes_a_venv_a_link_the_unit_the_rule_and_keeps_a_config(tmp_path: Path) -> None:
    env = _install_env(tmp_path)
    config = tmp_path / "etc" / "edge-agent" / "config.toml"
    proc = subprocess.run(
        ["make", "--no-print-directory", "install-device", f"PYTHON={sys.executable}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    link = tmp_path / "bin" / "edge-agent"
    assert link.is_symlink() and os.readlink(link) == str(tmp_path / "opt" / "edge-agent" / "bin" / "edge-agent")
    assert (tmp_path / "systemd" / "edge-agent.service").read_text() == UNIT.read_text()
    assert (tmp_path / "udev" / "99-edgetpu-accelerator.rules").read_text() == RULE.read_text()
    assert config.is_file()
    agent_env = {k: v for k, v in env.items() if not k.startswith("EDGE_AGENT_")}
    agent_env["EDGE_AGENT_STATE_DIR"] = str(tmp_path / "state")
    run = subprocess.run(
        [str(link), "classify", "-n", "2", "-o", "jsonl"], cwd=tmp_path, env=agent_env, capture_output=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert len(run.stdout.splitlines()) == 2
