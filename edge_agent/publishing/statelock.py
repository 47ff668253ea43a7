"""One agent per state directory: an exclusive lock on a file beside the outbox, held while it is open."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from edge_agent.errors import ConfigError


def lock_file(path: Path) -> Optional[int]:
    """Take an exclusive lock on ``path`` (created); return its descriptor. Raises ConfigError when
    another process holds it. Returns None where ``fcntl`` does not exist."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ConfigError(
            f"the outbox {path.with_suffix('')} is in use by another edge-agent (pid {holder}): "
            "run one agent per state directory (--state-dir)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd
