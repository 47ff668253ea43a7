"""Where the bundled demo model, its labels and sample images are.

In a checkout (and an editable install) they are the repository's ``models/``,
``labels/`` and ``images/``; a regular ``pip install`` puts copies under
``<prefix>/share/edgetpu-fleet/`` (see ``[tool.setuptools.data-files]``).
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

DATA_DIR = "share/edgetpu-fleet"


def bundled(*parts: str) -> Path:
    """Path of a bundled file, e.g. ``bundled("models", "digits_int8.tflite")``.

    Returns the checkout's copy when there is one, else the installed copy; when
    neither exists, the checkout path (so the error names a sensible place).
    """
    checkout = Path(__file__).resolve().parent.parent.joinpath(*parts)
    installed = Path(sysconfig.get_path("data")).joinpath(DATA_DIR, *parts)
    for candidate in (checkout, installed):
        if candidate.exists():
            return candidate
    return checkout


def demo_model() -> Path:
    """The bundled int8 digits classifier."""
    return bundled("models", "digits_int8.tflite")


def demo_labels() -> Path:
    """Labels of the bundled model."""
    return bundled("labels", "digits.txt")


def demo_images() -> Path:
    """Folder of the bundled sample images."""
    return bundled("images")
