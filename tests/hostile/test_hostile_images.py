"""Item 9: images come out as they look: 16-bit scaled, EXIF orientation honoured, truncated videos refused,
and memory budgeted from the header."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_agent.errors import InputError
from edge_agent.inference.images import BYTES_PER_RGB_PIXEL, DEFAULT_MAX_PIXELS, decode_cost, load_image

ROOT = Path(__file__).resolve().parents[2]
SEVEN = ROOT / "images" / "digit_7_0.png"


def classify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent", "classify", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_16_bit_png_is_scaled_not_clipped_so_a_seven_reads_as_seven(tmp_path: Path) -> None:
    with Image.open(SEVEN) as img:
        gray = np.asarray(img.convert("L"))
    path = tmp_path / "seven16.png"
    Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # the same picture in 16 bits
    with Image.open(path) as img:
        assert img.mode.startswith("I")
    assert np.array_equal(load_image(path)[..., 0], gray)
    proc = classify("-i", str(path), "-o", "jsonl")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[0])["top_k"][0]["label"] == "seven"


def test_exif_orientation_is_honoured(tmp_path: Path) -> None:
    with Image.open(SEVEN) as img:
        upright = img.convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "turned.png"
    upright.transpose(Image.Transpose.ROTATE_90).save(path, exif=exif)  # stored turned counter-clockwise
    assert np.array_equal(load_image(path), np.asarray(upright))


def test_truncated_video_exits_non_zero_with_one_line_and_no_decoder_noise(tmp_path: Path) -> None:
    import cv2

    for name, fourcc in (("clip.avi", "MJPG"), ("clip.mp4", "mp4v")):
        whole = tmp_path / f"whole-{name}"
        writer = cv2.VideoWriter(str(whole), cv2.VideoWriter.fourcc(*fourcc), 10, (64, 64))
        for i in range(30):
            writer.write(np.full((64, 64, 3), i * 8, np.uint8))
        writer.release()
        cut = tmp_path / name
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        assert classify("-i", str(whole), "-o", "none").returncode == 0
        proc = classify("-i", str(cut), "-o", "none")
        assert proc.returncode == 1
        lines = [line for line in proc.stderr.splitlines() if "XNNPACK" not in line]
        assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
        assert str(cut) in lines[0]


def test_small_png_with_a_costly_pixel_format_is_refused_from_its_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("RGBA", (5000, 4000)).save(path)  # 20 MP, under the pixel limit, 80 KB on disk
    assert path.stat().st_size < 200_000 and 5000 * 4000 < DEFAULT_MAX_PIXELS
    with pytest.raises(InputError, match=r"RGBA image needs about 280 MB to decode, more than the 240 MB"):
        load_image(path)
    proc = classify("-i", str(path))
    assert proc.returncode == 1 and "needs about 280 MB" in proc.stderr and "Traceback" not in proc.stderr


def test_default_budget_fits_a_1_gb_board() -> None:
    assert DEFAULT_MAX_PIXELS * BYTES_PER_RGB_PIXEL <= 256 * 1024 * 1024


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "L", "I;16"])
def test_decoding_stays_within_the_estimated_memory(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "big.png"
    Image.new(mode, (3000, 3000)).save(path)
    script = (
        "import resource, sys; from pathlib import Path;"
        "from edge_agent.inference.images import load_image;"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss;"
        "load_image(Path(sys.argv[1]), 10**8);"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True)
    assert int(proc.stdout) <= decode_cost(mode, 3000, 3000) * 1.1
