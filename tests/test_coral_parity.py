"""Results that match Coral's: labels numbered as pycoral's read_label_file, and a resize that
reproduces Coral's classify_image.py (Pillow, Lanczos) for identical scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edge_agent.cli import main
from edge_agent.inference.labels import load_labels, parse_labels
from edge_agent.inference.preprocess import Normalization, preprocess, resize
from edge_agent.inference.runtime import open_runtime

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "digits_int8.tflite"
IMAGE = ROOT / "images" / "digit_7_0.png"  # 64x64: the demo model takes 32x32


def test_a_blank_line_does_not_shift_the_ids_after_it() -> None:
    assert parse_labels("cat\n\ndog\nfox\n") == {0: "cat", 2: "dog", 3: "fox"}


def test_id_lines_take_their_id_with_a_colon_or_whitespace_and_others_their_row() -> None:
    text = "0  background\n1:tench, Tinca tinca\n7 : goldfish\nred fox\n\n12\tgreat white shark\n"
    assert parse_labels(text) == {
        0: "background",
        1: "tench, Tinca tinca",
        7: "goldfish",
        3: "red fox",
        12: "great white shark",
    }


def test_labels_file_with_crlf_and_a_bom_reads_like_pycoral(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(b"\xef\xbb\xbf0 zero\r\n1 one\r\n\r\n3 three\r\n")
    assert load_labels(path) == {0: "zero", 1: "one", 3: "three"}


def _coral_classify_image_input(path: Path, size: tuple[int, int]) -> np.ndarray:
    """What Coral's classify_image.py feeds: Image.open().convert('RGB').resize(size, LANCZOS)."""
    image = Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return np.asarray(image)[None]


def test_coral_resize_gives_the_exact_pixels_of_coral_classify_image() -> None:
    rgb = np.asarray(Image.open(IMAGE).convert("RGB"))
    ours = preprocess(rgb, (32, 32), 3, np.uint8, (1 / 255, 0), Normalization(), method="coral")
    assert np.array_equal(ours, _coral_classify_image_input(IMAGE, (32, 32)))


def test_the_default_fast_resize_differs_from_coral_lanczos() -> None:
    rgb = np.asarray(Image.open(IMAGE).convert("RGB"))
    fast, coral = resize(rgb, (32, 32)), resize(rgb, (32, 32), method="coral")
    assert fast.shape == coral.shape == (32, 32, 3)
    assert not np.array_equal(fast, coral)


def test_classify_with_resize_coral_prints_the_scores_coral_would_get() -> None:
    runtime = open_runtime(DEMO, device="cpu")
    raw = runtime.invoke(_coral_classify_image_input(IMAGE, runtime.input_size))
    scale, zero = runtime.output_quant
    expected = (raw.astype(np.float32) - zero) * scale
    best = int(np.argmax(expected))
    result = CliRunner().invoke(
        main, ["classify", "-m", str(DEMO), "-i", str(IMAGE), "--resize", "coral", "-o", "jsonl", "-k", "1"]
    )
    assert result.exit_code == 0, result.output
    import json

    top = json.loads(result.stdout.splitlines()[0])["top_k"][0]
    assert top["id"] == best
    assert top["score"] == pytest.approx(float(expected[best]), abs=1e-6)


def test_an_unknown_resize_name_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["classify", "--resize", "bicubic"])
    assert result.exit_code == 2
    assert "bicubic" in result.output and "Traceback" not in result.output
