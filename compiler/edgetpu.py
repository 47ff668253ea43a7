"""Run ``edgetpu_compiler``: the local binary when it is on PATH, else in the compiler image.

Two backends share one small interface (``version()`` and ``run()``):

* :class:`LocalCompiler` runs the binary with :mod:`subprocess`.
* :class:`DockerCompiler` runs it in the image built from ``Dockerfile.compiler`` through the
  docker SDK (building the image when it is missing), with each model's folder mounted
  read-only, the output folder mounted read-write, and the calling user's uid:gid so the
  files it writes belong to them.

docker is imported inside the functions that need it.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Sequence

from compiler.errors import CompilerUnavailableError

log = logging.getLogger(__name__)

EXECUTABLE = "edgetpu_compiler"
IMAGE = "edgetpu-fleet/compiler:16.0"
#: edgetpu_compiler exists only for x86-64.
PLATFORM = "linux/amd64"
#: Seconds added to the compiler's own ``-t`` before we stop waiting for the process.
GRACE_SEC = 60
#: Docker API version used only to check that an engine answers.
PROBE_API_VERSION = "1.41"
DEFAULT_TIMEOUT_SEC = 180

INSTALL_HINT = (
    "install Google's `edgetpu-compiler` Debian package (x86-64 Debian/Ubuntu only; see "
    "docs/compiler.md), or install docker and `pip install 'edgetpu-fleet[compiler]'` so "
    "edge-compile can build and use the compiler image"
)


@dataclass(frozen=True)
class CompileOptions:
    """The compiler's options that edge-compile passes through (None/False = its default)."""

    min_runtime_version: Optional[int] = None  # -m
    enable_multiple_subgraphs: bool = False  # -a
    search_delegate: bool = False  # -d
    delegate_search_step: Optional[int] = None  # -k
    num_segments: Optional[int] = None  # -n
    intermediate_tensors: Optional[str] = None  # -i
    timeout_sec: Optional[int] = None  # -t
    show_operations: bool = True  # -s (so the table is also in stdout)

    def to_args(self) -> List[str]:
        """Command-line arguments for ``edgetpu_compiler``."""
        args: List[str] = []
        if self.show_operations:
            args.append("-s")
        if self.min_runtime_version is not None:
            args += ["-m", str(self.min_runtime_version)]
        if self.enable_multiple_subgraphs:
            args.append("-a")
        if self.search_delegate:
            args.append("-d")
        if self.delegate_search_step is not None:
            args += ["-k", str(self.delegate_search_step)]
        if self.num_segments is not None:
            args += ["-n", str(self.num_segments)]
        if self.intermediate_tensors:
            args += ["-i", self.intermediate_tensors]
        if self.timeout_sec is not None:
            args += ["-t", str(self.timeout_sec)]
        return args


@dataclass
class RunResult:
    """What one run of the compiler printed and returned."""

    returncode: int
    output: str
    timed_out: bool = False
    path_map: Dict[str, str] = field(default_factory=dict)


class Backend(Protocol):
    """Something that can run ``edgetpu_compiler``."""

    name: str

    def version(self) -> str:
        """The compiler's version string (``16.0.384591198``)."""

    def run(self, models: Sequence[Path], out_dir: Path, args: Sequence[str], timeout: float) -> RunResult:
        """Compile ``models`` into ``out_dir`` with ``args``."""


def parse_version(text: str) -> str:
    """The version in ``Edge TPU Compiler version 16.0.384591198`` ("" when absent)."""
    m = re.search(r"Edge TPU Compiler version (\S+)", text)
    return m.group(1) if m else ""


class LocalCompiler:
    """``edgetpu_compiler`` installed on this machine."""

    name = "local"

    def __init__(self, executable: str) -> None:
        self.executable = executable

    def version(self) -> str:
        """Run ``edgetpu_compiler --version``."""
        return parse_version(self.run([], Path("."), ["--version"], 60).output)

    def run(self, models: Sequence[Path], out_dir: Path, args: Sequence[str], timeout: float) -> RunResult:
        """Run the binary; a process that outlives ``timeout`` seconds is killed."""
        cmd = [self.executable, *args]
        if models:
            cmd += ["-o", str(out_dir), *map(str, models)]
        log.debug("running %s", cmd)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return RunResult(-1, out + "\nCompilation timeout: the process was stopped", timed_out=True)
        except OSError as exc:
            raise CompilerUnavailableError(f"cannot run {self.executable}: {exc.strerror or exc}") from exc
        return RunResult(proc.returncode, proc.stdout + proc.stderr)


def copy_sources(dockerfile: Path) -> List[str]:
    """The build-context paths a Dockerfile's ``COPY`` lines name (globs expanded, ``--from`` skipped)."""
    root = dockerfile.parent
    lines = dockerfile.read_text().replace("\\\n", " ").splitlines()
    out: List[str] = []
    for line in lines:
        words = line.split()
        if not words or words[0].upper() != "COPY" or any(w.startswith("--from") for w in words):
            continue
        for pattern in [w for w in words[1:-1] if not w.startswith("--")]:
            out += sorted(str(p.relative_to(root)) for p in root.glob(pattern.rstrip("/")))
    return out


def _build_context(dockerfile: Path) -> io.BytesIO:
    """A tar build context: the Dockerfile and exactly the files its ``COPY`` lines name."""
    root = dockerfile.parent
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(dockerfile, arcname="Dockerfile")
        for name in copy_sources(dockerfile):
            tar.add(root / name, arcname=name, filter=lambda t: None if "__pycache__" in t.name else t)
    buf.seek(0)
    return buf


class DockerCompiler:
    """``edgetpu_compiler`` inside the image built from ``Dockerfile.compiler``."""

    name = "docker"

    def __init__(self, client: Any, dockerfile: Path, image: str = IMAGE) -> None:
        self.client = client
        self.dockerfile = dockerfile
        self.image = image

    def ensure_image(self) -> None:
        """Build the image from the Dockerfile when it is not present yet."""
        import docker

        try:
            self.client.images.get(self.image)
            return
        except docker.errors.ImageNotFound:
            pass
        if not self.dockerfile.is_file():
            raise CompilerUnavailableError(f"image {self.image} is missing and {self.dockerfile} not found")
        log.info("building %s from %s (first use only)", self.image, self.dockerfile)
        try:
            self.client.images.build(
                fileobj=_build_context(self.dockerfile),
                custom_context=True,
                tag=self.image,
                rm=True,
                platform=PLATFORM,
            )
        except (docker.errors.BuildError, docker.errors.APIError) as exc:
            raise CompilerUnavailableError(f"cannot build the compiler image {self.image}: {exc}") from exc

    def version(self) -> str:
        """Run ``edgetpu_compiler --version`` in the image."""
        return parse_version(self.run([], Path("."), ["--version"], 120).output)

    def run(self, models: Sequence[Path], out_dir: Path, args: Sequence[str], timeout: float) -> RunResult:
        """Run in a container; model folders mount at /in/N (read-only), ``out_dir`` at /out."""
        import docker
        import requests

        self.ensure_image()
        volumes: Dict[str, Dict[str, str]] = {}
        container_models = []
        path_map = {}
        for model in models:
            parent = str(Path(model).resolve().parent)
            if parent not in volumes:
                volumes[parent] = {"bind": f"/in/{len(volumes)}", "mode": "ro"}
            container_models.append(f"{volumes[parent]['bind']}/{Path(model).name}")
            path_map[container_models[-1]] = str(model)
        cmd = [EXECUTABLE, *args]
        if models:
            out_dir.mkdir(parents=True, exist_ok=True)
            volumes[str(out_dir.resolve())] = {"bind": "/out", "mode": "rw"}
            path_map["/out"] = str(out_dir)
            cmd += ["-o", "/out", *container_models]
        user = f"{os.getuid()}:{os.getgid()}" if hasattr(os, "getuid") else None
        try:
            container = self.client.containers.run(
                self.image,
                cmd,
                platform=PLATFORM,
                volumes=volumes,
                user=user,
                working_dir="/out" if models else None,
                detach=True,
            )
        except docker.errors.APIError as exc:
            raise CompilerUnavailableError(f"cannot start the compiler container: {exc}") from exc
        try:
            try:
                status = container.wait(timeout=timeout)
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
                # the container outlived the timeout
                container.kill()
                output = container.logs().decode("utf-8", "replace")
                return RunResult(
                    -1,
                    output + "\nCompilation timeout: the container was stopped",
                    timed_out=True,
                    path_map=path_map,
                )
            output = container.logs().decode("utf-8", "replace")
            return RunResult(int(status.get("StatusCode", 1)), output, path_map=path_map)
        finally:
            container.remove(force=True)


def find_backend(prefer: str = "auto", dockerfile: Optional[Path] = None) -> Backend:
    """The compiler to use: ``local`` (on PATH), ``docker``, or ``auto`` (local first).

    Raises:
        CompilerUnavailableError: the requested (or any) backend cannot be used, with what
            to install.
    """
    if prefer not in ("auto", "local", "docker"):
        raise CompilerUnavailableError(f"unknown backend {prefer!r}: choose auto, local or docker")
    if prefer in ("auto", "local"):
        exe = shutil.which(EXECUTABLE)
        if exe:
            return LocalCompiler(exe)
        if prefer == "local":
            raise CompilerUnavailableError(f"{EXECUTABLE} is not on PATH: {INSTALL_HINT}")
    why = _docker_unusable_reason()
    if why:
        raise CompilerUnavailableError(f"{EXECUTABLE} is not on PATH and {why}: {INSTALL_HINT}")
    import docker

    dockerfile = dockerfile or Path(__file__).resolve().parent.parent / "Dockerfile.compiler"
    return DockerCompiler(docker.from_env(), dockerfile)


def _docker_unusable_reason() -> str:
    """Why docker cannot be used here ("" when it can)."""
    try:
        import docker
        import requests
    except ImportError:
        return "the docker Python SDK is not installed"
    base_url = docker.utils.kwargs_from_env().get("base_url") or "unix:///var/run/docker.sock"
    socket_path = base_url.split("://", 1)[1] if base_url.startswith(("unix://", "http+unix://")) else ""
    start = " (the docker CLI is installed: start the engine, e.g. `sudo systemctl start docker` or Docker Desktop)"
    hint = start if shutil.which("docker") else ""
    if socket_path and not Path(socket_path).exists():
        return f"no docker engine is running (no socket at {socket_path}){hint}"
    client = None
    try:
        # A fixed API version: "auto" negotiates inside the constructor, before we could close it.
        client = docker.from_env(version=PROBE_API_VERSION)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"no docker engine is reachable ({first}){hint}"
    finally:
        if client is not None:
            client.close()
    return ""
