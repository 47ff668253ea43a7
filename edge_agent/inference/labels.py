"""Labels files: class id -> label, read exactly as pycoral's ``read_label_file`` numbers them.

Each line is read on its own: ``<digits><colon or whitespace><label>`` gives that id;
any other line takes its row number, counting every line of the file, blank ones
included (so a blank line leaves its id unlabelled instead of shifting later ids).
One difference, on purpose: a line without an id keeps its whole text as the label
(pycoral keeps only the first word, so ``great white shark`` would read ``great``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Dict

from edge_agent.errors import ModelError
from release_contract.files import open_regular

log = logging.getLogger(__name__)

MAX_LABELS_BYTES = 16 * 1024 * 1024
_SEPARATOR = re.compile(r"[:\s]+")


def parse_labels(text: str) -> Dict[int, str]:
    """{class id: label} from a labels file's text (see the module docstring for the rules)."""
    labels: Dict[int, str] = {}
    for row, line in enumerate(text.split("\n")):
        stripped = line.strip()
        pair = _SEPARATOR.split(stripped, maxsplit=1)
        if len(pair) == 2 and pair[0].isascii() and pair[0].isdigit():
            labels[int(pair[0])] = pair[1].strip()
        elif stripped:
            labels[row] = stripped
    return labels


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
    return parse_labels(text)


def check_labels(labels: Dict[int, str], num_classes: int, path: Path) -> None:
    """Warn (once) when a labels file does not match the model's number of classes."""
    if labels and (len(labels) != num_classes or max(labels) >= num_classes):
        log.warning(
            "labels file %s has %d labels but the model has %d classes; unmatched ids show as numbers",
            path,
            len(labels),
            num_classes,
        )
