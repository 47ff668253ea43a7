"""Find the Edge TPUs attached to this machine, without needing the runtime library.

USB Accelerators show as ``1a6e:089a`` (Global Unichip) until the runtime first
talks to them, then as ``18d1:9302`` (Google). PCIe/M.2 modules appear as
``/dev/apex_N`` once the gasket/apex driver is loaded. When pycoral is importable
its own listing is used as well.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

log = logging.getLogger(__name__)

USB_IDS = {("1a6e", "089a"): "USB Accelerator (not yet initialised)", ("18d1", "9302"): "USB Accelerator"}


@dataclass(frozen=True)
class EdgeTpu:
    """One Edge TPU: ``kind`` is ``usb`` or ``pci``; ``path`` the sysfs or /dev path."""

    kind: str
    path: str
    description: str
    temperature_c: Optional[float] = None


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def apex_temperature(index: int, sys_root: Path = Path("/sys")) -> Optional[float]:
    """Temperature of ``/dev/apex_<index>`` in degrees Celsius, when the driver exposes it."""
    raw = _read(sys_root / "class" / "apex" / f"apex_{index}" / "temp")
    try:
        return int(raw) / 1000.0 if raw else None
    except ValueError:
        return None


def find_edgetpus(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> List[EdgeTpu]:
    """Edge TPUs visible in sysfs (USB) and /dev (PCIe), USB first, in a stable order."""
    found: List[EdgeTpu] = []
    usb = sys_root / "bus" / "usb" / "devices"
    if usb.is_dir():
        for dev in sorted(usb.iterdir()):
            ids = (_read(dev / "idVendor"), _read(dev / "idProduct"))
            if ids in USB_IDS:
                found.append(EdgeTpu("usb", str(dev), f"{USB_IDS[ids]} [{ids[0]}:{ids[1]}]"))
    for apex in sorted(dev_root.glob("apex_*")):
        suffix = apex.name.split("_", 1)[1]
        temp = apex_temperature(int(suffix), sys_root) if suffix.isdigit() else None
        found.append(EdgeTpu("pci", str(apex), "PCIe/M.2 Accelerator", temp))
    return found


def pycoral_devices() -> Optional[List[str]]:
    """``type path`` of each Edge TPU as pycoral lists them, or None when pycoral is absent."""
    try:
        edgetpu = importlib.import_module("pycoral.utils.edgetpu")
    except ImportError:
        return None
    try:
        return [f"{d['type']} {d['path']}" for d in edgetpu.list_edge_tpus()]
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("pycoral could not list Edge TPUs: %s", exc)
        return []
