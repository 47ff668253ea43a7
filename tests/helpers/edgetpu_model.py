"""A tiny ``.tflite`` shaped like an Edge TPU compiler output, for the libedgetpu stand-in.

A model the Edge TPU compiler produced holds one ``CUSTOM`` operator named
``edgetpu-custom-op`` whose custom options carry the TPU executable; only libedgetpu's
delegate can run it, and a plain interpreter fails on the unresolved custom op. The
tests cannot download such a model, so this writes one by hand with the ``flatbuffers``
runtime: uint8 input ``1xHxWx3`` -> one ``edgetpu-custom-op`` node -> uint8 output
``1xN``, no weights. The custom options are a marker, not an executable: only the
stand-in (tests/stand_ins/libedgetpu) can "run" it.

Field numbers follow TensorFlow Lite's ``schema.fbs`` (the same table as
``compiler/tflite.py`` reads): table field *n* is slot *n* of the builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence

import flatbuffers

CUSTOM_OP = "edgetpu-custom-op"
BUILTIN_CUSTOM = 32  # BuiltinOperator.CUSTOM
UINT8 = 3  # TensorType.UINT8
SCHEMA_VERSION = 3
MARKER = b"edgetpu-standin"  # custom_options; a real model has a DWN1 executable here


def _int_vector(b: flatbuffers.Builder, values: Sequence[int]) -> int:
    b.StartVector(4, len(values), 4)
    for v in reversed(values):
        b.PrependInt32(v)
    return b.EndVector()


def _offset_vector(b: flatbuffers.Builder, offsets: Sequence[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _quantization(b: flatbuffers.Builder, scale: float, zero_point: int) -> int:
    b.StartVector(4, 1, 4)
    b.PrependFloat32(scale)
    scales = b.EndVector()
    b.StartVector(8, 1, 8)
    b.PrependInt64(zero_point)
    zeros = b.EndVector()
    b.StartObject(7)  # QuantizationParameters
    b.PrependUOffsetTRelativeSlot(2, scales, 0)  # scale
    b.PrependUOffsetTRelativeSlot(3, zeros, 0)  # zero_point
    return b.EndObject()


def _tensor(b: flatbuffers.Builder, name: str, shape: Sequence[int], scale: float) -> int:
    name_off = b.CreateString(name)
    shape_off = _int_vector(b, shape)
    quant = _quantization(b, scale, 0)
    b.StartObject(8)  # Tensor
    b.PrependUOffsetTRelativeSlot(0, shape_off, 0)  # shape
    b.PrependInt8Slot(1, UINT8, 0)  # type
    b.PrependUint32Slot(2, 0, 0)  # buffer 0: the empty sentinel, no data
    b.PrependUOffsetTRelativeSlot(3, name_off, 0)  # name
    b.PrependUOffsetTRelativeSlot(4, quant, 0)  # quantization
    return b.EndObject()


def build(height: int = 8, width: int = 8, classes: int = 10) -> bytes:
    """The model bytes: uint8 ``[1, height, width, 3]`` -> edgetpu-custom-op -> uint8 ``[1, classes]``."""
    b = flatbuffers.Builder(1024)

    # Operator code: CUSTOM named edgetpu-custom-op (both the old byte and the int32 code).
    custom_name = b.CreateString(CUSTOM_OP)
    b.StartObject(4)  # OperatorCode
    b.PrependInt8Slot(0, BUILTIN_CUSTOM, 0)  # deprecated_builtin_code
    b.PrependUOffsetTRelativeSlot(1, custom_name, 0)  # custom_code
    b.PrependInt32Slot(2, 1, 1)  # version
    b.PrependInt32Slot(3, BUILTIN_CUSTOM, 0)  # builtin_code
    opcode = b.EndObject()

    tensors: List[int] = [
        _tensor(b, "input", [1, height, width, 3], 1.0 / 255.0),
        _tensor(b, "output", [1, classes], 1.0 / 256.0),
    ]

    custom_options = b.CreateByteVector(MARKER)
    op_inputs = _int_vector(b, [0])
    op_outputs = _int_vector(b, [1])
    b.StartObject(7)  # Operator
    b.PrependUint32Slot(0, 0, 0)  # opcode_index
    b.PrependUOffsetTRelativeSlot(1, op_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, op_outputs, 0)
    b.PrependUOffsetTRelativeSlot(5, custom_options, 0)
    b.PrependInt8Slot(6, 0, 0)  # custom_options_format FLEXBUFFERS (the only value)
    operator = b.EndObject()

    tensors_vec = _offset_vector(b, tensors)
    sg_inputs = _int_vector(b, [0])
    sg_outputs = _int_vector(b, [1])
    operators_vec = _offset_vector(b, [operator])
    sg_name = b.CreateString("main")
    b.StartObject(5)  # SubGraph
    b.PrependUOffsetTRelativeSlot(0, tensors_vec, 0)
    b.PrependUOffsetTRelativeSlot(1, sg_inputs, 0)
    b.PrependUOffsetTRelativeSlot(2, sg_outputs, 0)
    b.PrependUOffsetTRelativeSlot(3, operators_vec, 0)
    b.PrependUOffsetTRelativeSlot(4, sg_name, 0)
    subgraph = b.EndObject()

    b.StartObject(3)  # Buffer 0: empty, as the schema requires
    empty_buffer = b.EndObject()

    opcodes_vec = _offset_vector(b, [opcode])
    subgraphs_vec = _offset_vector(b, [subgraph])
    buffers_vec = _offset_vector(b, [empty_buffer])
    description = b.CreateString("tiny edgetpu-custom-op model for the libedgetpu stand-in")
    b.StartObject(8)  # Model
    b.PrependUint32Slot(0, SCHEMA_VERSION, 0)
    b.PrependUOffsetTRelativeSlot(1, opcodes_vec, 0)
    b.PrependUOffsetTRelativeSlot(2, subgraphs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, description, 0)
    b.PrependUOffsetTRelativeSlot(4, buffers_vec, 0)
    model = b.EndObject()
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


def write(directory: Path, height: int = 8, width: int = 8, classes: int = 10) -> Path:
    """Write ``tiny_edgetpu.tflite`` into ``directory`` and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "tiny_edgetpu.tflite"
    path.write_bytes(build(height, width, classes))
    return path
