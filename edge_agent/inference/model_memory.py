"""How much memory a ``.tflite`` model's tensors need, read from the flatbuffer before any interpreter runs.

A 15 KB model can declare a 1x16000x16000x3 input: the interpreter would allocate
gigabytes in ``allocate_tensors()`` before anything could refuse it. :func:`check_model_memory`
reads the tensor shapes and types straight from the flatbuffer and refuses a model whose
non-constant tensors (inputs, outputs, activations: everything the interpreter's arena
holds) add up to more than a limit. The sum is an upper bound of the arena, since the
interpreter reuses memory between tensors whose lifetimes do not overlap.

The reader is bounded: every offset is checked against the buffer, and a model with more
than :data:`MAX_TENSORS` tensors or :data:`MAX_SUBGRAPHS` subgraphs is refused. Field numbers
follow TensorFlow Lite's ``schema.fbs``. This works for compiled ``_edgetpu`` models too
(their tensors are declared like any other), without a TPU.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import List, Tuple

from edge_agent.errors import ModelError

#: Default limit of :func:`check_model_memory`, in MiB: fits beside the OS, Python and the
#: agent on a board with 1 GB of RAM. MobileNet v2 224 (int8) needs about 8 MiB.
DEFAULT_MAX_MODEL_MEMORY_MB = 256
MAX_SUBGRAPHS = 64
MAX_TENSORS = 100_000
MAX_RANK = 16

# TensorType -> bytes per element (schema.fbs); unknown types count as 8 bytes.
_TYPE_BYTES = {
    0: 4,
    1: 2,
    2: 4,
    3: 1,
    4: 8,
    5: 8,
    6: 1,
    7: 2,
    8: 8,
    9: 1,
    10: 8,
    11: 16,
    12: 8,
    15: 4,
    16: 2,
    17: 1,
    18: 2,
}


class _Malformed(Exception):
    pass


@dataclass(frozen=True)
class TensorSize:
    """One non-constant tensor: its name, shape and bytes."""

    name: str
    shape: Tuple[int, ...]
    nbytes: int


@dataclass(frozen=True)
class ModelMemory:
    """The estimate: total bytes of the non-constant tensors, and the largest of them."""

    total_bytes: int
    largest: TensorSize


class _Reader:
    """Bounds-checked access to flatbuffer tables (little-endian, offsets relative to their own position)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, off: int) -> int:
        size = struct.calcsize(fmt)
        if off < 0 or off + size > len(self.data):
            raise _Malformed(f"offset {off} outside the file")
        value: int = struct.unpack_from(fmt, self.data, off)[0]
        return value

    def u32(self, off: int) -> int:
        return self._unpack("<I", off)

    def field(self, table: int, index: int) -> int:
        """Absolute position of field ``index`` of the table at ``table``, or 0 when absent."""
        vtable = table - self._unpack("<i", table)
        vt_len = self._unpack("<H", vtable)
        slot = 4 + 2 * index
        if slot + 2 > vt_len:
            return 0
        rel = self._unpack("<H", vtable + slot)
        return table + rel if rel else 0

    def table(self, table: int, index: int) -> int:
        """Position of the sub-table in field ``index`` (0 when absent)."""
        pos = self.field(table, index)
        return pos + self.u32(pos) if pos else 0

    def vector(self, table: int, index: int, elem: int, limit: int) -> Tuple[int, int]:
        """(start, length) of the vector in field ``index``; (0, 0) when absent."""
        pos = self.field(table, index)
        if not pos:
            return 0, 0
        vec = pos + self.u32(pos)
        length = self.u32(vec)
        if length > limit or vec + 4 + length * elem > len(self.data):
            raise _Malformed(f"a vector of {length} elements does not fit")
        return vec + 4, length

    def scalar(self, table: int, index: int, fmt: str, default: int) -> int:
        pos = self.field(table, index)
        return self._unpack(fmt, pos) if pos else default

    def string(self, table: int, index: int) -> str:
        start, length = self.vector(table, index, 1, 4096)
        return self.data[start : start + length].decode("utf-8", "replace") if start else ""


def estimate_model_memory(data: bytes) -> ModelMemory:
    """Sum the bytes of every non-constant tensor of every subgraph of a ``.tflite`` model.

    A tensor is constant when its buffer holds data (or points outside the flatbuffer).
    Raises :class:`ModelError` when the flatbuffer is malformed or too large to read.
    """
    reader = _Reader(data)
    try:
        model = reader.u32(0)
        const = _constant_buffers(reader, model)
        total, largest = 0, TensorSize("", (), 0)
        sub_start, subgraphs = reader.vector(model, 2, 4, MAX_SUBGRAPHS)
        seen = 0
        for s in range(subgraphs):
            sub = sub_start + 4 * s
            sub += reader.u32(sub)
            start, count = reader.vector(sub, 0, 4, MAX_TENSORS - seen)
            seen += count
            for t in range(count):
                tensor = start + 4 * t
                tensor += reader.u32(tensor)
                if reader.scalar(tensor, 2, "<I", 0) in const:
                    continue
                size = _tensor_size(reader, tensor)
                total += size.nbytes
                if size.nbytes > largest.nbytes:
                    largest = size
    except _Malformed as exc:
        raise ModelError(f"malformed TFLite flatbuffer: {exc}") from None
    return ModelMemory(total, largest)


def _constant_buffers(reader: _Reader, model: int) -> set[int]:
    start, count = reader.vector(model, 4, 4, MAX_TENSORS)
    const = set()
    for b in range(count):
        buf = start + 4 * b
        buf += reader.u32(buf)
        _, length = reader.vector(buf, 0, 1, len(reader.data))
        if length or reader.scalar(buf, 1, "<Q", 0) > 1:
            const.add(b)
    return const


def _tensor_size(reader: _Reader, tensor: int) -> TensorSize:
    start, rank = reader.vector(tensor, 0, 4, MAX_RANK)
    shape: List[int] = [reader._unpack("<i", start + 4 * i) for i in range(rank)]
    elements = 1
    for dim in shape:
        elements *= max(dim, 1)  # -1 (dynamic) is 1 in ``shape``; shape_signature keeps the -1
    nbytes = elements * _TYPE_BYTES.get(reader.scalar(tensor, 1, "<b", 0), 8)
    return TensorSize(reader.string(tensor, 3), tuple(shape), nbytes)


def check_model_memory(data: bytes, limit_mb: int, what: str) -> ModelMemory:
    """Refuse (:class:`ModelError`) a model whose tensors need more than ``limit_mb`` MiB.

    ``what`` names the model in the message (its path). Returns the estimate otherwise.
    """
    try:
        memory = estimate_model_memory(data)
    except ModelError as exc:
        raise ModelError(f"cannot load model {what}: {exc}") from None
    if memory.total_bytes > limit_mb * 1024 * 1024:
        big = memory.largest
        shape = "x".join(str(d) for d in big.shape)
        raise ModelError(
            f"{what} needs about {memory.total_bytes / 2**20:,.0f} MiB for its tensors "
            f"(the largest, {big.name or '?'} {shape}, is {big.nbytes / 2**20:,.0f} MiB), more than the "
            f"limit of {limit_mb} MiB (max_model_memory_mb; raise it only for a trusted model)"
        )
    return memory
