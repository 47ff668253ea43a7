"""Compile models end to end: cache lookup, compiler run, report parsing, report files.

``compile_models`` is what ``edge-compile MODEL...`` calls. For each model it leaves in
``out_dir``: ``<stem>_edgetpu.tflite``, ``<stem>_edgetpu.log`` and ``<stem>_edgetpu.json``
(the structured report, with the inputs' digests so a release can record its lineage).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from compiler import report as reports
from compiler.cache import CompileCache, cache_key
from compiler.edgetpu import DEFAULT_TIMEOUT_SEC, GRACE_SEC, Backend, CompileOptions
from compiler.errors import CompileFailedError, ModelSourceError
from release_contract.files import sha256_file
from release_contract.models import is_tflite
from release_contract.report import CompileReport as CompileReportFile

log = logging.getLogger(__name__)


@dataclass
class CompileOutcome:
    """The result of :func:`compile_models`."""

    report: reports.CompileReport
    outputs: List[Path]
    report_files: List[Path]
    cached: bool
    key: str
    backend: str


def check_models(models: Sequence[Path]) -> List[Path]:
    """The models as paths, after checking each is a readable ``.tflite`` with a unique name.

    Raises:
        ModelSourceError: no model, a missing or non-``.tflite`` model, or duplicate names.
    """
    paths = [Path(m) for m in models]
    if not paths:
        raise ModelSourceError("no model given")
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise ModelSourceError("co-compiled models need different file names")
    for p in paths:
        _check_model(p)
    return paths


def _check_model(path: Path) -> None:
    if path.is_dir():
        raise ModelSourceError(f"{path} is a folder: quantize the SavedModel first (edge-compile quantize {path})")
    if not path.is_file():
        raise ModelSourceError(f"model not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if not is_tflite(head):
        hint = " (quantize it first: edge-compile quantize)" if path.suffix in (".keras", ".h5") else ""
        raise ModelSourceError(f"{path} is not a TensorFlow Lite model{hint}")


def compile_models(
    models: Sequence[Path],
    out_dir: Path,
    options: CompileOptions,
    backend: Backend,
    cache: Optional[CompileCache] = None,
) -> CompileOutcome:
    """Compile ``models`` together (co-compilation when several) into ``out_dir``.

    Returns:
        the parsed report, the ``*_edgetpu.tflite`` paths and the JSON report paths.

    Raises:
        ModelSourceError: a model is missing or not a ``.tflite``.
        CompileFailedError (or a subclass): the compiler failed; the message says what to do.
        CompilerUnavailableError: the backend cannot run.
    """
    paths = check_models(models)
    out_dir = Path(out_dir)
    digests = [sha256_file(p) for p in paths]
    version = backend.version() or "unknown"
    args = options.to_args()
    key = cache_key(digests, version, args)
    entry = cache.lookup(key) if cache is not None else None
    if entry is not None:
        log.info("cache hit %s: not running the compiler", key[:12])
        stdout = CompileCache.stdout(entry)
        CompileCache.restore(entry, out_dir)
    else:
        stdout = _run(paths, out_dir, options, backend, cache, key)
    result = reports.parse_stdout(stdout)
    outputs, report_files = [], []
    for i, path in enumerate(paths):
        model = result.models[i] if i < len(result.models) else reports.ModelReport()
        if i >= len(result.models):
            result.models.append(model)
        model.input_model = str(path)
        out_model = out_dir / f"{path.stem}_edgetpu.tflite"
        out_log = out_dir / f"{path.stem}_edgetpu.log"
        if not out_model.is_file():
            raise CompileFailedError(f"edgetpu_compiler reported success but wrote no {out_model.name}", stdout)
        model.output_model = str(out_model)
        if out_log.is_file():
            model.operation_log = str(out_log)
            model.operations = reports.parse_log(out_log.read_text(errors="replace"))
        outputs.append(out_model)
        report_files.append(
            _write_report(
                out_dir / f"{path.stem}_edgetpu.json",
                result,
                model,
                paths,
                digests,
                args,
                key,
                entry is not None,
                backend.name,
                options.min_runtime_version,
            )
        )
    return CompileOutcome(result, outputs, report_files, entry is not None, key, backend.name)


def _run(
    paths: Sequence[Path],
    out_dir: Path,
    options: CompileOptions,
    backend: Backend,
    cache: Optional[CompileCache],
    key: str,
) -> str:
    """Run the compiler into a scratch folder, then move its files to ``out_dir``."""
    timeout = (options.timeout_sec or DEFAULT_TIMEOUT_SEC) + GRACE_SEC
    with tempfile.TemporaryDirectory(prefix="edge-compile-") as tmp:
        scratch = Path(tmp)
        result = backend.run(paths, scratch, options.to_args(), timeout)
        failed = result.returncode != 0 or result.timed_out or "Compilation failed" in result.output
        if failed:
            raise reports.diagnose(result.output, options.timeout_sec or DEFAULT_TIMEOUT_SEC)
        produced = sorted(p for p in scratch.iterdir() if p.is_file())
        if cache is not None:
            cache.store(key, produced, result.output)
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in produced:
            shutil.copy2(f, out_dir / f.name)
    return result.output


def _write_report(
    target: Path,
    result: reports.CompileReport,
    model: reports.ModelReport,
    inputs: Sequence[Path],
    digests: Sequence[str],
    args: Sequence[str],
    key: str,
    cached: bool,
    backend: str,
    min_runtime_version: Optional[int],
) -> Path:
    """Write one model's JSON report (:class:`release_contract.report.CompileReport`) beside it."""
    out = Path(model.output_model)
    report = CompileReportFile(
        compiler_version=result.compiler_version,
        output_sha256=sha256_file(out),
        output_size=out.stat().st_size,
        output_path=str(out),
        inputs=[{"path": str(p), "sha256": d} for p, d in zip(inputs, digests)],
        model=asdict(model),
        compile_ms=result.compile_ms,
        backend=backend,
        compiler_args=list(args),
        cache_key=key,
        cached=cached,
        min_runtime_version=min_runtime_version,
    )
    target.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    return target
