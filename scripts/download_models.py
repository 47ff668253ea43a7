"""`make models`: download Google's MobileNet v2 (ImageNet) for the Edge TPU, its CPU twin and labels.

Files go to models/ (labels to labels/), written to a temporary name and renamed
only when complete and recognisably a TFLite model. Needs internet; nothing in
the tests or the demo uses these files.

Usage: python scripts/download_models.py [--dest models]
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.request
from pathlib import Path

from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
BASE = "https://github.com/google-coral/test_data/raw/master/"
FILES = {
    "mobilenet_v2_1.0_224_quant_edgetpu.tflite": "models",
    "mobilenet_v2_1.0_224_quant.tflite": "models",
    "imagenet_labels.txt": "labels",
}
MAX_BYTES = 64 * 1024 * 1024


def download(name: str, dest: Path) -> None:
    """Stream ``BASE + name`` into ``dest``, at most MAX_BYTES, atomically."""
    tmp = dest.with_name(dest.name + ".part")
    with urllib.request.urlopen(BASE + name, timeout=30) as resp:  # noqa: S310 (fixed https URL)
        total = int(resp.headers.get("Content-Length") or 0) or None
        written = 0
        with open(tmp, "wb") as out, tqdm(total=total, unit="B", unit_scale=True, desc=name) as bar:
            while chunk := resp.read(1 << 16):
                written += len(chunk)
                if written > MAX_BYTES:
                    raise OSError(f"{name} is larger than {MAX_BYTES} bytes; refusing")
                out.write(chunk)
                bar.update(len(chunk))
    if dest.suffix == ".tflite" and tmp.read_bytes()[4:8] != b"TFL3":
        tmp.unlink()
        raise OSError(f"{name}: the download is not a TFLite model")
    os.replace(tmp, dest)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    for name, folder in FILES.items():
        dest = ROOT / folder / name
        if dest.exists():
            print(f"{dest.relative_to(ROOT)} already there")
            continue
        try:
            download(name, dest)
        except OSError as exc:
            print(f"error: cannot download {name}: {exc}", file=sys.stderr)
            return 1
    print(
        "\nTry it:\n  .venv/bin/edge-agent classify -m models/mobilenet_v2_1.0_224_quant_edgetpu.tflite "
        "-l labels/imagenet_labels.txt -i your_photo.jpg"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
