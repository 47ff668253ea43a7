"""Labels files: class id -> label, read the way the model's users write them."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict

from edge_agent.errors import ModelError
from release_contract.files import open_regular

log = logging.getLogger(__name__)

MAX_LABELS_BYTES = 16 * 1024 * 1024
_LABEL_LINE = re.compile(r"^\s*(\d+)[\s:,]+(.*\S)\s*$")


def load_labels(path: Path) -> Dict[int, str]:
    """Read a labels file: ``id label`` lines (``0 cat``, ``0: cat``) or one label per line.

    Returns {class id: label}. Raises ModelError when the file is missing or unreadable.
    """
    try:
        with open_regular(Path(path)) as fh:
            text = fh.read(MAX_LABELS_BYTES + 1).decode("utf-8-sig")
        if len(text) > MAX_LABELS_BYTES:
            raise ModelError(f"labels file {path} is larger than {MAX_LABELS_BYTES} bytes")
    except FileNotFoundError:
        raise ModelError(f"labels file not found: {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read labels file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"cannot read labels file {path}: not UTF-8 text ({exc.reason})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    matches = [_LABEL_LINE.match(line) for line in lines]
    if lines and all(matches):
        return {int(m.group(1)): m.group(2) for m in matches if m}
    return {i: line.strip() for i, line in enumerate(lines)}


def check_labels(labels: Dict[int, str], num_classes: int, path: Path) -> None:
    """Warn (once) when a labels file does not match the model's number of classes."""
    if labels and (len(labels) != num_classes or max(labels) >= num_classes):
        log.warning(
            "labels file %s has %d labels but the model has %d classes; unmatched ids show as numbers",
            path,
            len(labels),
            num_classes,
        )
