"""`edge-agent classify` on the bundled model: results, output formats, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_agent.cli import main

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str):
    return CliRunner().invoke(main, ["classify", *args])


def jsonl(output: str) -> list:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_bundled_model_classifies_every_sample_image_correctly():
    result = run("-o", "jsonl")
    assert result.exit_code == 0, result.output
    payloads = jsonl(result.stdout)
    assert len(payloads) == 20
    for p in payloads:
        digit = int(Path(p["source"]).name.split("_")[1])
        assert p["top_k"][0]["id"] == digit
        assert (
            p["top_k"][0]["label"]
            == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][digit]
        )
        assert p["backend"] == "cpu"


def test_jsonl_payload_has_the_documented_fields():
    result = run("-o", "jsonl", "-n", "1", "--device-id", "trap-7", "-k", "2")
    p = jsonl(result.stdout)[0]
    assert p["schema"] == "edgetpu.classification/1"
    assert p["device"] == "trap-7"
    assert len(p["id"]) == 32 and p["frame"] == 0
    assert p["model"]["name"] == "digits_int8" and p["model"]["digest"].startswith("sha256:")
    assert set(p["latency_ms"]) == {"preprocess", "inference", "total"}
    assert p["latency_ms"]["total"] >= p["latency_ms"]["inference"]
    assert len(p["top_k"]) == 2 and p["top_k"][0]["score"] >= p["top_k"][1]["score"]
    assert p["captured_at"].endswith("Z")


def test_count_and_threshold_limit_what_is_printed():
    result = run("-o", "jsonl", "-n", "3", "-t", "0.5")
    payloads = jsonl(result.stdout)
    assert len(payloads) == 3
    assert all(len(p["top_k"]) == 1 and p["top_k"][0]["score"] >= 0.5 for p in payloads)


def test_text_output_names_the_label_and_backend():
    result = run("-i", str(ROOT / "images" / "digit_7_0.png"))
    assert result.exit_code == 0
    assert "seven" in result.stdout.splitlines()[0] and "[cpu" in result.stdout


def test_glob_input_selects_matching_images():
    result = run("-o", "jsonl", "-i", str(ROOT / "images" / "digit_3_*.png"))
    assert [Path(p["source"]).name for p in jsonl(result.stdout)] == ["digit_3_0.png", "digit_3_1.png"]


def test_video_file_gives_one_result_per_frame(tmp_path: Path):
    import cv2

    video = tmp_path / "clip.avi"
    frames = [np.asarray(Image.open(ROOT / "images" / f"digit_{d}_0.png").convert("RGB")) for d in (4, 4, 9, 9, 9)]
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (width, height))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    result = run("-o", "jsonl", "-i", str(video))
    assert result.exit_code == 0, result.output
    payloads = jsonl(result.stdout)
    assert [p["frame"] for p in payloads] == [0, 1, 2, 3, 4]
    assert [p["top_k"][0]["label"] for p in payloads] == ["four", "four", "nine", "nine", "nine"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "/no/such/model.tflite"], "model file not found"),
        (["-i", "/no/such/image.png"], "input not found"),
        (["-i", "cam:7"], "camera /dev/video7 not found"),
        (["--device", "tpu"], "invalid --device 'tpu'"),
        (["--mean", "127.5"], "give both --mean and --std"),
    ],
)
def test_bad_option_or_missing_file_is_one_clear_line(args, message):
    result = run(*args)
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert isinstance(result.exception, SystemExit)


def test_not_a_tflite_file_is_refused_before_parsing(tmp_path: Path):
    bogus = tmp_path / "model.tflite"
    bogus.write_text("this is not a model")
    result = run("-m", str(bogus))
    assert result.exit_code == 1
    assert "is not a TFLite model" in result.stderr


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_corrupt_model_is_refused_with_one_line(tmp_path: Path, damage: str):
    data = bytearray((ROOT / "models" / "digits_int8.tflite").read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 3]
    else:
        rng = np.random.default_rng(3)
        for pos in rng.integers(8, len(data), 400):
            data[pos] = int(rng.integers(0, 256))
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data))
    result = run("-m", str(bad))
    assert result.exit_code == 1
    assert "cannot load model" in result.stderr and "Traceback" not in result.stderr


def test_non_image_input_file_is_refused(tmp_path: Path):
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"\xff\xd8 definitely not a jpeg")
    result = run("-i", str(fake))
    assert result.exit_code == 1
    assert "photo.jpg" in result.stderr


def test_huge_image_is_refused_from_its_header(tmp_path: Path):
    big = tmp_path / "big.png"
    Image.new("L", (6000, 5000)).save(big)  # 30 MP, tiny on disk
    result = run("-i", str(big), "--max-pixels", "1000000")
    assert result.exit_code == 1
    assert "6000x5000" in result.stderr and "more than the limit" in result.stderr


def test_folder_with_a_broken_image_classifies_the_rest_and_fails(tmp_path: Path, caplog):
    for name in ("digit_1_0.png", "digit_2_0.png"):
        (tmp_path / name).write_bytes((ROOT / "images" / name).read_bytes())
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    result = run("-o", "jsonl", "-i", str(tmp_path))
    assert len(jsonl(result.stdout)) == 2
    assert result.exit_code == 1
    assert "1 input(s) could not be read" in result.stderr
    assert any("broken.png" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_empty_folder_is_an_error(tmp_path: Path):
    result = run("-i", str(tmp_path))
    assert result.exit_code == 1 and "no images" in result.stderr


def test_labels_file_that_does_not_match_the_model_warns(tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "classify", "-l", str(labels), "-n", "1"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0
    assert "2 labels but the model has 10 classes" in proc.stderr


def test_console_error_has_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "classify", "-m", "missing.tflite"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == ["Error: model file not found: missing.tflite"]


def test_devices_reports_no_runtime_and_no_tpu_here():
    result = CliRunner().invoke(main, ["devices"])
    assert result.exit_code == 0
    assert "Edge TPU runtime: not installed" in result.stdout
    assert "none found" in result.stdout
