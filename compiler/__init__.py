"""Turn a model into an Edge TPU model and say what runs where.

``quantize`` (full-integer post-training quantization with TensorFlow) ->
``inspect`` (pre-flight check of a ``.tflite`` without the compiler) ->
``edgetpu`` (runs ``edgetpu_compiler`` locally or in the compiler image) ->
``report`` (the compiler's output as a structured report).

Importing this package imports neither TensorFlow nor docker; the modules that need
them import them inside the functions that do.
"""

from release_contract import __version__

__all__ = ["__version__"]
