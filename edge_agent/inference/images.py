"""Still images: decode an image file into the RGB uint8 array the frame loop classifies.

Pillow is the decoder. The size is checked from the header before anything is decoded,
so a decompression bomb costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge_agent.errors import InputError
from release_contract.files import NotRegularFile, open_regular

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
DEFAULT_MAX_PIXELS = 50_000_000


def load_image(path: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an image file to RGB uint8, refusing images above ``max_pixels``.

    The size is checked from the header before decoding, so a decompression bomb
    costs nothing. Raises InputError with the reason.
    """
    try:
        with open_regular(path) as fh, Image.open(fh) as img:
            width, height = img.size
            if width * height > max_pixels:
                raise InputError(
                    f"{path}: image is {width}x{height} pixels, more than the limit of {max_pixels} "
                    "(raise --max-pixels if this is intended)"
                )
            img.load()
            return np.asarray(img.convert("RGB"))
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
