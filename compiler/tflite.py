"""A small reader for the parts of a ``.tflite`` flatbuffer that the pre-flight check needs.

It reads operator codes (with ``deprecated_builtin_code`` and custom names), operator
versions, each tensor's type, shape, ``shape_signature``, quantization and ``is_variable``
flag, and buffer sizes, using only the ``flatbuffers`` runtime. Field numbers follow TensorFlow Lite's schema
(``tensorflow/lite/schema/schema.fbs``): a table's field *n* sits at vtable offset
``4 + 2 * n``. No TensorFlow is needed, so it runs on any OS.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from flatbuffers import encode, number_types, packer
from flatbuffers.table import Table

from compiler._opnames import builtin_name
from compiler.errors import ModelSourceError
from release_contract.models import is_tflite

# TensorType enum of the schema.
TENSOR_TYPES = (
    "FLOAT32 FLOAT16 INT32 UINT8 INT64 STRING BOOL INT16 COMPLEX64 INT8 FLOAT64 COMPLEX128 "
    "UINT64 RESOURCE VARIANT UINT32 UINT16 INT4 BFLOAT16"
).split()

CUSTOM_CODE = 32  # BuiltinOperator.CUSTOM
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127


@dataclass(frozen=True)
class OperatorCode:
    """One entry of the model's operator-code table."""

    builtin_code: int
    version: int
    custom_code: Optional[str] = None

    @property
    def name(self) -> str:
        """The schema name (``CONV_2D``), or the custom op's name for ``CUSTOM``."""
        if self.builtin_code == CUSTOM_CODE and self.custom_code:
            return self.custom_code
        return builtin_name(self.builtin_code)


@dataclass(frozen=True)
class Tensor:
    """A tensor: type name (``INT8``), static shape, shape signature (-1 = dynamic).

    ``is_variable`` marks state that persists between invocations (an LSTM's cell state).
    """

    name: str
    type: str
    shape: Tuple[int, ...]
    shape_signature: Tuple[int, ...]
    buffer: int
    quantized: bool
    is_variable: bool = False

    @property
    def is_dynamic(self) -> bool:
        """True when any dimension is unknown until run time."""
        return any(d < 0 for d in self.shape_signature)


@dataclass(frozen=True)
class Operator:
    """An operator: index into the operator-code table, input and output tensor indices."""

    opcode_index: int
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]


@dataclass
class Subgraph:
    """A subgraph: its tensors, operators in execution order, and graph inputs/outputs."""

    name: str
    tensors: List[Tensor]
    operators: List[Operator]
    inputs: Tuple[int, ...]
    outputs: Tuple[int, ...]


@dataclass
class TfliteModel:
    """What the pre-flight check reads from a ``.tflite`` file."""

    version: int
    operator_codes: List[OperatorCode]
    subgraphs: List[Subgraph]
    buffer_sizes: List[int] = field(default_factory=list)

    def constant_bytes(self) -> int:
        """Bytes of constant data (weights, biases) referenced by tensors of the main subgraph."""
        seen = set()
        total = 0
        for tensor in self.subgraphs[0].tensors if self.subgraphs else []:
            if 0 < tensor.buffer < len(self.buffer_sizes) and tensor.buffer not in seen:
                seen.add(tensor.buffer)
                total += self.buffer_sizes[tensor.buffer]
        return total


def _field(tab: Table, n: int) -> int:
    return int(tab.Offset(4 + 2 * n))


def _scalar(tab: Table, n: int, flags: number_types.NumberTypeFlags, default: int) -> int:
    off = _field(tab, n)
    return int(tab.Get(flags, tab.Pos + off)) if off else default


def _string(tab: Table, n: int) -> Optional[str]:
    off = _field(tab, n)
    return tab.String(tab.Pos + off).decode("utf-8", "replace") if off else None


def _ints(tab: Table, n: int) -> Tuple[int, ...]:
    off = _field(tab, n)
    if not off:
        return ()
    length = tab.VectorLen(off)
    start = tab.Vector(off)
    return struct.unpack_from(f"<{length}i", tab.Bytes, start)


def _tables(tab: Table, n: int) -> List[Table]:
    off = _field(tab, n)
    if not off:
        return []
    start = tab.Vector(off)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(off))]


def _operator_code(tab: Table) -> OperatorCode:
    deprecated = _scalar(tab, 0, number_types.Int8Flags, 0)
    builtin = _scalar(tab, 3, number_types.Int32Flags, 0)
    # Models written before the 32-bit field existed only fill the deprecated byte;
    # newer ones put 127 there for codes above it. The larger of the two is the code.
    code = max(builtin, deprecated)
    return OperatorCode(
        builtin_code=code,
        version=_scalar(tab, 2, number_types.Int32Flags, 1),
        custom_code=_string(tab, 1),
    )


def _tensor(tab: Table) -> Tensor:
    type_code = _scalar(tab, 1, number_types.Int8Flags, 0)
    shape = _ints(tab, 0)
    signature = _ints(tab, 7) or shape
    quantized = False
    q_off = _field(tab, 4)
    if q_off:
        q = Table(tab.Bytes, tab.Indirect(tab.Pos + q_off))
        quantized = bool(_field(q, 2))  # has a scale vector
    return Tensor(
        name=_string(tab, 3) or "",
        type=TENSOR_TYPES[type_code] if 0 <= type_code < len(TENSOR_TYPES) else f"TYPE_{type_code}",
        shape=tuple(shape),
        shape_signature=tuple(signature),
        buffer=_scalar(tab, 2, number_types.Uint32Flags, 0),
        quantized=quantized,
        is_variable=bool(_scalar(tab, 5, number_types.BoolFlags, 0)),
    )


def _buffer_size(tab: Table) -> int:
    off = _field(tab, 0)
    if off:
        return int(tab.VectorLen(off))
    # Models over 2 GiB keep data after the flatbuffer: offset (field 1) and size (field 2).
    return _scalar(tab, 2, number_types.Uint64Flags, 0)


def parse(data: bytes) -> TfliteModel:
    """Parse a ``.tflite`` flatbuffer.

    Raises:
        ModelSourceError: the bytes are not a TensorFlow Lite model.
    """
    if not is_tflite(data):
        raise ModelSourceError("not a TensorFlow Lite model (no 'TFL3' file identifier)")
    try:
        root = Table(bytearray(data), encode.Get(packer.uoffset, data, 0))
        codes = [_operator_code(t) for t in _tables(root, 1)]
        subgraphs = []
        for sg in _tables(root, 2):
            operators = [
                Operator(
                    opcode_index=_scalar(op, 0, number_types.Uint32Flags, 0),
                    inputs=_ints(op, 1),
                    outputs=_ints(op, 2),
                )
                for op in _tables(sg, 3)
            ]
            subgraphs.append(
                Subgraph(
                    name=_string(sg, 4) or "",
                    tensors=[_tensor(t) for t in _tables(sg, 0)],
                    operators=operators,
                    inputs=_ints(sg, 1),
                    outputs=_ints(sg, 2),
                )
            )
        buffers = [_buffer_size(b) for b in _tables(root, 4)]
        version = _scalar(root, 0, number_types.Uint32Flags, 0)
    except (struct.error, IndexError, ValueError) as exc:
        raise ModelSourceError(f"corrupt TensorFlow Lite model: {exc}") from exc
    return TfliteModel(version=version, operator_codes=codes, subgraphs=subgraphs, buffer_sizes=buffers)


def read(path: Path) -> TfliteModel:
    """Read and parse the ``.tflite`` file at ``path``.

    Raises:
        ModelSourceError: the file is missing, unreadable or not a TensorFlow Lite model.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelSourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return parse(data)
    except ModelSourceError as exc:
        raise ModelSourceError(f"{path}: {exc}") from exc
