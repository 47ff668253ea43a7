"""Post-processing: raw output tensor -> scored, labelled classes, in small pure functions.

Scores are floats in the model's output range (for a softmax head, [0, 1]).
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np

from edge_agent.inference.result import Class


def dequantize(raw: np.ndarray, quant: Tuple[float, int]) -> np.ndarray:
    """Raw output values -> float scores: ``(q - zero_point) * scale`` for quantized outputs."""
    scale, zero_point = quant
    if raw.dtype in (np.uint8, np.int8, np.int16) and scale > 0:
        return (raw.astype(np.float32) - zero_point) * scale
    return raw.astype(np.float32)


def top_k(scores: np.ndarray, k: int, threshold: float, labels: Dict[int, str]) -> List[Class]:
    """The ``k`` best classes with score >= ``threshold``, best first, labelled."""
    k = max(0, min(k, scores.size))
    if k == 0:
        return []
    idx = np.argpartition(-scores, k - 1)[:k]
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return [
        Class(id=int(i), score=float(scores[i]), label=labels.get(int(i), str(int(i))))
        for i in idx
        if scores[i] >= threshold
    ]
