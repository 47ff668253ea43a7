"""Classification results for publishing tests: a fixed model identity and a plausible top-k."""

from __future__ import annotations

import time

from edge_agent.inference.result import Class, Classification, ModelInfo

MODEL = ModelInfo("digits", "1.0.0", "sha256:" + "ab" * 32)


def make_result(frame: int, label: str = "seven", device: str = "cam1") -> Classification:
    """A result for ``frame`` whose top class is ``label``, captured now."""
    return Classification(
        device=device,
        model=MODEL,
        backend="cpu",
        source="images/7.png",
        frame=frame,
        captured_at=time.time(),
        preprocess_ms=0.4,
        inference_ms=1.2,
        total_ms=1.9,
        top_k=[Class(7, 0.93, label), Class(1, 0.05, "one")],
    )
