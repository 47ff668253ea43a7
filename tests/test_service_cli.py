"""`edge-agent run` and `edge-agent classify --mqtt` on the bundled model, against a real broker."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Set

import cv2
import pytest
from click.testing import CliRunner
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber
from jsonschema import Draft202012Validator

from edge_agent.cli import main

ROOT = Path(__file__).resolve().parent.parent
AGENT = Path(sys.executable).parent / "edge-agent"
SCHEMA = json.loads((ROOT / "edge_agent" / "schemas" / "classification.schema.json").read_text())


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3000-frame MJPEG video cycling through the sample digits: a long, ordered input."""
    path = tmp_path_factory.mktemp("video") / "digits.avi"
    images = [cv2.imread(str(p)) for p in sorted((ROOT / "images").glob("*.png"))]
    frames = [cv2.resize(image, (64, 64)) for image in images if image is not None]
    assert len(frames) == 20
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (64, 64))
    for i in range(3000):
        writer.write(frames[i % len(frames)])
    writer.release()
    assert path.stat().st_size > 0
    return path


@pytest.fixture
def env(tmp_path: Path, mosquitto: Mosquitto) -> Dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    out.update(
        {
            "EDGE_AGENT_MQTT_URL": mosquitto.url,
            "EDGE_AGENT_DEVICE_ID": "cam1",
            "EDGE_AGENT_STATE_DIR": str(tmp_path / "state"),
            "EDGE_AGENT_MQTT_STATS_INTERVAL": "0",
        }
    )
    return out


@pytest.fixture
def procs() -> Iterator[List[subprocess.Popen]]:
    started: List[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def agent(procs: List[subprocess.Popen], env: Dict[str, str], *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(AGENT), "-v", "run", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    procs.append(proc)
    return proc


def frames_from(sub: Subscriber, source_suffix: str) -> Dict[str, int]:
    """id -> frame number of received results whose source ends with ``source_suffix``."""
    return {p["id"]: p["frame"] for p in sub.json_on("/classification") if p["source"].endswith(source_suffix)}


def outbox_rows(state_dir: Path) -> Dict[str, int]:
    db = sqlite3.connect(str(state_dir / "outbox.sqlite"))
    try:
        payloads = [json.loads(p) for (p,) in db.execute("SELECT payload FROM outbox")]
    finally:
        db.close()
    return {p["id"]: p["frame"] for p in payloads}


def test_run_killed_mid_run_delivers_everything_it_produced_after_restart(
    mosquitto: Mosquitto, env: Dict[str, str], clip: Path, tmp_path: Path, procs: List[subprocess.Popen]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    try:
        first = agent(procs, env, "-i", str(clip), "--max-fps", "200")
        assert sub.wait_until(lambda s: len(frames_from(s, "digits.avi")) >= 50)
        mosquitto.stop()
        state = tmp_path / "state"
        assert sub.wait_until(lambda s: len(outbox_rows(state)) >= 100, timeout=60)  # polls the outbox file
        first.send_signal(signal.SIGKILL)
        first.wait()
        pending = outbox_rows(state)
        mosquitto.start()
        second = agent(procs, env)  # the bundled sample images: 20 frames, then a clean exit
        assert second.wait(timeout=120) == 0
        assert sub.wait_until(
            lambda s: set(frames_from(s, "digits.avi")) >= set(pending) and len(frames_from(s, ".png")) == 20
        )
    finally:
        sub.close()
    received = frames_from(sub, "digits.avi")
    produced_frames: Set[int] = set(received.values()) | set(pending.values())
    assert produced_frames == set(range(max(produced_frames) + 1)), "no gap: every frame before the kill arrived"
    assert len(pending) >= 100, "the kill left results that only the outbox had"


def test_run_last_will_after_sigkill_then_retained_online_after_restart(
    mosquitto: Mosquitto, env: Dict[str, str], clip: Path, procs: List[subprocess.Popen]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/status")
    try:
        first = agent(procs, env, "-i", str(clip), "--max-fps", "20")
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"online"])
        first.send_signal(signal.SIGKILL)
        first.wait()
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"offline"])
        agent(procs, env, "-i", str(clip), "--max-fps", "20")
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"online"])
    finally:
        sub.close()
    late = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/+")
    try:
        assert late.wait_until(lambda s: len(s.on("/status")) >= 1 and len(s.on("/model")) >= 1)
        assert (late.on("/status")[0], json.loads(late.on("/model")[0])["name"]) == (b"online", "digits_int8")
    finally:
        late.close()


def test_run_stops_cleanly_on_sigterm(
    mosquitto: Mosquitto, env: Dict[str, str], clip: Path, tmp_path: Path, procs: List[subprocess.Popen]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/#")
    try:
        proc = agent(procs, env, "-i", str(clip), "--max-fps", "100")
        assert sub.wait_until(lambda s: len(frames_from(s, "digits.avi")) >= 20)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"offline"])
    finally:
        sub.close()
    assert outbox_rows(tmp_path / "state") == {}, "flushed before exiting"
    frames = sorted(frames_from(sub, "digits.avi").values())
    assert frames == list(range(len(frames)))


def test_classify_publishes_schema_valid_results_for_the_sample_images(mosquitto: Mosquitto, tmp_path: Path) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/#")
    try:
        result = CliRunner().invoke(
            main,
            [
                "classify",
                "--mqtt",
                mosquitto.url,
                "--device-id",
                "bench1",
                "-o",
                "none",
                "--state-dir",
                str(tmp_path / "s"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert sub.wait_until(lambda s: len(s.on("/classification")) >= 20 and s.on("/status")[-1:] == [b"offline"])
    finally:
        sub.close()
    payloads = sub.json_on("/classification")
    validator = Draft202012Validator(SCHEMA)
    for payload in payloads:
        validator.validate(payload)
    assert {p["device"] for p in payloads} == {"bench1"} and len(payloads) == 20
    assert json.loads(sub.on("/model")[0])["backend"] == "cpu"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--mqtt", "mqtt://broker:notaport"], "port"),
        (["--mqtt", "tcp:/x"], "no host"),
        (["--mqtt", "mqtt://h", "--mqtt-protocol", "4"], "Invalid value for '--mqtt-protocol'"),
        (["--mqtt", "mqtts://h", "--mqtt-ca", "/nonexistent/ca.pem"], "mqtt.ca_file: no such file"),
    ],
)
def test_bad_mqtt_options_give_one_clear_line(args: List[str], message: str) -> None:
    result = CliRunner().invoke(main, ["classify", *args])
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_wrong_password_stops_classify_with_one_line(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwd), "agent", "right"], check=True)
    with Mosquitto(tmp_path / "b", extra_config=[f"password_file {passwd}", "allow_anonymous false"]) as broker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
        env["EDGE_AGENT_MQTT_PASSWORD"] = "wrong"
        proc = subprocess.run(
            [
                str(AGENT),
                "classify",
                "--mqtt",
                broker.url,
                "--mqtt-user",
                "agent",
                "-o",
                "none",
                "--state-dir",
                str(tmp_path / "s"),
            ],
            env=env,
            capture_output=True,
            text=True,
        )
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "refused the login" in errors[0] and "wrong" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_run_takes_the_file_then_the_environment_then_flags(
    mosquitto: Mosquitto, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(
        f'device_id = "from-file"\ntop_k = 2\n[mqtt]\nurl = "{mosquitto.url}"\n'
        f'topic_prefix = "farm"\nqos = 0\nstats_interval = 0\n'
    )
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "from-env")
    monkeypatch.setenv("EDGE_AGENT_MQTT_QOS", "1")
    monkeypatch.setenv("EDGE_AGENT_STATE_DIR", str(tmp_path / "state"))
    sub = Subscriber(mosquitto.host, mosquitto.port, "farm/#")
    try:
        result = CliRunner().invoke(main, ["run", "--config", str(config), "--device-id", "from-flag"])
        assert result.exit_code == 0, result.output
        assert sub.wait_until(lambda s: len(s.on("/classification")) == 20 and s.on("/status")[-1:] == [b"offline"])
    finally:
        sub.close()
    topics = {t for t, _p, _r in sub.messages}
    assert topics == {"farm/from-flag/classification", "farm/from-flag/status", "farm/from-flag/model"}
    payloads = sub.json_on("/classification")
    assert {p["device"] for p in payloads} == {"from-flag"} and {len(p["top_k"]) for p in payloads} == {2}


def test_run_with_a_bad_config_value_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('[mqtt]\nurl = "mqtt://localhost"\nqos = 5\n')
    result = CliRunner().invoke(main, ["run", "--config", str(config)])
    assert result.exit_code == 2 and "mqtt.qos must be 0, 1 or 2, got 5" in result.output
