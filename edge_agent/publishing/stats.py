"""Running statistics of the agent, published periodically on ``<prefix>/<device>/stats``.

:class:`Stats` is itself a sink (``stats(result)``) so the frame loop feeds it like any
other; :meth:`Stats.snapshot` returns the JSON-ready stats payload (schema
``edgetpu.stats/1``): frames/s since the previous snapshot, inference latency p50/p99 (ms)
over the last ``window`` frames, backend, outbox queue depth, dropped messages and
frames, uptime, the Edge TPU temperature where ``/sys/class/apex/apex_N/temp`` exists, and
``inputs``: per source (by name) fps, frames, dropped frames, age of its last frame, reconnects,
state and last error.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from pathlib import Path
from typing import Any, Callable, Deque, Dict, Optional, Sequence

from edge_agent.inference.result import Classification

STATS_SCHEMA = "edgetpu.stats/1"
APEX_ROOT = Path("/sys/class/apex")


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """The ``q``-th percentile (0..100) of ``values`` by the nearest-rank method; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return float(ordered[min(rank, len(ordered)) - 1])


def read_edgetpu_temperatures(root: Path = APEX_ROOT) -> Dict[str, float]:
    """Edge TPU (PCIe, ``apex`` driver) temperatures in °C keyed by device (``apex_0``).

    The driver reports millidegrees Celsius in ``<root>/apex_N/temp``. USB accelerators
    have no such file; unreadable or malformed files are skipped.
    """
    temps: Dict[str, float] = {}
    try:
        entries = sorted(root.glob("apex_*"))
    except OSError:
        return temps
    for entry in entries:
        try:
            temps[entry.name] = int((entry / "temp").read_text().strip()) / 1000.0
        except (OSError, ValueError):
            continue
    return temps


class Stats:
    """Counts frames and latencies; thread-safe.

    Args:
        device: the device id named in the payload.
        window: how many recent inference times the percentiles cover.
        clock: a monotonic clock in seconds (injectable for tests).
        apex_root: where to look for Edge TPU temperatures.
    """

    def __init__(
        self, device: str, window: int = 1000, clock: Callable[[], float] = time.monotonic, apex_root: Path = APEX_ROOT
    ) -> None:
        self.device = device
        self._clock = clock
        self._apex_root = apex_root
        self._lock = threading.Lock()
        self._inference: Deque[float] = collections.deque(maxlen=window)
        self._started = clock()
        self._last_snapshot = self._started
        self._frames = 0
        self._frames_at_snapshot = 0
        self._dropped_frames = 0
        self._dropped_frames_fn: Optional[Callable[[], int]] = None
        self._inputs_fn: Optional[Callable[[], Dict[str, Dict[str, Any]]]] = None
        self._input_frames_at_snapshot: Dict[str, int] = {}
        self.backend = ""

    def __call__(self, result: Classification) -> None:
        """Record one classified frame (the sink interface)."""
        with self._lock:
            self._frames += 1
            self._inference.append(result.inference_ms)
            self.backend = result.backend

    def add_dropped_frames(self, count: int = 1) -> None:
        """Count frames the source delivered but the loop skipped (rate limit, slow inference)."""
        with self._lock:
            self._dropped_frames += count

    def count_dropped_frames_with(self, counter: Callable[[], int]) -> None:
        """Read the dropped-frame count from ``counter()`` (the frame loop's own counter) at each
        snapshot, added to what :meth:`add_dropped_frames` counted."""
        self._dropped_frames_fn = counter

    def report_inputs_with(self, reports: Callable[[], Dict[str, Dict[str, Any]]]) -> None:
        """Add ``inputs`` to each snapshot: ``reports()`` gives per-source counters keyed by name
        (``frames``, ``dropped_frames``, ``last_frame_age_s``, ``reconnects``, ``state``, ``error``);
        the stats add each source's ``fps`` since the previous snapshot."""
        self._inputs_fn = reports

    def _inputs(self, elapsed: float) -> Dict[str, Dict[str, Any]]:
        reports = self._inputs_fn() if self._inputs_fn else {}
        for name, report in reports.items():
            previous = self._input_frames_at_snapshot.get(name, 0)
            report["fps"] = round((report["frames"] - previous) / elapsed, 3) if elapsed > 0 else 0.0
            self._input_frames_at_snapshot[name] = report["frames"]
        return reports

    def snapshot(self, queue_depth: int = 0, dropped_messages: int = 0) -> Dict[str, Any]:
        """The stats payload; frames/s covers the time since the previous snapshot."""
        now = self._clock()
        with self._lock:
            elapsed = now - self._last_snapshot
            frames = self._frames - self._frames_at_snapshot
            self._last_snapshot, self._frames_at_snapshot = now, self._frames
            latencies = list(self._inference)
            payload: Dict[str, Any] = {
                "schema": STATS_SCHEMA,
                "device": self.device,
                "time": time.time(),
                "uptime_s": round(now - self._started, 3),
                "frames": self._frames,
                "fps": round(frames / elapsed, 3) if elapsed > 0 else 0.0,
                "inference_ms": {"p50": _round(percentile(latencies, 50)), "p99": _round(percentile(latencies, 99))},
                "backend": self.backend,
                "queue_depth": queue_depth,
                "dropped_messages": dropped_messages,
                "dropped_frames": self._dropped_frames + (self._dropped_frames_fn() if self._dropped_frames_fn else 0),
            }
            if self._inputs_fn is not None:
                payload["inputs"] = self._inputs(elapsed)
        temps = read_edgetpu_temperatures(self._apex_root)
        if temps:
            payload["edgetpu_temperature_c"] = temps
        return payload


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)
