"""Real camera servers on loopback for the tests: GStreamer's RTSP server and ffmpeg's HTTP MJPEG.

:class:`RtspServer` runs tests/helpers/gst_rtsp_server.py under the system python3 (python3-gi
is a Debian package, not in the virtualenv); :class:`MjpegServer` runs ``ffmpeg -listen 1``
serving multipart JPEG (``-f mpjpeg``) as cheap IP cameras do. Both start on a port given or
free, wait at most ``START_TIMEOUT`` seconds until they listen, and stop by PID (terminate,
then kill). :class:`GarbageServer` answers every connection with random bytes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import List, Optional

from helpers.mosquitto import free_port

SYSTEM_PYTHON = "/usr/bin/python3"
GST_SCRIPT = Path(__file__).resolve().parent / "gst_rtsp_server.py"
START_TIMEOUT = 15.0


def rtsp_available() -> Optional[str]:
    """None when the GStreamer RTSP server can run here, else why not."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    probe = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    if probe.returncode != 0:
        return "GStreamer RTSP server missing (apt-get install gir1.2-gst-rtsp-server-1.0 python3-gi)"
    return None


def ffmpeg_available() -> Optional[str]:
    """None when ffmpeg is installed, else why not."""
    return None if shutil.which("ffmpeg") else "ffmpeg missing (apt-get install ffmpeg)"


def is_listening(port: int) -> bool:
    """Whether a socket listens on loopback ``port``, read from /proc/net/tcp without connecting
    (ffmpeg's ``-listen 1`` serves the first client that connects, and only that one)."""
    wanted = f"0100007F:{port:04X}"
    try:
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(row.split()[1] == wanted and row.split()[3] == "0A" for row in rows)


def _wait_listening(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if is_listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {START_TIMEOUT} s")


class _Process:
    proc: Optional[subprocess.Popen] = None

    def stop(self) -> None:
        """Terminate, then kill after 5 s; safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: the server vanishes as a rebooting camera does."""
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.kill()
            proc.wait(timeout=5)


class RtspServer(_Process):
    """``rtsp://127.0.0.1:<port>/cam``: a live test pattern (see gst_rtsp_server.py for the options)."""

    def __init__(
        self, port: Optional[int] = None, fps: int = 15, codec: str = "jpeg", user: str = "", password: str = ""
    ):
        self.port = port or free_port()
        self.args = ["--port", str(self.port), "--fps", str(fps), "--codec", codec]
        if user:
            self.args += ["--user", user, "--password", password]

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/cam"

    def start(self) -> RtspServer:
        """Start it and wait until it listens (at most START_TIMEOUT s)."""
        self.proc = subprocess.Popen(
            [SYSTEM_PYTHON, str(GST_SCRIPT), *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_listening(self.port, self.proc, "the RTSP server")
        return self


class MjpegServer(_Process):
    """``http://127.0.0.1:<port>/cam.mjpg``: multipart JPEG of ffmpeg's test pattern, one client."""

    def __init__(self, port: Optional[int] = None, fps: int = 15):
        self.port = port or free_port()
        self.fps = fps

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/cam.mjpg"

    def start(self) -> MjpegServer:
        """Start ffmpeg and wait until it listens (at most START_TIMEOUT s)."""
        cmd: List[str] = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-f", "lavfi"]
        cmd += ["-i", f"testsrc=size=96x96:rate={self.fps}", "-c:v", "mjpeg", "-q:v", "5"]
        cmd += ["-f", "mpjpeg", "-listen", "1", f"http://127.0.0.1:{self.port}/cam.mjpg"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_listening(self.port, self.proc, "ffmpeg's HTTP server")
        return self


class GarbageServer:
    """A TCP server on loopback that answers each connection with random bytes, then closes it."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(1.0)
                    conn.sendall(os.urandom(65536))
                except OSError:
                    pass

    def start(self) -> GarbageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()
