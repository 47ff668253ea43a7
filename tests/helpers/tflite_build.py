"""Write small .tflite flatbuffers by hand (no TensorFlow), with the schema LiteRT ships.

Used to make an `_edgetpu.tflite`-shaped model (one holding `edgetpu-custom-op`) and its
source: only the real compiler can make a working one, but the structure is all the
pre-flight check and the accuracy harness read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import flatbuffers
from ai_edge_litert import schema_py_generated as schema


@dataclass
class T:
    """A tensor: name, type name (INT8...), shape, and constant data (None = activation)."""

    name: str
    type: str
    shape: Sequence[int]
    data: Optional[bytes] = None


@dataclass
class Op:
    """An operator: builtin name (ADD) or custom name, input and output tensor indices."""

    name: str
    inputs: Sequence[int]
    outputs: Sequence[int]


def build(tensors: List[T], ops: List[Op], inputs: Sequence[int], outputs: Sequence[int]) -> bytes:
    """A one-subgraph model with these tensors and operators."""
    builtins = {k: v for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    types = {k: v for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    model = schema.ModelT()
    model.version = 3
    model.buffers = [schema.BufferT()]
    model.operatorCodes = []
    code_index = {}
    for op in ops:
        if op.name in code_index:
            continue
        code = schema.OperatorCodeT()
        if op.name in builtins:
            code.builtinCode = builtins[op.name]
            code.deprecatedBuiltinCode = min(builtins[op.name], 127)
        else:
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
            code.customCode = op.name
        code.version = 1
        code_index[op.name] = len(model.operatorCodes)
        model.operatorCodes.append(code)
    sg = schema.SubGraphT()
    sg.tensors = []
    for t in tensors:
        tensor = schema.TensorT()
        tensor.name = t.name
        tensor.type = types[t.type]
        tensor.shape = list(t.shape)
        tensor.buffer = 0
        if t.data is not None:
            buf = schema.BufferT()
            buf.data = list(t.data)
            tensor.buffer = len(model.buffers)
            model.buffers.append(buf)
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint = [0.1], [0]
        tensor.quantization = q
        sg.tensors.append(tensor)
    sg.operators = []
    for op in ops:
        o = schema.OperatorT()
        o.opcodeIndex = code_index[op.name]
        o.inputs, o.outputs = list(op.inputs), list(op.outputs)
        sg.operators.append(o)
    sg.inputs, sg.outputs = list(inputs), list(outputs)
    model.subgraphs = [sg]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def leaky_pair() -> tuple[bytes, bytes]:
    """(source, compiled twin): ADD -> LEAKY_RELU -> ADD, where the compiler mapped the first ADD only."""
    tensors = [
        T("input", "INT8", [1, 4, 4, 3]),
        T("bias", "INT8", [1, 1, 1, 3], b"\x01\x02\x03"),
        T("add", "INT8", [1, 4, 4, 3]),
        T("leaky", "INT8", [1, 4, 4, 3]),
        T("output", "INT8", [1, 4, 4, 3]),
    ]
    source = build(
        tensors,
        [Op("ADD", [0, 1], [2]), Op("LEAKY_RELU", [2], [3]), Op("ADD", [3, 1], [4])],
        [0],
        [4],
    )
    compiled = build(
        tensors,
        [Op("edgetpu-custom-op", [0], [2]), Op("LEAKY_RELU", [2], [3]), Op("ADD", [3, 1], [4])],
        [0],
        [4],
    )
    return source, compiled


def branch_pair() -> tuple[bytes, bytes]:
    """(source, compiled twin): ADD -> LEAKY_RELU, and a second ADD beside them that reads only the input.

    The twin is what a compiler that cuts in execution order would make: the first ADD mapped,
    LEAKY_RELU and the independent ADD left on the CPU.
    """
    tensors = [
        T("input", "INT8", [1, 4, 4, 3]),
        T("bias", "INT8", [1, 1, 1, 3], b"\x01\x02\x03"),
        T("add", "INT8", [1, 4, 4, 3]),
        T("leaky", "INT8", [1, 4, 4, 3]),
        T("side", "INT8", [1, 4, 4, 3]),
    ]
    source = build(
        tensors,
        [Op("ADD", [0, 1], [2]), Op("LEAKY_RELU", [2], [3]), Op("ADD", [0, 1], [4])],
        [0],
        [3, 4],
    )
    compiled = build(
        tensors,
        [Op("edgetpu-custom-op", [0], [2]), Op("LEAKY_RELU", [2], [3]), Op("ADD", [0, 1], [4])],
        [0],
        [3, 4],
    )
    return source, compiled
