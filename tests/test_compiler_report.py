"""The report parser and the failure diagnosis, against the compiler's documented texts."""

from __future__ import annotations

import pytest

from compiler import errors, report

SUCCESS_STDOUT = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1173 ms.

Input model: models/yolo_int8.tflite
Input size: 8.11MiB
Output model: models/yolo_int8_edgetpu.tflite
Output size: 9.47MiB
On-chip memory used for caching model parameters: 6.86MiB
On-chip memory remaining for caching model parameters: 7.75KiB
Off-chip memory used for streaming uncached model parameters: 1.22MiB
Number of Edge TPU subgraphs: 1
Total number of operations: 93
Operation log: models/yolo_int8_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of \
the model will instead run on the CPU, which is slower. If possible, consider updating your model \
to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 83
Number of operations that will run on CPU: 10
Compilation child process completed within timeout period.
Compilation succeeded!
"""

LOG = """Edge TPU Compiler version 16.0.384591198
Input: models/yolo_int8.tflite
Output: models/yolo_int8_edgetpu.tflite

Operator                       Count      Status

LOGISTIC                       1          More than one subgraph is not supported
ADD                            10         Mapped to Edge TPU
RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some \
unspecified limitation
CONV_2D                        2          Tensor has unsupported rank (up to 3 innermost dimensions mapped)
DEQUANTIZE                     1          Operation is working on an unsupported data type
"""


def test_stdout_is_parsed_into_memory_subgraphs_and_counts() -> None:
    result = report.parse_stdout(SUCCESS_STDOUT)
    assert result.compiler_version == "16.0.384591198"
    assert result.compile_ms == 1173
    (model,) = result.models
    assert model.input_model == "models/yolo_int8.tflite"
    assert model.output_model == "models/yolo_int8_edgetpu.tflite"
    assert model.input_size == round(8.11 * 1024**2)
    assert model.on_chip_used == round(6.86 * 1024**2)
    assert model.on_chip_remaining == round(7.75 * 1024)
    assert model.off_chip_used == round(1.22 * 1024**2)
    assert (model.subgraphs, model.total_operations) == (1, 93)
    assert (model.operations_on_edgetpu, model.operations_on_cpu) == (83, 10)
    assert model.operation_log == "models/yolo_int8_edgetpu.log"


def test_fully_mapped_model_without_counts_has_every_op_on_the_tpu() -> None:
    text = SUCCESS_STDOUT.split("Model successfully compiled but")[0]
    (model,) = report.parse_stdout(text).models
    assert (model.operations_on_edgetpu, model.operations_on_cpu) == (93, 0)


def test_co_compilation_gives_one_report_per_model() -> None:
    block = SUCCESS_STDOUT.split("Input model:")[1].split("Compilation child")[0]
    text = (
        "Edge TPU Compiler version 16.0.384591198\n"
        + "Input model:"
        + block
        + "Input model:"
        + block.replace("yolo", "ssd").replace("83", "93").replace("CPU: 10", "CPU: 0")
    )
    models = report.parse_stdout(text).models
    assert [m.input_model for m in models] == ["models/yolo_int8.tflite", "models/ssd_int8.tflite"]
    assert [m.operations_on_cpu for m in models] == [10, 0]


def test_log_table_rows_keep_operator_count_and_status() -> None:
    rows = report.parse_log(LOG)
    assert [(r.op, r.count) for r in rows] == [
        ("LOGISTIC", 1),
        ("ADD", 10),
        ("RESIZE_NEAREST_NEIGHBOR", 1),
        ("QUANTIZE", 1),
        ("CONV_2D", 2),
        ("DEQUANTIZE", 1),
    ]
    assert rows[1].on_edgetpu and not rows[0].on_edgetpu
    assert rows[3].status.startswith("Operation is otherwise supported")
    assert rows[4].status == "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"


def test_sizes_in_the_compilers_units() -> None:
    assert report.parse_size("0.00B") == 0
    assert report.parse_size("961.05KiB") == round(961.05 * 1024)
    assert report.parse_size("garbage") == -1


@pytest.mark.parametrize(
    ("output", "kind", "advice"),
    [
        (
            "Edge TPU Compiler version 16.0.384591198\nERROR: Didn't find op for builtin opcode 'CONV_2D' "
            "version '6'. An older version of this builtin might be supported. Are you using an old TFLite "
            "binary with a newer model?\n\nERROR: Registration failed.\n\nInvalid model: m.tflite\n"
            "Model could not be parsed",
            errors.OpVersionError,
            "CONV_2D version 6",
        ),
        (
            "Edge TPU Compiler version 16.0.384591198\nModel not quantized\n",
            errors.NotQuantizedError,
            "edge-compile quantize",
        ),
        (
            "Edge TPU Compiler version 16.0.384591198\n\nInternal compiler error. Aborting! \n",
            errors.InternalCompilerError,
            "-a",
        ),
        (
            "Started a compilation timeout timer of 10 seconds.\nCompilation timeout. This is usually caused "
            "by large activations.\nCompilation failed! ",
            errors.CompileTimeoutError,
            "-t SECONDS",
        ),
        (
            "ERROR: Attempting to use a delegate that only supports static-sized tensors with a graph that "
            "has dynamic-sized tensors.\nCompilation failed! ",
            errors.DynamicShapeError,
            "fixed batch of 1",
        ),
        (
            "ERROR: something new\nInvalid model: x.tflite\nModel could not be parsed",
            errors.CompileFailedError,
            "Invalid model: x.tflite",
        ),
    ],
)
def test_known_failures_become_actionable_errors(output: str, kind: type, advice: str) -> None:
    err = report.diagnose(output, timeout_sec=10)
    assert type(err) is kind
    assert advice in str(err)
    assert "\n" not in str(err)
    assert err.output == output


def test_op_version_error_names_the_tensorflow_that_emits_compatible_ops() -> None:
    err = report.diagnose("ERROR: Didn't find op for builtin opcode 'TRANSPOSE_CONV' version '4'.")
    assert "TensorFlow 2.21" in str(err) and "TRANSPOSE_CONV" in str(err)


def test_runtime_too_old_is_explained_with_the_m_flag() -> None:
    advice = report.explain_runtime_mismatch(
        "Failed to prepare for TPU. Package requires runtime version (14), which is newer than this "
        "runtime version (13)."
    )
    assert advice is not None and "-m 13" in advice
    assert report.explain_runtime_mismatch("some other error") is None
