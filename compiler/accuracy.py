"""How well ``inspect`` predicts the compiler: per-operator comparison with a compiled twin.

Ground truth comes from a pair ``X.tflite`` / ``X_edgetpu.tflite`` that Google's
``edgetpu_compiler`` really produced: the operators it mapped disappear into the
``edgetpu-custom-op``; the ones it left on the CPU stay in the compiled model as they
were, with their output tensors' names, shapes and types. So an operator of ``X`` ran on
the CPU when the compiled model still has an operator of the same kind writing the same
outputs, and on the Edge TPU otherwise.

``scripts/inspect_accuracy.py`` prints the table for folders of such pairs, and the
tests run it on the graphs of Coral's public pairs kept under ``tests/data/``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from compiler.inspect import InspectReport, analyze
from release_contract.models import EDGETPU_CUSTOM_OP

__all__ = ["Agreement", "Disagreement", "analyze", "compare", "ground_truth", "measure"]
from compiler.tflite import Operator, OperatorCode, Subgraph, Tensor, TfliteModel


@dataclass(frozen=True)
class Disagreement:
    """One operator the prediction got wrong."""

    index: int
    op: str
    predicted: str  # "edgetpu" or "cpu"
    actual: str
    status: str
    reason: str


@dataclass
class Agreement:
    """Prediction against ground truth for one model."""

    model: str
    total: int
    agreed: int
    on_edgetpu: int
    disagreements: List[Disagreement] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when every operator was predicted right."""
        return self.agreed == self.total


def _outputs(sg: Subgraph, op: Operator, key: str) -> Tuple[Any, ...]:
    tensors = [sg.tensors[i] for i in op.outputs if i >= 0]
    if key == "name":
        return tuple(t.name for t in tensors)
    return tuple((t.type, t.shape) for t in tensors)


def ground_truth(cpu: TfliteModel, compiled: TfliteModel) -> List[bool]:
    """For each operator of ``cpu``'s main subgraph: did the compiler put it on the Edge TPU?

    Operators left outside ``edgetpu-custom-op`` in ``compiled`` are matched to ``cpu``'s
    by kind and output tensor names, then (for any left over) by kind and output types and
    shapes, in execution order.

    Raises:
        ValueError: ``compiled`` has no ``edgetpu-custom-op``, or CPU operators that match
            nothing in ``cpu`` (the two models are not a pair).
    """
    if not any(c.custom_code == EDGETPU_CUSTOM_OP for c in compiled.operator_codes):
        raise ValueError(f"the compiled model has no {EDGETPU_CUSTOM_OP}")
    csg, esg = cpu.subgraphs[0], compiled.subgraphs[0]
    left = [op for op in esg.operators if compiled.operator_codes[op.opcode_index].custom_code != EDGETPU_CUSTOM_OP]
    on_tpu = [True] * len(csg.operators)
    for key in ("name", "shape"):
        waiting: Dict[Tuple[Any, ...], List[Operator]] = defaultdict(list)
        for op in left:
            waiting[(compiled.operator_codes[op.opcode_index].name, _outputs(esg, op, key))].append(op)
        for i, op in enumerate(csg.operators):
            found = waiting.get((cpu.operator_codes[op.opcode_index].name, _outputs(csg, op, key)))
            if on_tpu[i] and found:
                on_tpu[i] = False
                left.remove(found.pop(0))
    if left:
        names = sorted({compiled.operator_codes[op.opcode_index].name for op in left})
        raise ValueError(f"{len(left)} CPU operators of the compiled model match none of the source's: {names}")
    return on_tpu


def compare(report: InspectReport, truth: Sequence[bool]) -> Agreement:
    """Score ``report`` (inspect's prediction) against ``truth`` (from :func:`ground_truth`)."""
    where = {True: "edgetpu", False: "cpu"}
    wrong = [
        Disagreement(p.index, p.op, where[p.on_edgetpu], where[t], p.status, p.reason)
        for p, t in zip(report.operators, truth)
        if p.on_edgetpu != t
    ]
    total = len(truth)
    return Agreement(report.model, total, total - len(wrong), sum(truth), wrong)


def measure(cpu: TfliteModel, compiled: TfliteModel, name: str) -> Agreement:
    """Predict ``cpu`` and score the prediction against its compiled twin."""
    return compare(analyze(cpu, name), ground_truth(cpu, compiled))


def render_table(rows: Sequence[Agreement]) -> str:
    """A Markdown table: per model, operators, how many on the Edge TPU, how many predicted right."""
    lines = [
        "| model | ops | on Edge TPU | predicted right | disagreements |",
        "|---|---:|---:|---:|---|",
    ]
    for r in rows:
        wrong = ", ".join(f"{d.index} {d.op} (said {d.predicted}, was {d.actual})" for d in r.disagreements)
        lines.append(f"| {r.model} | {r.total} | {r.on_edgetpu} | {r.agreed}/{r.total} | {wrong or '-'} |")
    ops = sum(r.total for r in rows)
    agreed = sum(r.agreed for r in rows)
    exact = sum(1 for r in rows if r.exact)
    lines.append(f"| **all {len(rows)} models** ({exact} exact) | {ops} | | {agreed}/{ops} | |")
    return "\n".join(lines)


# A model's graph without its weights, as JSON: what the prediction reads and nothing more.


def graph_to_dict(model: TfliteModel) -> Dict[str, Any]:
    """The main subgraph's structure (operators, tensors, which buffers hold data), JSON-ready."""
    sg = model.subgraphs[0]
    return {
        "version": model.version,
        "operator_codes": [[c.builtin_code, c.version, c.custom_code] for c in model.operator_codes],
        "buffer_sizes": model.buffer_sizes,
        "inputs": list(sg.inputs),
        "outputs": list(sg.outputs),
        "tensors": [
            {
                "name": t.name,
                "type": t.type,
                "shape": list(t.shape),
                **({"shape_signature": list(t.shape_signature)} if t.shape_signature != t.shape else {}),
                "buffer": t.buffer,
                "quantized": t.quantized,
                **({"is_variable": True} if t.is_variable else {}),
            }
            for t in sg.tensors
        ],
        "operators": [[op.opcode_index, list(op.inputs), list(op.outputs)] for op in sg.operators],
    }


def graph_from_dict(data: Dict[str, Any]) -> TfliteModel:
    """The inverse of :func:`graph_to_dict`: a model the prediction can analyse."""
    tensors = [
        Tensor(
            name=t["name"],
            type=t["type"],
            shape=tuple(t["shape"]),
            shape_signature=tuple(t.get("shape_signature", t["shape"])),
            buffer=t["buffer"],
            quantized=t["quantized"],
            is_variable=t.get("is_variable", False),
        )
        for t in data["tensors"]
    ]
    ops = [Operator(code, tuple(ins), tuple(outs)) for code, ins, outs in data["operators"]]
    sg = Subgraph("", tensors, ops, tuple(data["inputs"]), tuple(data["outputs"]))
    codes = [OperatorCode(b, v, c) for b, v, c in data["operator_codes"]]
    return TfliteModel(data["version"], codes, [sg], list(data["buffer_sizes"]))


def pair_fixture(cpu: TfliteModel, compiled: TfliteModel, source: str) -> Dict[str, Any]:
    """A pair's fixture: the source model's graph and the operators the compiler left on the CPU."""
    truth = ground_truth(cpu, compiled)
    return {
        "source": source,
        "graph": graph_to_dict(cpu),
        "cpu_operators": [i for i, t in enumerate(truth) if not t],
    }


def measure_fixture(fixture: Dict[str, Any], name: Optional[str] = None) -> Agreement:
    """Score inspect on a fixture written by :func:`pair_fixture`."""
    model = graph_from_dict(fixture["graph"])
    cpu_ops = set(fixture["cpu_operators"])
    truth = [i not in cpu_ops for i in range(len(model.subgraphs[0].operators))]
    return compare(analyze(model, name or fixture["source"]), truth)
