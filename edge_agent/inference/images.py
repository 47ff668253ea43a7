"""Still images: decode an image file into the RGB uint8 array the frame loop classifies.

Pillow is the decoder. Before anything is decoded, the header tells the size and the
pixel format, and the memory decoding will take is estimated from them
(:func:`decode_cost`): an image is refused when it would take more memory than an 8-bit
RGB image of ``max_pixels`` pixels (:data:`BYTES_PER_RGB_PIXEL` bytes a pixel), so a
decompression bomb costs nothing, and 16-bit, alpha, palette and rotated images count
for what they really cost.

What comes out:

* 16-bit images (PNG ``I;16``, TIFF) are scaled to 8 bits (``value >> 8``, so 65535 ->
  255 and 257 * k -> k), never clipped;
* the EXIF orientation tag is honoured: a photo taken with the camera turned is
  classified upright, as every image viewer shows it;
* everything else is converted to RGB by Pillow (palette, grayscale, alpha dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edge_agent.errors import InputError
from release_contract.files import NotRegularFile, open_regular

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
#: 24 megapixels (a 6000x4000 photo): with BYTES_PER_RGB_PIXEL, at most 240 MB for decoding,
#: which fits a board with 1 GB of RAM.
DEFAULT_MAX_PIXELS = 24_000_000
#: Peak bytes a pixel of an 8-bit RGB image costs: Pillow stores it in 4 bytes, the array takes 6 on its way.
BYTES_PER_RGB_PIXEL = 10
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_ORIENTATION = 0x0112  # the EXIF orientation tag


def _stored_bytes(mode: str) -> int:
    """Bytes a pixel of ``mode`` takes in Pillow's memory (multi-band modes are stored in 4)."""
    if mode in ("1", "L", "P"):
        return 1
    if mode.startswith("I;16"):
        return 2
    return 4


def decode_cost(mode: str, width: int, height: int, rotated: bool = False) -> int:
    """Peak bytes :func:`load_image` needs for an image of ``mode`` and size (measured with Pillow 11).

    What Pillow decodes (twice when the EXIF orientation asks for a rotated copy), then:
    RGB -> the array (Pillow builds its bytes, then the array: 6 bytes a pixel); L -> the
    array and its three channels; 16-bit -> the array of values, its shifted copies and the
    three channels; anything else -> Pillow's RGB copy (4) and the array (6).
    """
    stored = _stored_bytes(mode)
    decoded = stored * (2 if rotated else 1)
    if mode == "RGB":
        after = 6
    elif mode == "L":
        after = 2 + 3
    elif mode in _SIXTEEN_BIT:
        after = 4 * stored + 1 + 3
    else:
        after = 4 + 6
    return width * height * (decoded + after)


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except (OSError, ValueError, SyntaxError, TypeError):  # a corrupt EXIF block: show the image as stored
        return 1
    return value if isinstance(value, int) else 1


def _to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in _SIXTEEN_BIT:
        values = np.asarray(img)
        if values.dtype != np.uint16:  # mode I: 32-bit integers holding 16-bit samples
            values = np.clip(values, 0, 65535)
        gray = (values >> 8).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if img.mode == "L":
        return np.repeat(np.asarray(img)[..., None], 3, axis=2)
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return np.asarray(rgb)


def load_image(
    path: Path, max_pixels: int = DEFAULT_MAX_PIXELS, size_hint: Optional[Tuple[int, int]] = None
) -> np.ndarray:
    """Decode an image file to RGB uint8 (H, W, 3), upright, 16-bit scaled to 8 bits.

    With ``size_hint`` (width, height, upright) a JPEG is decoded at 1/2, 1/4 or 1/8 of its size
    in the DCT domain when that stays at least as large (several times cheaper).

    Refused from the header, before decoding: an image above ``max_pixels`` pixels, or one
    whose decoding would take more memory than an 8-bit RGB image of ``max_pixels`` pixels
    (see :func:`decode_cost`). Raises InputError with the reason.
    """
    try:
        with open_regular(path) as fh, Image.open(fh) as img:
            width, height = img.size
            orientation = _orientation(img)
            cost = decode_cost(img.mode, width, height, rotated=orientation != 1)
            budget = max_pixels * BYTES_PER_RGB_PIXEL
            if width * height > max_pixels:
                raise InputError(
                    f"{path}: image is {width}x{height} pixels, more than the limit of {max_pixels} "
                    "(raise --max-pixels if this is intended)"
                )
            if cost > budget:
                raise InputError(
                    f"{path}: a {width}x{height} {img.mode} image needs about {cost / 1e6:,.0f} MB to decode, "
                    f"more than the {budget / 1e6:,.0f} MB that --max-pixels {max_pixels} allows "
                    "(raise --max-pixels if this is intended)"
                )
            if size_hint is not None and img.format == "JPEG":
                stored = size_hint if orientation < 5 else (size_hint[1], size_hint[0])  # 5-8: turned 90 degrees
                img.draft("RGB", stored)
            img.load()
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
            return _to_rgb(upright)
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"input not found: {path}") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory") from None
    except NotRegularFile:
        raise InputError(f"{path} is not a regular file (a FIFO, device or socket?)") from None
    except Image.DecompressionBombError as exc:
        raise InputError(f"{path}: refused as a decompression bomb ({exc})") from exc
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image, or an unsupported image format") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: cannot decode image ({exc})") from exc
