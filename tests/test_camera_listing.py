"""`edge-agent devices` lists V4L2 cameras: read from a sysfs tree laid out as the kernel does it.

No camera exists on the machines the tests run on, so the tree is written by the test; the
format query (an ioctl) meets a regular file and must say so rather than fail."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.inference.cameras import list_cameras


def fake_sysfs(root: Path, names: dict) -> Path:
    sysfs = root / "sys" / "class" / "video4linux"
    for node, name in names.items():
        (sysfs / node).mkdir(parents=True)
        (sysfs / node / "name").write_text(name + "\n")
        (sysfs / node / "dev").write_text("81:0\n")
    return sysfs


def test_cameras_are_listed_by_number_with_their_names(tmp_path: Path):
    sysfs = fake_sysfs(
        tmp_path, {"video10": "bcm2835-isp", "video0": "HD Pro Webcam C920", "video1": "HD Pro Webcam C920"}
    )
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video0").write_bytes(b"")
    cameras = list_cameras(sysfs, dev)
    assert [(c.path, c.name) for c in cameras] == [
        (str(dev / "video0"), "HD Pro Webcam C920"),
        (str(dev / "video1"), "HD Pro Webcam C920"),
        (str(dev / "video10"), "bcm2835-isp"),
    ]
    assert all(c.problem and c.problem.startswith("cannot query formats") for c in cameras)


def test_no_video4linux_class_means_no_cameras(tmp_path: Path):
    assert list_cameras(tmp_path / "absent", tmp_path) == []


def test_devices_command_says_when_there_is_no_camera():
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0
    assert "Cameras: none found" in result.stdout or "camera: /dev/video" in result.stdout
