"""Device side of the Edge TPU fleet toolkit: run a classifier and publish its results.

Importing this package is cheap: it imports neither TensorFlow, docker nor oras, and
it starts nothing. The heavy parts (interpreter, OpenCV) load when first used.
"""

from release_contract import __version__

__all__ = ["__version__"]
