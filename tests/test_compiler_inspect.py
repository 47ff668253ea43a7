"""`edge-compile inspect`: the flatbuffer reader and the Edge TPU prediction on real models."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import pytest
from click.testing import CliRunner

from compiler import rules, tflite
from compiler.cli import main
from compiler.errors import ModelSourceError
from compiler.inspect import inspect_file, render


@pytest.mark.slow
def test_reader_agrees_with_the_schema_generated_by_tensorflow_lite(
    compiler_models: Dict[str, Path],
) -> None:
    from ai_edge_litert import schema_py_generated as schema

    data = compiler_models["mobilenet_int8"].read_bytes()
    ref = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    ours = tflite.parse(data)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    assert [(c.name, c.version) for c in ours.operator_codes] == [
        (names[max(c.builtinCode, c.deprecatedBuiltinCode)], c.version) for c in ref.operatorCodes
    ]
    sg, ref_sg = ours.subgraphs[0], ref.subgraphs[0]
    assert [t.shape for t in sg.tensors] == [tuple(t.shape) for t in ref_sg.tensors]
    assert [op.opcode_index for op in sg.operators] == [op.opcodeIndex for op in ref_sg.operators]
    assert ours.buffer_sizes == [0 if b.data is None else len(b.data) for b in ref.buffers]


@pytest.mark.slow
def test_quantized_mobilenet_maps_every_operation(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["mobilenet_int8"])
    assert report.quantized and report.compilable and not report.problems
    assert report.cut_index is None
    assert all(op.status == rules.MAPPED for op in report.operators)
    assert {op.op for op in report.operators} >= {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "FULLY_CONNECTED"}
    assert 0 < report.parameter_bytes < report.on_chip_cache_bytes
    assert not report.streams_parameters


@pytest.mark.slow
def test_tensorflow_pin_emits_op_versions_compiler_16_parses(compiler_models: Dict[str, Path]) -> None:
    model = tflite.read(compiler_models["mobilenet_int8"])
    for code in model.operator_codes:
        assert code.version <= rules.EDGE_TPU_OPS[code.name].max_version, code


@pytest.mark.slow
def test_float_model_is_reported_not_quantized(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["float"])
    assert not report.quantized and not report.compilable
    assert report.float_tensors
    assert any("Model not quantized" in p for p in report.problems)
    assert report.operators[0].status == rules.UNSUPPORTED_TYPE
    assert report.ops_on_edgetpu == 0


@pytest.mark.slow
def test_unsupported_op_cuts_the_graph_there(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["leaky_int8"])
    assert report.compilable
    assert (report.cut_index, report.cut_op) == (2, "LEAKY_RELU")
    assert report.operators[2].status == rules.UNSUPPORTED_OP
    assert [op.on_edgetpu for op in report.operators[:2]] == [True, True]
    after = report.operators[3:]
    assert after and all(op.status == rules.AFTER_CUT and not op.on_edgetpu for op in after)


@pytest.mark.slow
def test_tensor_of_rank_above_three_cuts_the_graph(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["rank5_int8"])
    assert (report.cut_index, report.cut_op) == (2, "RESHAPE")
    assert report.operators[2].status == rules.UNSUPPORTED_RANK
    assert "[1, 2, 8, 16, 8]" in report.operators[2].reason
    assert report.ops_on_edgetpu == 2


@pytest.mark.slow
def test_dynamic_batch_makes_the_model_uncompilable(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["dynamic_int8"])
    assert not report.compilable
    assert report.cut_index == 0
    assert report.operators[0].status == rules.DYNAMIC_SHAPE
    assert any("dynamic-sized" in p for p in report.problems)


@pytest.mark.slow
def test_op_version_newer_than_the_compiler_is_a_model_problem(
    compiler_models: Dict[str, Path],
) -> None:
    report = inspect_file(compiler_models["exp_int8"])
    assert not report.compilable
    assert any("'EXP' version '2'" in p for p in report.problems)
    assert (report.cut_index, report.cut_op) == (2, "EXP")


@pytest.mark.slow
def test_inspect_cli_json_and_exit_status(compiler_models: Dict[str, Path]) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["inspect", "--json", str(compiler_models["leaky_int8"])])
    assert ok.exit_code == 0, ok.output
    payload = json.loads(ok.stdout)
    assert payload["schema_version"] == 2
    assert payload["cut"] == {"index": 2, "op": "LEAKY_RELU"}
    assert payload["operators"][2]["status"] == rules.UNSUPPORTED_OP
    bad = runner.invoke(main, ["inspect", str(compiler_models["float"])])
    assert bad.exit_code == 1
    assert "Compilable: no" in bad.stdout


def test_inspect_cli_says_what_is_wrong_with_a_non_tflite_file(tmp_path: Path) -> None:
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"not a flatbuffer at all")
    result = CliRunner().invoke(main, ["inspect", str(junk)])
    assert result.exit_code == 2
    assert "not a TensorFlow Lite model" in result.stderr
    assert "Traceback" not in result.output
    missing = CliRunner().invoke(main, ["inspect", str(tmp_path / "absent.tflite")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_reader_rejects_truncated_flatbuffer() -> None:
    with pytest.raises(ModelSourceError):
        tflite.parse(b"\x10\x00\x00\x00TFL3" + b"\xff" * 4)


def test_inspect_does_not_import_tensorflow() -> None:
    import subprocess
    import sys

    code = (
        "import sys, compiler.cli, compiler.inspect, compiler.run, compiler.edgetpu;"
        "from click.testing import CliRunner; r = CliRunner();"
        "codes = [r.invoke(compiler.cli.main, a).exit_code for a in (['--help'], ['quantize', '--help'],"
        " ['compile', '--help'], ['inspect', '--help'])]; assert codes == [0, 0, 0, 0], codes;"
        "bad = [m for m in ('tensorflow', 'docker') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_grouped_convolution_is_flagged_with_what_to_change(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["grouped_int8"])
    assert not report.compilable
    (problem,) = report.problems
    assert "'CONV_2D' version '6'" in problem and "groups=1" in problem
    grouped = [op for op in report.operators if op.op == "CONV_2D" and op.version == 6]
    assert grouped and grouped[0].status == rules.VERSION_NOT_SUPPORTED


@pytest.mark.slow
def test_partly_float_model_compiles_up_to_its_first_float_op(compiler_models: Dict[str, Path]) -> None:
    report = inspect_file(compiler_models["partly_float"])
    assert not report.quantized and report.compilable and not report.problems
    assert (report.cut_index, report.cut_op) == (2, "DEQUANTIZE")
    assert [op.op for op in report.operators if op.on_edgetpu] == ["QUANTIZE", "CONV_2D"]
    assert "Quantized: partly" in render(report)


@pytest.mark.slow
def test_an_already_compiled_model_is_recognised(compiler_models: Dict[str, Path], tmp_path: Path) -> None:
    """A model holding edgetpu-custom-op (built here by rewriting a real one's op table)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = compiler_models["leaky_int8"].read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    custom = schema.OperatorCodeT()
    custom.builtinCode = custom.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    custom.customCode = "edgetpu-custom-op"
    model.operatorCodes.append(custom)
    model.subgraphs[0].operators[1].opcodeIndex = len(model.operatorCodes) - 1
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    compiled = tmp_path / "leaky_int8_edgetpu.tflite"
    compiled.write_bytes(bytes(builder.Output()))

    report = inspect_file(compiled)
    assert report.operators[1].op == "edgetpu-custom-op"
    assert not report.compilable
    assert any("already compiled for the Edge TPU" in p for p in report.problems)
