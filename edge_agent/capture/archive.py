"""Captured frames on the device's disk: the layout, listing, export and deletion.

Layout of the capture directory (flat; names sort by capture time)::

    <dir>/<stamp>-<id>.jpg   the frame before pre-processing: JPEG for camera and video frames,
                             the original bytes (and suffix) for image files
    <dir>/<stamp>-<id>.json  its record (schema ``edgetpu.capture/1``); written last, so a
                             capture without its record is unfinished and ignored

``<stamp>`` is the UTC capture time ``YYYYMMDDTHHMMSSffffffZ`` (microseconds), ``<id>`` the result's message id.
A record names ``file``, ``size``, ``sha256``, ``reason`` (``below`` or ``sample``) and
``result``: the classification payload (id, model name, version and digest, time, source, top-k).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

from release_contract.collect import dataset_label

log = logging.getLogger(__name__)

SCHEMA = "edgetpu.capture/1"
MAX_RECORD_BYTES = 64 * 1024
_NAME_RE = re.compile(r"^[0-9]{8}T[0-9]{12}Z-[0-9a-f]{8,64}$")


@dataclass(frozen=True)
class Capture:
    """One finished capture: its record file, image file and parsed record."""

    record_path: Path
    image_path: Path
    record: Dict[str, Any]

    @property
    def name(self) -> str:
        """``<stamp>-<id>``: unique, and sorts by capture time."""
        return self.record_path.stem

    @property
    def size(self) -> int:
        """Bytes on disk, image and record."""
        return int(self.record.get("size", 0)) + _size(self.record_path)

    @property
    def captured_at(self) -> str:
        """The result's capture time (ISO 8601 UTC)."""
        return str(self.record.get("result", {}).get("captured_at", ""))

    @property
    def label(self) -> str:
        """The predicted top-1 label (or class id), safe as a folder name; ``unknown`` without one."""
        return dataset_label(self.record)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def capture_name(stamp: str, message_id: str) -> str:
    """The base name of a capture: ``<stamp>-<id>``."""
    return f"{stamp}-{message_id}"


def read_capture(record_path: Path) -> Optional[Capture]:
    """The capture whose record is ``record_path``, or None when it is unfinished or malformed."""
    if not _NAME_RE.match(record_path.stem):
        return None
    try:
        with record_path.open("rb") as fh:
            raw = fh.read(MAX_RECORD_BYTES + 1)
        record = json.loads(raw.decode("utf-8")) if len(raw) <= MAX_RECORD_BYTES else None
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or not isinstance(record.get("file"), str):
        return None
    image = record_path.with_name(record["file"])
    if image.parent != record_path.parent or not image.name.startswith(record_path.stem) or not image.is_file():
        return None
    return Capture(record_path, image, record)


def iter_captures(folder: Path) -> Iterator[Capture]:
    """Finished captures in ``folder``, oldest first; nothing when the folder does not exist."""
    try:
        names = sorted(p.name for p in Path(folder).iterdir() if p.suffix == ".json")
    except OSError:
        return
    for name in names:
        capture = read_capture(Path(folder) / name)
        if capture is not None:
            yield capture


def select(folder: Path, since: str = "", max_bytes: Optional[int] = None) -> List[Capture]:
    """Captures taken at or after ``since`` (ISO 8601 UTC, "" = all), oldest first, up to ``max_bytes``."""
    out: List[Capture] = []
    total = 0
    for capture in iter_captures(folder):
        if since and capture.captured_at < since:
            continue
        if max_bytes is not None and total + capture.size > max_bytes:
            break
        total += capture.size
        out.append(capture)
    return out


def delete(capture: Capture) -> None:
    """Remove a capture: its record first, so it never shows half-deleted. Missing files are fine."""
    for path in (capture.record_path, capture.image_path):
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def export(captures: List[Capture], target: Path) -> int:
    """Copy ``captures`` into ``target`` as a dataset: ``<target>/<label>/<name><ext>`` plus its record.

    Existing files are left alone (an export can be repeated). Returns how many were copied.
    Raises OSError from the file system.
    """
    copied = 0
    for capture in captures:
        folder = Path(target) / capture.label
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / capture.image_path.name
        if image.exists():
            continue
        shutil.copyfile(capture.record_path, folder / capture.record_path.name)
        tmp = folder / f".{image.name}.tmp"
        shutil.copyfile(capture.image_path, tmp)
        os.replace(tmp, image)
        copied += 1
    return copied
