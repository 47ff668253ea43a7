"""The hardware checks of ``edge-agent doctor``: Edge TPUs in sysfs and /dev, and who may open them.

Every check takes the sysfs root and the /dev root as parameters, so tests can give
it a tree of their own; on a device they are ``/sys`` and ``/dev``. A check returns
:class:`Check` lines: ``ok``, ``problem`` (the configured path cannot work),
``warn`` (it works, worse than it could) or ``info``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from edge_agent.inference.devices import USB_IDS

OK, PROBLEM, WARN, INFO = "ok", "problem", "warn", "info"
USB3_MBPS = 5000
#: Global Unichip's PCI vendor and the Edge TPU's device id (lspci: 1ac1:089a)
PCI_IDS = ("0x1ac1", "0x089a")
UDEV_FIX = (
    "install the udev rule (sudo install -m 644 deploy/99-edgetpu-accelerator.rules /etc/udev/rules.d/ "
    "&& sudo udevadm control --reload && replug) and add the user to plugdev (sudo usermod -aG plugdev $USER)"
)


@dataclass(frozen=True)
class Check:
    """One line of the doctor: ``name`` of the check, ``status``, what was seen, and the fix."""

    name: str
    status: str
    detail: str
    fix: str = ""


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _can_open(path: Path) -> Optional[str]:
    """None when this process may open ``path`` read-write, else the reason."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    return None


def usb_checks(sys_root: Path, dev_root: Path, severity: str) -> List[Check]:
    """USB Accelerators (1a6e:089a before the runtime first opens them, 18d1:9302 after),
    their link speed and whether this user may open their /dev/bus/usb node."""
    out: List[Check] = []
    devices = sys_root / "bus" / "usb" / "devices"
    for dev in sorted(devices.iterdir()) if devices.is_dir() else []:
        ids = (_read(dev / "idVendor"), _read(dev / "idProduct"))
        if ids not in USB_IDS:
            continue
        name = f"usb {dev.name} [{ids[0]}:{ids[1]}]"
        speed = _read(dev / "speed")
        try:
            mbps = float(speed)
        except ValueError:
            mbps = 0.0
        if mbps >= USB3_MBPS:
            out.append(Check(name, OK, f"{USB_IDS[ids]}, USB 3 link ({speed} Mb/s)"))
        else:
            out.append(
                Check(
                    name,
                    WARN,
                    f"{USB_IDS[ids]} on a USB 2 link ({speed or '?'} Mb/s): inference is several times slower",
                    "plug it into a USB 3 port (blue) with a USB 3 cable",
                )
            )
        bus, num = _read(dev / "busnum"), _read(dev / "devnum")
        if bus.isdigit() and num.isdigit():
            node = dev_root / "bus" / "usb" / f"{int(bus):03d}" / f"{int(num):03d}"
            why = _can_open(node)
            if why is None:
                out.append(Check(f"{name} access", OK, f"{node} can be opened by this user"))
            else:
                out.append(Check(f"{name} access", severity, f"{node}: {why}", UDEV_FIX))
    return out


def pci_checks(sys_root: Path, dev_root: Path, severity: str) -> List[Check]:
    """PCIe/M.2 Edge TPUs: the gasket/apex driver, /dev/apex_N and permission to open them."""
    out: List[Check] = []
    apex = sorted(dev_root.glob("apex_*"))
    driver = (sys_root / "module" / "apex").is_dir() and (sys_root / "module" / "gasket").is_dir()
    pci = sys_root / "bus" / "pci" / "devices"
    cards = (
        [d for d in sorted(pci.iterdir()) if (_read(d / "vendor"), _read(d / "device")) == PCI_IDS]
        if pci.is_dir()
        else []
    )
    if cards and not apex:
        out.append(
            Check(
                "pcie",
                severity,
                f"an Edge TPU card at {cards[0].name} but no /dev/apex_N: the gasket/apex driver is not loaded",
                "sudo apt-get install gasket-dkms (Coral's apt repository), then reboot",
            )
        )
    for node in apex:
        why = _can_open(node)
        drv = "gasket and apex drivers loaded" if driver else "driver modules not seen in sysfs"
        if why is None:
            out.append(Check(f"pcie {node.name}", OK, f"{node} can be opened by this user ({drv})"))
        else:
            out.append(
                Check(
                    f"pcie {node.name}",
                    severity,
                    f"{node}: {why}",
                    UDEV_FIX,
                )
            )
    return out


def camera_checks(dev_root: Path, wanted: Optional[str]) -> List[Check]:
    """V4L2 cameras (/dev/video*); a problem only when the configured input is a camera that is not there."""
    cams = sorted(dev_root.glob("video*"))
    target: Optional[Path] = None
    if wanted is not None:
        if wanted == "cam":
            target = dev_root / "video0"
        elif wanted.startswith("cam:") and wanted[4:].isdigit():
            target = dev_root / f"video{int(wanted[4:])}"
        elif wanted.startswith("/dev/video"):
            target = dev_root / wanted[len("/dev/") :]
    if target is not None:
        if not target.exists():
            have = ", ".join(c.name for c in cams) or "none"
            return [
                Check(
                    "camera",
                    PROBLEM,
                    f"input {wanted}: {target} does not exist (cameras: {have})",
                    "plug in the camera or fix --input",
                )
            ]
        why = _can_open(target)
        if why is not None:
            return [
                Check(
                    "camera", PROBLEM, f"{target}: {why}", "add the user to group video (sudo usermod -aG video $USER)"
                )
            ]
        return [Check("camera", OK, f"{target} can be opened")]
    return [
        Check(
            "cameras", INFO, ", ".join(str(c) for c in cams) if cams else "no /dev/video* (the input is not a camera)"
        )
    ]
