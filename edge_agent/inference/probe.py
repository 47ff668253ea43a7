"""Probe the Edge TPU delegate in a child process before the agent trusts it in its own.

A libedgetpu built against another TensorFlow Lite than the interpreter's crashes
(SIGSEGV, SIGABRT) or hangs inside native code, where Python cannot catch it.
:func:`probe_delegate` runs ``python -m edge_agent.inference.probe`` as a child that
loads the delegate, builds the interpreter with the compiled model and runs one
inference, printing one JSON line per step; the parent kills it past a deadline and
turns what happened into a :class:`ProbeVerdict` whose :meth:`~ProbeVerdict.message`
is one line naming the runtime, the interpreter and what to do.

Verdicts that depend only on the files (``ok`` and ``crash``) are cached per
(runtime library file, interpreter and version, model digest) in a JSON file, so the
child's start-up cost is paid once per combination; a refusal or a hang depends on the
device's state (unplugged, not permitted) and is probed again every time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_agent.inference.backends import select_backend
from release_contract.files import atomic_write

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 30.0
_STEPS = {"start": "loading the delegate", "load": "applying the delegate", "apply": "running one inference"}
_CACHED_KINDS = ("ok", "crash")


@dataclass(frozen=True)
class ProbeVerdict:
    """What the probe saw. ``kind``: ok | crash | hang | refuse | error.

    ``runtime`` is the ``edgetpu_version()`` string, ``interpreter`` e.g. ``litert 2.3.0``,
    ``seconds`` the wall time of the child (0 when ``cached``).
    """

    kind: str
    detail: str
    runtime: str
    interpreter: str
    library: str
    seconds: float
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when the delegate loaded and ran one inference."""
        return self.kind == "ok"

    def message(self) -> str:
        """One line: what failed, with which runtime and interpreter, and what to do."""
        who = f"Edge TPU runtime {self.library} [{self.runtime}] with {self.interpreter}"
        if self.kind == "crash":
            return (
                f"{who} crashed ({self.detail}): this libedgetpu was built for another TensorFlow Lite; "
                "install a matching pair (README, 'Support matrix') or try --runtime tflite-runtime; "
                "`edge-agent doctor` shows what is installed"
            )
        if self.kind == "hang":
            return (
                f"{who} hung ({self.detail}): replug the Accelerator (USB 3 port, enough power), "
                "check the pairing with `edge-agent doctor`"
            )
        if self.kind == "refuse":
            return (
                f"{who} found no usable Edge TPU ({self.detail}): check it is plugged in and that this user "
                "may open it (udev rule, plugdev group); `edge-agent doctor` checks both"
            )
        if self.kind == "error":
            return f"{who} failed ({self.detail}); `edge-agent doctor` shows what is installed"
        return f"{who} ran the model ({self.seconds * 1000:.0f} ms probe)"


def _cache_key(library_file: str, interpreter: str, model_digest: str) -> str:
    try:
        st = os.stat(library_file)
        ident = f"{os.path.realpath(library_file)}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        ident = library_file
    return hashlib.sha256(f"{ident}|{interpreter}|{model_digest}".encode()).hexdigest()


def _read_cache(cache: Path) -> Dict[str, Any]:
    try:
        data = json.loads(cache.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _store(cache: Path, key: str, verdict: ProbeVerdict) -> None:
    data = _read_cache(cache)
    data[key] = {k: v for k, v in asdict(verdict).items() if k != "cached"}
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(cache, json.dumps(data, indent=1).encode())
    except OSError as exc:
        log.debug("cannot write the probe cache %s: %s", cache, exc)


def probe_delegate(
    library: str,
    library_file: str,
    model: Path,
    model_digest: str,
    device: str,
    backend: str,
    interpreter: str,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    cache: Optional[Path] = None,
) -> ProbeVerdict:
    """Load ``library``'s delegate for ``device`` and run ``model`` once, in a child with ``timeout``.

    ``library`` is what the agent passes to ``load_delegate``, ``library_file`` the file it
    resolves to (the cache key), ``backend`` the ``--runtime`` name and ``interpreter`` its
    label (``litert 2.3.0``). Never raises for what the child does; returns the verdict.
    """
    key = _cache_key(library_file, interpreter, model_digest)
    if cache is not None:
        hit = _read_cache(cache).get(key)
        if isinstance(hit, dict) and hit.get("kind") in _CACHED_KINDS:
            try:
                return ProbeVerdict(**{**hit, "cached": True})
            except TypeError:
                pass
    verdict = _run_child(library, model, device, backend, interpreter, timeout)
    log.info("Edge TPU probe: %s in %.0f ms", verdict.kind, verdict.seconds * 1000)
    if cache is not None and verdict.kind in _CACHED_KINDS:
        _store(cache, key, verdict)
    return verdict


def _run_child(library: str, model: Path, device: str, backend: str, interpreter: str, timeout: float) -> ProbeVerdict:
    cmd = [sys.executable, "-m", "edge_agent.inference.probe", library, str(model), device, backend]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    started = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        return ProbeVerdict("error", f"cannot start the probe: {exc}", "unknown", interpreter, library, 0.0)
    try:
        out, err = proc.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate(timeout=10)
        timed_out = True
    seconds = time.monotonic() - started
    lines = _json_lines(out)
    runtime = next((str(x["runtime"]) for x in lines if "runtime" in x), "unknown")
    last = next((str(x["step"]) for x in reversed(lines) if "step" in x), "start")
    doing = _STEPS.get(last, "starting")

    def verdict(kind: str, detail: str) -> ProbeVerdict:
        return ProbeVerdict(kind, detail, runtime, interpreter, library, seconds)

    if timed_out:
        return verdict("hang", f"no answer within {timeout:g} s while {doing}")
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return verdict("crash", f"{name} while {doing}")
    final = lines[-1] if lines else {}
    if final.get("ok") is True and proc.returncode == 0:
        return verdict("ok", f"one inference in {final.get('invoke_ms', 0):.1f} ms")
    if "error" in final:
        return verdict("refuse", str(final["error"]))
    tail = err.decode("utf-8", "replace").strip().splitlines()
    return verdict("error", tail[-1][:200] if tail else f"the probe exited with {proc.returncode} while {doing}")


def _json_lines(raw: bytes) -> List[Dict[str, Any]]:
    out = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out


def _say(**item: Any) -> None:
    print(json.dumps(item), flush=True)


def _probe(library: str, model: str, device: str, backend_name: str) -> None:
    import numpy as np

    from edge_agent.inference.pairings import library_version

    _say(step="start", runtime=library_version(library) or "not loadable")
    backend = select_backend(backend_name)
    delegate = backend.load_delegate(library, {} if device in ("auto", "") else {"device": device})
    _say(step="load")
    interpreter = backend.interpreter(model_path=model, experimental_delegates=[delegate])
    interpreter.allocate_tensors()
    _say(step="apply")
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    t0 = time.perf_counter()
    interpreter.invoke()
    _say(step="invoke", ok=True, invoke_ms=(time.perf_counter() - t0) * 1000)


def main(argv: Optional[List[str]] = None) -> int:
    """Child entry point: ``python -m edge_agent.inference.probe LIBRARY MODEL DEVICE RUNTIME``."""
    parser = argparse.ArgumentParser(prog="python -m edge_agent.inference.probe")
    for name in ("library", "model", "device", "runtime"):
        parser.add_argument(name)
    args = parser.parse_args(argv)
    try:
        _probe(args.library, args.model, args.device, args.runtime)
    except Exception as exc:  # noqa: BLE001 - every failure of the delegate is the verdict
        text = " ".join(str(exc).split()) or type(exc).__name__
        _say(ok=False, error=f"{type(exc).__name__}: {text}"[:300])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
