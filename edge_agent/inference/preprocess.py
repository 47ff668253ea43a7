"""Pre-processing: an RGB frame to the model's input tensor, in small pure functions.

Conventions: images are ``numpy.uint8`` arrays of shape (height, width, 3) in RGB
order; sizes are (width, height) in pixels, as OpenCV and Pillow take them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from edge_agent.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


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


def _scale(image: np.ndarray, size: Tuple[int, int], method: str) -> np.ndarray:
    """``image`` scaled to ``size`` = (width, height): OpenCV bilinear (fast) or Pillow Lanczos (coral)."""
    if method == "coral":
        return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize(size, Image.Resampling.LANCZOS))
    import cv2

    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)).reshape(size[1], size[0], -1)


def resize(image: np.ndarray, size: Tuple[int, int], keep_aspect: bool = False, method: str = "fast") -> np.ndarray:
    """Resize an RGB uint8 image to ``size`` = (width, height).

    ``method="fast"`` (the default) is bilinear without antialiasing: what TensorFlow's
    ``tf.image.resize`` and Keras' ``Resizing`` layer do by default, so it matches how
    most models were trained, and it costs a tenth of an antialiased resize (it matters
    on a board whose cores also run the interpreter). ``method="coral"`` is Pillow's
    Lanczos, exactly as Coral's ``classify_image.py`` resizes, for identical scores.
    With ``keep_aspect`` the image is scaled to fit and padded with black at the
    right and bottom.
    """
    width, height = size
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    if not keep_aspect:
        return _scale(image, (width, height), method)
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    canvas = np.zeros((height, width, image.shape[2]), dtype=np.uint8)
    canvas[:new_h, :new_w] = _scale(image, (new_w, new_h), method).reshape(new_h, new_w, image.shape[2])
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
        if dtype == np.uint8:
            return pixels  # the quantization covers the pixel range: nothing to compute, nothing to copy
        return (pixels ^ np.uint8(0x80)).view(np.int8)  # x - 128 for every uint8 x, in one pass
    std = float(norm.std or 1.0)
    if scale > 0 and abs(scale * std - 1) < 1e-5 and abs(norm.mean - zero_point) < 1e-5 and dtype == np.uint8:
        return pixels.astype(np.uint8)
    if scale <= 0:
        raise ModelError("the model's input is quantized without a scale; give a float or properly quantized model")
    values = (pixels.astype(np.float32) - norm.mean) / (std * scale) + zero_point
    return np.clip(np.rint(values), info.min, info.max).astype(dtype)


def preprocess(
    image: np.ndarray,
    size: Tuple[int, int],
    channels: int,
    dtype: type,
    quant: Tuple[float, int],
    norm: Normalization,
    keep_aspect: bool = False,
    method: str = "fast",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """RGB uint8 image (H, W, 3) -> input tensor (1, height, width, channels) of ``dtype``.

    ``method``: ``fast`` or ``coral``, see :func:`resize`. With ``out`` (a C-contiguous array of
    that shape and dtype) the tensor is written there and ``out`` is returned: for the common
    uint8 model input and the fast resize, the resize writes straight into it, so a frame costs
    no new tensor-sized array.
    """
    if (
        out is not None
        and method == "fast"
        and channels == 3
        and dtype == np.uint8
        and norm.mean is None
        and not keep_aspect
    ):
        import cv2

        width, height = size
        if image.shape[:2] == (height, width):
            np.copyto(out[0], image)
        else:
            cv2.resize(image, (width, height), dst=out[0], interpolation=cv2.INTER_LINEAR)
        return out
    pixels = resize(image, size, keep_aspect, method)
    if channels == 1:
        pixels = np.asarray(Image.fromarray(np.ascontiguousarray(pixels)).convert("L"))[..., None]
    tensor = quantize_input(pixels, dtype, quant, norm)[None]
    if out is None:
        return tensor
    np.copyto(out, tensor)
    return out
