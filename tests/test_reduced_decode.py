"""Cheaper decoding: an MJPEG video's JPEGs decoded at a reduced size in the DCT domain, never below
the model's input, and never when a crop or captured frames need the full frame."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest
from PIL import Image

from edge_agent.inference.classifier import build_classifier
from edge_agent.inference.result import Classification
from edge_agent.inference.scheduler import NamedSource, SourceScheduler
from edge_agent.inference.sources import open_source, reduction_factor

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "digits_int8.tflite"


def write_video(path: Path, frames: List[np.ndarray], codec: str = "MJPG") -> Path:
    import cv2

    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), 10, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture
def digits_video(tmp_path: Path) -> Path:
    """The 20 sample digits (64x64) as an MJPEG video, in the order of their sorted file names."""
    files = sorted((ROOT / "images").glob("*.png"))
    return write_video(tmp_path / "digits.avi", [np.asarray(Image.open(f).convert("RGB")) for f in files])


@pytest.mark.parametrize(
    ("frame", "target", "factor"),
    [
        ((640, 480), (224, 224), 2),
        ((1920, 1080), (224, 224), 4),
        ((4000, 3000), (224, 224), 8),
        ((300, 300), (224, 224), 1),
        ((640, 480), (320, 240), 2),
        ((640, 480), (321, 240), 1),
    ],
)
def test_reduction_never_goes_below_the_model_input(frame: Tuple[int, int], target: Tuple[int, int], factor: int):
    assert reduction_factor(frame, target) == factor


def test_an_mjpeg_video_is_decoded_at_the_reduced_size_the_hint_allows(digits_video: Path):
    full = open_source(str(digits_video))
    reduced = open_source(str(digits_video))
    reduced.size_hint = (32, 32)
    full_frames = [f.image for f in full.frames()]
    reduced_frames = [f.image for f in reduced.frames()]
    assert len(full_frames) == len(reduced_frames) == 20
    assert {f.shape for f in full_frames} == {(64, 64, 3)}
    assert {f.shape for f in reduced_frames} == {(32, 32, 3)}


def test_reduced_decoding_delivers_rgb_like_full_decoding(tmp_path: Path):
    red, blue = np.zeros((64, 64, 3), np.uint8), np.zeros((64, 64, 3), np.uint8)
    red[..., 0], blue[..., 2] = 230, 230
    video = write_video(tmp_path / "colours.avi", [red, blue])
    reduced = open_source(str(video))
    reduced.size_hint = (32, 32)
    full = [f.image.reshape(-1, 3).mean(axis=0) for f in open_source(str(video)).frames()]
    small = [f.image.reshape(-1, 3).mean(axis=0) for f in reduced.frames()]
    for whole, part, channel in zip(full, small, (0, 2)):
        assert part.argmax() == whole.argmax() == channel  # red stays in channel 0, blue in channel 2
        assert np.abs(part - whole).max() < 3


def test_a_video_in_another_codec_is_decoded_in_full(tmp_path: Path):
    frames = [np.full((64, 64, 3), v, np.uint8) for v in (10, 200)]
    source = open_source(str(write_video(tmp_path / "clip.avi", frames, codec="XVID")))
    source.size_hint = (32, 32)
    assert {f.image.shape for f in source.frames()} == {(64, 64, 3)}


def test_reduced_decoding_classifies_the_sample_digits_as_full_decoding_does(digits_video: Path):
    classifier = build_classifier(DEMO, None, device_id="test")

    def top1(reduced: bool) -> List[int]:
        results: List[Classification] = []
        source = NamedSource("video", open_source(str(digits_video)))
        SourceScheduler(classifier, [source], [results.append], reduced_decode=reduced).run()
        return [r.top_k[0].id for r in results]

    expected = [int(f.name.split("_")[1]) for f in sorted((ROOT / "images").glob("*.png"))]
    assert top1(reduced=False) == expected
    assert top1(reduced=True) == expected


def test_a_cropped_source_gets_no_size_hint(digits_video: Path):
    classifier = build_classifier(DEMO, None, device_id="test")
    cropped = NamedSource("video", open_source(str(digits_video)), crop=(0, 0, 48, 48))
    plain = NamedSource("plain", open_source(str(digits_video)))
    SourceScheduler(classifier, [cropped, plain], []).run()
    assert cropped.source.size_hint is None
    assert plain.source.size_hint == (32, 32)


def test_a_jpeg_still_is_decoded_at_the_reduced_size_the_hint_allows(tmp_path: Path):
    picture = tmp_path / "big.jpg"
    Image.fromarray(np.full((480, 640, 3), 90, np.uint8)).save(picture, quality=90)
    source = open_source(str(picture))
    assert next(iter(source.frames())).image.shape == (480, 640, 3)
    source = open_source(str(picture))
    source.size_hint = (224, 224)
    assert next(iter(source.frames())).image.shape == (240, 320, 3)
