"""Calibration and evaluation images: find, split, load and normalize them (no TensorFlow).

A model's float input is ``(pixel - mean) / std`` with pixels in 0..255, RGB, resized to
the model's input size. Named presets cover the usual ranges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from compiler.errors import CalibrationError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff"})

#: Named input ranges: preset -> (mean, std) applied to 0..255 pixels.
PRESETS = {
    "[0,1]": (0.0, 255.0),
    "[-1,1]": (127.5, 127.5),
    "[0,255]": (0.0, 1.0),
}


@dataclass(frozen=True)
class Normalization:
    """``float = (pixel - mean) / std`` for 0..255 RGB pixels."""

    mean: float = 127.5
    std: float = 127.5

    @classmethod
    def from_options(cls, preset: Optional[str], mean: Optional[float], std: Optional[float]) -> Normalization:
        """Build from a preset name (``[-1,1]``, ``[0,1]``, ``[0,255]``) or explicit mean/std.

        Raises:
            CalibrationError: unknown preset, both a preset and mean/std, or std == 0.
        """
        if preset is not None:
            if mean is not None or std is not None:
                raise CalibrationError("give either --range or --mean/--std, not both")
            key = preset.replace(" ", "")
            if key not in PRESETS:
                raise CalibrationError(f"unknown --range {preset!r}; choose one of {', '.join(PRESETS)}")
            return cls(*PRESETS[key])
        norm = cls(127.5 if mean is None else mean, 127.5 if std is None else std)
        if norm.std == 0:
            raise CalibrationError("--std must not be 0")
        return norm

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """float32 array of the same shape, normalized."""
        return ((pixels.astype(np.float32) - self.mean) / self.std).astype(np.float32)


def list_images(folder: Path) -> List[Path]:
    """Image files under ``folder`` (recursively), sorted by path.

    Raises:
        CalibrationError: ``folder`` does not exist or is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"image folder not found: {folder}")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def split_holdout(images: Sequence[Path], fraction: float = 0.2) -> Tuple[List[Path], List[Path]]:
    """Split into (calibration, held-back evaluation): every k-th image is held back.

    With fewer than 2 images nothing is held back.
    """
    if len(images) < 2 or fraction <= 0:
        return list(images), []
    step = max(2, round(1 / fraction))
    held = [p for i, p in enumerate(images) if i % step == step - 1] or [images[-1]]
    calib = [p for p in images if p not in held]
    return calib, held


def load_image(path: Path, size: Tuple[int, int], channels: int = 3) -> np.ndarray:
    """Pixels of ``path`` as uint8 ``(height, width, channels)``, resized to ``size`` = (h, w).

    Raises:
        CalibrationError: the file cannot be decoded as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            mode = "L" if channels == 1 else "RGB"
            resized = img.convert(mode).resize((size[1], size[0]), Image.Resampling.BILINEAR)
            arr = np.asarray(resized, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise CalibrationError(f"cannot read image {path}: {exc}") from exc
    return arr.reshape(size[0], size[1], channels)


def batches(images: Sequence[Path], shape: Tuple[int, int, int], norm: Normalization) -> Iterator[np.ndarray]:
    """Yield one normalized float32 batch ``(1, h, w, c)`` per image."""
    h, w, c = shape
    for path in images:
        yield norm.apply(load_image(path, (h, w), c))[np.newaxis]


def random_batches(count: int, shape: Tuple[int, int, int], norm: Normalization, seed: int = 0) -> Iterator[np.ndarray]:
    """Yield ``count`` batches of uniform random pixels (for ``--calib random`` only)."""
    rng = np.random.default_rng(seed)
    for _ in range(count):
        pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
        yield norm.apply(pixels)[np.newaxis]
