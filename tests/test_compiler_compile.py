"""`edge-compile MODEL...` against the stand-in `edgetpu_compiler` (tests/stand_ins/).

The real compiler runs only on x86-64 Debian/Ubuntu with Google's package and is not on
these machines; the stand-in reproduces its command line, stdout and log format.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
from pathlib import Path
from typing import Dict, List

import pytest
from click.testing import CliRunner

from compiler import edgetpu, errors, run
from compiler.cache import CompileCache
from compiler.cli import main
from release_contract.files import sha256_file

STAND_IN = Path(__file__).resolve().parent / "stand_ins" / "edgetpu_compiler"


class StandIn:
    """The stand-in on PATH, with a record of every command line it was given."""

    def __init__(self, bin_dir: Path, record: Path) -> None:
        self.bin_dir = bin_dir
        self.record = record

    def calls(self) -> List[List[str]]:
        """Argument lists of the runs so far (``--version`` probes included)."""
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]

    def compile_calls(self) -> List[List[str]]:
        """Runs that compiled something."""
        return [c for c in self.calls() if "--version" not in c]


@pytest.fixture
def stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StandIn:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STAND_IN}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    record = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("EDGETPU_STANDIN_RECORD", str(record))
    monkeypatch.delenv("EDGETPU_STANDIN_SCENARIO", raising=False)
    return StandIn(bin_dir, record)


def _compile(args: List[str], tmp_path: Path) -> object:
    return CliRunner().invoke(main, [*args, "--cache-dir", str(tmp_path / "cache")])


@pytest.mark.slow
def test_compile_writes_model_log_and_json_report_with_digests(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    model = compiler_models["mobilenet_int8"]
    out = tmp_path / "out"
    result = _compile([str(model), "-o", str(out)], tmp_path)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "Mapped to Edge TPU" in result.stdout  # type: ignore[attr-defined]
    compiled = out / "mobilenet_int8_edgetpu.tflite"
    assert compiled.is_file() and (out / "mobilenet_int8_edgetpu.log").is_file()
    payload = json.loads((out / "mobilenet_int8_edgetpu.json").read_text())
    assert payload["compiler_version"] == "16.0.384591198"
    assert payload["inputs"] == [{"path": str(model), "sha256": sha256_file(model)}]
    assert payload["output"]["sha256"] == sha256_file(compiled)
    assert payload["model"]["operations_on_cpu"] == 0
    assert payload["model"]["subgraphs"] == 1
    ops = {row["op"]: row for row in payload["model"]["operations"]}
    assert ops["CONV_2D"]["status"] == "Mapped to Edge TPU" and ops["CONV_2D"]["count"] > 10


@pytest.mark.slow
def test_partially_mapped_model_reports_ops_on_the_cpu(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    result = _compile([str(compiler_models["leaky_int8"]), "-o", str(tmp_path), "--json"], tmp_path)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    (model,) = json.loads(result.stdout)["models"]  # type: ignore[attr-defined]
    assert (model["operations_on_edgetpu"], model["operations_on_cpu"]) == (2, 5)
    statuses = {(r["op"], r["status"]) for r in model["operations"]}
    assert ("LEAKY_RELU", "Operation not supported") in statuses
    assert ("CONV_2D", "More than one subgraph is not supported") in statuses


@pytest.mark.slow
def test_compiler_options_are_passed_through(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    args = ["-m", "13", "-a", "-d", "-k", "2", "-n", "2", "-i", "a,b", "-t", "60"]
    result = _compile([str(compiler_models["mobilenet_int8"]), "-o", str(tmp_path), *args], tmp_path)
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    (call,) = stand_in.compile_calls()
    joined = " ".join(call)
    assert "-m 13 -a -d -k 2 -n 2 -i a,b -t 60" in joined
    assert call[-1] == str(compiler_models["mobilenet_int8"])


@pytest.mark.slow
def test_compiling_the_same_inputs_twice_runs_the_compiler_once(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    model = compiler_models["mobilenet_int8"]
    first = _compile([str(model), "-o", str(tmp_path / "a")], tmp_path)
    second = _compile([str(model), "-o", str(tmp_path / "b")], tmp_path)
    assert first.exit_code == 0 and second.exit_code == 0  # type: ignore[attr-defined]
    assert len(stand_in.compile_calls()) == 1
    assert "from the cache" in second.stdout  # type: ignore[attr-defined]
    report_b = json.loads((tmp_path / "b" / "mobilenet_int8_edgetpu.json").read_text())
    assert report_b["cached"] is True
    assert sha256_file(tmp_path / "a" / "mobilenet_int8_edgetpu.tflite") == report_b["output"]["sha256"]
    third = _compile([str(model), "-o", str(tmp_path / "c"), "-m", "13"], tmp_path)  # new options
    assert third.exit_code == 0 and len(stand_in.compile_calls()) == 2  # type: ignore[attr-defined]


@pytest.mark.slow
def test_co_compilation_reports_each_model(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    models = [compiler_models["mobilenet_int8"], compiler_models["leaky_int8"]]
    outcome = run.compile_models(
        models,
        tmp_path / "out",
        edgetpu.CompileOptions(),
        edgetpu.find_backend("local"),
        CompileCache(tmp_path / "cache"),
    )
    assert [Path(m.input_model) for m in outcome.report.models] == models
    assert [m.operations_on_cpu for m in outcome.report.models] == [0, 5]
    assert len(stand_in.compile_calls()) == 1
    for f in outcome.report_files:
        inputs = json.loads(f.read_text())["inputs"]
        assert [i["path"] for i in inputs] == [str(m) for m in models]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "scenario", "exit_text"),
    [
        ("float", "", "not quantized"),
        ("exp_int8", "", "cannot parse EXP version 2"),
        ("grouped_int8", "", "groups=1"),
        ("dynamic_int8", "", "fixed batch of 1"),
        ("mobilenet_int8", "internal", "internal error"),
        ("mobilenet_int8", "timeout", "ran out of time (5 s)"),
    ],
)
def test_known_compiler_failures_are_one_actionable_line(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    model: str,
    scenario: str,
    exit_text: str,
) -> None:
    monkeypatch.setenv("EDGETPU_STANDIN_SCENARIO", scenario)
    result = _compile([str(compiler_models[model]), "-o", str(tmp_path / "out"), "-t", "5"], tmp_path)
    assert result.exit_code == 1, result.output  # type: ignore[attr-defined]
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error:")]  # type: ignore[attr-defined]
    assert len(lines) == 1 and exit_text in lines[0], result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in result.output  # type: ignore[attr-defined]
    assert not (tmp_path / "out" / f"{model}_edgetpu.tflite").exists()
    assert not list((tmp_path / "cache").glob("[0-9a-f]*"))  # failures are not cached


@pytest.mark.slow
def test_failure_classes_match_the_compilers_message(
    stand_in: StandIn,
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    with pytest.raises(errors.OpVersionError) as info:
        run.compile_models(
            [compiler_models["exp_int8"]], tmp_path, edgetpu.CompileOptions(), edgetpu.find_backend("local")
        )
    assert "Model could not be parsed" in info.value.output


def test_no_compiler_and_no_docker_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(32))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    result = CliRunner().invoke(main, [str(model), "-o", str(tmp_path / "out"), "--no-cache"])
    assert result.exit_code == 3, result.output
    assert "edgetpu_compiler is not on PATH" in result.stderr
    assert "edgetpu-compiler" in result.stderr and "docker" in result.stderr
    local = CliRunner().invoke(main, [str(model), "--backend", "local", "--no-cache"])
    assert local.exit_code == 3 and "not on PATH" in local.stderr


def test_a_keras_file_is_not_compiled_but_sent_to_quantize(tmp_path: Path, stand_in: StandIn) -> None:
    keras = tmp_path / "model.keras"
    keras.write_bytes(b"PK\x03\x04 not a tflite")
    result = _compile([str(keras)], tmp_path)
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "edge-compile quantize" in result.stderr  # type: ignore[attr-defined]


def test_make_compile_style_invocation_uses_the_default_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["compile", "--help"])
    assert result.exit_code == 0 and "co-compilation" in result.stdout
    implicit = CliRunner().invoke(main, ["-v", str(tmp_path / "absent.tflite"), "--no-cache"])
    assert implicit.exit_code == 2 and "model not found" in implicit.stderr


def test_stand_in_reports_its_version() -> None:
    assert edgetpu.parse_version("Edge TPU Compiler version 16.0.384591198\n") == "16.0.384591198"
    backend = edgetpu.LocalCompiler(str(STAND_IN))
    assert shutil.which(str(STAND_IN)) and backend.version() == "16.0.384591198"
