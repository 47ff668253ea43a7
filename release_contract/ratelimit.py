"""Rate-limited warnings: one log line per reason per interval, with a count of the suppressed ones.

Used wherever hostile input can arrive faster than anyone can read about it (rollout
commands on a device, status messages at the controller)::

    warn = RateLimitedWarning(log, interval=60.0)
    warn("bad-json", "ignoring a rollout command: %s", exc)   # logged
    warn("bad-json", "ignoring a rollout command: %s", exc)   # counted, not logged
    # 60 s later, the next one: "... (12 more like it in the last 60 s)"

Reasons are keys chosen by the caller; at most ``max_reasons`` are tracked, later ones
share one slot, so input cannot grow the table.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Dict, List


class RateLimitedWarning:
    """Log a warning at most once per ``interval`` seconds for each reason. Thread-safe.

    ``clock`` returns seconds (default :func:`time.monotonic`); tests pass their own.
    """

    OTHER = "<other>"

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        max_reasons: int = 64,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.interval = interval
        self.max_reasons = max_reasons
        self._clock = clock
        self._lock = threading.Lock()
        # reason -> [time of the last line logged, suppressed since then]
        self._seen: Dict[str, List[float]] = {}

    def __call__(self, reason: str, message: str, *args: Any) -> bool:
        """Log ``message % args`` unless ``reason`` was logged less than ``interval`` ago.

        Returns True when the line was logged, False when it was only counted. Never raises.
        """
        now = self._clock()
        with self._lock:
            if reason not in self._seen and len(self._seen) >= self.max_reasons:
                reason = self.OTHER
            entry = self._seen.get(reason)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return False
            suppressed = int(entry[1]) if entry is not None else 0
            self._seen[reason] = [now, 0]
        if suppressed:
            message += f" ({suppressed} more like it in the last {self.interval:g} s)"
        self.logger.warning(message, *args, stacklevel=2)
        return True

    def suppressed(self) -> int:
        """How many warnings are counted but not logged yet, over all reasons."""
        with self._lock:
            return int(sum(entry[1] for entry in self._seen.values()))
