"""Signed rollout commands for tests, bound to a target with a fresh sequence number each."""

from __future__ import annotations

import itertools
import time
from typing import Any, Optional

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from release_contract.protocol import Command, device_target

# one counter for the whole test session: every command gets a larger number than the one before;
# it starts a day of milliseconds below the controller's clock-based numbers (registry.sequence),
# so a controller run after these commands continues above them, as a real one would
_SEQ = itertools.count(int(time.time() * 1000) - 86_400_000)


def next_seq() -> int:
    """A sequence number above every one handed out before in this process."""
    return next(_SEQ)


def make_command(
    rollout: str,
    action: str,
    version: str,
    store: str,
    *,
    device: str = "",
    target: str = "",
    name: str = "digits",
    ttl: int = 3600,
    issued_at: Optional[int] = None,
    seq: Optional[int] = None,
    **flags: Any,
) -> Command:
    """A command for ``device`` (or the explicit ``target``) valid for ``ttl`` seconds from now."""
    now = int(time.time()) if issued_at is None else issued_at
    return Command(
        id=rollout,
        action=action,
        name=name,
        version=version,
        store=store,
        target=target or device_target(device),
        issued_at=now,
        expires_at=now + ttl,
        seq=next_seq() if seq is None else seq,
        **flags,
    )


def signed(key: Ed25519PrivateKey, rollout: str, action: str, version: str, store: str, **kwargs: Any) -> bytes:
    """The signed payload of :func:`make_command`."""
    return make_command(rollout, action, version, store, **kwargs).sign(key)
