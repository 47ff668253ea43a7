"""`edge-compile inspect` against what Google's edgetpu_compiler 16 really did.

The pairs are Coral's public X.tflite / X_edgetpu.tflite (google-coral/test_data); their
graphs and compiled splits are kept as fixtures under tests/data/coral_pairs (see the README
there). With CORAL_TEST_DATA pointing at a checkout of that repository, the fixtures are also
checked against the real files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
from click.testing import CliRunner
from helpers.tflite_build import leaky_pair

from compiler import accuracy, rules, tflite
from compiler.cli import main
from compiler.inspect import analyze, inspect_file
from release_contract.models import EDGETPU_CUSTOM_OP

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "tests" / "data" / "coral_pairs"
FIXTURES = sorted(PAIRS.glob("*.json"))
DEVELOPMENT_PAIRS = [
    "mobilenet_v1_0.25_128_quant",
    "mobilenet_v1_0.5_160_quant",
    "mobilenet_v1_0.75_192_quant",
    "mobilenet_v1_1.0_224_quant_embedding_extractor",
    "bodypix_mobilenet_v1_075_512_512_16_quant_decoder",
    "posenet_mobilenet_v1_075_353_481_16_quant_decoder",
    "posenet_mobilenet_v1_075_481_641_16_quant_decoder",
    "posenet_mobilenet_v1_075_721_1281_16_quant_decoder",
    "keras_lstm_mnist_ptq",
    "split_concat",
    "deeplabv3_mnv2_pascal_quant",
    "deeplabv3_mnv2_dm05_pascal_quant",
]


def _fixture(name: str) -> Dict[str, Any]:
    data: Dict[str, Any] = json.loads((PAIRS / f"{name}.json").read_text())
    return data


def _predict(name: str) -> Any:
    return analyze(accuracy.graph_from_dict(_fixture(name)["graph"]), name)


def test_every_development_pair_has_a_fixture() -> None:
    assert set(DEVELOPMENT_PAIRS) <= {f.stem for f in FIXTURES}


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_inspect_predicts_every_operator_of_the_compiled_pair(fixture: Path) -> None:
    result = accuracy.measure_fixture(json.loads(fixture.read_text()), fixture.stem)
    assert result.disagreements == [], accuracy.render_table([result])


def test_ops_that_do_not_depend_on_the_first_cpu_op_still_map() -> None:
    report = _predict("movenet_single_pose_lightning_ptq")
    ops = report.operators
    assert (report.cut_index, report.cut_op) == (89, "ARG_MAX")
    assert [ops[i].on_edgetpu for i in (100, 101, 102, 103, 104)] == [True] * 5
    assert ops[112].op == "GATHER_ND" and not ops[112].on_edgetpu


def test_leading_cast_and_quantize_run_on_the_cpu_without_cutting() -> None:
    ops = _predict("movenet_single_pose_lightning_ptq").operators
    assert [(o.op, o.on_edgetpu) for o in ops[:3]] == [("CAST", False), ("QUANTIZE", False), ("SUB", True)]
    assert "ahead of the Edge TPU segment" in ops[0].reason


def test_tile_maps_to_the_edge_tpu() -> None:
    ops = _predict("deeplab_mobilenet_edgetpu_slim_cityscapes_quant").operators
    assert ops[76].op == "TILE" and ops[76].status == rules.MAPPED


def test_lstm_with_an_int16_cell_state_maps_entirely() -> None:
    report = _predict("keras_lstm_mnist_ptq")
    assert report.ops_on_edgetpu == len(report.operators) == 6
    assert report.operators[1].op == "UNIDIRECTIONAL_SEQUENCE_LSTM"


def test_large_upscale_stays_on_the_cpu_and_cuts_what_depends_on_it() -> None:
    report = _predict("deeplabv3_mnv2_pascal_quant")
    ops = report.operators
    assert (report.cut_index, report.cut_op) == (64, "RESIZE_BILINEAR")
    assert ops[64].status == rules.UNSPECIFIED and "scales by 33" in ops[64].reason
    assert all(o.status == rules.AFTER_CUT and o.depends_on is not None for o in ops[65:70])
    assert ops[65].depends_on == 64
    assert ops[62].on_edgetpu and ops[63].on_edgetpu


def test_two_times_upscale_maps() -> None:
    ops = _predict("movenet_single_pose_lightning_ptq").operators
    resizes = [o for o in ops if o.op == "RESIZE_BILINEAR"]
    assert len(resizes) == 3 and all(o.on_edgetpu for o in resizes)


def test_ground_truth_is_read_from_the_ops_left_outside_the_custom_op() -> None:
    source, compiled = leaky_pair()
    truth = accuracy.ground_truth(tflite.parse(source), tflite.parse(compiled))
    assert truth == [True, False, False]
    result = accuracy.measure(tflite.parse(source), tflite.parse(compiled), "leaky")
    assert result.exact and result.on_edgetpu == 1


def test_ground_truth_refuses_models_that_are_not_a_pair() -> None:
    source, compiled = leaky_pair()
    with pytest.raises(ValueError, match="no edgetpu-custom-op"):
        accuracy.ground_truth(tflite.parse(source), tflite.parse(source))
    other, _ = leaky_pair()
    model = tflite.parse(other)
    model.operator_codes[1] = tflite.OperatorCode(builtin_code=0, version=1)  # LEAKY_RELU -> ADD
    with pytest.raises(ValueError, match="match none"):
        accuracy.ground_truth(model, tflite.parse(compiled))


def test_fixture_round_trip_keeps_what_inspect_reads() -> None:
    source, compiled = leaky_pair()
    model = tflite.parse(source)
    again = accuracy.graph_from_dict(json.loads(json.dumps(accuracy.graph_to_dict(model))))
    assert again.subgraphs[0].tensors == model.subgraphs[0].tensors
    assert analyze(again).to_dict() == analyze(model).to_dict()
    fixture = accuracy.pair_fixture(model, tflite.parse(compiled), "made here")
    assert fixture["cpu_operators"] == [1, 2]


def test_accuracy_script_prints_the_agreement_table() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "inspect_accuracy.py"), str(PAIRS)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| split_concat | 3 | 3 | 3/3 | - |" in proc.stdout
    assert f"**all {len(FIXTURES)} models** ({len(FIXTURES)} exact)" in proc.stdout


def test_inspect_on_a_compiled_model_says_already_compiled(tmp_path: Path) -> None:
    _, compiled = leaky_pair()
    path = tmp_path / "leaky_edgetpu.tflite"
    path.write_bytes(compiled)
    report = inspect_file(path)
    assert report.already_compiled and not report.compilable
    custom = report.operators[0]
    assert custom.op == EDGETPU_CUSTOM_OP and custom.on_edgetpu
    assert custom.status != rules.UNSUPPORTED_OP
    result = CliRunner().invoke(main, ["inspect", "--json", str(path)])
    payload = json.loads(result.stdout)
    assert payload["already_compiled"] is True
    assert any("already compiled" in p for p in payload["problems"])
    assert all(op["status"] != rules.UNSUPPORTED_OP for op in payload["operators"])


def test_compiling_a_compiled_model_stops_at_preflight_with_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, compiled = leaky_pair()
    path = tmp_path / "leaky_edgetpu.tflite"
    path.write_bytes(compiled)
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler, no docker: never looked for
    result = CliRunner().invoke(main, [str(path), "-o", str(tmp_path / "out"), "--no-cache"])
    assert result.exit_code == 2, result.output
    assert "already compiled" in result.stderr
    assert "docker" not in result.stderr and "install" not in result.stderr


@pytest.mark.coral_data  # deselected by default: CORAL_TEST_DATA=<checkout> pytest -m coral_data
def test_fixtures_match_the_real_pairs() -> None:
    root = Path(os.environ["CORAL_TEST_DATA"])
    for fixture in FIXTURES:
        data = json.loads(fixture.read_text())
        source = root / data["source"].removeprefix("google-coral/test_data/")
        compiled = source.with_name(source.stem + "_edgetpu.tflite")
        cpu, twin = tflite.read(source), tflite.read(compiled)
        assert accuracy.pair_fixture(cpu, twin, data["source"]) == data, fixture.name
