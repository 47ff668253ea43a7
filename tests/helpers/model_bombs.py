"""Hostile models made from the bundled one: the same 16 KB file declaring an enormous input."""

from __future__ import annotations

import struct
from pathlib import Path


def memory_bomb(source: Path, target: Path, side: int = 16000) -> Path:
    """Copy ``source`` with every 1x32x32x3 tensor shape rewritten to 1 x side x side x 3.

    The file stays the same size (the shape vectors are rewritten in place), so it passes
    every size check; an interpreter would allocate side*side*3 bytes and more for it.
    """
    data = source.read_bytes()
    old = struct.pack("<5i", 4, 1, 32, 32, 3)
    assert old in data, "the bundled model no longer has a 1x32x32x3 input"
    target.write_bytes(data.replace(old, struct.pack("<5i", 4, 1, side, side, 3)))
    return target
