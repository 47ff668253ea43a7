"""Pre-processing, post-processing and labels: small pure functions around the runtime.

Conventions: images are ``numpy.uint8`` arrays of shape (height, width, 3) in RGB
order; scores are floats in the model's output range (for a softmax head, [0, 1]).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from PIL import Image

from .errors import ConfigError, ModelError
from .result import Class

log = logging.getLogger(__name__)

_LABEL_LINE = re.compile(r"^\s*(\d+)[\s:,]+(.*\S)\s*$")


def load_labels(path: Path) -> Dict[int, str]:
    """Read a labels file: ``id label`` lines (``0 cat``, ``0: cat``) or one label per line.

    Returns {class id: label}. Raises ModelError when the file is missing or unreadable.
    """
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ModelError(f"labels file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"cannot read labels file {path}: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    matches = [_LABEL_LINE.match(line) for line in lines]
    if lines and all(matches):
        return {int(m.group(1)): m.group(2) for m in matches if m}
    return {i: line.strip() for i, line in enumerate(lines)}


def check_labels(labels: Dict[int, str], num_classes: int, path: Path) -> None:
    """Warn (once) when a labels file does not match the model's number of classes."""
    if labels and (len(labels) != num_classes or max(labels) >= num_classes):
        log.warning("labels file %s has %d labels but the model has %d classes; unmatched ids show as numbers",
                    path, len(labels), num_classes)


@dataclass(frozen=True)
class Normalization:
    """Pixel normalization the model expects: ``float_input = (pixel - mean) / std``.

    ``mean``/``std`` of None means: the model's input quantization already covers the
    pixel range (the case for Coral's and most quantized models), or [0, 1] for a float model.
    """

    mean: Optional[float] = None
    std: Optional[float] = None

    def __post_init__(self) -> None:
        if self.std is not None and self.std == 0:
            raise ConfigError("--std must not be 0")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both --mean and --std, or neither")


def resize(image: np.ndarray, size: Tuple[int, int], keep_aspect: bool = False) -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` = (width, height), bilinear without antialiasing.

    That is what TensorFlow's ``tf.image.resize`` and Keras' ``Resizing`` layer do by
    default, so it matches how most models were trained, and it costs a tenth of an
    antialiased resize (it matters on a board whose cores also run the interpreter).
    With ``keep_aspect`` the image is scaled to fit and padded with black at the
    right and bottom.
    """
    import cv2

    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if not keep_aspect:
        return np.asarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR))
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR).reshape(
        new_h, new_w, image.shape[2])
    return canvas


def quantize_input(pixels: np.ndarray, dtype: type, quant: Tuple[float, int], norm: Normalization) -> np.ndarray:
    """Turn uint8 pixels into the model's input values (same shape, ``dtype``).

    For quantized inputs ``q = (pixel - mean) / (std * scale) + zero_point``, skipped
    (a plain copy, or a shift by 128 for int8) when the quantization already equals
    the normalization; float inputs get ``(pixel - mean) / std``.
    """
    scale, zero_point = quant
    if dtype == np.float32:
        mean, std = (0.0, 255.0) if norm.mean is None else (norm.mean, norm.std or 1.0)
        return ((pixels.astype(np.float32) - mean) / std).astype(np.float32)
    info = np.iinfo(dtype)
    if norm.mean is None:
        offset = 0 if dtype == np.uint8 else -128
        return (pixels.astype(np.int16) + offset).astype(dtype)
    std = float(norm.std or 1.0)
    if scale > 0 and abs(scale * std - 1) < 1e-5 and abs(norm.mean - zero_point) < 1e-5 and dtype == np.uint8:
        return pixels.astype(np.uint8)
    if scale <= 0:
        raise ModelError("the model's input is quantized without a scale; give a float or properly quantized model")
    values = (pixels.astype(np.float32) - norm.mean) / (std * scale) + zero_point
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def preprocess(image: np.ndarray, size: Tuple[int, int], channels: int, dtype: type,
               quant: Tuple[float, int], norm: Normalization, keep_aspect: bool = False) -> np.ndarray:
    """RGB uint8 image (H, W, 3) -> input tensor (1, height, width, channels) of ``dtype``."""
    pixels = resize(image, size, keep_aspect)
    if channels == 1:
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).convert("L"))[..., None]
    return quantize_input(pixels, dtype, quant, norm)[None]


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
    return [Class(id=int(i), score=float(scores[i]), label=labels.get(int(i), str(int(i))))
            for i in idx if scores[i] >= threshold]
