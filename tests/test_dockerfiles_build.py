"""Each Dockerfile's COPY set is enough for its pip install: the wheel builds from exactly those files.

No Docker engine runs here, so the test rebuilds the build context the way ``docker build``
would see it (the files the ``COPY`` lines name, nothing else) and builds the wheel from it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import List

import pytest

from compiler import edgetpu

ROOT = Path(__file__).resolve().parent.parent


def wheel_from_copy_set(dockerfile: Path, tmp_path: Path) -> List[str]:
    """Copy exactly the Dockerfile's COPY sources into a fresh folder, build the wheel, list its files."""
    context = tmp_path / "context"
    context.mkdir()
    for name in edgetpu.copy_sources(dockerfile):
        src, dest = ROOT / name, context / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copyfile(src, dest)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "w"),
            ".",
        ],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "w").glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        return zf.namelist()


def test_compiler_image_copies_only_the_compiler_and_the_contract() -> None:
    sources = edgetpu.copy_sources(ROOT / "Dockerfile.compiler")
    assert sorted(sources) == ["README.md", "compiler", "pyproject.toml", "release_contract"]


def test_compiler_image_wheel_builds_from_its_copy_set(tmp_path: Path) -> None:
    names = wheel_from_copy_set(ROOT / "Dockerfile.compiler", tmp_path)
    assert "compiler/cli.py" in names and "release_contract/manifest.py" in names
    assert not [n for n in names if n.startswith(("edge_agent/", "registry/"))]


def test_agent_image_copies_no_compiler_or_registry_and_its_wheel_carries_the_demo(tmp_path: Path) -> None:
    dockerfile = ROOT / "Dockerfile.agent"
    assert not {"compiler", "registry"} & set(edgetpu.copy_sources(dockerfile))
    names = wheel_from_copy_set(dockerfile, tmp_path)
    assert "edge_agent/cli.py" in names and "release_contract/fetch.py" in names
    data = [n for n in names if "/data/share/edgetpu-fleet/" in n]
    assert any(n.endswith("models/digits_int8.tflite") for n in data)
    assert any(n.endswith("labels/digits.txt") for n in data)
    assert sum(n.endswith(".png") for n in data) == 20


def test_the_build_context_edge_compile_sends_is_the_copy_set() -> None:
    import tarfile

    with tarfile.open(fileobj=edgetpu._build_context(ROOT / "Dockerfile.compiler")) as tar:
        top = {name.split("/", 1)[0] for name in tar.getnames()}
    assert top == {"Dockerfile", "README.md", "compiler", "pyproject.toml", "release_contract"}


def test_a_docker_cli_without_an_engine_says_to_start_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("docker")
    cli = tmp_path / "docker"  # only its presence on PATH matters
    cli.write_text("#!/bin/sh\nexit 1\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/docker.sock")
    with pytest.raises(edgetpu.CompilerUnavailableError, match="start the engine"):
        edgetpu.find_backend("docker")
