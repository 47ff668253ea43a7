"""Capture: real images and a real video through the real interpreter into the capture sink."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.fleet import ROOT
from PIL import Image

from edge_agent.capture import archive
from edge_agent.capture.settings import CaptureConfig
from edge_agent.capture.sink import CaptureSink
from edge_agent.cli import main
from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.sources import open_source

IMAGES = ROOT / "images"


def _classify(*args: str) -> Any:
    return CliRunner().invoke(main, ["classify", "-o", "jsonl", "--device", "cpu", *args])


def _classify_process(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command in its own process, so its stderr is what a user sees."""
    command = [sys.executable, "-m", "edge_agent", "classify", "-o", "jsonl", "--device", "cpu", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _results(output: str) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_frames_below_the_score_are_kept_with_their_original_bytes_and_result(tmp_path: Path) -> None:
    scores = sorted(r["top_k"][0]["score"] for r in _results(_classify("-i", str(IMAGES)).stdout))
    below = scores[len(scores) // 2]  # about half the frames score lower than this
    run = _classify("-i", str(IMAGES), "--capture-dir", str(tmp_path / "c"), "--capture-below", str(below))
    assert run.exit_code == 0, run.output
    expected = {r["id"]: r for r in _results(run.stdout) if r["top_k"][0]["score"] < below}
    kept = list(archive.iter_captures(tmp_path / "c"))
    assert {c.record["result"]["id"] for c in kept} == set(expected) and expected
    for capture in kept:
        result = capture.record["result"]
        assert result == expected[result["id"]]
        assert set(result["model"]) == {"name", "version", "digest"} and result["captured_at"] and result["top_k"]
        assert capture.record["reason"] == "below"
        assert capture.image_path.read_bytes() == Path(result["source"]).read_bytes()  # the original file


def test_video_frames_are_kept_as_jpeg(tmp_path: Path) -> None:
    import cv2

    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 64))
    for index in range(5):
        rgb = np.asarray(Image.open(IMAGES / f"digit_{index}_0.png").convert("RGB"))
        writer.write(np.ascontiguousarray(rgb[:, :, ::-1]))
    writer.release()
    run = _classify("-i", str(video), "--capture-dir", str(tmp_path / "c"), "--capture-below", "1")
    assert run.exit_code == 0, run.output
    kept = list(archive.iter_captures(tmp_path / "c"))
    assert len(kept) == 5
    assert all(c.image_path.suffix == ".jpg" and c.image_path.read_bytes()[:2] == b"\xff\xd8" for c in kept)


def test_a_sample_of_confident_frames_is_kept_too(tmp_path: Path) -> None:
    run = _classify("-i", str(IMAGES), "--capture-dir", str(tmp_path / "c"), "--capture-below", "0")
    assert run.exit_code == 0 and list(archive.iter_captures(tmp_path / "c")) == []
    run = _classify(
        "-i", str(IMAGES), "--capture-dir", str(tmp_path / "c"), "--capture-below", "0", "--capture-sample", "100"
    )
    kept = list(archive.iter_captures(tmp_path / "c"))
    assert len(kept) == 20 and {c.record["reason"] for c in kept} == {"sample"}


def _run_sink(sink: CaptureSink, count: int = 20) -> None:
    classifier = build_classifier(ROOT / "models" / "digits_int8.tflite", None, device="cpu")
    sink.start()
    for frame in list(open_source(str(IMAGES)).frames())[:count]:
        sink(classifier.classify(frame))
    sink.close()


def test_the_rate_limit_bounds_captures_per_minute(tmp_path: Path) -> None:
    sink = CaptureSink(CaptureConfig(dir=tmp_path / "c", below=1.0, rate=3))
    _run_sink(sink)
    assert len(list(archive.iter_captures(tmp_path / "c"))) == 3 and sink.limited == 17


def test_past_the_size_limit_the_oldest_captures_are_deleted(tmp_path: Path) -> None:
    sink = CaptureSink(CaptureConfig(dir=tmp_path / "c", below=1.0, rate=100, max_mb=0.01))  # ~10 kB
    _run_sink(sink)
    kept = list(archive.iter_captures(tmp_path / "c"))
    assert sink.captured + sink.dropped == 20  # the writer's queue is bounded: frames past it are dropped
    assert 0 < len(kept) < sink.captured
    assert sum(c.size for c in kept) <= 0.01 * 1024 * 1024
    frames = [c.record["result"]["frame"] for c in kept]
    assert frames == sorted(frames) and frames[0] > 0  # the oldest went first


def test_confident_frames_are_sampled_at_about_the_given_share(tmp_path: Path) -> None:
    sink = CaptureSink(CaptureConfig(dir=tmp_path / "c", below=0.0, sample=50, rate=100), rng=random.Random(7))
    _run_sink(sink)
    assert 0 < sink.captured < 20


def test_an_unwritable_capture_dir_is_one_warning_and_classifying_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    run = _classify_process("-i", str(IMAGES), "--capture-dir", str(blocker / "c"), "--capture-below", "1")
    assert run.returncode == 0
    assert len(_results(run.stdout)) == 20
    warnings = [line for line in run.stderr.splitlines() if "capture" in line]
    assert len(warnings) == 1 and "cannot be written" in warnings[0] and "Traceback" not in run.stderr


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 16 kB tmpfs (needs mount rights: root in a container); skipped where it cannot be made."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_stops_capturing_with_one_warning_and_classifying_goes_on(tiny_disk: Path) -> None:
    run = _classify_process(
        "-i", str(IMAGES), "--capture-dir", str(tiny_disk), "--capture-below", "1", "--capture-max-mb", "100"
    )
    assert run.returncode == 0, run.stderr
    assert len(_results(run.stdout)) == 20
    warnings = [line for line in run.stderr.splitlines() if "capture" in line]
    assert len(warnings) == 1 and "is full" in warnings[0]
    assert 0 < len(list(archive.iter_captures(tiny_disk))) < 20


def test_captures_list_and_export_give_a_dataset_with_one_folder_per_label(tmp_path: Path) -> None:
    _classify("-i", str(IMAGES), "--capture-dir", str(tmp_path / "c"), "--capture-below", "1")
    listed = CliRunner().invoke(main, ["captures", "list", "--capture-dir", str(tmp_path / "c")])
    assert listed.exit_code == 0 and listed.stdout.splitlines()[-1].startswith("20 captures")
    exported = CliRunner().invoke(
        main, ["captures", "export", "--to", str(tmp_path / "ds"), "--capture-dir", str(tmp_path / "c")]
    )
    assert exported.exit_code == 0 and "exported 20 new of 20" in exported.stdout
    labels = (ROOT / "labels" / "digits.txt").read_text().split()
    folders = {p.name for p in (tmp_path / "ds").iterdir()}
    assert folders <= set(labels) and len(folders) == 10
    for image in (tmp_path / "ds").rglob("*.png"):
        record = json.loads(image.with_suffix(".json").read_text())
        assert record["result"]["top_k"][0]["label"] == image.parent.name


def test_captures_list_without_a_capture_dir_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["captures", "list", "--capture-dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "does not exist" in result.output and "Traceback" not in result.output


def test_capturing_a_live_frame_copies_its_pixels(tmp_path: Path) -> None:
    from edge_agent.inference.sources import Frame

    classifier = build_classifier(ROOT / "models" / "digits_int8.tflite", None, device="cpu")
    sink = CaptureSink(CaptureConfig(dir=tmp_path / "c", below=1.0)).start()
    pixels = np.full((32, 32, 3), 200, dtype=np.uint8)
    sink(classifier.classify(Frame(pixels, "cam", 0, time.time())))
    pixels[:] = 0  # a camera reusing its buffer
    sink.close()
    (capture,) = archive.iter_captures(tmp_path / "c")
    assert int(np.asarray(Image.open(capture.image_path)).mean()) > 150
