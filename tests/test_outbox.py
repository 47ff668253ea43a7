"""The durable outbox: FIFO order, deletion on acknowledgement, size bound, crash survival."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError
from edge_agent.publishing.outbox import COMMIT_INTERVAL, Outbox


def test_messages_come_out_in_the_order_they_were_added(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        seqs = [box.put("t", f"m{i}".encode()) for i in range(5)]
        assert [m.payload for m in box.peek()] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
        assert [m.seq for m in box.peek(after_seq=seqs[2])] == seqs[3:]
        assert len(box.peek(limit=2)) == 2


def test_acknowledged_messages_are_deleted_and_others_kept(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        seqs = [box.put("t", b"x", qos=1) for _ in range(4)]
        assert box.delete([seqs[0], seqs[2], 999]) == 2
        assert [m.seq for m in box.peek()] == [seqs[1], seqs[3]]
        assert len(box) == 2


def test_full_outbox_drops_oldest_first_and_counts_them_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path, max_messages=3) as box:
        for i in range(5):
            box.put("t", str(i).encode())
        assert [m.payload for m in box.peek()] == [b"2", b"3", b"4"]
        assert box.dropped == 2
    with Outbox(path, max_messages=3) as box:
        assert len(box) == 3
        box.put("t", b"5")
        assert [m.payload for m in box.peek()] == [b"3", b"4", b"5"]
        assert box.dropped == 3


def test_committed_messages_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    writer = textwrap.dedent(f"""
        import sys, time
        from edge_agent.publishing.outbox import Outbox
        box = Outbox({str(path)!r})
        for i in range(200):
            box.put("t", str(i).encode())
        print("written", flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "written"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with Outbox(path) as box:
        assert [m.payload for m in box.peek(limit=1000)] == [str(i).encode() for i in range(200)]


def test_unusable_outbox_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="cannot open the outbox"):
        Outbox(blocker / "o.sqlite")
    with pytest.raises(ConfigError, match="max_messages"):
        Outbox(tmp_path / "o.sqlite", max_messages=0)


def test_checkpoints_keep_the_log_small_while_writing_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    wal = tmp_path / "o.sqlite-wal"
    with Outbox(path) as box:
        for i in range(3000):
            box.put("t", b"x" * 600)
            if i % 100 == 99:
                box.delete(m.seq for m in box.peek(limit=100))
                box.checkpoint()
        assert wal.stat().st_size < 2 * 1024 * 1024
        assert len(box) == 0
    assert not wal.exists() or wal.stat().st_size == 0, "closing empties the log"


def test_messages_acknowledged_soon_after_they_are_staged_are_never_written(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        previous = None
        for i in range(200):  # a steady stream: each message is acknowledged when the next is staged
            staged = box.stage("t", str(i).encode())
            if previous is not None:
                box.discard([previous.seq])
            previous = staged
            time.sleep(0.001)
        assert previous is not None
        box.discard([previous.seq])
        time.sleep(4 * COMMIT_INTERVAL)
        assert len(box) == 0
        # none or one on an idle machine, up to 8 with six CPU-bound processes sharing two cores
        assert box.written <= 50, "only messages whose acknowledgement a busy machine delays past the window"


def test_an_unacknowledged_message_is_committed_within_the_window_without_waiting_for_others(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with Outbox(path) as box:
        box.stage("t", b"kept")
        deadline = time.monotonic() + 5
        while box.written == 0 and time.monotonic() < deadline:
            time.sleep(COMMIT_INTERVAL / 5)
        reader = sqlite3.connect(str(path))
        try:
            assert reader.execute("SELECT payload FROM outbox").fetchall() == [(b"kept",)]
        finally:
            reader.close()
        assert box.written == 1


def test_the_committer_runs_before_commit_first_and_what_it_acknowledges_is_not_written(tmp_path: Path) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:
        calls = []
        staged = box.stage("t", b"acked at the last moment")

        def read_acknowledgements() -> None:  # as the publisher does: the PUBACK was in the socket
            calls.append(time.monotonic())
            box.discard([staged.seq])

        box.before_commit = read_acknowledgements
        deadline = time.monotonic() + 5
        while not calls and time.monotonic() < deadline:
            time.sleep(COMMIT_INTERVAL / 5)
        time.sleep(4 * COMMIT_INTERVAL)
        assert calls, "called when the message was due"
        assert box.written == 0 and len(box) == 0


def test_a_failing_before_commit_hook_never_stops_the_commit(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Outbox(tmp_path / "o.sqlite") as box:

        def broken() -> None:
            raise RuntimeError("bug in the hook")

        box.before_commit = broken
        box.stage("t", b"kept")
        deadline = time.monotonic() + 5
        while box.written == 0 and time.monotonic() < deadline:
            time.sleep(COMMIT_INTERVAL / 5)
        assert box.written == 1
    assert "before_commit hook failed" in caplog.text
