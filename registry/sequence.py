"""The controller's command sequence: a durable, monotonic counter per signing key.

Devices remember the highest ``seq`` they accepted from each key and refuse anything not
above it, so every command a key signs needs a larger number than the one before, also
across rollouts and controller restarts. The last number used is kept in
``<state_dir>/sequence/<key id>``, updated under an exclusive lock with an atomic write.

The next number is ``max(last + 1, now in milliseconds)``: it keeps growing when the
clock steps back, and a controller that lost its state directory (or a second state
directory used with the same key) still starts above what devices have seen, as long
as its clock is right. Use one state directory per key where you can.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path
from typing import Callable

from release_contract.errors import RolloutError
from release_contract.files import atomic_write


def sequence_path(state_dir: Path, key_id: str) -> Path:
    """``<state_dir>/sequence/<key_id>``: the last sequence number used with that key."""
    return Path(state_dir) / "sequence" / key_id


def next_sequence(state_dir: Path, key_id: str, clock: Callable[[], float] = time.time) -> int:
    """Reserve and return the next sequence number for ``key_id``, durably.

    Raises :class:`RolloutError` when the counter cannot be read or written (a command
    must never be signed with a number that might be used again).
    """
    path = sequence_path(state_dir, key_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(f".{key_id}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise RolloutError(f"cannot open the command sequence in {path.parent}: {exc.strerror or exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            text = path.read_text("ascii").strip()
            last = int(text) if text else 0
        except FileNotFoundError:
            last = 0
        except (OSError, ValueError) as exc:
            raise RolloutError(f"the command sequence {path} is unreadable ({exc}): fix or remove it") from exc
        seq = max(last + 1, int(clock() * 1000))
        try:
            atomic_write(path, f"{seq}\n".encode("ascii"))
        except OSError as exc:
            raise RolloutError(f"cannot record the command sequence in {path}: {exc.strerror or exc}") from exc
        return seq
    finally:
        os.close(fd)  # releases the lock
