"""The operator's side of captures: ask devices to upload them, gather the uploads into a dataset.

:func:`collect_command` builds the signed ``collect`` command (:mod:`release_contract.collect`);
:func:`pull_captures` copies every batch the devices of a fleet uploaded to a directory store or
an OCI store (:mod:`registry.captures_oci`) into a dataset layout: ``<to>/<predicted label>/<image>``
beside its JSON record, each file checked against the batch's size and sha256 first. A pull can be
repeated: files already there are kept (so a user's relabelling, moving files between folders, is
not undone for files it still finds).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from registry.captures_oci import oci_batches
from release_contract.collect import (
    BATCH_NAME,
    CAPTURES_DIR,
    MAX_BATCH_BYTES,
    CollectCommand,
    dataset_label,
    parse_batch,
    target_of,
)
from release_contract.credentials import Login
from release_contract.errors import ManifestError, StoreError
from release_contract.files import sha256_file
from release_contract.stores import store_kind

log = logging.getLogger(__name__)


def collect_command(
    store: str,
    *,
    fleet: Optional[str] = None,
    device: Optional[str] = None,
    since: int = 0,
    max_bytes: int = 100 << 20,
    expires_in: int = 24 * 3600,
    now: Optional[float] = None,
) -> CollectCommand:
    """The collect command for ``fleet`` or ``device`` (exactly one), valid for ``expires_in`` seconds."""
    issued = int(time.time() if now is None else now)
    stamp = datetime.fromtimestamp(issued, tz=timezone.utc).strftime("%Y%m%dT%H%M%S")
    return CollectCommand(
        target=target_of(device, fleet),
        id=f"collect-{stamp}",
        issued_at=issued,
        expires_at=issued + expires_in,
        since=since,
        max_bytes=max_bytes,
        store=store,
    )


@dataclass
class PullResult:
    """What :func:`pull_captures` did."""

    batches: int = 0
    copied: int = 0
    kept: int = 0  # already in the dataset (possibly moved to another label folder by the user)
    labels: Set[str] = field(default_factory=set)
    refused: List[str] = field(default_factory=list)  # files that did not match their batch


def _existing_names(target: Path) -> Set[str]:
    """File names already anywhere in the dataset (a relabelled file keeps its name)."""
    return {p.name for p in target.rglob("*") if p.is_file()} if target.is_dir() else set()


def pull_captures(
    store_url: str,
    fleet: str,
    target: Path,
    device: Optional[str] = None,
    login: Optional[Login] = None,
    timeout: float = 10.0,
) -> PullResult:
    """Gather the batches uploaded by ``fleet``'s devices (or one ``device``) into ``target``.

    A directory store or an OCI store (``login``, ``timeout`` for its registry). Raises StoreError
    for a missing store directory, or a registry that cannot be listed.
    """
    kind, location = store_kind(store_url)
    result = PullResult()
    present = _existing_names(target)
    if kind == "oci":
        batches: Iterator[Tuple[Path, List[Dict[str, Any]]]] = oci_batches(
            location, fleet, device, login, timeout, present
        )
    else:
        batches = _local_batches(Path(location), fleet, device)
    for folder, files in batches:
        result.batches += 1
        by_name = {f["path"]: f for f in files}
        for entry in files:
            if not entry["path"].endswith(".json"):
                continue
            image_entry = next(
                (f for n, f in by_name.items() if n != entry["path"] and n.startswith(entry["path"][:-5] + ".")), None
            )
            if image_entry is None:
                continue
            _pull_one(folder, entry, image_entry, target, present, result)
    return result


def _local_batches(store: Path, fleet: str, device: Optional[str]) -> Iterator[Tuple[Path, List[Dict[str, Any]]]]:
    """(folder, files) of each batch of ``fleet`` (or ``device``) in the directory store ``store``."""
    if not store.is_dir():
        raise StoreError(f"store directory {store} does not exist")
    root = store / CAPTURES_DIR
    for batch_path in sorted(root.glob(f"*/*/{BATCH_NAME}")) if root.is_dir() else []:
        try:
            with batch_path.open("rb") as fh:
                header, files = parse_batch(fh.read(MAX_BATCH_BYTES + 1))
        except (OSError, ManifestError) as exc:
            log.warning("skipped %s: %s", batch_path, exc)
            continue
        if header.get("fleet") != fleet or (device and header.get("device") != device):
            continue
        yield batch_path.parent, files


def _pull_one(
    folder: Path, record: Dict[str, Any], image: Dict[str, Any], target: Path, present: Set[str], result: PullResult
) -> None:
    if image["path"] in present:
        result.kept += 1
        return
    for entry in (record, image):
        path = folder / entry["path"]
        if not path.is_file() or path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            result.refused.append(entry["path"])
            log.warning("skipped %s: it does not match its batch (size or sha256)", path)
            return
    try:
        label = dataset_label(json.loads((folder / record["path"]).read_text("utf-8")))
    except (OSError, ValueError):
        label = "unknown"
    dest = target / label
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / record["path"], dest / record["path"])
    tmp = dest / f".{image['path']}.tmp"
    shutil.copyfile(folder / image["path"], tmp)
    os.replace(tmp, dest / image["path"])
    present.add(image["path"])
    result.copied += 1
    result.labels.add(label)
