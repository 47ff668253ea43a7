"""The release manifest: what a release holds, in canonical JSON.

A release is a set of files (the Edge TPU model, its CPU fallback, the labels and
optionally a golden input) described by a manifest. The manifest travels inside a
signed envelope, ``release.json``::

    {"signatures": [{"keyid": "<hex>", "sig": "<base64>"}],
     "signed": {"schema": "edgetpu.release/1", "name": "digits", "version": "3", ...}}

The signature covers :func:`canonical_json` of ``signed`` (sorted keys, no
whitespace, UTF-8). Versions are dotted integers (``3``, ``1.4.0``) compared
numerically and named in their canonical form (``1.4.0`` is ``1.4``, see
:func:`check_version`); names are lowercase so they are valid OCI repository names.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, List, Mapping, Optional, Tuple

from release_contract.errors import ManifestError
from release_contract.lineage import Lineage
from release_contract.untrusted_json import loads_untrusted

SCHEMA = "edgetpu.release/1"
ENVELOPE_NAME = "release.json"
MAX_ENVELOPE_BYTES = 1 << 20
ROLES = ("edgetpu_model", "cpu_model", "labels", "golden")
REQUIRED_ROLES = ("cpu_model", "labels")

# used with fullmatch: "$" alone would accept a trailing newline
_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_VERSION_RE = re.compile(r"[0-9]{1,9}(\.[0-9]{1,9}){0,3}")
_FILE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA_RE = re.compile(r"[0-9a-f]{64}")
_TIME_FMT = "%Y-%m-%dT%H:%M:%SZ"


def canonical_json(value: Any) -> bytes:
    """Serialize ``value`` deterministically: sorted keys, no spaces, UTF-8 bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid release name, else raise :class:`ManifestError`."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ManifestError(f"invalid release name {name!r}: use 1-64 of a-z 0-9 . _ - starting with a letter or digit")
    return name


def check_version(version: str) -> str:
    """Return the canonical form of ``version`` (dotted integers such as ``3`` or ``1.2.1``), else raise.

    Versions that compare equal have one name: leading zeros and trailing ``.0`` parts are
    dropped (``3.0`` and ``03`` are ``3``, ``1.2.0`` is ``1.2``), so a store cannot hold
    ``3`` and ``3.0`` side by side and every directory, tag and pointer uses the same name.
    """
    if not isinstance(version, str) or not _VERSION_RE.fullmatch(version):
        raise ManifestError(f"invalid version {version!r}: use dotted integers such as 3 or 1.2.0")
    parts = [str(int(p)) for p in version.split(".")]
    while len(parts) > 1 and parts[-1] == "0":
        parts.pop()
    return ".".join(parts)


def version_key(version: str) -> Tuple[int, ...]:
    """Sort key of a version: ``1.10`` > ``1.9`` > ``1``; trailing zeros do not matter."""
    parts = [int(p) for p in check_version(version).split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def check_filename(path: str) -> str:
    """Return ``path`` if it is a plain file name (no directory, no ``..``), else raise."""
    if not isinstance(path, str) or not _FILE_RE.fullmatch(path) or ".." in path:
        raise ManifestError(f"unsafe file name {path!r} in manifest: only plain names are allowed")
    return path


def parse_ref(ref: str) -> Tuple[str, Optional[str]]:
    """Split ``NAME[:VERSION]`` into its parts, checking both."""
    name, _, version = ref.partition(":")
    return check_name(name), (check_version(version) if version else None)


def format_time(moment: datetime) -> str:
    """RFC 3339 UTC timestamp with second precision, as used in manifests."""
    return moment.astimezone(timezone.utc).strftime(_TIME_FMT)


def parse_time(text: str) -> datetime:
    """Parse a manifest timestamp (``2026-11-23T02:00:00Z``) into an aware datetime."""
    try:
        return datetime.strptime(text, _TIME_FMT).replace(tzinfo=timezone.utc)
    except (TypeError, ValueError) as exc:
        raise ManifestError(f"invalid timestamp {text!r}: expected YYYY-MM-DDTHH:MM:SSZ") from exc


@dataclass(frozen=True)
class FileEntry:
    """One file of a release: plain file name, size in bytes, lowercase hex sha256."""

    path: str
    size: int
    sha256: str

    def to_dict(self) -> Dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_dict(cls, role: str, data: Any) -> FileEntry:
        if not isinstance(data, Mapping):
            raise ManifestError(f"manifest file entry {role!r} is not an object")
        size, sha = data.get("size"), data.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ManifestError(f"manifest file entry {role!r} has an invalid size")
        if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            raise ManifestError(f"manifest file entry {role!r} has an invalid sha256")
        return cls(path=check_filename(data.get("path", "")), size=size, sha256=sha)


@dataclass(frozen=True)
class Manifest:
    """The signed description of a release.

    ``input`` holds ``shape`` (e.g. ``[1, 32, 32, 3]``), ``dtype`` and the
    normalization ``mean``/``std``; ``min_runtime`` is the lowest Edge TPU runtime
    version able to run the compiled model; ``source_sha256``, ``compiler_version`` and
    ``compile_report`` are the lineage of the compile step; ``lineage`` (optional, see
    :mod:`release_contract.lineage`) that of the quantize step: calibration set, float model,
    fidelity. ``golden_top1`` is the class the golden input must yield, when known.
    """

    name: str
    version: str
    files: Dict[str, FileEntry]
    input: Dict[str, Any]
    created_at: str
    expires_at: str
    min_runtime: int = 0
    compiler_version: str = ""
    source_sha256: str = ""
    compile_report: Dict[str, Any] = field(default_factory=dict)
    golden_top1: Optional[int] = None
    lineage: Optional[Lineage] = None

    def to_dict(self) -> Dict[str, Any]:
        """The ``signed`` part of the envelope."""
        data: Dict[str, Any] = {
            "schema": SCHEMA,
            "name": self.name,
            "version": self.version,
            "files": {role: entry.to_dict() for role, entry in sorted(self.files.items())},
            "input": dict(self.input),
            "min_runtime": self.min_runtime,
            "compiler_version": self.compiler_version,
            "source_sha256": self.source_sha256,
            "compile_report": dict(self.compile_report),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
        }
        if self.golden_top1 is not None:
            data["golden_top1"] = self.golden_top1
        if self.lineage is not None:
            data["lineage"] = self.lineage.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse and check the ``signed`` part; raise :class:`ManifestError` on anything odd."""
        if not isinstance(data, Mapping):
            raise ManifestError("manifest is not a JSON object")
        if data.get("schema") != SCHEMA:
            raise ManifestError(f"unsupported manifest schema {data.get('schema')!r} (expected {SCHEMA})")
        files_raw = data.get("files")
        if not isinstance(files_raw, Mapping):
            raise ManifestError("manifest has no files")
        unknown = set(files_raw) - set(ROLES)
        if unknown:
            raise ManifestError(f"manifest lists unknown file roles: {', '.join(sorted(unknown))}")
        missing = [r for r in REQUIRED_ROLES if r not in files_raw]
        if missing:
            raise ManifestError(f"manifest lacks required files: {', '.join(missing)}")
        files = {role: FileEntry.from_dict(role, entry) for role, entry in files_raw.items()}
        paths = [e.path for e in files.values()]
        if len(set(paths)) != len(paths) or ENVELOPE_NAME in paths:
            raise ManifestError("manifest lists the same file name twice")
        inp = data.get("input")
        if not isinstance(inp, Mapping) or not _valid_shape(inp.get("shape")):
            raise ManifestError("manifest input.shape must be a list of positive integers")
        check_normalization(inp.get("mean"), inp.get("std"))
        min_runtime = data.get("min_runtime", 0)
        if not isinstance(min_runtime, int) or isinstance(min_runtime, bool) or min_runtime < 0:
            raise ManifestError("manifest min_runtime must be a non-negative integer")
        golden = data.get("golden_top1")
        if golden is not None and (not isinstance(golden, int) or isinstance(golden, bool)):
            raise ManifestError("manifest golden_top1 must be an integer")
        report = data.get("compile_report", {})
        if not isinstance(report, Mapping):
            raise ManifestError("manifest compile_report must be an object")
        lineage = Lineage.from_dict(data["lineage"]) if "lineage" in data else None
        created, expires = str(data.get("created_at", "")), str(data.get("expires_at", ""))
        parse_time(created)
        parse_time(expires)
        return cls(
            name=check_name(data.get("name", "")),
            version=check_version(data.get("version", "")),
            files=files,
            input=dict(inp),
            created_at=created,
            expires_at=expires,
            min_runtime=min_runtime,
            compiler_version=str(data.get("compiler_version", "")),
            source_sha256=str(data.get("source_sha256", "")),
            compile_report=dict(report),
            golden_top1=golden,
            lineage=lineage,
        )

    @property
    def ref(self) -> str:
        """``name:version``."""
        return f"{self.name}:{self.version}"

    @property
    def total_size(self) -> int:
        """Bytes of all files of the release (the envelope aside)."""
        return sum(e.size for e in self.files.values())

    @property
    def normalization(self) -> Tuple[Optional[float], Optional[float]]:
        """(mean, std) the device applies to pixels; (None, None): the model's input quantization covers it."""
        mean, std = self.input.get("mean"), self.input.get("std")
        return (None, None) if mean is None or std is None else (float(mean), float(std))

    def expired(self, now: Optional[datetime] = None) -> bool:
        """True when ``expires_at`` is in the past."""
        return parse_time(self.expires_at) <= (now or datetime.now(timezone.utc))


def check_normalization(mean: Any, std: Any) -> None:
    """Both null, or both finite numbers with std not 0."""
    if mean is None and std is None:
        return
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in (mean, std))
    if not numbers or std == 0:
        raise ManifestError("manifest input mean/std must both be null, or finite numbers with std not 0")


def _valid_shape(shape: Any) -> bool:
    return (
        isinstance(shape, list)
        and 0 < len(shape) <= 6
        and all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= 1 << 16 for d in shape)
    )


def parse_envelope(raw: bytes) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """Split a ``release.json`` into its ``signed`` object and signature list (unverified)."""
    try:
        doc = loads_untrusted(raw, "release.json", MAX_ENVELOPE_BYTES)
    except ValueError as exc:
        raise ManifestError(str(exc)) from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("signed"), dict):
        raise ManifestError("release.json has no 'signed' object")
    sigs = doc.get("signatures", [])
    if not isinstance(sigs, list) or not all(isinstance(s, dict) for s in sigs):
        raise ManifestError("release.json 'signatures' must be a list of objects")
    return doc["signed"], sigs
