"""Pre-flight check: predict what ``edgetpu_compiler`` will do with a ``.tflite`` model.

Works from the flatbuffer alone (:mod:`compiler.tflite`) and the table in
:mod:`compiler.rules`, so it runs on any OS without the compiler or TensorFlow.

How the cut is predicted: operators are walked in execution order. Operators that
cannot map but only convert the graph's inputs (a leading float->int8 ``QUANTIZE``)
run on the CPU before the Edge TPU segment without cutting it. After
that, the first operator that cannot map ends the segment: it and every operator after it
run on the CPU, and those that could have mapped get the compiler's status "More than
one subgraph is not supported".
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Set

from compiler import rules
from compiler.tflite import Subgraph, TfliteModel
from compiler.tflite import read as read_tflite

SCHEMA_VERSION = 1
#: The custom operator that holds what edgetpu_compiler mapped.
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
#: Status of otherwise mappable operators of a model the compiler refuses as a whole.
REFUSED = "Not compiled: the model is refused (see problems)"


@dataclass
class OpPrediction:
    """One operator: its place in the graph, version and predicted status."""

    index: int
    op: str
    version: int
    status: str
    on_edgetpu: bool
    reason: str = ""
    min_runtime: Optional[int] = None


@dataclass
class InspectReport:
    """The pre-flight verdict for one model. ``to_dict`` is its JSON form."""

    model: str
    quantized: bool
    float_tensors: List[str]
    operators: List[OpPrediction]
    cut_index: Optional[int]
    cut_op: Optional[str]
    parameter_bytes: int
    on_chip_cache_bytes: int
    problems: List[str] = field(default_factory=list)

    @property
    def streams_parameters(self) -> bool:
        """True when parameters exceed the on-chip cache and stream from off-chip memory."""
        return self.parameter_bytes > self.on_chip_cache_bytes

    @property
    def ops_on_edgetpu(self) -> int:
        """How many operators are predicted to run on the Edge TPU."""
        return sum(1 for op in self.operators if op.on_edgetpu)

    @property
    def compilable(self) -> bool:
        """True when the compiler should accept the model and map at least one operator."""
        return not self.problems and self.ops_on_edgetpu > 0

    @property
    def min_runtime(self) -> int:
        """Edge TPU runtime version the mapped operators need (10 when any will do)."""
        return max([op.min_runtime or 10 for op in self.operators if op.on_edgetpu] or [10])

    def to_dict(self) -> Dict[str, Any]:
        """A JSON-ready dict (``schema_version`` 1)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "compilable": self.compilable,
            "problems": list(self.problems),
            "quantized": self.quantized,
            "float_tensors": list(self.float_tensors),
            "cut": None if self.cut_index is None else {"index": self.cut_index, "op": self.cut_op},
            "operations_on_edgetpu": self.ops_on_edgetpu,
            "operations_on_cpu": len(self.operators) - self.ops_on_edgetpu,
            "min_runtime_version": self.min_runtime,
            "parameters": {
                "bytes": self.parameter_bytes,
                "on_chip_cache_bytes": self.on_chip_cache_bytes,
                "streamed_from_off_chip": self.streams_parameters,
            },
            "compiler_version_assumed": rules.COMPILER_VERSION,
            "operators": [asdict(op) for op in self.operators],
        }


def _constant(model: TfliteModel, sg: Subgraph, index: int) -> bool:
    buffer = sg.tensors[index].buffer
    return 0 < buffer < len(model.buffer_sizes) and model.buffer_sizes[buffer] > 0


def _blocking_status(model: TfliteModel, sg: Subgraph, op_index: int) -> tuple[str, str]:
    """The status that keeps an operator off the Edge TPU, or ("", "") when it can map."""
    op = sg.operators[op_index]
    code = model.operator_codes[op.opcode_index]
    tensors = [i for i in (*op.inputs, *op.outputs) if i >= 0]
    for i in tensors:
        if sg.tensors[i].is_dynamic:
            t = sg.tensors[i]
            return rules.DYNAMIC_SHAPE, f"tensor {t.name!r} has shape {list(t.shape_signature)}"
    spec = rules.EDGE_TPU_OPS.get(code.name)
    if spec is None:
        return rules.UNSUPPORTED_OP, f"{code.name} is not an Edge TPU operation"
    if code.version > spec.max_version:
        return rules.VERSION_NOT_SUPPORTED, f"version {code.version} > {spec.max_version}"
    for i in tensors:
        t = sg.tensors[i]
        allowed = rules.CONSTANT_TYPES if _constant(model, sg, i) else rules.QUANTIZED_TYPES
        if t.type not in allowed:
            return rules.UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.type}"
    for i in tensors:  # weights (4-D filters) are exempt; activations are not
        t = sg.tensors[i]
        if not _constant(model, sg, i) and any(d != 1 for d in t.shape[:-3]):
            return rules.UNSUPPORTED_RANK, f"tensor {t.name!r} has shape {list(t.shape)}"
    return "", ""


def _model_problems(model: TfliteModel, any_quantized: bool) -> List[str]:
    """Reasons the compiler would refuse the whole model."""
    problems = []
    if not any_quantized:
        problems.append(
            "Model not quantized: the Edge TPU needs full-integer (int8) quantization; "
            "run `edge-compile quantize` on it or on its Keras/SavedModel source"
        )
    if any(code.custom_code == EDGETPU_CUSTOM_OP for code in model.operator_codes):
        problems.append(
            f"already compiled for the Edge TPU (it contains {EDGETPU_CUSTOM_OP}): "
            "inspect or compile the int8 model it was compiled from"
        )
    for code in model.operator_codes:
        if code.builtin_code == 32:  # CUSTOM ops are passed through to the CPU
            continue
        if code.builtin_code > rules.MAX_KNOWN_BUILTIN_CODE:
            problems.append(f"operator {code.name} is newer than edgetpu_compiler {rules.COMPILER_VERSION}")
            continue
        limit = rules.max_version(code.name)
        if limit is not None and code.version > limit:
            advice = rules.version_advice(code.name, code.version)
            problems.append(
                f"Didn't find op for builtin opcode '{code.name}' version '{code.version}': "
                f"the compiler parses up to version {limit}" + (f"; {advice}" if advice else "")
            )
    if model.subgraphs and any(t.is_dynamic for t in model.subgraphs[0].tensors):
        problems.append(
            "dynamic-sized tensors (a -1 in a shape signature): convert with a fixed batch of 1 "
            "(`edge-compile quantize` does)"
        )
    return problems


def _is_quantized(model: TfliteModel, sg: Subgraph) -> tuple[bool, bool, List[str]]:
    """(every operator computes in integers, any does, the names of float tensors).

    QUANTIZE / DEQUANTIZE at the edges are not counted: a float-in/float-out model with
    an integer body is quantized. A partly float model compiles up to its first float op.
    """
    floats = [t.name for t in sg.tensors if t.type in ("FLOAT32", "FLOAT16")]
    float_ops = 0
    int_ops = 0
    for op in sg.operators:
        name = model.operator_codes[op.opcode_index].name
        if name in ("QUANTIZE", "DEQUANTIZE"):
            continue
        outs = [sg.tensors[i].type for i in op.outputs if i >= 0]
        if any(t in ("FLOAT32", "FLOAT16") for t in outs):
            float_ops += 1
        elif outs:
            int_ops += 1
    return float_ops == 0 and int_ops > 0, int_ops > 0, floats


def analyze(model: TfliteModel, name: str = "model.tflite") -> InspectReport:
    """Predict the Edge TPU status of every operator of ``model``'s main subgraph."""
    if not model.subgraphs:
        return InspectReport(
            name,
            False,
            [],
            [],
            None,
            None,
            0,
            rules.ON_CHIP_PARAMETER_CACHE_BYTES,
            ["the model has no subgraph"],
        )
    sg = model.subgraphs[0]
    quantized, any_quantized, floats = _is_quantized(model, sg)
    problems = _model_problems(model, any_quantized)
    # Tensors produced before the Edge TPU segment starts: graph inputs and constants.
    pre_segment: Set[int] = set(sg.inputs)
    preds: List[OpPrediction] = []
    cut_index: Optional[int] = None
    segment_started = False
    param_bytes = 0
    counted: Set[int] = set()
    for i, op in enumerate(sg.operators):
        code = model.operator_codes[op.opcode_index]
        spec = rules.EDGE_TPU_OPS.get(code.name)
        status, reason = _blocking_status(model, sg, i)
        leading_quantize = (
            code.name == "QUANTIZE"
            and status == rules.UNSUPPORTED_TYPE
            and all(j < 0 or j in pre_segment or _constant(model, sg, j) for j in op.inputs)
        )
        on_tpu = False
        if status and not segment_started and leading_quantize:
            pre_segment.update(op.outputs)  # runs on the CPU ahead of the segment
        elif status and cut_index is None:
            cut_index = i
        elif not status and cut_index is None:
            on_tpu = True
            segment_started = True
        elif not status:
            status, reason = rules.AFTER_CUT, f"after the cut at operator {cut_index}"
        if on_tpu:
            status = rules.MAPPED
            for j in op.inputs:
                t = sg.tensors[j] if j >= 0 else None
                if t is not None and _constant(model, sg, j) and t.buffer not in counted:
                    counted.add(t.buffer)
                    param_bytes += model.buffer_sizes[t.buffer]
        preds.append(
            OpPrediction(i, code.name, code.version, status, on_tpu, reason, spec.min_runtime if spec else None)
        )
    if problems:  # the compiler refuses the model: nothing maps
        for p in preds:
            if p.on_edgetpu:
                p.on_edgetpu, p.status, p.reason = False, REFUSED, "the compiler refuses the model"
    return InspectReport(
        model=name,
        quantized=quantized,
        float_tensors=floats,
        operators=preds,
        cut_index=cut_index,
        cut_op=preds[cut_index].op if cut_index is not None else None,
        parameter_bytes=param_bytes,
        on_chip_cache_bytes=rules.ON_CHIP_PARAMETER_CACHE_BYTES,
        problems=problems,
    )


def inspect_file(path: Path) -> InspectReport:
    """Read ``path`` and return its pre-flight report.

    Raises:
        ModelSourceError: the file is missing or not a TensorFlow Lite model.
    """
    return analyze(read_tflite(Path(path)), name=str(path))


def format_size(n: float) -> str:
    """Bytes in the compiler's style: ``0.00B``, ``961.05KiB``, ``6.86MiB`` (``?`` when unknown, < 0)."""
    if n < 0:
        return "?"
    for unit in ("B", "KiB", "MiB"):
        if n < 1024 or unit == "MiB":
            return f"{n:.2f}{unit}"
        n /= 1024
    return f"{n:.2f}MiB"


def render(report: InspectReport) -> str:
    """A human-readable table of the prediction."""
    lines = [f"Model: {report.model}"]
    partly = not report.quantized and report.ops_on_edgetpu > 0
    lines.append(
        f"Quantized: {'yes' if report.quantized else 'partly' if partly else 'no'}"
        + (f" ({len(report.float_tensors)} float tensors)" if report.float_tensors else "")
    )
    lines.append(f"{'#':>4}  {'Operator':<26} {'Ver':>3}  {'Where':<8} Status")
    for op in report.operators:
        where = "EdgeTPU" if op.on_edgetpu else "CPU"
        detail = f" ({op.reason})" if op.reason and not op.on_edgetpu else ""
        lines.append(f"{op.index:>4}  {op.op:<26} {op.version:>3}  {where:<8} {op.status}{detail}")
    if report.cut_index is not None:
        lines.append(f"Cut: operator {report.cut_index} ({report.cut_op}) and everything after it run on the CPU")
    lines.append(
        f"Operations on Edge TPU: {report.ops_on_edgetpu}, on CPU: {len(report.operators) - report.ops_on_edgetpu}"
    )
    stream = "stream from off-chip memory" if report.streams_parameters else "fit in the on-chip cache"
    lines.append(
        f"Parameters: {format_size(report.parameter_bytes)} of "
        f"{format_size(report.on_chip_cache_bytes)} on-chip: they {stream}"
    )
    for problem in report.problems:
        lines.append(f"Problem: {problem}")
    lines.append("Compilable: " + ("yes" if report.compilable else "no"))
    return "\n".join(lines)
