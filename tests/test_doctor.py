"""``edge-agent doctor`` on a fake sysfs and /dev tree, with the libedgetpu stand-in and a real broker."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, Sequence

import pytest
from helpers import standin
from helpers.mosquitto import Mosquitto

from edge_agent.config import load_config
from edge_agent.doctor import run_doctor

ROOT = Path(__file__).resolve().parent.parent
AGENT = str(Path(sys.executable).with_name("edge-agent"))


def _usb(sys_root: Path, dev_root: Path, name: str, ids: str, speed: str, bus: int, num: int) -> Path:
    dev = sys_root / "bus" / "usb" / "devices" / name
    dev.mkdir(parents=True)
    vendor, product = ids.split(":")
    for key, value in (("idVendor", vendor), ("idProduct", product), ("speed", speed)):
        (dev / key).write_text(value + "\n")
    (dev / "busnum").write_text(f"{bus}\n")
    (dev / "devnum").write_text(f"{num}\n")
    node = dev_root / "bus" / "usb" / f"{bus:03d}" / f"{num:03d}"
    node.parent.mkdir(parents=True, exist_ok=True)
    node.write_bytes(b"")
    return node


@pytest.fixture
def tree(tmp_path: Path) -> Dict[str, Path]:
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    (sys_root / "bus" / "usb" / "devices").mkdir(parents=True)
    dev_root.mkdir()
    return {"sys": sys_root, "dev": dev_root, "state": tmp_path / "state"}


@pytest.fixture
def pair(tmp_path: Path, tiny_model: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(tiny_model, folder / "tiny_edgetpu.tflite")
    shutil.copy(ROOT / "models" / "digits_int8.tflite", folder / "tiny.tflite")
    return folder / "tiny_edgetpu.tflite"


def _doctor(
    tree: Dict[str, Path], lib: Path, model: Path, mode: str, *extra: str, user: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGETPU_STANDIN_")}
    env.update(standin.environment(mode, latency_us=0))
    env.update({"EDGE_AGENT_EDGETPU_LIBRARY": str(lib), "EDGE_AGENT_STATE_DIR": str(tree["state"])})
    env["EDGE_AGENT_PROBE_TIMEOUT"], env["TF_CPP_MIN_LOG_LEVEL"] = "5", "3"
    cmd = [*user, AGENT, "doctor", "-m", str(model), "--sys-root", str(tree["sys"]), "--dev-root", str(tree["dev"])]
    return subprocess.run([*cmd, *extra], env=env, capture_output=True, text=True, timeout=120)


def _checks(proc: subprocess.CompletedProcess) -> Dict[str, Dict[str, str]]:
    return {c["name"]: c for c in json.loads(proc.stdout)["checks"]}


def test_a_working_usb3_accelerator_and_runtime_exit_0_with_every_check_ok(
    tree: Dict[str, Path], standin_lib: Path, pair: Path
) -> None:
    _usb(tree["sys"], tree["dev"], "2-1", "18d1:9302", "5000", 2, 3)
    proc = _doctor(tree, standin_lib, pair, "ok", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    checks = _checks(proc)
    assert checks["usb 2-1 [18d1:9302]"]["status"] == "ok" and "USB 3" in checks["usb 2-1 [18d1:9302]"]["detail"]
    assert checks["usb 2-1 [18d1:9302] access"]["status"] == "ok"
    assert checks["libedgetpu"]["status"] == "ok" and standin.STOCK_16_VERSION in checks["libedgetpu"]["detail"]
    assert checks["probe"]["status"] == "ok" and checks["cpu twin"]["status"] == "ok"
    assert checks["state dir"]["status"] == "ok" and json.loads(proc.stdout)["ok"] is True


def test_a_usb2_link_is_a_warning_with_the_fix_and_a_crashing_runtime_a_problem(
    tree: Dict[str, Path], standin_lib: Path, pair: Path
) -> None:
    _usb(tree["sys"], tree["dev"], "1-1.2", "1a6e:089a", "480", 1, 5)
    proc = _doctor(tree, standin_lib, pair, "segfault")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    usb2 = next(x for x in lines if x.startswith("WARN") and "[1a6e:089a]:" in x)
    assert "USB 2 link (480 Mb/s)" in usb2 and "-> plug it into a USB 3 port" in usb2
    probe = next(x for x in lines if " probe:" in x)
    assert probe.startswith("PROBLEM") and "crashed (SIGSEGV" in probe
    assert next(x for x in lines if "interpreter litert" in x).startswith("WARN")  # stock + LiteRT: crashes
    assert proc.stderr.strip().splitlines()[-1] == "Error: 1 problem(s): probe"


def test_an_accelerator_this_user_may_not_open_is_a_problem_naming_the_udev_rule(
    tree: Dict[str, Path], standin_lib: Path, pair: Path
) -> None:
    node = _usb(tree["sys"], tree["dev"], "2-1", "18d1:9302", "5000", 2, 3)
    node.chmod(0o600)
    tree["state"].mkdir(mode=0o777)
    tree["state"].chmod(0o777)
    for parent in [tree["state"].parent, *tree["state"].parent.parents]:
        if parent == Path("/"):
            break
        parent.chmod(parent.stat().st_mode | 0o005)  # let nobody reach the tree
    nobody = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root and setpriv to run the doctor as another user")
    proc = _doctor(tree, standin_lib, pair, "ok", "--json", user=nobody)
    assert proc.returncode == 1, proc.stderr
    access = _checks(proc)["usb 2-1 [18d1:9302] access"]
    assert access["status"] == "problem" and "Permission denied" in access["detail"]
    assert "udev" in access["fix"] and "plugdev" in access["fix"]


def test_pcie_card_without_driver_and_a_missing_camera_are_problems(tree: Dict[str, Path], tmp_path: Path) -> None:
    card = tree["sys"] / "bus" / "pci" / "devices" / "0000:01:00.0"
    card.mkdir(parents=True)
    (card / "vendor").write_text("0x1ac1\n")
    (card / "device").write_text("0x089a\n")
    config = load_config(environ={"EDGE_AGENT_STATE_DIR": str(tree["state"])}, overrides={"input": "cam:1"})
    report = run_doctor(config, tree["sys"], tree["dev"])
    by_name = {c.name: c for c in report.checks}
    assert by_name["pcie"].status == "problem" and "gasket-dkms" in by_name["pcie"].fix
    assert by_name["camera"].status == "problem" and "video1 does not exist" in by_name["camera"].detail
    assert not report.ok


def test_a_pcie_module_with_its_driver_is_ok(tree: Dict[str, Path]) -> None:
    (tree["dev"] / "apex_0").write_bytes(b"")
    for module in ("apex", "gasket"):
        (tree["sys"] / "module" / module).mkdir(parents=True)
    config = load_config(environ={"EDGE_AGENT_STATE_DIR": str(tree["state"])})
    by_name = {c.name: c for c in run_doctor(config, tree["sys"], tree["dev"]).checks}
    assert by_name["pcie apex_0"].status == "ok" and "gasket and apex drivers loaded" in by_name["pcie apex_0"].detail
    assert "edge tpu" not in by_name


def test_the_broker_is_checked_when_one_is_configured(tree: Dict[str, Path], mosquitto: Mosquitto) -> None:
    env = {"EDGE_AGENT_STATE_DIR": str(tree["state"]), "EDGE_AGENT_DEVICE": "cpu"}
    up = load_config(environ={**env, "EDGE_AGENT_MQTT_URL": f"mqtt://127.0.0.1:{mosquitto.port}"})
    report = run_doctor(up, tree["sys"], tree["dev"])
    assert {c.name: c.status for c in report.checks}["broker"] == "ok"
    assert report.ok  # --device cpu: no Edge TPU is not a problem
    mosquitto.stop()
    down = run_doctor(up, tree["sys"], tree["dev"])
    broker = {c.name: c for c in down.checks}["broker"]
    assert broker.status == "problem" and "not reachable" in broker.detail and not down.ok


def test_no_edge_tpu_and_no_runtime_are_problems_when_a_tpu_is_wanted(tree: Dict[str, Path]) -> None:
    config = load_config(environ={"EDGE_AGENT_STATE_DIR": str(tree["state"])})
    report = run_doctor(config, tree["sys"], tree["dev"])
    by_name = {c.name: c for c in report.checks}
    assert by_name["edge tpu"].status == "problem" and by_name["libedgetpu"].status == "problem"
    assert report.summary() == "2 problem(s): edge tpu, libedgetpu"
