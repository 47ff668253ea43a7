"""Build a signed release from a compiler output folder and push it to a store."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from registry.store.base import Store
from release_contract.errors import AlreadyExists, ManifestError, RegistryError
from release_contract.lineage import SUFFIX as LINEAGE_SUFFIX
from release_contract.lineage import Lineage
from release_contract.manifest import (
    FileEntry,
    Manifest,
    check_name,
    check_normalization,
    check_version,
    format_time,
)
from release_contract.report import DEFAULT_MIN_RUNTIME, CompileReport
from release_contract.signing import sign_manifest

log = logging.getLogger(__name__)

#: File names inside a release, by role.
FILE_NAMES = {
    "edgetpu_model": "model_edgetpu.tflite",
    "cpu_model": "model.tflite",
    "labels": "labels.txt",
    "golden": "golden.bin",
}


@dataclass
class ReleaseFiles:
    """The source files of a release, by role, plus the compile report if one was found."""

    files: Dict[str, Path]
    report: Optional[CompileReport]
    #: ``*.lineage.json`` files found beside the models (``edge-compile quantize`` writes one)
    lineages: List[Path] = field(default_factory=list)


def find_release_files(
    model_dir: Path,
    cpu_model: Optional[Path] = None,
    labels: Optional[Path] = None,
    edgetpu_model: Optional[Path] = None,
    golden: Optional[Path] = None,
) -> ReleaseFiles:
    """Pick the release's files out of a compiler output folder; explicit paths win.

    ``*_edgetpu.tflite`` is the compiled model, the other ``.tflite`` the CPU fallback,
    ``labels.txt`` (or the only ``.txt``) the labels, ``golden.bin`` the golden input and
    ``*_edgetpu.json`` (or ``*report*.json``) the compile report and ``*.lineage.json`` the
    quantize step's lineage; without a CPU model in the folder, the report's input model is
    used. Raises :class:`ManifestError` when a required
    file is missing or ambiguous.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ManifestError(f"model folder not found: {model_dir}")
    tflites = sorted(model_dir.glob("*.tflite"))
    compiled = [p for p in tflites if p.name.endswith("_edgetpu.tflite")]
    plain = [p for p in tflites if p not in compiled]
    files: Dict[str, Path] = {}
    if edgetpu_model or len(compiled) == 1:
        files["edgetpu_model"] = Path(edgetpu_model or compiled[0])
    elif len(compiled) > 1:
        raise ManifestError(f"{model_dir} has several *_edgetpu.tflite models: pass --edgetpu-model")
    report = _read_report(model_dir)
    source = _report_input_model(report, model_dir)
    if cpu_model or len(plain) == 1:
        files["cpu_model"] = Path(cpu_model or plain[0])
    elif not plain and source is not None:
        files["cpu_model"] = source  # the int8 model the compiler was given
    else:
        raise ManifestError(
            f"{model_dir} needs exactly one CPU (non _edgetpu) .tflite model, found {len(plain)}: pass --cpu-model"
        )
    texts = [p for p in sorted(model_dir.glob("*.txt"))]
    if labels:
        files["labels"] = Path(labels)
    elif (model_dir / "labels.txt").is_file():
        files["labels"] = model_dir / "labels.txt"
    elif len(texts) == 1:
        files["labels"] = texts[0]
    else:
        raise ManifestError(f"no labels file in {model_dir}: add labels.txt or pass --labels")
    if golden or (model_dir / "golden.bin").is_file():
        files["golden"] = Path(golden or model_dir / "golden.bin")
    for role, path in files.items():
        if not path.is_file():
            raise ManifestError(f"{role.replace('_', ' ')} not found: {path}")
    lineages = sorted({*model_dir.glob(f"*{LINEAGE_SUFFIX}"), *files["cpu_model"].parent.glob(f"*{LINEAGE_SUFFIX}")})
    return ReleaseFiles(files, report, lineages)


def release_lineage(source: ReleaseFiles, cpu_sha256: str) -> Optional[Lineage]:
    """The lineage among ``source.lineages`` whose int8 model is the CPU model (by sha256), or None.

    Raises :class:`ManifestError` when a lineage file is malformed, or when there are lineage
    files but none describes this CPU model (a lineage of another model would be a lie).
    """
    found = [Lineage.read(p) for p in source.lineages]
    for lineage in found:
        if lineage.int8_sha256 == cpu_sha256:
            return lineage
    if found:
        names = ", ".join(p.name for p in source.lineages)
        raise ManifestError(
            f"{names} describe(s) another int8 model than {source.files['cpu_model'].name}: "
            "re-run edge-compile quantize, or remove the stale lineage file"
        )
    return None


def _read_report(model_dir: Path) -> Optional[CompileReport]:
    """The compiler's report (``*_edgetpu.json``) in ``model_dir``, or None when there is none."""
    reports = sorted(model_dir.glob("*_edgetpu.json"))
    return CompileReport.read(reports[0]) if reports else None


def _report_input_model(report: Optional[CompileReport], model_dir: Path) -> Optional[Path]:
    """The input model named by the report, if that file exists (as given, or in ``model_dir``)."""
    name = report.input_model if report is not None else ""
    if not name:
        return None
    for candidate in (Path(name), model_dir / Path(name).name):
        if candidate.is_file():
            return candidate
    return None


def file_entry(role: str, path: Path) -> FileEntry:
    """Size and sha256 of ``path``, under its release file name."""
    digest = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return FileEntry(path=FILE_NAMES[role], size=size, sha256=digest.hexdigest())


def read_input(model: Path) -> Tuple[List[int], str]:
    """Input shape and dtype name of a ``.tflite`` model, read with LiteRT (imported lazily)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        details = Interpreter(model_path=str(model)).get_input_details()[0]
    except (ImportError, ValueError, RuntimeError) as exc:
        raise ManifestError(f"cannot read the input of {model}: {exc}; pass --input-shape") from exc
    return [int(d) for d in details["shape"]], str(getattr(details["dtype"], "__name__", details["dtype"]))


def build_manifest(
    name: str,
    version: str,
    source: ReleaseFiles,
    *,
    input_shape: Optional[List[int]] = None,
    mean: Optional[float] = None,
    std: Optional[float] = None,
    min_runtime: Optional[int] = None,
    expires_days: float = 365.0,
    golden_top1: Optional[int] = None,
    now: Optional[datetime] = None,
) -> Manifest:
    """The manifest of a release made of ``source``; lineage comes from the compile report.

    ``mean``/``std`` of None (the default) mean the model's input quantization already covers
    the pixel range, as for Coral's models; the device then feeds pixels as they are.
    """
    check_normalization(mean, std)
    report = source.report
    created = now or datetime.now(timezone.utc)
    shape, dtype = (input_shape, "uint8") if input_shape else read_input(source.files["cpu_model"])
    if min_runtime is None:
        if "edgetpu_model" not in source.files:
            min_runtime = 0
        elif report is not None and report.min_runtime_version is not None:
            min_runtime = report.min_runtime_version
        else:
            min_runtime = DEFAULT_MIN_RUNTIME
    entries = {role: file_entry(role, path) for role, path in source.files.items()}
    lineage = (report.source_sha256 if report else "") or entries["cpu_model"].sha256
    return Manifest(
        name=check_name(name),
        version=check_version(version),
        files=entries,
        input={"shape": shape, "dtype": dtype, "mean": mean, "std": std},
        created_at=format_time(created),
        expires_at=format_time(created + timedelta(days=expires_days)),
        min_runtime=min_runtime,
        compiler_version=report.compiler_version if report else "",
        source_sha256=str(lineage),
        compile_report=report.to_dict() if report else {},
        golden_top1=golden_top1,
        lineage=release_lineage(source, entries["cpu_model"].sha256),
    )


def push_release(store: Store, manifest: Manifest, source: ReleaseFiles, key: Ed25519PrivateKey) -> bytes:
    """Sign ``manifest`` and push it with its files; return the envelope bytes.

    Raises :class:`AlreadyExists` when the version is already in the store.
    """
    try:
        existing = store.versions(manifest.name)
    except RegistryError:
        existing = []
    if manifest.version in existing:
        raise AlreadyExists(
            f"{manifest.ref} already exists in the store: versions are immutable, push a higher version"
        )
    envelope = sign_manifest(manifest, key)
    store.push(
        envelope, {FILE_NAMES[role]: path for role, path in source.files.items()}, manifest.name, manifest.version
    )
    log.info("pushed %s (%d bytes) to %s", manifest.ref, manifest.total_size, store.url)
    return envelope
