"""The lineage of a release: from the calibration data to the int8 model and its fidelity.

``edge-compile quantize`` writes ``<int8 model stem>.lineage.json`` beside the int8 model;
``edge-registry push`` reads it into the manifest's optional ``lineage`` field, so the signed
release names the data it was calibrated on. Schema ``edgetpu.lineage/1``::

    {"schema": "edgetpu.lineage/1",
     "calibration": {"digest": "<sha256>", "images": 80, "random": false},
     "float_model": {"path": "flowers.keras", "sha256": "<sha256>"},
     "int8_model":  {"path": "flowers_int8.tflite", "sha256": "<sha256>", "size": 123456},
     "fidelity":    {"images": 20, "top1_agreement": 0.95, "mean_abs_diff": 0.012} or null}

The calibration digest is :func:`dataset_digest`: sha256 over the sorted relative paths and
the sha256 of each file, so the same images in the same folders give the same digest on any
machine, and moving a file to another folder (relabelling) changes it. For a SavedModel
folder, ``float_model.sha256`` is the :func:`dataset_digest` of the folder.
Parsing is strict: unknown fields, wrong types and out-of-range numbers are refused.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Mapping, Optional

from release_contract.errors import ManifestError
from release_contract.files import sha256_file
from release_contract.untrusted_json import read_untrusted_file

SCHEMA = "edgetpu.lineage/1"
SUFFIX = ".lineage.json"
MAX_LINEAGE_BYTES = 64 * 1024
_SHA_RE = re.compile(r"^[0-9a-f]{64}$")


def dataset_digest(root: Path, files: Iterable[Path]) -> str:
    """sha256 over ``"<relative path>\\0<file sha256>\\n"`` of ``files`` (under ``root``), sorted by path.

    Paths use ``/`` whatever the platform. Raises OSError when a file cannot be read.
    """
    root = Path(root)
    digest = hashlib.sha256()
    for rel in sorted(Path(f).relative_to(root).as_posix() for f in files):
        digest.update(f"{rel}\0{sha256_file(root / rel)}\n".encode())
    return digest.hexdigest()


def lineage_path(int8_model: Path) -> Path:
    """Where the lineage of ``int8_model`` lives: ``m_int8.tflite`` -> ``m_int8.lineage.json``."""
    int8_model = Path(int8_model)
    return int8_model.with_name(int8_model.stem + SUFFIX)


def _obj(data: Any, what: str, fields: Mapping[str, Any]) -> Dict[str, Any]:
    """Check ``data`` is an object with exactly ``fields`` (name -> type or tuple of types)."""
    if not isinstance(data, Mapping):
        raise ManifestError(f"lineage {what} must be an object")
    if set(data) != set(fields):
        raise ManifestError(f"lineage {what} must have exactly the fields {', '.join(sorted(fields))}")
    for key, typ in fields.items():
        value = data[key]
        if isinstance(value, bool) and typ is not bool:
            raise ManifestError(f"lineage {what}.{key} has the wrong type")
        if not isinstance(value, typ):
            raise ManifestError(f"lineage {what}.{key} has the wrong type")
    return dict(data)


def _sha(value: str, what: str) -> str:
    if not _SHA_RE.match(value):
        raise ManifestError(f"lineage {what} is not a lowercase hex sha256")
    return value


@dataclass(frozen=True)
class Fidelity:
    """Float against int8 on ``images`` evaluation images: top-1 agreement (0..1), mean score difference."""

    images: int
    top1_agreement: float
    mean_abs_diff: float


@dataclass(frozen=True)
class Lineage:
    """The calibration set, the float model and the int8 model of a release, and its fidelity."""

    calibration_digest: str
    calibration_images: int
    calibration_random: bool
    float_path: str
    float_sha256: str
    int8_path: str
    int8_sha256: str
    int8_size: int
    fidelity: Optional[Fidelity] = None

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object (``lineage.json`` and the manifest's ``lineage``)."""
        fid = self.fidelity
        return {
            "schema": SCHEMA,
            "calibration": {
                "digest": self.calibration_digest,
                "images": self.calibration_images,
                "random": self.calibration_random,
            },
            "float_model": {"path": self.float_path, "sha256": self.float_sha256},
            "int8_model": {"path": self.int8_path, "sha256": self.int8_sha256, "size": self.int8_size},
            "fidelity": None
            if fid is None
            else {"images": fid.images, "top1_agreement": fid.top1_agreement, "mean_abs_diff": fid.mean_abs_diff},
        }

    @classmethod
    def from_dict(cls, data: Any) -> Lineage:
        """Parse and check a lineage object; raise :class:`ManifestError` naming what is wrong."""
        top = _obj(
            data,
            "",
            {
                "schema": str,
                "calibration": dict,
                "float_model": dict,
                "int8_model": dict,
                "fidelity": (dict, type(None)),
            },
        )
        if top["schema"] != SCHEMA:
            raise ManifestError(f"unsupported lineage schema {top['schema']!r} (expected {SCHEMA})")
        cal = _obj(top["calibration"], "calibration", {"digest": str, "images": int, "random": bool})
        flt = _obj(top["float_model"], "float_model", {"path": str, "sha256": str})
        i8 = _obj(top["int8_model"], "int8_model", {"path": str, "sha256": str, "size": int})
        if cal["images"] < 0 or i8["size"] < 0:
            raise ManifestError("lineage counts and sizes must not be negative")
        fidelity = None
        if top["fidelity"] is not None:
            number = (int, float)
            fid = _obj(top["fidelity"], "fidelity", {"images": int, "top1_agreement": number, "mean_abs_diff": number})
            agreement, diff = float(fid["top1_agreement"]), float(fid["mean_abs_diff"])
            if fid["images"] < 1 or not (0.0 <= agreement <= 1.0) or not (math.isfinite(diff) and diff >= 0):
                raise ManifestError("lineage fidelity must have images >= 1, agreement in [0, 1], a difference >= 0")
            fidelity = Fidelity(fid["images"], agreement, diff)
        return cls(
            calibration_digest=_sha(cal["digest"], "calibration.digest"),
            calibration_images=cal["images"],
            calibration_random=cal["random"],
            float_path=flt["path"][:1024],
            float_sha256=_sha(flt["sha256"], "float_model.sha256"),
            int8_path=i8["path"][:1024],
            int8_sha256=_sha(i8["sha256"], "int8_model.sha256"),
            int8_size=i8["size"],
            fidelity=fidelity,
        )

    @classmethod
    def read(cls, path: Path) -> Lineage:
        """Read a ``*.lineage.json``; raise ManifestError when unreadable or malformed."""
        try:
            return cls.from_dict(read_untrusted_file(Path(path), f"lineage file {path}", MAX_LINEAGE_BYTES))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read the lineage file {path}: {exc}") from exc
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from exc
