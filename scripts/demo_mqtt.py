"""The MQTT half of `make demo`: a broker on loopback (started when none is listening, stopped
after), the agent's publishing session, and a subscriber that shows what arrived."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.config import Config, MqttConfig
from edge_agent.publishing.session import PublishingSession, model_announcement


def listening(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


@contextmanager
def local_broker(port: int) -> Iterator[Optional[str]]:
    """Yield a note on where the broker came from; start Mosquitto on ``port`` when nothing listens."""
    if listening(port):
        yield f"using the broker already listening on 127.0.0.1:{port}"
        return
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        raise SystemExit(
            "demo: mosquitto is not installed (make demo installs it as root; or: sudo apt-get install mosquitto)"
        )
    proc = subprocess.Popen([binary, "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"demo: mosquitto could not listen on port {port}")
            time.sleep(0.05)
        yield f"started Mosquitto on 127.0.0.1:{port} (pid {proc.pid}); it stops when the demo ends"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class DemoSubscriber:
    """A subscriber to ``<prefix>/<device>/#`` that records what it receives."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: List[Tuple[str, bytes]] = []
        self._ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"demo-sub-{time.time_ns()}")
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, 1)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self._ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise SystemExit("demo: the subscriber could not subscribe")

    def wait_for(self, suffix: str, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for t, _ in self.messages if t.endswith(suffix)) < count and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def report(self, results: int) -> str:
        """What arrived, in words, with one classification payload in full."""
        self.wait_for("/classification", results)
        self.wait_for("/status", 2)
        lines = []
        for topic, payload in self.messages:
            if not topic.endswith("/classification"):
                lines.append(f"  {topic}  {payload.decode(errors='replace')}")
        results_in = [p for t, p in self.messages if t.endswith("/classification")]
        ids = {json.loads(p)["id"] for p in results_in}
        lines.insert(
            2 if len(lines) > 2 else len(lines),
            f"  {len(results_in)} messages on .../classification ({len(ids)} distinct ids)",
        )
        if results_in:
            sample = json.dumps(json.loads(results_in[-1]), indent=2)
            lines.append("one of them:\n" + "\n".join("  " + line for line in sample.splitlines()))
        return "\n".join(lines)


@contextmanager
def publishing(port: int, device_id: str, classifier: object) -> Iterator[Tuple[PublishingSession, DemoSubscriber]]:
    """A publishing session to the local broker (its outbox in a temporary directory) and a
    subscriber that was listening before the first result."""
    with tempfile.TemporaryDirectory(prefix="edge-agent-demo-") as state:
        config = Config(
            device_id=device_id,
            state_dir=Path(state),
            mqtt=MqttConfig(url=f"mqtt://127.0.0.1:{port}", stats_interval=60),
        )  # stats once, at the end
        sub = DemoSubscriber(port, f"{config.mqtt.topic_prefix}/{device_id}/#")
        model = model_announcement(classifier.model, classifier.runtime.backend)  # type: ignore[attr-defined]
        session = PublishingSession(config, model).start()
        try:
            yield session, sub
        finally:
            session.stop()
            frames = int(session.stats.snapshot()["frames"])
            print(f"\nMQTT: a subscriber to {config.mqtt.topic_prefix}/{device_id}/# received:")
            print(sub.report(frames))
            sub.close()


def mqtt_port(argv: List[str]) -> int:
    """``--mqtt-port N`` from the demo's arguments (default 1883)."""
    if "--mqtt-port" in argv:
        index = argv.index("--mqtt-port")
        if index + 1 < len(argv) and argv[index + 1].isdigit():
            return int(argv[index + 1])
        raise SystemExit("demo: --mqtt-port needs a port number")
    return 1883
