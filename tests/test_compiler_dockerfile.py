"""Dockerfile.compiler: linted with hadolint; the build context edge-compile sends to docker."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

from compiler import edgetpu

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile.compiler"


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run([str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_pins_the_compiler_package_from_googles_repository() -> None:
    text = DOCKERFILE.read_text()
    assert "ARG EDGETPU_COMPILER_VERSION=16.0" in text
    assert '"edgetpu-compiler=${EDGETPU_COMPILER_VERSION}"' in text
    assert "coral-edgetpu-stable main" in text
    assert text.count("FROM debian:") == 1


def test_build_context_holds_the_dockerfile_and_package_but_no_virtualenv() -> None:
    with tarfile.open(fileobj=edgetpu._build_context(DOCKERFILE)) as tar:
        names = tar.getnames()
    assert "Dockerfile" in names and "pyproject.toml" in names
    assert "compiler/cli.py" in names
    assert not [n for n in names if n.startswith(".venv") or "__pycache__" in n]
    assert not [n for n in names if n.startswith(("tests", "edge_agent", "models"))]


def test_compile_options_become_the_compilers_flags() -> None:
    opts = edgetpu.CompileOptions(
        min_runtime_version=13,
        enable_multiple_subgraphs=True,
        search_delegate=True,
        delegate_search_step=4,
        num_segments=3,
        intermediate_tensors="x,y",
        timeout_sec=600,
    )
    assert opts.to_args() == ["-s", "-m", "13", "-a", "-d", "-k", "4", "-n", "3", "-i", "x,y", "-t", "600"]
    assert edgetpu.CompileOptions(show_operations=False).to_args() == []
