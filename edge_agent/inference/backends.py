"""Interpreter backends: the TFLite interpreter packages the agent can run models with.

``--runtime`` names one (``litert``, ``tflite-runtime``, ``tensorflow``); ``auto`` takes
the first importable one in the order it is given (see
:func:`edge_agent.inference.pairings.backend_order` for the order that suits the
installed libedgetpu). Nothing is imported until a backend is selected.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence

from edge_agent.config import RUNTIMES
from edge_agent.errors import ConfigError

#: backend name -> (Python module with Interpreter and load_delegate, pip package)
BACKENDS: Dict[str, tuple[str, str]] = {
    "litert": ("ai_edge_litert.interpreter", "ai-edge-litert"),
    "tflite-runtime": ("tflite_runtime.interpreter", "tflite-runtime"),
    "tensorflow": ("tensorflow", "tensorflow"),
}
#: the order ``--runtime auto`` tries them when nothing says otherwise
DEFAULT_ORDER = ("litert", "tflite-runtime", "tensorflow")
_DISTRIBUTIONS = {
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "tflite-runtime": ("tflite-runtime", "tflite_runtime"),
}


@dataclass(frozen=True)
class Backend:
    """An imported interpreter package: ``name`` as ``--runtime`` spells it, its ``version``."""

    name: str
    version: str
    interpreter: Callable[..., Any]
    load_delegate: Callable[..., Any]

    @property
    def label(self) -> str:
        """``name version`` as messages show it, e.g. ``litert 2.3.0``."""
        return f"{self.name} {self.version}"


def backend_version(name: str) -> Optional[str]:
    """Installed version of backend ``name`` from the package metadata (no import), or None."""
    for dist in _DISTRIBUTIONS.get(name, (BACKENDS[name][1],)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_backends() -> Dict[str, str]:
    """{backend name: version} of every interpreter package installed, in the default order."""
    found = {}
    for name in DEFAULT_ORDER:
        version = backend_version(name)
        if version is not None:
            found[name] = version
    return found


def importable(name: str) -> bool:
    """True when backend ``name``'s module can be found (without importing it)."""
    try:
        return importlib.util.find_spec(BACKENDS[name][0].split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


def import_backend(name: str) -> Backend:
    """Import backend ``name``; raises ImportError when it is not installed, ConfigError for a bad name."""
    if name not in BACKENDS:
        raise ConfigError(f"invalid --runtime {name!r}: use one of {', '.join(RUNTIMES)}")
    mod = importlib.import_module(BACKENDS[name][0])
    version = backend_version(name) or str(getattr(mod, "__version__", "unknown"))
    if name == "tensorflow":
        return Backend(name, version, mod.lite.Interpreter, mod.lite.experimental.load_delegate)
    return Backend(name, version, mod.Interpreter, mod.load_delegate)


def select_backend(runtime: str, order: Sequence[str] = DEFAULT_ORDER) -> Backend:
    """Import the interpreter package for ``runtime`` (``auto``: the first importable one of ``order``,
    then of the default order).

    Raises ConfigError naming the pip package to install when none is importable.
    """
    names = [*order, *(n for n in DEFAULT_ORDER if n not in order)] if runtime == "auto" else [runtime]
    for name in names:
        try:
            return import_backend(name)
        except ImportError:
            continue
    if runtime == "auto":
        raise ConfigError("no TFLite interpreter installed: pip install ai-edge-litert")
    raise ConfigError(f"--runtime {runtime} is not installed: pip install {BACKENDS[runtime][1]}")
