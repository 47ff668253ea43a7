"""Inputs beyond files: video streams over HTTP from a real local server, unreachable streams."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers.mosquitto import free_port
from PIL import Image

from edge_agent.cli import main
from edge_agent.errors import InputError
from edge_agent.inference.sources import open_source

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def video_server(tmp_path: Path):
    """A real HTTP server on loopback serving a short MJPG video of sample digits."""
    import cv2

    frames = [np.asarray(Image.open(ROOT / "images" / f"digit_{d}_0.png").convert("RGB")) for d in range(10)]
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter.fourcc(*"MJPG"), 10, (w, h))
    for rgb in frames:
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/clip.avi"
    finally:
        server.shutdown()
        server.server_close()


def test_http_stream_is_a_live_source_classified_frame_by_frame(video_server: str):
    source = open_source(video_server)
    assert source.live
    result = CliRunner().invoke(main, ["classify", "-i", video_server, "-n", "3", "-o", "jsonl"])
    assert result.exit_code == 0, result.stderr
    payloads = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(payloads) == 3
    assert all(p["source"] == video_server for p in payloads)


def test_unreachable_stream_is_one_clear_error():
    url = f"rtsp://127.0.0.1:{free_port()}/live"
    result = CliRunner().invoke(main, ["classify", "-i", url])
    assert result.exit_code == 1
    assert f"cannot open stream {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_stream_credentials_are_not_shown_in_source_names():
    source = open_source("rtsp://admin:secret@127.0.0.1:1/cam")
    assert source.name == "rtsp://127.0.0.1:1/cam"


def test_video_file_that_is_not_a_video_is_an_input_error(tmp_path: Path):
    bogus = tmp_path / "clip.mp4"
    bogus.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError):
        list(open_source(str(bogus)).frames())
