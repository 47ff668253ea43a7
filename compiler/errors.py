"""The compiler package's errors.

Every error meant for a user derives from :class:`CompilerError`; the CLI turns it into
one line on stderr and a non-zero exit. Third-party errors (TensorFlow, docker,
subprocess, flatbuffers) are translated where they enter (``raise ... from exc``)::

    CompilerError
    ├── ModelSourceError        missing, unreadable or unsupported source model
    ├── CalibrationError        no or unreadable calibration / evaluation images
    ├── QuantizationError       the TensorFlow converter failed
    ├── CompilerUnavailableError neither a local edgetpu_compiler nor docker can be used
    └── CompileFailedError      edgetpu_compiler ran and failed
        ├── NotQuantizedError       the model has float tensors
        ├── OpVersionError          an op version the compiler cannot parse
        ├── DynamicShapeError       the model has dynamic-sized tensors
        ├── InternalCompilerError   "Internal compiler error. Aborting!"
        └── CompileTimeoutError     the compiler's own timeout (``-t``) ran out
"""

from __future__ import annotations


class CompilerError(Exception):
    """Root of the compiler package's errors: a message a user can act on."""

    exit_code = 1


class ModelSourceError(CompilerError):
    """The model file or directory is missing, unreadable or of a kind we cannot use."""

    exit_code = 2


class CalibrationError(CompilerError):
    """Calibration or evaluation images are missing or unreadable."""

    exit_code = 2


class QuantizationError(CompilerError):
    """TensorFlow could not convert or quantize the model."""


class CompilerUnavailableError(CompilerError):
    """Neither ``edgetpu_compiler`` on PATH nor a usable docker engine was found."""

    exit_code = 3


class CompileFailedError(CompilerError):
    """``edgetpu_compiler`` ran and reported a failure.

    Attributes:
        output: the compiler's combined stdout and stderr, for the log.
    """

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class NotQuantizedError(CompileFailedError):
    """The model is not fully integer-quantized."""


class OpVersionError(CompileFailedError):
    """The model has an operator version newer than the compiler knows."""


class DynamicShapeError(CompileFailedError):
    """The model has dynamic-sized tensors (for example a batch dimension of -1)."""


class InternalCompilerError(CompileFailedError):
    """The compiler aborted with an internal error."""


class CompileTimeoutError(CompileFailedError):
    """The compiler's timeout ran out."""
