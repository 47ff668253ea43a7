"""What ``edgetpu_compiler`` 16 accepts: the table the pre-flight check predicts from.

Sources (cited so the next reader can re-check them):

* Operations the Edge TPU can run, the runtime version some of them need, and their
  limits: Coral's "TensorFlow models on the Edge TPU", section "Supported operations"
  (https://coral.ai/docs/edgetpu/models-intro/#supported-operations), and its model
  requirements (fully 8-bit quantized; constant tensor sizes; tensors of at most 3
  dimensions with a size above 1; one Edge TPU segment, see :mod:`compiler.partition`).
* Models Google's compiler 16 really compiled: the ``X.tflite`` / ``X_edgetpu.tflite``
  pairs of google-coral/test_data (measured in docs/compiler.md). They show what the
  documentation does not: TILE maps, an LSTM's int16 state maps, and resizes have a
  scale limit.
* The highest operator versions the compiler's built-in TensorFlow Lite parser knows.
  Google does not publish them. The compiler 16.0.384591198 embeds a TensorFlow Lite of
  mid-2021; the boundaries below are those of that era's builtin op resolver, and the
  ones users hit are confirmed by public reports:
  CONV_2D v6 rejected (google-coral/edgetpu#631, TF 2.9.1),
  TRANSPOSE_CONV v4 rejected (google-coral/edgetpu#845),
  QUANTIZE v3 rejected (google-coral/edgetpu#879),
  EXP v2 rejected (google-coral/libedgetpu#71, TF 2.16),
  REVERSE_V2 v3 rejected (google-coral/edgetpu#340).
  A version above the limit of *any* operator, mapped or not, makes the compiler refuse
  the whole model ("Didn't find op for builtin opcode ... Model could not be parsed").

The values are predictions: the real compiler has the last word, and ``edge-compile``
reports what it actually did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

#: The Edge TPU's on-chip memory for caching parameters is about 8 MiB; parameters
#: beyond what fits stream from off-chip memory on every inference.
ON_CHIP_PARAMETER_CACHE_BYTES = 8 * 1024 * 1024

#: The compiler version whose limits this table describes.
COMPILER_VERSION = "16.0.384591198"

# Statuses, in the compiler's own words where it has them (its ``_edgetpu.log``).
MAPPED = "Mapped to Edge TPU"
AFTER_CUT = "More than one subgraph is not supported"
UNSUPPORTED_OP = "Operation not supported"
VERSION_NOT_SUPPORTED = "Operation version not supported"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
DYNAMIC_SHAPE = "Tensor has a dynamic size (dynamic-sized tensors are not supported)"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"


@dataclass(frozen=True)
class EdgeTpuOp:
    """An operation the Edge TPU can run.

    Attributes:
        max_version: highest operator version the compiler parses.
        min_runtime: Edge TPU runtime version needed when mapped (10 = every runtime).
        note: Google's stated limits for it, shown to users.
    """

    max_version: int
    min_runtime: int = 10
    note: str = ""


EDGE_TPU_OPS: Dict[str, EdgeTpuOp] = {
    "ADD": EdgeTpuOp(4),
    "AVERAGE_POOL_2D": EdgeTpuOp(3, note="no fused activation"),
    "CONCATENATION": EdgeTpuOp(3, note="no fused activation; a constant input must be all zeros"),
    "CONV_2D": EdgeTpuOp(5, note="same dilation in x and y"),
    "DEPTHWISE_CONV_2D": EdgeTpuOp(6, note="dilated kernels not supported"),
    "EXPAND_DIMS": EdgeTpuOp(1, min_runtime=13),
    "FULLY_CONNECTED": EdgeTpuOp(9, note="default weights format only; 1-D output"),
    "L2_NORMALIZATION": EdgeTpuOp(2),
    "LOGISTIC": EdgeTpuOp(3),
    "UNIDIRECTIONAL_SEQUENCE_LSTM": EdgeTpuOp(3, min_runtime=14, note="unidirectional only"),
    "MAXIMUM": EdgeTpuOp(4),
    "MAX_POOL_2D": EdgeTpuOp(3, note="no fused activation"),
    "MEAN": EdgeTpuOp(3, note="no reduction over the batch dimension; x/y reductions only"),
    "MINIMUM": EdgeTpuOp(4),
    "MUL": EdgeTpuOp(4),
    "PACK": EdgeTpuOp(2, note="not along the batch dimension"),
    "PAD": EdgeTpuOp(2, note="no padding of the batch dimension; x/y only"),
    "PRELU": EdgeTpuOp(1, note="alpha must be 1-D after removing leading ones"),
    "QUANTIZE": EdgeTpuOp(2),
    "REDUCE_MAX": EdgeTpuOp(2, min_runtime=14, note="not over the batch dimension"),
    "REDUCE_MIN": EdgeTpuOp(2, min_runtime=14, note="not over the batch dimension"),
    "RELU": EdgeTpuOp(2),
    "RELU6": EdgeTpuOp(2),
    "RELU_N1_TO_1": EdgeTpuOp(1),
    "RESHAPE": EdgeTpuOp(1, note="some reshapes of large tensors may not map"),
    "RESIZE_BILINEAR": EdgeTpuOp(3, note="3-D input/output; some sizes may not map"),
    "RESIZE_NEAREST_NEIGHBOR": EdgeTpuOp(3, note="3-D input/output; some sizes may not map"),
    "RSQRT": EdgeTpuOp(2, min_runtime=14),
    "SLICE": EdgeTpuOp(3),
    "SOFTMAX": EdgeTpuOp(3, note="1-D input of at most 16,000 elements"),
    "SPACE_TO_DEPTH": EdgeTpuOp(2),
    "SPLIT": EdgeTpuOp(3, note="not along the batch dimension"),
    "SQUARED_DIFFERENCE": EdgeTpuOp(2, min_runtime=14),
    "SQUEEZE": EdgeTpuOp(1, min_runtime=13),
    "STRIDED_SLICE": EdgeTpuOp(4, min_runtime=13),
    "SUB": EdgeTpuOp(3),
    "SUM": EdgeTpuOp(1, min_runtime=13),
    "TANH": EdgeTpuOp(3),
    # Not in Coral's table, but compiler 16 maps it: deeplab_mobilenet_edgetpu_slim_cityscapes_quant
    # (google-coral/test_data) has TILE 1 inside its edgetpu-custom-op. TensorFlow Lite of the
    # compiler's era registers TILE up to version 2; what the compiler parses above it is unknown.
    "TILE": EdgeTpuOp(2),
    "TRANSPOSE": EdgeTpuOp(4, min_runtime=14),
    "TRANSPOSE_CONV": EdgeTpuOp(3, min_runtime=13),
}

#: Highest versions the compiler parses for operations that run on the CPU only.
#: Operators not listed here or above are assumed to parse at any version up to the
#: newest code the compiler knows (see :data:`MAX_KNOWN_BUILTIN_CODE`).
CPU_OP_MAX_VERSIONS: Dict[str, int] = {
    "DEQUANTIZE": 4,
    "EXP": 1,
    "REVERSE_V2": 2,
    "CAST": 2,
    "GATHER": 4,
    "ARG_MAX": 2,
    "ARG_MIN": 2,
    "HARD_SWISH": 1,
    "LEAKY_RELU": 2,
    "DIV": 2,
    "BATCH_MATMUL": 3,
    "PADV2": 2,
    "SELECT_V2": 1,
    "LOG_SOFTMAX": 2,
}

#: Builtin codes above this (VAR_HANDLE and later) are newer than the compiler's parser.
MAX_KNOWN_BUILTIN_CODE = 141

#: Operators whose variable (state) tensors may be 16-bit: TensorFlow Lite's integer LSTM keeps
#: its cell state in int16, and compiler 16 maps it (keras_lstm_mnist_ptq in google-coral/test_data
#: has an int16 cell state and runs entirely inside edgetpu-custom-op).
INT16_STATE_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM"})

#: Resize operators, whose "input/output size" limit Coral's table mentions without numbers.
RESIZE_OPS = frozenset({"RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"})
#: Largest height or width scale factor a resize is predicted to map at. Measured bounds:
#: 2x maps (movenet_single_pose_lightning_ptq, three RESIZE_BILINEAR 6->12->24->48) and so does
#: 1x (deeplab_mobilenet_edgetpu_slim_cityscapes_quant, 33->33); 15.5x (33->513, the same
#: model) and 33x (1->33, deeplabv3_mnv2_pascal_quant) stay on the CPU with the status
#: "Operation is otherwise supported, but not mapped due to some unspecified limitation"
#: (google-coral/edgetpu#31: the compiler refuses resizes that would lose precision).
#: The limit lies between 2 and 15.5; 8 is the prediction until a model narrows it.
MAX_RESIZE_SCALE = 8.0

#: Activation tensor types the Edge TPU works on.
QUANTIZED_TYPES = frozenset({"INT8", "UINT8"})
#: Constant tensor types allowed beside them (biases and shape/axis operands).
CONSTANT_TYPES = frozenset({"INT8", "UINT8", "INT32", "INT64"})


#: Layers known (checked with TensorFlow 2.21) to produce an operator version compiler 16
#: cannot parse, and what to do instead.
VERSION_CAUSES: Dict[Tuple[str, int], str] = {
    ("CONV_2D", 6): "a grouped convolution (Conv2D with groups > 1) is written as CONV_2D 6: "
    "use groups=1, or a depthwise + pointwise pair",
    ("EXP", 2): "an int8 exponential (e.g. a Keras 'exponential' activation) is written as EXP 2: "
    "replace the layer or keep it out of the quantized model",
}


def version_advice(op_name: str, version: int) -> str:
    """What to do about ``op_name`` at ``version`` ("" when nothing specific is known)."""
    return VERSION_CAUSES.get((op_name, version), "")


def max_version(op_name: str) -> Optional[int]:
    """The highest version of ``op_name`` the compiler parses, or None when not known."""
    if op_name in EDGE_TPU_OPS:
        return EDGE_TPU_OPS[op_name].max_version
    return CPU_OP_MAX_VERSIONS.get(op_name)
