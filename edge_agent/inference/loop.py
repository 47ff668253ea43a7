"""What the frame loop hands on and reports: sinks and run statistics.

The loop itself (read -> preprocess -> infer -> postprocess -> publish, for one source or
several) is :class:`edge_agent.inference.scheduler.SourceScheduler`. Sinks are callables
``sink(result: Classification) -> None`` called on the loop's thread; they must not block
(the MQTT publisher writes to its outbox and returns).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable

from edge_agent.inference.result import Classification

log = logging.getLogger(__name__)

Sink = Callable[[Classification], None]


@dataclass
class LoopStats:
    """What a run did: frames classified, frames dropped (live sources), inputs skipped."""

    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def fps(self) -> float:
        elapsed = time.monotonic() - self.started
        return self.frames / elapsed if elapsed > 0 else 0.0
