"""Pre-flight check: predict what ``edgetpu_compiler`` will do with a ``.tflite`` model.

Works from the flatbuffer alone (:mod:`compiler.tflite`) and the rules in
:mod:`compiler.rules` / :mod:`compiler.support`, so it runs on any OS without the
compiler or TensorFlow.

How the split is predicted: each operator is judged on its own (supported operation,
version, types, rank, size limits); then the graph is partitioned the way the compiler
does it (:mod:`compiler.partition`). The split follows data dependencies: unmappable
operators that only read the graph's inputs (a leading CAST or float->int8 QUANTIZE)
run on the CPU ahead of the Edge TPU segment; an unmappable operator after that cuts
off what depends on it ("More than one subgraph is not supported"), not what merely
comes after it in execution order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from compiler import rules
from compiler.partition import ahead_of_segment, edgetpu_segment, partition
from compiler.support import is_constant, op_support
from compiler.tflite import Subgraph, TfliteModel
from compiler.tflite import read as read_tflite
from release_contract.models import EDGETPU_CUSTOM_OP  # the custom op that holds what the compiler mapped

#: Version of the JSON form of :class:`InspectReport` (documented in docs/compiler.md).
SCHEMA_VERSION = 2
#: Status of otherwise mappable operators of a model the compiler refuses as a whole.
REFUSED = "Not compiled: the model is refused (see problems)"
#: Statuses of the operators of an already compiled model.
COMPILED = "Already compiled for the Edge TPU"
COMPILED_CPU = "Left on the CPU by the compiler"
ALREADY_COMPILED = (
    f"already compiled for the Edge TPU (it contains {EDGETPU_CUSTOM_OP}): "
    "inspect or compile the int8 model it was compiled from"
)


@dataclass
class OpPrediction:
    """One operator: its place in the graph, version and predicted status.

    ``depends_on`` is, for an operator that could map but is cut off, the operator on the
    CPU it depends on.
    """

    index: int
    op: str
    version: int
    status: str
    on_edgetpu: bool
    reason: str = ""
    min_runtime: Optional[int] = None
    depends_on: Optional[int] = None


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
    already_compiled: bool = False

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
        """A JSON-ready dict (``schema_version`` 2, see docs/compiler.md)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "compilable": self.compilable,
            "already_compiled": self.already_compiled,
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


def _model_problems(model: TfliteModel, any_quantized: bool) -> List[str]:
    """Reasons the compiler would refuse the whole model."""
    problems = []
    if not any_quantized:
        problems.append(
            "Model not quantized: the Edge TPU needs full-integer (int8) quantization; "
            "run `edge-compile quantize` on it or on its Keras/SavedModel source"
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
    an integer body is quantized. Only the integer part of a partly float model can map.
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


def _dependency_on_cpu(sg: Subgraph, op_index: int, blocked: Sequence[bool]) -> Optional[int]:
    """An operator ``op_index`` depends on (directly or not) that cannot map, or None."""
    producer = {t: i for i, op in enumerate(sg.operators) for t in op.outputs if t >= 0}
    stack, seen = [op_index], {op_index}
    while stack:
        for t in sg.operators[stack.pop()].inputs:
            j = producer.get(t)
            if j is None or j in seen:
                continue
            if blocked[j]:
                return j
            seen.add(j)
            stack.append(j)
    return None


def _compiled_report(model: TfliteModel, sg: Subgraph, name: str) -> InspectReport:
    """The report of a model edgetpu_compiler already compiled: what is inside its custom op and what is not."""
    preds = []
    for i, op in enumerate(sg.operators):
        code = model.operator_codes[op.opcode_index]
        inside = code.custom_code == EDGETPU_CUSTOM_OP
        status = COMPILED if inside else COMPILED_CPU
        preds.append(OpPrediction(i, code.name, code.version, status, inside))
    return InspectReport(
        model=name,
        quantized=True,
        float_tensors=[t.name for t in sg.tensors if t.type in ("FLOAT32", "FLOAT16")],
        operators=preds,
        cut_index=None,
        cut_op=None,
        parameter_bytes=0,
        on_chip_cache_bytes=rules.ON_CHIP_PARAMETER_CACHE_BYTES,
        problems=[ALREADY_COMPILED],
        already_compiled=True,
    )


def is_compiled(model: TfliteModel) -> bool:
    """True when ``model`` holds an ``edgetpu-custom-op``: edgetpu_compiler made it."""
    return any(code.custom_code == EDGETPU_CUSTOM_OP for code in model.operator_codes)


def analyze(model: TfliteModel, name: str = "model.tflite") -> InspectReport:
    """Predict the Edge TPU status of every operator of ``model``'s main subgraph.

    Each operator is first judged on its own (:func:`compiler.support.op_support`); then
    the graph is partitioned as the compiler does (:mod:`compiler.partition`): the first
    group of operators that can map is the Edge TPU segment, everything else runs on the CPU.
    """
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
    if is_compiled(model):
        return _compiled_report(model, sg, name)
    quantized, any_quantized, floats = _is_quantized(model, sg)
    problems = _model_problems(model, any_quantized)
    verdicts = [op_support(model, sg, i) for i in range(len(sg.operators))]
    blocked = [bool(status) for status, _ in verdicts]
    subsets = partition(sg, [not b for b in blocked])
    segment = edgetpu_segment(subsets)
    ahead = ahead_of_segment(subsets)
    cut_index = next((i for i, b in enumerate(blocked) if b and i not in ahead), None)
    preds: List[OpPrediction] = []
    param_bytes = 0
    counted: Set[int] = set()
    for i, op in enumerate(sg.operators):
        code = model.operator_codes[op.opcode_index]
        spec = rules.EDGE_TPU_OPS.get(code.name)
        status, reason = verdicts[i]
        on_tpu = i in segment
        depends_on = None
        if on_tpu:
            status = rules.MAPPED
            for j in op.inputs:
                t = sg.tensors[j] if j >= 0 else None
                if t is not None and is_constant(model, sg, j) and t.buffer not in counted:
                    counted.add(t.buffer)
                    param_bytes += model.buffer_sizes[t.buffer]
        elif i in ahead:
            reason = f"{reason}; runs on the CPU ahead of the Edge TPU segment, without cutting it"
        elif not status:
            depends_on = _dependency_on_cpu(sg, i, blocked)
            status = rules.AFTER_CUT
            reason = (
                f"depends on operator {depends_on} ({preds[depends_on].op}), which runs on the CPU"
                if depends_on is not None and depends_on < i
                else "outside the Edge TPU segment"
            )
        preds.append(
            OpPrediction(
                i,
                code.name,
                code.version,
                status,
                on_tpu,
                reason,
                spec.min_runtime if spec else None,
                depends_on,
            )
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
        lines.append(
            f"Cut: operator {report.cut_index} ({report.cut_op}) runs on the CPU, and so does what depends on it"
        )
    lines.append(
        f"Operations on Edge TPU: {report.ops_on_edgetpu}, on CPU: {len(report.operators) - report.ops_on_edgetpu}"
    )
    if not report.already_compiled:  # its parameters are inside the custom op, not measured here
        stream = "stream from off-chip memory" if report.streams_parameters else "fit in the on-chip cache"
        lines.append(
            f"Parameters: {format_size(report.parameter_bytes)} of "
            f"{format_size(report.on_chip_cache_bytes)} on-chip: they {stream}"
        )
    for problem in report.problems:
        lines.append(f"Problem: {problem}")
    lines.append("Compilable: " + ("yes" if report.compilable else "no"))
    return "\n".join(lines)
