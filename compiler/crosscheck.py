"""The pre-flight prediction around a compile: shown before, checked against the compiler after.

Before compiling, :func:`preflight` predicts each model's split (and refuses a model that
is already compiled). After, :func:`differences` compares the prediction with what the
compiler did: with its ``_edgetpu.log`` (operator / count / status rows), and operator by
operator with the compiled model when it holds an ``edgetpu-custom-op``. Each difference
is a line a user can report, so the rules in :mod:`compiler.rules` keep improving on
real devices.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from compiler import accuracy, rules, tflite
from compiler.errors import CompilerError, ModelSourceError
from compiler.inspect import ALREADY_COMPILED, InspectReport, inspect_file
from compiler.report import OperationStatus


def preflight(models: Sequence[Path]) -> Dict[Path, InspectReport]:
    """The prediction for each readable model (unreadable ones are left to the compile step).

    Raises:
        ModelSourceError: a model is already compiled for the Edge TPU (exit status 2).
    """
    reports: Dict[Path, InspectReport] = {}
    for model in models:
        try:
            reports[model] = inspect_file(model)
        except CompilerError:
            continue
        if reports[model].already_compiled:
            raise ModelSourceError(f"{model}: {ALREADY_COMPILED}; not compiling it again")
    return reports


def summary(model: Path, pre: InspectReport, min_runtime_version: Optional[int] = None) -> List[str]:
    """Lines that show the predicted split: counts, the cut, and each operator predicted on the CPU."""
    lines = []
    if min_runtime_version is not None and pre.min_runtime > min_runtime_version:
        newer = sorted({o.op for o in pre.operators if (o.min_runtime or 10) > min_runtime_version})
        lines.append(
            f"warning: {', '.join(newer)} need Edge TPU runtime {pre.min_runtime}; "
            f"with -m {min_runtime_version} they may stay on the CPU"
        )
    cut = f", cut at operator {pre.cut_index} ({pre.cut_op})" if pre.cut_index is not None else ""
    lines.append(
        f"pre-flight {model}: {pre.ops_on_edgetpu}/{len(pre.operators)} operations predicted on the Edge TPU{cut}"
    )
    for op in pre.operators:
        if not op.on_edgetpu:
            why = f" ({op.reason})" if op.reason else ""
            lines.append(f"  predicted on the CPU: {op.index} {op.op}: {op.status}{why}")
    return lines


def against_log(pre: InspectReport, rows: Sequence[OperationStatus]) -> List[str]:
    """Where the predicted count of mapped operators per kind differs from the compiler's log."""
    if not rows:
        return []
    predicted = Counter(op.op for op in pre.operators if op.on_edgetpu)
    mapped = Counter({r.op: 0 for r in rows})
    statuses: Dict[str, List[str]] = {}
    for r in rows:
        if r.status == rules.MAPPED:
            mapped[r.op] += r.count
        else:
            statuses.setdefault(r.op, []).append(f"{r.count} {r.status}")
    out = []
    for op in sorted(set(predicted) | set(mapped)):
        if predicted[op] != mapped[op]:
            why = f" (compiler: {'; '.join(statuses[op])})" if op in statuses else ""
            out.append(f"{op}: predicted {predicted[op]} on the Edge TPU, the compiler mapped {mapped[op]}{why}")
    return out


def against_compiled(pre: InspectReport, source: Path, compiled: Path) -> List[str]:
    """Operator by operator, where the prediction differs from the compiled model's split.

    Empty when the compiled model holds no ``edgetpu-custom-op`` (nothing to compare with).
    """
    try:
        truth = accuracy.ground_truth(tflite.read(source), tflite.read(compiled))
    except (CompilerError, ValueError):
        return []
    return [
        f"operator {d.index} {d.op}: predicted {d.predicted} ({d.status}), ran on {d.actual}"
        for d in accuracy.compare(pre, truth).disagreements
    ]


def differences(pre: InspectReport, source: Path, compiled: Path, rows: Sequence[OperationStatus]) -> List[str]:
    """Every way the prediction for ``source`` differs from what the compiler did."""
    return against_compiled(pre, source, compiled) + against_log(pre, rows)
