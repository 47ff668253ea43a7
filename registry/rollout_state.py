"""A rollout's recorded state: the plan, the waves, every device's last status, saved as JSON.

``<state_dir>/rollouts/<id>.json`` is rewritten atomically after every change, so the
controller (:mod:`registry.rollout`) resumes a rollout after a restart and
``edge-registry status`` reads where it stands.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from release_contract.errors import RolloutError
from release_contract.files import atomic_write

#: Progress categories shown to the operator, from device states.
VIEW = {
    "received": "downloading",
    "downloading": "downloading",
    "verifying": "verifying",
    "validating": "verifying",
    "activating": "verifying",
    "health_check": "verifying",
    "active": "active",
    "rejected": "failed",
    "failed": "failed",
    "timed_out": "failed",
    "rolled_back": "rolled_back",
}
#: How long a signed command stays valid (devices refuse it afterwards): a week, so a
#: device offline during its wave still converges when it returns within that time.
DEFAULT_COMMAND_TTL = 7 * 86400.0
CATEGORIES = ("pending", "downloading", "verifying", "active", "failed", "rolled_back")
FAILED = ("rejected", "failed", "rolled_back", "timed_out")


@dataclass
class RolloutState:
    """Everything a rollout needs to resume; saved as JSON."""

    id: str
    name: str
    version: str
    store: str
    prefix: str
    fleet: str
    devices: List[str]
    waves: List[List[str]]
    abort_above_pct: float
    wave_timeout: float
    wave: int = 0
    status: str = "running"  # running | aborting | succeeded | aborted
    reason: str = ""
    devices_state: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    sent: List[str] = field(default_factory=list)
    command_ttl: float = DEFAULT_COMMAND_TTL
    allow_downgrade: bool = False
    allow_model_change: bool = False
    started_at: float = field(default_factory=time.time)
    finished_at: Optional[float] = None

    def counts(self) -> Dict[str, int]:
        """Devices per progress category (pending, downloading, verifying, active, failed, rolled_back)."""
        out = dict.fromkeys(CATEGORIES, 0)
        for dev in self.devices:
            state = self.devices_state.get(dev, {}).get("state")
            out[VIEW.get(state, "pending") if state else "pending"] += 1
        return out

    def failures(self) -> List[str]:
        """Touched devices whose install failed (rejected, failed, rolled back, timed out)."""
        return [d for d in self.sent if self.devices_state.get(d, {}).get("state") in FAILED]


def plan_waves(devices: List[str], canary_pct: float, wave_size: int) -> List[List[str]]:
    """Split ``devices`` into a canary wave (``canary_pct`` %, at least one) and waves of ``wave_size``."""
    if not devices:
        raise RolloutError("no devices to roll out to: check --fleet / --devices and that devices are online")
    if wave_size < 1:
        raise RolloutError("--wave-size must be at least 1")
    canary = min(len(devices), max(1, math.ceil(len(devices) * canary_pct / 100))) if canary_pct > 0 else 0
    waves = [devices[:canary]] if canary else []
    rest = devices[canary:]
    waves += [rest[i : i + wave_size] for i in range(0, len(rest), wave_size)]
    return waves


def state_path(state_dir: Path, rollout_id: str) -> Path:
    """``<state_dir>/rollouts/<id>.json``."""
    return Path(state_dir) / "rollouts" / f"{rollout_id}.json"


def save_state(state_dir: Path, state: RolloutState) -> None:
    """Write the state atomically (a crash leaves the old state or the new one, never half)."""
    path = state_path(state_dir, state.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(asdict(state), indent=1, sort_keys=True).encode())


def load_state(state_dir: Path, rollout_id: Optional[str] = None) -> RolloutState:
    """Load rollout ``rollout_id``, or the most recently started one; raise RolloutError if none."""
    folder = Path(state_dir) / "rollouts"
    if rollout_id:
        path = state_path(state_dir, rollout_id)
    else:
        files = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
        if not files:
            raise RolloutError(f"no rollout recorded in {folder}")
        path = files[-1]
    try:
        return RolloutState(**json.loads(path.read_text("utf-8")))
    except FileNotFoundError as exc:
        raise RolloutError(f"no rollout {rollout_id!r} in {folder}") from exc
    except (OSError, ValueError, TypeError) as exc:
        raise RolloutError(f"cannot read rollout state {path}: {exc}") from exc


def new_rollout(
    rollout_id: str,
    name: str,
    version: str,
    store: str,
    prefix: str,
    fleet: str,
    devices: List[str],
    canary_pct: float,
    wave_size: int,
    abort_above_pct: float,
    wave_timeout: float,
    **options: Any,
) -> RolloutState:
    """A fresh rollout state with its waves planned.

    ``options``: ``command_ttl``, ``allow_downgrade``, ``allow_model_change`` (see RolloutState).
    Raises RolloutError when there is no device or the wave size is below 1.
    """
    return RolloutState(
        id=rollout_id,
        name=name,
        version=version,
        store=store,
        prefix=prefix,
        fleet=fleet,
        devices=list(devices),
        waves=plan_waves(list(devices), canary_pct, wave_size),
        abort_above_pct=abort_above_pct,
        wave_timeout=wave_timeout,
        **options,
    )
