"""Hostile conditions for the outbox and its workers: a full disk, a worker that fails, a foreign
outbox file, two agents on one state directory, and exact drop accounting."""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest
from click.testing import CliRunner
from helpers.mosquitto import Mosquitto
from helpers.subscriber import Subscriber

from edge_agent.cli import main
from edge_agent.config import MqttConfig
from edge_agent.errors import ConfigError
from edge_agent.publishing.broker import Backoff
from edge_agent.publishing.client import MqttPublisher
from edge_agent.publishing.outbox import Outbox
from edge_agent.publishing.supervise import supervised


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def fill_disk(box: Outbox) -> None:
    """Make the outbox's database refuse to grow, as a full disk does (SQLite's max_page_count)."""
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count = {pages}")


def free_disk(box: Outbox) -> None:
    box._db.execute("PRAGMA max_page_count = 1073741823")


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "state" / "outbox.sqlite")
    yield box
    box.close()


def test_full_disk_keeps_publishing_and_the_outbox_recovers_when_space_returns(
    mosquitto: Mosquitto, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sub = Subscriber(mosquitto.host, mosquitto.port, "edgetpu/cam1/classification")
    publisher = MqttPublisher(MqttConfig(url=mosquitto.url, keepalive=5), "cam1", outbox, backoff=Backoff(0.1, 0.5))
    publisher.start()
    try:
        mosquitto.stop()  # results must now wait on the disk, which is full
        assert wait_for(lambda: not publisher.connected)
        fill_disk(outbox)
        for i in range(300):
            publisher.enqueue(publisher.topics.classification, f'{{"frame": {i}}}'.encode())
            time.sleep(0.001)
        assert wait_for(lambda: outbox.failing is not None), "the committer noticed the full disk"
        mosquitto.start()
        assert sub.wait_until(lambda s: len(s.on("/classification")) >= 300), "sent from memory meanwhile"
        free_disk(outbox)
        assert wait_for(lambda: outbox.failing is None, 10), "writes resume when space returns"
        publisher.enqueue(publisher.topics.classification, b'{"frame": 300}')
        assert sub.wait_until(lambda s: len(s.on("/classification")) >= 301)
        assert wait_for(lambda: len(outbox) == 0)
    finally:
        publisher.stop()
        sub.close()
    errors = [r.getMessage() for r in caplog.records if "cannot write to the outbox" in r.getMessage()]
    assert len(errors) == 1, "one line per failure streak, naming the real cause"
    assert "full" in errors[0] and "rollback" not in errors[0]
    assert any("takes writes again" in r.getMessage() for r in caplog.records)
    assert outbox.dropped == 0


def test_a_worker_that_fails_is_logged_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    calls: List[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database or disk is full")

    run = supervised("test", flaky, threading.Event(), backoff=Backoff(0.01, 0.02))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and len(calls) == 3
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert lines == ["the test thread failed (OperationalError('database or disk is full')); restarting it"] * 2


def test_a_worker_that_keeps_failing_is_reported_once_and_ends() -> None:
    fatal: List[str] = []

    def broken() -> None:
        raise RuntimeError("boom")

    run = supervised("test", broken, threading.Event(), fatal.append, max_failures=3, backoff=Backoff(0.01, 0.02))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert fatal == ["the test thread failed 4 times in 60 s, last: RuntimeError('boom')"]


def test_an_outbox_file_with_another_schema_is_one_line_and_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    db = sqlite3.connect(str(state / "outbox.sqlite"))
    db.execute("CREATE TABLE outbox (id INTEGER PRIMARY KEY, body TEXT)")
    db.commit()
    db.close()
    with pytest.raises(ConfigError, match="is not an edge-agent outbox"):
        Outbox(state / "outbox.sqlite")
    out = CliRunner().invoke(main, ["classify", "--mqtt", "mqtt://127.0.0.1:1", "--state-dir", str(state)])
    assert out.exit_code == 2, out.output
    assert "is not an edge-agent outbox" in out.output and "Traceback" not in out.output
    assert len([line for line in out.output.splitlines() if line.startswith("Error")]) == 1


def test_a_second_agent_on_the_same_state_directory_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "outbox.sqlite"
    holder = textwrap.dedent(f"""
        import time
        from edge_agent.publishing.outbox import Outbox
        box = Outbox({str(path)!r})
        print("open", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
        with pytest.raises(ConfigError, match=f"in use by another edge-agent \\(pid {proc.pid}\\)"):
            Outbox(path)
        out = CliRunner().invoke(main, ["classify", "--mqtt", "mqtt://127.0.0.1:1", "--state-dir", str(path.parent)])
        assert out.exit_code == 2 and "run one agent per state directory" in out.output
    finally:
        proc.kill()
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    with Outbox(path) as box:  # the lock dies with its holder
        assert len(box) == 0


def test_dropped_counter_counts_exactly_the_results_that_were_dropped(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, max_messages=10) as box:
        for i in range(25):
            box.stage("t", str(i).encode())
        box.commit()
        assert (len(box), box.dropped) == (10, 15)
        box.put("t", b"25")
        assert box.dropped == 16
        assert [m.payload for m in box.peek()] == [str(i).encode() for i in range(16, 26)]
    with Outbox(path, max_messages=4) as box:  # a smaller bound after a restart
        box.put("t", b"26")
        assert (len(box), box.dropped) == (4, 16 + 7)
        assert [m.payload for m in box.peek()] == [b"23", b"24", b"25", b"26"]
