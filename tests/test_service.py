"""The agent as a process: SIGKILL loses nothing accepted, last will after a kill, clean SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List

import pytest
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber, classification_ids

from edge_agent.publishing.outbox import COMMIT_INTERVAL

HELPERS = Path(__file__).resolve().parent / "helpers"


class AgentProcess:
    """The synthetic agent in a child process; its ``produced`` ids are collected as they print."""

    def __init__(self, env: Dict[str, str], *args: str) -> None:
        self.produced: List[str] = []
        self.done = threading.Event()
        self._progress = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, str(HELPERS / "synthetic_agent.py"), *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._progress:
                if line.startswith("produced "):
                    self.produced.append(line.split()[1])
                elif line.strip() == "done":
                    self.done.set()
                self._progress.notify_all()

    def wait_produced(self, count: int, timeout: float = 60.0) -> None:
        with self._progress:
            assert self._progress.wait_for(
                lambda: len(self.produced) >= count or self.proc.poll() is not None, timeout
            ), "agent made no progress"
        assert len(self.produced) >= count, self.stderr()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.finish()

    def finish(self, timeout: float = 60.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(timeout)
        return code

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def agent_env(tmp_path: Path, mosquitto: Mosquitto) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    env.update(
        {
            "EDGE_AGENT_MQTT_URL": mosquitto.url,
            "EDGE_AGENT_DEVICE_ID": "cam1",
            "EDGE_AGENT_STATE_DIR": str(tmp_path / "state"),
            "EDGE_AGENT_MQTT_KEEPALIVE": "5",
            "EDGE_AGENT_MQTT_STATS_INTERVAL": "0",
            "PYTHONPATH": os.pathsep.join([str(HELPERS.parent.parent), env.get("PYTHONPATH", "")]),
        }
    )
    return env


@pytest.fixture
def agents() -> Iterator[List[AgentProcess]]:
    started: List[AgentProcess] = []
    yield started
    for agent in started:
        agent.close()


def start_agent(agents: List[AgentProcess], env: Dict[str, str], *args: str) -> AgentProcess:
    agent = AgentProcess(env, *args)
    agents.append(agent)
    return agent


def test_results_accepted_before_a_sigkill_arrive_after_restart(
    mosquitto: Mosquitto, agent_env: Dict[str, str], agents: List[AgentProcess]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    try:
        first = start_agent(agents, agent_env, "--count", "100000", "--interval", "0.002")
        first.wait_produced(100)
        mosquitto.stop()  # what follows can only survive in the outbox
        first.wait_produced(len(first.produced) + 200)
        produced = list(first.produced)
        # The outbox commits in groups: a result is on disk at most COMMIT_INTERVAL after it was
        # accepted. Every result accepted before this wait must survive the kill.
        time.sleep(10 * COMMIT_INTERVAL)
        first.kill()
        mosquitto.start()
        second = start_agent(agents, agent_env, "--count", "10")
        assert second.finish() == 0, second.stderr()
        produced += second.produced
        assert sub.wait_until(lambda s: set(classification_ids(s)) >= set(produced), timeout=120)
    finally:
        sub.close()
    assert len(set(produced)) == len(produced) >= 310


def test_last_will_offline_after_sigkill_and_retained_online_after_restart(
    mosquitto: Mosquitto, agent_env: Dict[str, str], agents: List[AgentProcess]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/status")
    try:
        first = start_agent(agents, agent_env, "--count", "1", "--hold")
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"online"]), first.stderr()
        first.kill()
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"offline"])
        start_agent(agents, agent_env, "--count", "1", "--hold")
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"online"])
    finally:
        sub.close()
    late = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/status")
    try:
        assert late.wait_until(lambda s: len(s.messages) >= 1)
        assert late.messages[0][1:] == (b"online", True)
    finally:
        late.close()


def test_sigterm_flushes_publishes_offline_and_exits_cleanly(
    mosquitto: Mosquitto, agent_env: Dict[str, str], agents: List[AgentProcess]
) -> None:
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/#")
    try:
        agent = start_agent(agents, agent_env, "--count", "50", "--hold")
        assert agent.done.wait(60), agent.stderr()
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.finish() == 0
        log = agent.stderr()
        assert sub.wait_until(lambda s: s.on("/status")[-1:] == [b"offline"])
        assert sub.wait_until(lambda s: set(classification_ids(s)) == set(agent.produced))
    finally:
        sub.close()
    assert "Traceback" not in log
    assert "received SIGTERM: stopping" in log and "0 messages left in the outbox" in log


def test_agent_starts_and_queues_when_the_broker_is_down(
    tmp_path: Path, agent_env: Dict[str, str], agents: List[AgentProcess]
) -> None:
    down = Mosquitto(tmp_path / "down").start()
    sub = Subscriber(down.host, down.port, "edgetpu/cam1/classification")  # persistent session
    down.stop()
    agent_env["EDGE_AGENT_MQTT_URL"] = down.url
    try:
        agent = start_agent(agents, agent_env, "--count", "30", "--hold")
        assert agent.done.wait(60), agent.stderr()
        down.start()
        assert sub.wait_until(lambda s: set(classification_ids(s)) == set(agent.produced))
        agent.proc.send_signal(signal.SIGTERM)
        assert agent.finish() == 0
        assert "unreachable" in agent.stderr()
    finally:
        sub.close()
        down.stop()
