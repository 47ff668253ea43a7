"""Whether one operator, taken on its own, can run on the Edge TPU.

This is the per-operator half of the prediction; :mod:`compiler.partition` decides
which of the operators that can map end up in the one Edge TPU segment. Each check
cites its evidence in :mod:`compiler.rules` or in the compiled models listed in
``docs/compiler.md``.
"""

from __future__ import annotations

from typing import Tuple

from compiler import rules
from compiler.tflite import Subgraph, TfliteModel


def is_constant(model: TfliteModel, sg: Subgraph, index: int) -> bool:
    """True when tensor ``index`` of ``sg`` holds data in the model (a weight, a bias, a shape)."""
    buffer = sg.tensors[index].buffer
    return 0 < buffer < len(model.buffer_sizes) and model.buffer_sizes[buffer] > 0


def _allowed_types(model: TfliteModel, sg: Subgraph, op_name: str, index: int) -> frozenset[str]:
    if is_constant(model, sg, index):
        return rules.CONSTANT_TYPES
    if op_name in rules.INT16_STATE_OPS and sg.tensors[index].is_variable:
        return rules.QUANTIZED_TYPES | {"INT16"}
    return rules.QUANTIZED_TYPES


def resize_scale(sg: Subgraph, op_index: int) -> float:
    """The largest factor by which a resize operator scales height or width (1.0 if unknown).

    Inputs and outputs are ``[batch, height, width, channels]``.
    """
    op = sg.operators[op_index]
    if not op.inputs or not op.outputs or op.inputs[0] < 0 or op.outputs[0] < 0:
        return 1.0
    src, dst = sg.tensors[op.inputs[0]].shape, sg.tensors[op.outputs[0]].shape
    if len(src) != 4 or len(dst) != 4 or min(src[1:3]) <= 0:
        return 1.0
    return max(dst[1] / src[1], dst[2] / src[2])


def op_support(model: TfliteModel, sg: Subgraph, op_index: int) -> Tuple[str, str]:
    """The status that keeps operator ``op_index`` off the Edge TPU and why, or ("", "") when it can map.

    Statuses are the compiler's own words (see :mod:`compiler.rules`).
    """
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
        if t.type not in _allowed_types(model, sg, code.name, i):
            return rules.UNSUPPORTED_TYPE, f"tensor {t.name!r} is {t.type}"
    for i in tensors:  # weights (4-D filters) are exempt; activations are not
        t = sg.tensors[i]
        if not is_constant(model, sg, i) and any(d != 1 for d in t.shape[:-3]):
            return rules.UNSUPPORTED_RANK, f"tensor {t.name!r} has shape {list(t.shape)}"
    if code.name in rules.RESIZE_OPS:
        scale = resize_scale(sg, op_index)
        if scale > rules.MAX_RESIZE_SCALE:
            return rules.UNSPECIFIED, (
                f"scales by {scale:.3g}, above the {rules.MAX_RESIZE_SCALE:g}x the Edge TPU resizes precisely enough"
            )
    return "", ""
