"""JSON from the network, a store or a broker: bounded in size and nesting before it is parsed.

``json.loads`` recurses once per level of nesting, so ``[[[[...]]]]`` in a 16 KB
command raises RecursionError, which no caller expects. :func:`loads_untrusted` counts
the nesting first (a linear scan that skips strings) and refuses a document deeper than
:data:`MAX_DEPTH`; every error is a :class:`ValueError` with one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from release_contract.files import open_regular

#: Far deeper than any document of the toolkit (a manifest is 4 levels deep), far below Python's recursion limit.
MAX_DEPTH = 32


def nesting_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in ``text``, strings skipped."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_untrusted(raw: bytes, what: str, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """Parse ``raw`` (UTF-8 JSON of at most ``max_bytes``, nested at most ``max_depth`` deep).

    Raises ValueError naming ``what`` when it is too large, too deep, not UTF-8 or not JSON.
    """
    if len(raw) > max_bytes:
        raise ValueError(f"{what} of {len(raw)} bytes exceeds the {max_bytes}-byte limit")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None
    if nesting_depth(text) > max_depth:
        raise ValueError(f"{what} is not valid JSON here: nested more than {max_depth} levels deep")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{what} is not valid JSON ({str(exc).splitlines()[0][:100]})") from None


def read_untrusted_file(path: Path, what: str, max_bytes: int) -> Any:
    """Read and parse the JSON file ``path`` as :func:`loads_untrusted` does, reading at most
    ``max_bytes`` + 1 bytes of a regular file (a FIFO is refused, not waited on).

    Raises ValueError naming ``what`` (too large, too deep, not JSON) or OSError from the file system.
    """
    with open_regular(path) as fh:
        raw = fh.read(max_bytes + 1)
    return loads_untrusted(raw, what, max_bytes)
