"""What a model file is, by its bytes and its name: the rules every tool shares.

* A TensorFlow Lite model is a flatbuffer whose file identifier, at bytes 4..8, is ``TFL3``.
* A model compiled by ``edgetpu_compiler`` holds the custom operator ``edgetpu-custom-op``
  and is named ``<name>_edgetpu.tflite``; its CPU twin (the int8 model it was compiled from,
  which every release carries as the fallback) is ``<name>.tflite`` beside it.
"""

from __future__ import annotations

from pathlib import Path

TFLITE_IDENTIFIER = b"TFL3"
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
EDGETPU_SUFFIX = "_edgetpu.tflite"


def is_tflite(head: bytes) -> bool:
    """True when ``head`` (the first 8 bytes of a file, or more) carries the TFLite identifier."""
    return len(head) >= 8 and head[4:8] == TFLITE_IDENTIFIER


def is_edgetpu_model(data: bytes) -> bool:
    """True when the model bytes hold the Edge TPU custom operator (compiled by edgetpu_compiler)."""
    return EDGETPU_CUSTOM_OP.encode() in data


def is_compiled_name(path: Path) -> bool:
    """True for ``*_edgetpu.tflite``."""
    return Path(path).name.endswith(EDGETPU_SUFFIX)


def cpu_twin(path: Path) -> Path:
    """The CPU model expected beside a compiled one: ``x_edgetpu.tflite`` -> ``x.tflite``."""
    path = Path(path)
    return path.with_name(path.name.replace(EDGETPU_SUFFIX, ".tflite"))


def compiled_twin(path: Path) -> Path:
    """The compiled model expected beside a CPU one: ``x.tflite`` -> ``x_edgetpu.tflite``."""
    path = Path(path)
    return path.with_name(path.stem + EDGETPU_SUFFIX)


def model_stem(path: Path) -> str:
    """The model's name without ``_edgetpu`` and ``.tflite``: ``mobilenet_edgetpu.tflite`` -> ``mobilenet``."""
    return Path(path).name.replace(EDGETPU_SUFFIX, ".tflite").replace(".tflite", "")
