"""Cameras as they behave in the field, against real servers on loopback: GStreamer's RTSP server
and ffmpeg's multipart MJPEG over HTTP. Several at once, dropping and coming back, never
connecting, sending garbage, refusing credentials, in a codec nothing decodes."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, List

import pytest
from click.testing import CliRunner
from helpers.camera_servers import GarbageServer, MjpegServer, RtspServer, ffmpeg_available, rtsp_available
from helpers.mosquitto import Mosquitto, free_port
from helpers.subscriber import Subscriber

from edge_agent.cli import main
from edge_agent.config import load_config
from edge_agent.inference.classifier import Inferred
from edge_agent.inference.result import Classification
from edge_agent.inference.scheduler import SourceScheduler
from edge_agent.service import open_classifier, open_inputs

ROOT = Path(__file__).resolve().parent.parent
AGENT = [sys.executable, "-m", "edge_agent"]
FAST = ["--stall-timeout", "2", "--connect-timeout", "3"]

_rtsp_missing = rtsp_available()
_ffmpeg_missing = ffmpeg_available()
needs_rtsp = pytest.mark.skipif(_rtsp_missing is not None, reason=_rtsp_missing or "")
needs_ffmpeg = pytest.mark.skipif(_ffmpeg_missing is not None, reason=_ffmpeg_missing or "")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def rtsp() -> Iterator[Callable[..., RtspServer]]:
    """Starts RTSP servers (``rtsp(user=..., codec=...)``) and stops them all after the test."""
    started: List[RtspServer] = []

    def start(**kwargs: object) -> RtspServer:
        server = RtspServer(**kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def jsonl(stdout: str) -> List[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@needs_rtsp
@needs_ffmpeg
def test_two_rtsp_streams_and_an_mjpeg_camera_are_classified_in_one_run(rtsp: Callable[..., RtspServer]):
    first, second = rtsp(), rtsp(user="admin", password="s3cret")
    mjpeg = MjpegServer().start()
    try:
        secret_url = second.url.replace("rtsp://", "rtsp://admin:s3cret@")
        args = ["classify", "-i", f"front={first.url}", "-i", f"back={secret_url}", "-i", f"gate={mjpeg.url}"]
        result = CliRunner().invoke(main, [*args, *FAST, "-n", "150", "-o", "jsonl"])
    finally:
        mjpeg.stop()
    assert result.exit_code == 0, result.stderr
    payloads = jsonl(result.stdout)
    assert len(payloads) == 150
    assert {p["input"] for p in payloads} == {"front", "back", "gate"}
    assert "s3cret" not in result.stdout + result.stderr
    assert {p["source"] for p in payloads if p["input"] == "back"} == {second.url}


@needs_rtsp
def test_classify_count_survives_an_rtsp_server_that_goes_away_and_comes_back(
    rtsp: Callable[..., RtspServer], tmp_path: Path
):
    server = rtsp(fps=15)
    err_path = tmp_path / "stderr"
    # One thread reads every stdout line through one buffered reader: readline() followed by
    # communicate() would lose whatever readline() had buffered beyond the line it returned.
    lines: queue.Queue[str] = queue.Queue()
    with err_path.open("w") as err:
        proc = subprocess.Popen(
            [*AGENT, "-v", "classify", "-i", server.url, *FAST, "-n", "60", "-o", "jsonl"],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
        )
    stdout = proc.stdout
    assert stdout is not None

    def read_all() -> None:
        for line in stdout:
            lines.put(line)

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    try:
        for _ in range(10):  # results flow, then the camera reboots for 4 s
            assert lines.get(timeout=60).startswith("{")
        server.kill()
        time.sleep(4)
        server.start()
        proc.wait(timeout=60)
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        stdout.close()
    stderr = err_path.read_text()
    assert proc.returncode == 0, stderr
    assert len(jsonl("".join(lines.queue))) == 50
    assert "Traceback" not in stderr
    assert stderr.count("reconnecting") == 1  # logged once, not once per attempt
    assert "streaming again" in stderr


@needs_rtsp
def test_run_keeps_other_sources_going_while_one_is_down_and_reports_it(
    rtsp: Callable[..., RtspServer], tmp_path: Path
):
    healthy, flaky = rtsp(), rtsp()
    missing = f"rtsp://127.0.0.1:{free_port()}/cam"
    config = load_config(
        overrides={
            "inputs": [
                {"name": "a", "url": healthy.url},
                {"name": "b", "url": flaky.url},
                {"name": "c", "url": missing},
            ],
            "stall_timeout": 2.0,
            "connect_timeout": 2.0,
            "state_dir": tmp_path,
        }
    )
    results: List[Classification] = []
    stop = threading.Event()
    scheduler = SourceScheduler(
        open_classifier(config), open_inputs(config, keep_retrying=True), [results.append], stop=stop
    )
    runner = threading.Thread(target=scheduler.run, daemon=True)
    runner.start()
    try:
        wait_until(lambda: {r.input for r in results} >= {"a", "b"}, 30, "both live sources")
        flaky.kill()
        wait_until(lambda: scheduler.reports()["b"]["state"] == "reconnecting", 30, "b reconnecting")
        during = sum(r.input == "a" for r in results)
        wait_until(lambda: sum(r.input == "a" for r in results) > during + 10, 30, "a going on while b is down")
        flaky.start()
        wait_until(lambda: scheduler.reports()["b"]["state"] == "streaming", 30, "b back")
        back = sum(r.input == "b" for r in results)
        wait_until(lambda: sum(r.input == "b" for r in results) > back, 30, "results from b again")
        reports = scheduler.reports()
    finally:
        stop.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    assert reports["b"]["reconnects"] == 1
    assert reports["c"]["state"] == "failed"
    assert "connection refused" in reports["c"]["error"]
    assert reports["a"]["last_frame_age_s"] is not None


@needs_rtsp
def test_stream_that_never_connects_is_one_line_and_the_others_go_on(
    rtsp: Callable[..., RtspServer], caplog: pytest.LogCaptureFixture
):
    server = rtsp()
    missing = f"rtsp://127.0.0.1:{free_port()}/cam"
    result = CliRunner().invoke(
        main, ["classify", "-i", f"ok={server.url}", "-i", f"gone={missing}", *FAST, "-n", "10", "-o", "jsonl"]
    )
    assert result.exit_code == 1
    assert len(jsonl(result.stdout)) == 10
    assert result.stderr.strip() == "Error: input(s) failed: gone (see the errors above)"
    errors = [r.getMessage() for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert len(errors) == 1 and errors[0].startswith("input gone: cannot open stream rtsp://")
    assert "connection refused" in errors[0]


@pytest.mark.parametrize(
    "make_url, reason",
    [
        (lambda s: f"rtsp://127.0.0.1:{free_port()}/cam", "connection refused"),
        (lambda s: f"http://127.0.0.1:{s.port}/cam.mjpg", "not RTSP or HTTP (garbage"),
    ],
    ids=["unreachable", "garbage"],
)
def test_bad_stream_alone_is_one_clear_error(make_url: Callable[[GarbageServer], str], reason: str):
    garbage = GarbageServer().start()
    try:
        result = CliRunner().invoke(main, ["classify", "-i", make_url(garbage), *FAST])
    finally:
        garbage.stop()
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], result.stderr


@needs_rtsp
def test_wrong_rtsp_credentials_are_named_without_showing_them(rtsp: Callable[..., RtspServer]):
    server = rtsp(user="admin", password="right")
    url = server.url.replace("rtsp://", "rtsp://admin:wrong-pw@")
    result = CliRunner().invoke(main, ["classify", "-i", url, *FAST])
    assert result.exit_code == 1
    assert "refused the credentials (401)" in result.stderr
    assert "wrong-pw" not in result.stderr


@needs_rtsp
def test_stream_in_a_codec_that_cannot_be_decoded_is_one_line(rtsp: Callable[..., RtspServer]):
    server = rtsp(codec="gst")
    result = CliRunner().invoke(main, ["classify", "-i", server.url, *FAST])
    assert result.exit_code == 1
    assert "cannot be decoded" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_two_sources_with_the_same_name_are_a_usage_error():
    result = CliRunner().invoke(main, ["classify", "-i", "cam=images/digit_1_0.png", "-i", "cam=images/digit_2_0.png"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "Error: two inputs are named 'cam' (inputs 1 and 2): names must differ"


def test_sources_are_served_in_turn_so_a_long_one_cannot_starve_a_short_one():
    config = load_config(
        overrides={
            "inputs": [{"name": "many", "url": str(ROOT / "images")}, {"name": "few", "url": "images/digit_*_1.png"}]
        }
    )
    results: List[Classification] = []
    classifier = open_classifier(config)
    infer = classifier.infer

    def slow_infer(*args: Any) -> Inferred:  # inference is the bottleneck, as with many cameras
        time.sleep(0.02)
        return infer(*args)

    classifier.infer = slow_infer  # type: ignore[method-assign,assignment]
    SourceScheduler(classifier, open_inputs(config), [results.append]).run()
    order = [r.input for r in results]
    assert all(a != b for a, b in zip(order[1:19], order[2:19]))  # in turn while both have frames waiting
    assert order.count("many") == 20 and order.count("few") == 10


@needs_rtsp
def test_run_config_with_inputs_publishes_named_results_per_source_stats_and_a_sensor_per_source(
    rtsp: Callable[..., RtspServer], mosquitto: Mosquitto, tmp_path: Path
):
    server = rtsp()
    missing = f"rtsp://127.0.0.1:{free_port()}/cam"
    config = tmp_path / "agent.toml"
    config.write_text(
        f"""device_id = "cam1"
state_dir = "{tmp_path / "state"}"
stall_timeout = 2
connect_timeout = 2
[mqtt]
url = "{mosquitto.url}"
stats_interval = 1
ha_discovery = true
[[inputs]]
name = "front"
url = "{server.url.replace("rtsp://", "rtsp://admin:hunter2@")}"
max_fps = 5
crop = "0,0,48,48"
[[inputs]]
name = "yard"
url = "{missing}"
transport = "udp"
"""
    )
    sub = Subscriber(mosquitto.host, mosquitto.port, "#")
    proc = subprocess.Popen([*AGENT, "run", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert sub.wait_until(lambda s: len(s.json_on("edgetpu/cam1/classification")) >= 5)
        assert sub.wait_until(lambda s: any(p["inputs"]["front"]["fps"] > 0 for p in s.json_on("/stats")))
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sub.close()
    assert proc.returncode == 0, stderr
    results = sub.json_on("edgetpu/cam1/classification")
    assert {r["input"] for r in results} == {"front"}
    stats = sub.json_on("/stats")[-1]["inputs"]
    assert stats["yard"]["state"] == "failed" and "connection refused" in stats["yard"]["error"]
    assert stats["front"]["state"] == "streaming" and stats["front"]["dropped_frames"] >= 0
    discovery = [t for t, _, _ in sub.messages if t.startswith("homeassistant/")]
    assert "homeassistant/sensor/edgetpu_cam1/input_front_state/config" in discovery
    assert "homeassistant/sensor/edgetpu_cam1/input_yard_fps/config" in discovery
    everything = b"".join(payload for _, payload, _ in sub.messages) + stderr
    assert b"hunter2" not in everything
    assert stderr.decode().count("yard") == 1  # the failing source is logged once, not once per retry


@needs_rtsp
def test_rtsp_over_udp_is_classified(rtsp: Callable[..., RtspServer]):
    server = rtsp()
    result = CliRunner().invoke(
        main, ["classify", "-i", server.url, "--rtsp-transport", "udp", *FAST, "-n", "5", "-o", "jsonl"]
    )
    assert result.exit_code == 0, result.stderr
    assert [p["input"] for p in jsonl(result.stdout)] == [server.url] * 5
