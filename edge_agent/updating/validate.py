"""Validate a new model in a separate process with a time and memory limit.

A crafted or broken model must not take the agent down, so the updater never loads
an unvalidated model in its own process. :func:`validate_model` runs
``python -m edge_agent.updating.validate`` as a child that first limits itself
(``resource.setrlimit``: address space and CPU seconds), then loads the model with
LiteRT, checks its input against the manifest, classifies the golden input and
prints one JSON line. The parent adds a wall-clock timeout and kills the child when
it is exceeded.

Every model of a release is checked in the child: before any interpreter allocates,
each model's tensor memory is estimated from its flatbuffer and refused past
``max_model_mb`` (:mod:`edge_agent.inference.model_memory`). The compiled
``_edgetpu`` model can only be parsed and estimated there, not run: it needs an Edge
TPU, which the child does not open; it runs for the first time in the health check.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from edge_agent.errors import UpdateError
from edge_agent.inference.labels import load_labels
from edge_agent.inference.model_memory import DEFAULT_MAX_MODEL_MEMORY_MB
from edge_agent.inference.runtime import read_model
from release_contract.models import is_edgetpu_model

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_MB = 1024


@dataclass(frozen=True)
class ValidationResult:
    """What the child measured: output size, top-1 class of the golden input."""

    num_classes: int
    top1: int


def validate_model(
    model: Path,
    labels: Path,
    shape: Sequence[int],
    *,
    golden: Optional[Path] = None,
    expect_top1: Optional[int] = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory_mb: int = DEFAULT_MEMORY_MB,
    compiled: Optional[Path] = None,
    max_model_mb: int = DEFAULT_MAX_MODEL_MEMORY_MB,
) -> ValidationResult:
    """Load ``model`` in a limited child process and classify the golden input.

    ``shape`` is the input shape the manifest declares; ``golden`` holds the raw input
    tensor bytes (a mid-grey image when absent); ``compiled`` is the release's
    ``_edgetpu`` model, parsed and estimated in the child (not run). Raises
    :class:`UpdateError` with the reason when the child fails, exceeds ``timeout``
    seconds or ``memory_mb`` of address space, a model's tensors need more than
    ``max_model_mb`` MiB, or a model does not match its manifest and labels.
    """
    cmd = [
        sys.executable,
        "-m",
        "edge_agent.updating.validate",
        "--model",
        str(model),
        "--labels",
        str(labels),
        "--shape",
        ",".join(str(int(d)) for d in shape),
        "--memory-mb",
        str(int(memory_mb)),
        "--cpu-seconds",
        str(max(1, int(timeout))),
        "--max-model-mb",
        str(int(max_model_mb)),
    ]
    if compiled is not None:
        cmd += ["--compiled", str(compiled)]
    if golden is not None:
        cmd += ["--golden", str(golden)]
    if expect_top1 is not None:
        cmd += ["--expect-top1", str(int(expect_top1))]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise UpdateError(f"validation timed out after {timeout:g} s: the model was not loaded") from exc
    except OSError as exc:
        raise UpdateError(f"cannot start the validation process: {exc}") from exc
    lines = proc.stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        result: Dict[str, Any] = json.loads(lines[-1]) if lines else {}
    except ValueError:
        result = {}
    if proc.returncode != 0 or not result.get("ok"):
        reason = result.get("error") or _describe_exit(proc.returncode, proc.stderr)
        raise UpdateError(f"validation failed: {reason}")
    return ValidationResult(num_classes=int(result["num_classes"]), top1=int(result["top1"]))


def _describe_exit(code: int, stderr: bytes) -> str:
    if code < 0:
        return f"the validation process was killed by signal {-code} (time or memory limit)"
    tail = stderr.decode("utf-8", "replace").strip().splitlines()
    return tail[-1][:300] if tail else f"the validation process exited with {code}"


def _limit(memory_mb: int, cpu_seconds: int) -> None:
    import resource

    mem = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))


def _check(args: argparse.Namespace) -> Dict[str, Any]:
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    labels = load_labels(Path(args.labels))
    if args.compiled:
        # parsed and estimated only: running it needs the Edge TPU (see the module docstring)
        if not is_edgetpu_model(read_model(Path(args.compiled), args.max_model_mb)):
            raise ValueError(f"{Path(args.compiled).name} is not compiled for the Edge TPU")
    interpreter = Interpreter(model_content=read_model(Path(args.model), args.max_model_mb), num_threads=1)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    shape = [int(d) for d in args.shape.split(",")]
    if [int(d) for d in inp["shape"]] != shape:
        raise ValueError(f"model input shape {list(inp['shape'])} differs from the manifest's {shape}")
    count = int(np.prod(shape))
    dtype = np.dtype(inp["dtype"])
    if args.golden:
        raw = Path(args.golden).read_bytes()
        if len(raw) != count * dtype.itemsize:
            raise ValueError(f"golden input has {len(raw)} bytes, the model takes {count * dtype.itemsize}")
        data = np.frombuffer(raw, dtype=dtype).reshape(shape)
    else:
        data = np.full(shape, 128 if dtype == np.uint8 else 0, dtype=dtype)
    interpreter.set_tensor(inp["index"], data)
    interpreter.invoke()
    out = interpreter.get_output_details()[0]
    scores = np.asarray(interpreter.get_tensor(out["index"])).reshape(-1)
    if labels and (len(labels) != scores.size or max(labels) >= scores.size):
        raise ValueError(f"the model has {scores.size} classes but the labels file has {len(labels)} labels")
    top1 = int(np.argmax(scores))
    if args.expect_top1 is not None and top1 != args.expect_top1:
        raise ValueError(f"golden input classified as {top1}, the manifest expects {args.expect_top1}")
    return {"ok": True, "num_classes": int(scores.size), "top1": top1}


def main(argv: Optional[List[str]] = None) -> int:
    """Child entry point: limit resources, check the model, print one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m edge_agent.updating.validate")
    parser.add_argument("--model", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--golden")
    parser.add_argument("--expect-top1", type=int)
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB)
    parser.add_argument("--cpu-seconds", type=int, default=int(DEFAULT_TIMEOUT_S))
    parser.add_argument("--compiled")
    parser.add_argument("--max-model-mb", type=int, default=DEFAULT_MAX_MODEL_MEMORY_MB)
    args = parser.parse_args(argv)
    _limit(args.memory_mb, args.cpu_seconds)
    try:
        result = _check(args)
    except MemoryError:
        result = {"ok": False, "error": f"the model needs more than {args.memory_mb} MB"}
    except Exception as exc:  # noqa: BLE001 - any failure of a foreign model is a reason to refuse it
        result = {"ok": False, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300]}
    print(json.dumps(result), flush=True)
    return 0 if result.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
