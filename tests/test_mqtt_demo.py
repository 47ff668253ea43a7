"""`make demo` shows a result travel from the model to a subscriber, with a broker it starts itself."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from helpers.mosquitto import Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent


def listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def run_demo(port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py"), "--mqtt-port", str(port)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_demo_starts_a_broker_when_none_listens_and_stops_it_after() -> None:
    port = free_port()
    proc = run_demo(port)
    assert proc.returncode == 0, proc.stderr
    assert f"started Mosquitto on 127.0.0.1:{port}" in proc.stdout
    assert "20 messages on .../classification (20 distinct ids)" in proc.stdout
    assert '"schema": "edgetpu.classification/1"' in proc.stdout
    assert not listening(port), "the demo's broker is stopped when the demo ends"


def test_demo_uses_a_broker_that_is_already_listening(tmp_path: Path) -> None:
    with Mosquitto(tmp_path / "broker") as broker:
        proc = run_demo(broker.port)
        assert listening(broker.port)
    assert proc.returncode == 0, proc.stderr
    assert f"using the broker already listening on 127.0.0.1:{broker.port}" in proc.stdout
    assert "20 messages on .../classification (20 distinct ids)" in proc.stdout
