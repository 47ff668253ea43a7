"""`edge-compile MODEL`: the predicted split before compiling, and where the compiler did otherwise.

The stand-in compiler (tests/stand_ins/) still cuts in execution order, so a model with a
branch beside the unmappable op makes it disagree with the prediction, as a real compiler
would when a rule is wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from helpers.tflite_build import branch_pair, leaky_pair
from test_compiler_compile import StandIn, stand_in  # noqa: F401  (fixture)

from compiler import crosscheck, rules
from compiler.cli import main
from compiler.inspect import inspect_file
from compiler.report import OperationStatus


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_compile_shows_the_predicted_split_before_compiling(
    stand_in: StandIn,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = _write(tmp_path, "leaky.tflite", leaky_pair()[0])
    result = CliRunner().invoke(main, [str(source), "-o", str(tmp_path / "out"), "--no-cache"])
    assert result.exit_code == 0, result.output
    assert "pre-flight" in result.stderr and "1/3 operations predicted on the Edge TPU" in result.stderr
    assert "predicted on the CPU: 1 LEAKY_RELU: Operation not supported" in result.stderr
    assert "predicted on the CPU: 2 ADD: More than one subgraph is not supported" in result.stderr
    assert f"prediction for {source} agrees with the compiler" in result.stderr


def test_compile_says_where_the_compilers_log_differs_from_the_prediction(
    stand_in: StandIn,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = _write(tmp_path, "branch.tflite", branch_pair()[0])
    result = CliRunner().invoke(main, [str(source), "-o", str(tmp_path / "out"), "--no-cache", "--json"])
    assert result.exit_code == 0, result.output
    assert f"prediction for {source} differs from the compiler:" in result.stderr
    line = (
        "ADD: predicted 2 on the Edge TPU, the compiler mapped 1 (compiler: 1 More than one subgraph is not supported)"
    )
    assert line in result.stderr
    assert json.loads(result.stdout)["prediction_differences"] == {str(source): [line]}


def test_prediction_is_checked_op_by_op_against_a_real_compiled_model(tmp_path: Path) -> None:
    source_bytes, compiled_bytes = branch_pair()
    source = _write(tmp_path, "branch.tflite", source_bytes)
    compiled = _write(tmp_path, "branch_edgetpu.tflite", compiled_bytes)
    pre = inspect_file(source)
    assert crosscheck.against_compiled(pre, source, compiled) == [
        f"operator 2 ADD: predicted edgetpu ({rules.MAPPED}), ran on cpu"
    ]
    leaky, leaky_compiled = leaky_pair()
    same = _write(tmp_path, "leaky.tflite", leaky)
    twin = _write(tmp_path, "leaky_edgetpu.tflite", leaky_compiled)
    assert crosscheck.against_compiled(inspect_file(same), same, twin) == []
    assert crosscheck.against_compiled(pre, source, source) == []  # no custom op: nothing to compare


def test_log_rows_that_match_the_prediction_give_no_difference(tmp_path: Path) -> None:
    pre = inspect_file(_write(tmp_path, "leaky.tflite", leaky_pair()[0]))
    rows = [
        OperationStatus("ADD", 1, rules.MAPPED),
        OperationStatus("LEAKY_RELU", 1, rules.UNSUPPORTED_OP),
        OperationStatus("ADD", 1, rules.AFTER_CUT),
    ]
    assert crosscheck.against_log(pre, rows) == []
    assert crosscheck.against_log(pre, []) == []
