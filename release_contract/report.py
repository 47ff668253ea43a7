"""The compile report: what ``edge-compile`` writes beside each compiled model (``<name>_edgetpu.json``)
and ``edge-registry push`` reads into a release's lineage. One typed definition for both sides.

Schema version 1 (JSON object)::

    schema_version       1
    compiler_version     "16.0.384591198"
    compile_ms           how long edgetpu_compiler ran
    backend              "local" or "docker"
    compiler_args        the flags it was given
    cache_key, cached    the compile cache's key, and whether this result came from it
    inputs               [{"path", "sha256"}] every model given to the compiler (co-compilation)
    output               {"path", "sha256", "size"} the compiled model
    model                the compiler's account of this model (input_model, sizes, on-chip memory,
                         subgraphs, operations and the operation log)
    min_runtime_version  the -m the compiler was given, or null (edgetpu_compiler 16 targets 14)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from release_contract.errors import ManifestError
from release_contract.untrusted_json import read_untrusted_file

SCHEMA_VERSION = 1
#: The Edge TPU runtime version ``edgetpu_compiler`` 16 targets when not given ``-m``.
DEFAULT_MIN_RUNTIME = 14
MAX_REPORT_BYTES = 1 << 20


@dataclass(frozen=True)
class CompileReport:
    """One compiled model's report (see the module docstring for the fields)."""

    compiler_version: str
    output_sha256: str
    output_size: int
    output_path: str
    inputs: List[Dict[str, str]] = field(default_factory=list)
    model: Dict[str, Any] = field(default_factory=dict)
    compile_ms: int = -1
    backend: str = ""
    compiler_args: List[str] = field(default_factory=list)
    cache_key: str = ""
    cached: bool = False
    min_runtime_version: Optional[int] = None

    @property
    def input_model(self) -> str:
        """Path of the model this output was compiled from ("" when unknown)."""
        name = self.model.get("input_model")
        if isinstance(name, str) and name:
            return name
        return self.inputs[0]["path"] if len(self.inputs) == 1 else ""

    @property
    def source_sha256(self) -> str:
        """sha256 of the model this output was compiled from ("" when unknown): the lineage link."""
        wanted = self.input_model
        for item in self.inputs:
            if item["path"] == wanted or (wanted and Path(item["path"]).name == Path(wanted).name):
                return item["sha256"]
        return ""

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object written to ``<name>_edgetpu.json``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "compiler_version": self.compiler_version,
            "compile_ms": self.compile_ms,
            "backend": self.backend,
            "compiler_args": list(self.compiler_args),
            "cache_key": self.cache_key,
            "cached": self.cached,
            "inputs": [dict(i) for i in self.inputs],
            "output": {"path": self.output_path, "sha256": self.output_sha256, "size": self.output_size},
            "model": dict(self.model),
            "min_runtime_version": self.min_runtime_version,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CompileReport:
        """Parse and check a report; raise :class:`ManifestError` naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ManifestError("compile report is not a JSON object")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(
                f"unsupported compile report schema_version {data.get('schema_version')!r} (expected {SCHEMA_VERSION})"
            )
        output = data.get("output")
        if (
            not isinstance(output, Mapping)
            or not isinstance(output.get("sha256"), str)
            or not _is_int(output.get("size"))
        ):
            raise ManifestError("compile report has no valid output {path, sha256, size}")
        inputs = data.get("inputs", [])
        if not isinstance(inputs, list) or not all(
            isinstance(i, Mapping) and isinstance(i.get("path"), str) and isinstance(i.get("sha256"), str)
            for i in inputs
        ):
            raise ManifestError("compile report inputs must be a list of {path, sha256}")
        model = data.get("model", {})
        args = data.get("compiler_args", [])
        min_runtime = data.get("min_runtime_version")
        if (
            not isinstance(model, Mapping)
            or not isinstance(args, list)
            or not (min_runtime is None or _is_int(min_runtime))
        ):
            raise ManifestError("compile report has a malformed model, compiler_args or min_runtime_version")
        return cls(
            compiler_version=str(data.get("compiler_version", "")),
            output_sha256=output["sha256"],
            output_size=int(output["size"]),
            output_path=str(output.get("path", "")),
            inputs=[{"path": i["path"], "sha256": i["sha256"]} for i in inputs],
            model=dict(model),
            compile_ms=int(data["compile_ms"]) if _is_int(data.get("compile_ms")) else -1,
            backend=str(data.get("backend", "")),
            compiler_args=[str(a) for a in args],
            cache_key=str(data.get("cache_key", "")),
            cached=bool(data.get("cached", False)),
            min_runtime_version=min_runtime,
        )

    @classmethod
    def read(cls, path: Path) -> CompileReport:
        """Read a ``<name>_edgetpu.json``; raise ManifestError when unreadable or malformed."""
        try:
            return cls.from_dict(read_untrusted_file(Path(path), f"compile report {path}", MAX_REPORT_BYTES))
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read the compile report {path}: {exc}") from exc
        except ManifestError as exc:
            raise ManifestError(f"{path}: {exc}") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
