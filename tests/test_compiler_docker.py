"""The docker backend, against a stand-in docker client (no Docker engine exists here).

The stand-in client implements the few docker SDK calls the backend makes (images.get/build,
containers.run/wait/logs/remove) and runs the stand-in compiler with the container's
mounts translated to host paths, so the backend's image build, mounts, user and path handling
run for real up to the engine.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List

import docker
import pytest
from test_compiler_compile import STAND_IN

from compiler import edgetpu, run
from compiler.errors import CompilerUnavailableError

ROOT = Path(__file__).resolve().parent.parent


class _Container:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.output = output
        self.removed = False

    def wait(self, timeout: float) -> Dict[str, int]:
        return {"StatusCode": self.returncode}

    def logs(self) -> bytes:
        return self.output.encode()

    def kill(self) -> None:
        raise AssertionError("not expected")

    def remove(self, force: bool = False) -> None:
        self.removed = True


class _Images:
    def __init__(self) -> None:
        self.present = False
        self.builds: List[Dict[str, Any]] = []

    def get(self, tag: str) -> object:
        if not self.present:
            raise docker.errors.ImageNotFound(f"{tag} not found")
        return object()

    def build(self, fileobj: Any, **kwargs: Any) -> None:
        with tarfile.open(fileobj=fileobj) as tar:
            kwargs["context"] = tar.getnames()
        self.builds.append(kwargs)
        self.present = True


class _Containers:
    def __init__(self) -> None:
        self.runs: List[Dict[str, Any]] = []
        self.containers: List[_Container] = []

    def run(self, image: str, command: List[str], volumes: Dict[str, Dict[str, str]], **kwargs: Any) -> _Container:
        self.runs.append({"image": image, "command": command, "volumes": volumes, **kwargs})
        to_host = {v["bind"]: host for host, v in volumes.items()}

        def host_path(arg: str) -> str:
            for bind, host in to_host.items():
                if arg == bind or arg.startswith(bind + "/"):
                    return host + arg[len(bind) :]
            return arg

        args = [host_path(a) for a in command[1:]]
        proc = subprocess.run([sys.executable, str(STAND_IN), *args], capture_output=True, text=True, check=False)
        output = proc.stdout + proc.stderr
        for bind, host in to_host.items():  # the compiler prints container paths
            output = output.replace(host, bind)
        container = _Container(proc.returncode, output)
        self.containers.append(container)
        return container


class StandInDockerClient:
    """The docker SDK calls the backend uses, with the stand-in compiler as the image."""

    def __init__(self) -> None:
        self.images = _Images()
        self.containers = _Containers()


@pytest.mark.slow
def test_docker_backend_builds_image_once_and_mounts_models_as_the_calling_user(
    compiler_models: Dict[str, Path],
    tmp_path: Path,
) -> None:
    client = StandInDockerClient()
    backend = edgetpu.DockerCompiler(client, ROOT / "Dockerfile.compiler")
    model = compiler_models["leaky_int8"]
    out = tmp_path / "out"
    outcome = run.compile_models([model], out, edgetpu.CompileOptions(timeout_sec=30), backend)

    (build,) = client.images.builds
    assert build["tag"] == edgetpu.IMAGE and build["platform"] == "linux/amd64"
    assert "Dockerfile" in build["context"] and "compiler/cli.py" in build["context"]
    compile_run = client.containers.runs[-1]
    assert compile_run["user"] == f"{os.getuid()}:{os.getgid()}"
    assert compile_run["platform"] == "linux/amd64"
    mounts = compile_run["volumes"]
    assert mounts[str(model.parent.resolve())] == {"bind": "/in/0", "mode": "ro"}
    assert [v for v in mounts.values() if v["bind"] == "/out"] == [{"bind": "/out", "mode": "rw"}]
    assert compile_run["command"][-1] == f"/in/0/{model.name}"
    assert all(c.removed for c in client.containers.containers)

    (report,) = outcome.report.models
    assert report.output_model == str(out / "leaky_int8_edgetpu.tflite")
    assert (out / "leaky_int8_edgetpu.tflite").is_file() and (out / "leaky_int8_edgetpu.log").is_file()
    assert report.operations_on_cpu == 5
    assert outcome.backend == "docker"

    run.compile_models([model], tmp_path / "again", edgetpu.CompileOptions(), backend)
    assert len(client.images.builds) == 1  # the image is built only when missing


def test_missing_dockerfile_is_a_clear_error(tmp_path: Path) -> None:
    backend = edgetpu.DockerCompiler(StandInDockerClient(), tmp_path / "Dockerfile.compiler")
    with pytest.raises(CompilerUnavailableError, match="Dockerfile.compiler not found"):
        backend.version()
