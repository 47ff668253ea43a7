"""Which libedgetpu works with which interpreter: the known-good table, and the installed runtime.

libedgetpu is built against one TensorFlow source tree and hands the interpreter C
structs across the delegate ABI, so it only works with interpreters close to that
version. Coral's stock Debian package (16.0) is built against TF 2.5 and is reported to
segfault with TFLite runtimes newer than 2.11 (google-coral/edgetpu#812,
google-coral/libedgetpu#53, #67); community builds (feranick/libedgetpu,
``16.0tf2.X.Y``) exist per TensorFlow release. Sources and details: docs/runtime-matrix.md.

``edgetpu_version()`` carries no TensorFlow version (it tells a stock build from a
rebuild), so the table is keyed on the Debian package version when dpkg knows it
(``dpkg-query -W libedgetpu1-std libedgetpu1-max``), e.g. ``16.0`` or ``16.0tf2.17.1-1``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from edge_agent.inference.backends import DEFAULT_ORDER

#: edgetpu_version() of Coral's stock 16.0 package (libedgetpu1-std / -max), every architecture
STOCK_VERSION_STRING = "BuildLabel(COMPILER=6.3.0 20170516,DATE=redacted,TIME=redacted), RuntimeVersion(14)"
STOCK_TF = "2.5"
PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
_TF_IN_PACKAGE = re.compile(r"tf(\d+)\.(\d+)(?:\.(\d+))?", re.IGNORECASE)

WORKS, CRASHES, UNVERIFIED = "works", "crashes", "unverified"


@dataclass(frozen=True)
class LibEdgeTpu:
    """The installed libedgetpu as far as it can be known without loading its delegate.

    ``package`` is ``name=version`` from dpkg (None when dpkg does not know it), ``version``
    the ``edgetpu_version()`` string, ``tf`` the TensorFlow ``major.minor`` it was built
    against (None: unknown), ``label`` a short human name.
    """

    package: Optional[str]
    version: Optional[str]
    tf: Optional[str]
    label: str


def dpkg_libedgetpu(timeout: float = 5.0) -> Optional[str]:
    """``libedgetpu1-std=16.0`` (name=version) of the installed runtime package, or None."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return None
    try:
        proc = subprocess.run(
            [dpkg, "-W", "-f", "${Package}=${Version} ${db:Status-Status}\\n", *PACKAGES],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in proc.stdout.splitlines():
        name_version, _, status = line.partition(" ")
        if status.strip() == "installed" and "=" in name_version:
            return name_version
    return None


def describe_libedgetpu(package: Optional[str], version: Optional[str]) -> LibEdgeTpu:
    """Classify a runtime from its package ``name=version`` and its ``edgetpu_version()`` string."""
    pkg_version = package.partition("=")[2] if package else ""
    match = _TF_IN_PACKAGE.search(pkg_version)
    if match:
        tf = f"{match.group(1)}.{match.group(2)}"
        return LibEdgeTpu(package, version, tf, f"libedgetpu {pkg_version} (built for TF {tf})")
    if (pkg_version and pkg_version.split("-")[0] in ("16.0", "16.0.0")) or version == STOCK_VERSION_STRING:
        return LibEdgeTpu(package, version, STOCK_TF, "Coral's stock libedgetpu 16.0 (built for TF 2.5)")
    return LibEdgeTpu(package, version, None, "a libedgetpu of unknown build")


def _minor(version: str) -> Tuple[int, int]:
    parts = re.findall(r"\d+", version)[:2]
    return (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, 0)


def verdict(lib: LibEdgeTpu, backend: str, backend_version: str) -> Tuple[str, str]:
    """(works | crashes | unverified, why) for ``backend`` at ``backend_version`` with ``lib``."""
    if lib.tf is None:
        return UNVERIFIED, "the libedgetpu build is unknown"
    built = _minor(lib.tf)
    if backend == "litert":
        if built == _minor(STOCK_TF):
            return CRASHES, "stock libedgetpu (TF 2.5) is expected to crash in LiteRT (newer than TF 2.11)"
        return UNVERIFIED, "no report of LiteRT with a rebuilt libedgetpu"
    have = _minor(backend_version)
    if built == _minor(STOCK_TF):
        if have <= (2, 11):
            return WORKS, "stock libedgetpu works with TFLite up to 2.11 (google-coral/edgetpu#812)"
        return CRASHES, "stock libedgetpu segfaults with TFLite 2.12 and newer (google-coral/edgetpu#812)"
    if have == built:
        return WORKS, f"libedgetpu built for TF {lib.tf} matches {backend} {backend_version}"
    if built == (2, 13) and (2, 13) <= have <= (2, 15):
        return WORKS, "the TF 2.13.1 build works with tflite_runtime 2.13-2.15 (google-coral/edgetpu#812)"
    return UNVERIFIED, f"libedgetpu built for TF {lib.tf}, {backend} is {backend_version}"


def backend_order(lib: LibEdgeTpu, installed: Dict[str, str]) -> List[str]:
    """Installed backends for ``--runtime auto``: known to work first, then unverified, crashing last."""
    rank = {WORKS: 0, UNVERIFIED: 1, CRASHES: 2}
    names = [n for n in DEFAULT_ORDER if n in installed]
    return sorted(names, key=lambda n: rank[verdict(lib, n, installed[n])[0]])


def library_path(library: str) -> Optional[str]:
    """The file ``library`` (a name or a path) resolves to when loaded, or None when it cannot load."""
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None

    class _DlInfo(ctypes.Structure):
        _fields_ = [
            ("dli_fname", ctypes.c_char_p),
            ("dli_fbase", ctypes.c_void_p),
            ("dli_sname", ctypes.c_char_p),
            ("dli_saddr", ctypes.c_void_p),
        ]

    try:
        symbol = lib.edgetpu_version
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        info = _DlInfo()
        if libc.dladdr(ctypes.cast(symbol, ctypes.c_void_p), ctypes.byref(info)) and info.dli_fname:
            return str(info.dli_fname.decode(errors="replace"))
    except (AttributeError, OSError):
        pass
    return library


def library_version(library: str) -> Optional[str]:
    """``edgetpu_version()`` of ``library``; None when it cannot be loaded, "unknown" without the symbol."""
    try:
        lib = ctypes.CDLL(library)
    except OSError:
        return None
    try:
        fn = lib.edgetpu_version
    except AttributeError:
        return "unknown"
    fn.restype = ctypes.c_char_p
    raw = fn()
    return raw.decode(errors="replace") if raw else "unknown"


def table_rows(lib: LibEdgeTpu, installed: Dict[str, str]) -> Sequence[Tuple[str, str, str, str]]:
    """(backend, version, verdict, why) for each installed backend, as doctor prints them."""
    return [(n, v, *verdict(lib, n, v)) for n, v in installed.items()]
