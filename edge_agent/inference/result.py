"""The result of classifying one frame, and its JSON payload (schema version 1).

The payload is the contract with subscribers (MQTT, ``--output jsonl``); its JSON
Schema is ``edge_agent/schemas/classification.schema.json``. Add fields, never
rename or remove them without bumping :data:`SCHEMA`.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Optional

from edge_agent.inference.sources import Frame

SCHEMA = "edgetpu.classification/1"


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` of a whole second since the epoch, in UTC (results share a second)."""
    return datetime.fromtimestamp(second, tz=timezone.utc).replace(tzinfo=None).isoformat()


def utc_iso_ms(timestamp: float) -> str:
    """``timestamp`` (seconds since the epoch) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: the same string as
    ``datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")`` with
    ``Z`` for ``+00:00`` (microseconds rounded half to even as datetime does, then truncated to
    milliseconds), without building a datetime per call."""
    frac, whole = math.modf(timestamp)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    elif micros < 0:
        whole, micros = whole - 1, micros + 1_000_000
    return f"{_utc_second(int(whole))}.{micros // 1000:03d}Z"


@dataclass(frozen=True)
class Class:
    """One scored class: ``id`` indexes the model's output, ``score`` is in [0, 1]."""

    id: int
    score: float
    label: str = ""


@dataclass(frozen=True)
class ModelInfo:
    """What a result names about the model that produced it."""

    name: str
    version: str
    digest: str  # "sha256:<hex>" of the model file that ran


@dataclass
class Classification:
    """One classified frame.

    Latencies are in milliseconds; ``captured_at`` is the wall-clock time (UTC)
    the frame was read.
    """

    device: str
    model: ModelInfo
    backend: str  # "edgetpu" or "cpu"
    source: str
    frame: int
    captured_at: float  # seconds since the epoch
    preprocess_ms: float
    inference_ms: float
    total_ms: float
    top_k: List[Class]
    message_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    extra: Optional[Dict[str, Any]] = None
    input: Optional[str] = None  # the name of the configured source (several sources in one agent)
    #: the frame as read, before pre-processing, for sinks that keep frames (capture); not in the payload
    frame_ref: Optional[Frame] = field(default=None, repr=False, compare=False)

    @property
    def top1(self) -> Optional[Class]:
        return self.top_k[0] if self.top_k else None

    def to_payload(self) -> Dict[str, Any]:
        """The JSON-ready dict published on ``<prefix>/<device>/classification``."""
        model = self.model
        payload: Dict[str, Any] = {
            "schema": SCHEMA,
            "id": self.message_id,
            "device": self.device,
            "model": {"name": model.name, "version": model.version, "digest": model.digest},
            "backend": self.backend,
            "source": self.source,
            "frame": self.frame,
            "captured_at": utc_iso_ms(self.captured_at),
            "latency_ms": {
                "preprocess": round(self.preprocess_ms, 3),
                "inference": round(self.inference_ms, 3),
                "total": round(self.total_ms, 3),
            },
            "top_k": [{"id": c.id, "label": c.label, "score": round(float(c.score), 6)} for c in self.top_k],
        }
        if self.input is not None:
            payload["input"] = self.input
        if self.extra:
            payload["extra"] = self.extra
        return payload
