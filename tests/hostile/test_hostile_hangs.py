"""Item 7: no step hangs forever: FIFOs are refused, stores and servers get deadlines, SIGTERM is honoured in time."""

from __future__ import annotations

import configparser
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest
from helpers.hostile_release import LABELS, MODEL, Device, Signer

from edge_agent.updating.updater import CLOSE_TIMEOUT_S
from release_contract.deadlines import DeadlineReader, call_with_deadline
from release_contract.errors import DownloadError, StoreError
from release_contract.manifest import FileEntry
from release_contract.stores import LocalSource, OciSource

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(120)


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def test_fifo_as_release_envelope_in_a_local_store_is_refused(tmp_path: Path) -> None:
    fifo(tmp_path / "store" / "digits" / "3" / "release.json")
    with pytest.raises(StoreError, match="not a regular file"):
        LocalSource(tmp_path / "store").fetch_envelope("digits", "3")


def test_fifo_as_release_file_fails_the_update_with_one_reason(tmp_path: Path) -> None:
    signer = Signer(tmp_path / "keys")
    store = tmp_path / "store"
    signer.release(
        store, "3", {"model.tflite": MODEL, "labels.txt": LABELS}, {"cpu_model": "model.tflite", "labels": "labels.txt"}
    )
    (store / "digits" / "3" / "model.tflite").unlink()
    fifo(store / "digits" / "3" / "model.tflite")
    final = Device(tmp_path / "state", signer).install(signer.command("3", str(store)))
    assert final["state"] == "failed"
    assert "not a regular file" in final["reason"] and "\n" not in final["reason"]


def test_read_from_a_store_that_stops_answering_times_out() -> None:
    read_end, write_end = os.pipe()  # nothing is ever written: a read blocks like one on a hung mount
    try:
        reader = DeadlineReader(os.fdopen(read_end, "rb"), 0.2, "store: model.tflite")
        with pytest.raises(TimeoutError, match="no data for 0.2 s"):
            reader.read(10)
        reader.close()
    finally:
        os.close(write_end)


def test_open_on_a_store_that_stops_answering_times_out() -> None:
    never = threading.Event()
    with pytest.raises(TimeoutError, match="did not answer within 0.2 s"):
        call_with_deadline(never.wait, 0.2, "the store /mnt/nfs")
    never.set()


def test_updater_close_returns_while_a_command_hangs_and_fits_the_unit_stop_timeout(tmp_path: Path) -> None:
    unit = configparser.ConfigParser(strict=False)
    unit.read(ROOT / "deploy" / "edge-agent.service")
    assert CLOSE_TIMEOUT_S < float(unit["Service"]["TimeoutStopSec"])
    signer = Signer(tmp_path / "keys")
    store = tmp_path / "store"
    signer.release(
        store, "3", {"model.tflite": MODEL, "labels.txt": LABELS}, {"cpu_model": "model.tflite", "labels": "labels.txt"}
    )
    stuck, release = threading.Event(), threading.Event()

    def on_step(step: str) -> None:
        if step == "download":
            stuck.set()
            release.wait()  # a download that never returns

    device = Device(tmp_path / "state", signer, on_step=on_step)
    device.updater.start()
    device.updater.handle_command(signer.command("3", str(store)))
    assert stuck.wait(30)
    device.updater.close(timeout=0.5)
    worker_threads = [t for t in threading.enumerate() if t.name == "updater-dev-1"]
    assert worker_threads and all(t.daemon for t in worker_threads)
    release.set()


class Drip(BaseHTTPRequestHandler):
    """An OCI registry that sends its manifest (or the envelope blob) one byte at a time."""

    drip_blob = False

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.endswith("/manifests/3") and self.drip_blob:
            body = json.dumps(
                {
                    "layers": [
                        {
                            "digest": "sha256:" + "a" * 64,
                            "annotations": {"org.opencontainers.image.title": "release.json"},
                        }
                    ]
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Length", "100000")
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            return

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(params=[False, True], ids=["oci-manifest", "envelope-blob"])
def drip_server(request: pytest.FixtureRequest) -> Iterator[str]:
    handler = type("Handler", (Drip,), {"drip_blob": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"oci://127.0.0.1:{server.server_address[1]}/models"
    server.shutdown()
    server.server_close()


def test_server_dripping_one_byte_at_a_time_is_cut_off_by_an_overall_deadline(drip_server: str) -> None:
    # each byte arrives well within the 1 s read timeout; only an overall deadline stops it
    with pytest.raises(DownloadError, match="too slow"):
        OciSource(drip_server, timeout=1.0).fetch_envelope("digits", "3")


def test_local_store_file_reads_are_bounded_streams(tmp_path: Path) -> None:
    folder = tmp_path / "store" / "digits" / "3"
    folder.mkdir(parents=True)
    (folder / "labels.txt").write_bytes(LABELS)
    stream, start = LocalSource(tmp_path / "store").open(
        "digits", "3", FileEntry("labels.txt", len(LABELS), "0" * 64), 5
    )
    with stream:
        assert start == 5 and stream.read() == LABELS[5:]


@pytest.mark.parametrize("flag", ["-i", "-l", "-m", "glob"])
def test_classify_refuses_a_fifo_with_one_line(tmp_path: Path, flag: str) -> None:
    image = ROOT / "images" / "digit_7_0.png"
    args = ["-i", str(image)]
    if flag == "-i":
        args = ["-i", str(fifo(tmp_path / "pipe.png"))]
    elif flag == "-l":
        args += ["-l", str(fifo(tmp_path / "labels.txt"))]
    elif flag == "-m":
        args += ["-m", str(fifo(tmp_path / "model.tflite"))]
    else:
        (tmp_path / "a.png").write_bytes(image.read_bytes())
        fifo(tmp_path / "b.png")
        args = ["-i", str(tmp_path / "*.png")]
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "classify", *args, "-o", "none"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    problem = [line for line in proc.stderr.splitlines() if "not a regular file" in line]
    assert len(problem) == 1, proc.stderr
