"""Parse what ``edgetpu_compiler`` prints and logs into a report, and explain its failures.

Its stdout, in order: ``Edge TPU Compiler version V``, ``Model compiled successfully in N
ms.``, then per model ``Input model:``, ``Input size:``, ``Output model:``, ``Output
size:``, the on-chip / off-chip memory lines, ``Number of Edge TPU subgraphs:``, ``Total
number of operations:``, ``Operation log:``, and the counts of operations on the Edge TPU
and on the CPU. Each model's ``*_edgetpu.log`` has a table ``Operator  Count  Status``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

from compiler import errors, rules
from compiler.inspect import format_size

SCHEMA_VERSION = 1

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"^\s*([0-9.]+)\s*(B|KiB|MiB|GiB)\s*$")
_VERSION = re.compile(r"Edge TPU Compiler version (\S+)")
_COMPILED_MS = re.compile(r"Model compiled successfully in (\d+) ms")
_LOG_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_OP_VERSION = re.compile(r"Didn't find op for builtin opcode '(\w+)' version '(\d+)'")
_RUNTIME = re.compile(r"requires runtime version \((\d+)\), which is newer than this runtime version \((\d+)\)")


def parse_size(text: str) -> int:
    """Bytes of a compiler size such as ``961.05KiB`` (-1 when unreadable)."""
    m = _SIZE.match(text)
    return int(round(float(m.group(1)) * _UNITS[m.group(2)])) if m else -1


@dataclass
class OperationStatus:
    """One row of the operation log: operator, how many, and where/why."""

    op: str
    count: int
    status: str

    @property
    def on_edgetpu(self) -> bool:
        """True when these operations run on the Edge TPU."""
        return self.status == "Mapped to Edge TPU"


@dataclass
class ModelReport:
    """The compiler's account of one input model."""

    input_model: str = ""
    input_size: int = -1
    output_model: str = ""
    output_size: int = -1
    on_chip_used: int = -1
    on_chip_remaining: int = -1
    off_chip_used: int = -1
    subgraphs: int = -1
    total_operations: int = -1
    operation_log: str = ""
    operations_on_edgetpu: int = -1
    operations_on_cpu: int = -1
    operations: List[OperationStatus] = field(default_factory=list)


@dataclass
class CompileReport:
    """A whole run of the compiler: its version, time and one :class:`ModelReport` per model."""

    compiler_version: str = ""
    compile_ms: int = -1
    models: List[ModelReport] = field(default_factory=list)

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (``schema_version`` 1)."""
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}


_FIELDS: Dict[str, Tuple[str, Callable[[str], Any]]] = {
    "Input size": ("input_size", parse_size),
    "Output model": ("output_model", str),
    "Output size": ("output_size", parse_size),
    "On-chip memory used for caching model parameters": ("on_chip_used", parse_size),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining", parse_size),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_used", parse_size),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("total_operations", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("operations_on_edgetpu", int),
    "Number of operations that will run on CPU": ("operations_on_cpu", int),
}


def parse_stdout(text: str) -> CompileReport:
    """Parse the compiler's stdout (success case) into a :class:`CompileReport`.

    Counts of operations on the Edge TPU / CPU belong to the model block they follow.
    """
    report = CompileReport()
    m = _VERSION.search(text)
    report.compiler_version = m.group(1) if m else ""
    m = _COMPILED_MS.search(text)
    report.compile_ms = int(m.group(1)) if m else -1
    current: Optional[ModelReport] = None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "Input model":
            current = ModelReport(input_model=value)
            report.models.append(current)
        elif key in _FIELDS and current is not None:
            attr, conv = _FIELDS[key]
            try:
                setattr(current, attr, conv(value))
            except ValueError:
                continue
    for r in report.models:  # a fully mapped model prints no counts
        if r.operations_on_edgetpu == -1 and r.total_operations >= 0:
            r.operations_on_edgetpu, r.operations_on_cpu = r.total_operations, 0
    return report


def parse_log(text: str) -> List[OperationStatus]:
    """Rows of the ``Operator  Count  Status`` table of an ``*_edgetpu.log``."""
    rows: List[OperationStatus] = []
    in_table = False
    for line in text.splitlines():
        if re.match(r"^\s*Operator\s+Count\s+Status\s*$", line):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        m = _LOG_ROW.match(line)
        if m:
            rows.append(OperationStatus(m.group(1), int(m.group(2)), m.group(3)))
    return rows


def diagnose(output: str, timeout_sec: Optional[int] = None) -> errors.CompileFailedError:
    """Turn a failed run's output into the error a user can act on."""
    m = _OP_VERSION.search(output)
    if m:
        op, version = m.group(1), m.group(2)
        advice = rules.version_advice(op, int(version))
        return errors.OpVersionError(
            f"edgetpu_compiler 16 cannot parse {op} version {version}, which a newer TensorFlow "
            "converter emitted: "
            + (f"{advice}; " if advice else "")
            + "re-quantize the Keras/SavedModel source with `edge-compile quantize` "
            "(TensorFlow 2.21, pinned by this project, emits versions it parses for the usual image "
            "classifier layers) or replace the layer; `edge-compile inspect` lists every op version",
            output,
        )
    if "Model not quantized" in output:
        return errors.NotQuantizedError(
            "the model is not quantized: the Edge TPU needs full-integer (int8) quantization; "
            "run `edge-compile quantize MODEL --calib IMAGES` on the float model or its Keras/SavedModel source",
            output,
        )
    if "dynamic-sized tensors" in output:
        return errors.DynamicShapeError(
            "the model has dynamic-sized tensors (usually a batch dimension of -1): "
            "convert it with a fixed batch of 1, as `edge-compile quantize` does",
            output,
        )
    if "Internal compiler error" in output:
        return errors.InternalCompilerError(
            "edgetpu_compiler hit an internal error: run `edge-compile inspect` to find unusual ops, "
            "try `-a` (multiple subgraphs) or `-d` (search for a delegate that compiles), "
            "or simplify the layers around the cut",
            output,
        )
    if re.search(r"Compilation timeout|timed out", output):
        limit = f" ({timeout_sec} s)" if timeout_sec else ""
        return errors.CompileTimeoutError(
            f"edgetpu_compiler ran out of time{limit}: raise it with `-t SECONDS`, or reduce "
            "the input size (large activations are the usual cause)",
            output,
        )
    last = [ln.strip() for ln in output.splitlines() if ln.strip()]
    detail = next((ln for ln in reversed(last) if ln.startswith(("ERROR", "Invalid model"))), None)
    detail = detail or (last[-1] if last else "no output")
    return errors.CompileFailedError(f"edgetpu_compiler failed: {detail}", output)


def explain_runtime_mismatch(message: str) -> Optional[str]:
    """Advice for the Edge TPU runtime's "Package requires runtime version (N) ..." error.

    Returns None when ``message`` is not that error.
    """
    m = _RUNTIME.search(message)
    if not m:
        return None
    needed, have = m.group(1), m.group(2)
    return (
        f"the model was compiled for Edge TPU runtime {needed} but the device has runtime {have}: "
        f"recompile with `edge-compile MODEL -m {have}` or update the device's libedgetpu"
    )


def render(report: CompileReport) -> str:
    """A human-readable summary table of a compile report."""
    lines = [f"Edge TPU Compiler {report.compiler_version or '(unknown version)'}"]
    for model in report.models:
        lines.append(f"{model.input_model} -> {model.output_model}")
        lines.append(
            f"  on-chip memory used {format_size(model.on_chip_used)}, "
            f"remaining {format_size(model.on_chip_remaining)}, off-chip {format_size(model.off_chip_used)}"
            + ("  (parameters stream from off-chip memory)" if model.off_chip_used > 0 else "")
        )
        lines.append(
            f"  subgraphs {model.subgraphs}; operations {model.total_operations}: "
            f"{model.operations_on_edgetpu} on Edge TPU, {model.operations_on_cpu} on CPU"
        )
        lines.append(f"  {'Operator':<28} {'Count':>5}  Status")
        for row in model.operations:
            lines.append(f"  {row.op:<28} {row.count:>5}  {row.status}")
    return "\n".join(lines)
