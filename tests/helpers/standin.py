"""Build and drive the libedgetpu stand-in (tests/stand_ins/libedgetpu/libedgetpu.c).

The stand-in is a C shared library named ``libedgetpu.so.1`` that exports the TFLite
external-delegate entry points and ``edgetpu_version()``; its behaviour comes from
``EDGETPU_STANDIN_*`` environment variables read when the delegate is created. Because
``segfault``/``abort``/``hang`` really crash or block the process, run those in a child
process and look at its return code.

Typical use::

    lib = standin.build(tmp_path)                       # compiles once per directory
    env = {**os.environ, **standin.environment("segfault", stage="invoke")}
    subprocess.run([...], env=env, timeout=30)           # returncode == -SIGSEGV
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

SOURCE = Path(__file__).resolve().parents[1] / "stand_ins" / "libedgetpu" / "libedgetpu.c"
LIBRARY_NAME = "libedgetpu.so.1"

MODES = ("ok", "segfault", "abort", "hang", "refuse")
STAGES = ("create", "prepare", "invoke")
DEFAULT_LATENCY_US = 2500

# edgetpu_version() of Coral's stock Debian package 16.0 (libedgetpu1-std / -max), as
# pycoral's get_runtime_version() prints it; this is the stand-in's default.
STOCK_16_VERSION = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"
# Shape of a build from source (community builds such as feranick/libedgetpu): the label
# is "COMPILER=" __VERSION__ ",DATE=" __DATE__ ",TIME=" __TIME__. Example values only.
SOURCE_BUILD_VERSION = "BuildLabel(COMPILER=12.2.0,DATE=Mar  2 2025,TIME=10:11:12), RuntimeVersion(14)"


class BuildError(RuntimeError):
    """The C compiler is missing or failed on the stand-in."""


def _compiler(cc: Optional[str]) -> str:
    found = cc or os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not found:
        raise BuildError("no C compiler (cc) on PATH to build the libedgetpu stand-in")
    return found


def build(directory: Path, cc: Optional[str] = None) -> Path:
    """Compile the stand-in to ``directory/libedgetpu.so.1`` and return that path.

    Idempotent: a stamp next to the library records the source's sha256, so a second
    call for the same directory and source returns at once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / LIBRARY_NAME
    stamp = directory / (LIBRARY_NAME + ".sha256")
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()
    if target.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return target
    tmp = directory / (LIBRARY_NAME + ".tmp")
    cmd = [_compiler(cc), "-shared", "-fPIC", "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    os.replace(tmp, target)
    stamp.write_text(digest + "\n")
    return target


def environment(
    mode: str = "ok",
    *,
    stage: Optional[str] = None,
    latency_us: Optional[int] = None,
    output: Optional[str] = None,
    version: Optional[str] = None,
    devices: Optional[str] = None,
    log: Optional[Path] = None,
) -> Dict[str, str]:
    """The ``EDGETPU_STANDIN_*`` variables for a behaviour; merge into a child's env.

    ``mode``: ok | segfault | abort | hang | refuse. ``stage``: where a non-ok mode
    strikes, create (default) | prepare | invoke. ``latency_us``: ok-mode sleep per
    invoke. ``output``: copy (default: output byte i = first input's byte i mod its
    size) | zeros. ``version``: what ``edgetpu_version()`` returns. ``devices``: what
    ``edgetpu_list_devices()`` reports, e.g. ``"usb:/sys/bus/usb/devices/2-1"`` or
    ``""`` for none. ``log``: file the stand-in appends one line per event to.
    """
    if mode not in MODES:
        raise ValueError(f"unknown stand-in mode {mode!r}; expected one of {MODES}")
    if stage is not None and stage not in STAGES:
        raise ValueError(f"unknown stand-in stage {stage!r}; expected one of {STAGES}")
    env = {"EDGETPU_STANDIN_MODE": mode}
    if stage is not None:
        env["EDGETPU_STANDIN_STAGE"] = stage
    if latency_us is not None:
        env["EDGETPU_STANDIN_LATENCY_US"] = str(int(latency_us))
    if output is not None:
        env["EDGETPU_STANDIN_OUTPUT"] = output
    if version is not None:
        env["EDGETPU_STANDIN_VERSION"] = version
    if devices is not None:
        env["EDGETPU_STANDIN_DEVICES"] = devices
    if log is not None:
        env["EDGETPU_STANDIN_LOG"] = str(log)
    return env


def read_log(path: Path) -> List[str]:
    """The stand-in's event lines (``create ...``, ``prepare ...``, ``invoke ...``), [] if none."""
    try:
        return Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
