"""A durable, size-bounded queue of messages waiting for the broker's acknowledgement.

Every classification result is written here *before* it is sent, and its row is
deleted only when the broker acknowledges it (QoS 1/2) or the message has been
handed to the network (QoS 0). The queue is an SQLite database in WAL mode with
``synchronous=NORMAL``: a committed row survives a crash or SIGKILL of the agent
(the write-ahead log is in the operating system's hands once the commit
returns); only a power cut can lose the last few commits.

Policy when full: the queue holds at most ``max_messages`` rows. Adding one more
drops the *oldest* rows first and adds them to a persistent ``dropped`` counter
(published in the stats message), so a long outage keeps the most recent results.

Thread safety: one :class:`Outbox` may be used from several threads (the frame
loop adds, the publisher reads and deletes); calls are serialised by a lock.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Union

from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 100_000
_WAL_TRUNCATE_BYTES = 16 * 1024 * 1024
_INLINE_CHECKPOINT_EVERY = 20_000  # commits; bounds the log when checkpoint() is never called

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO counters (name, value) VALUES ('dropped', 0);
"""


@dataclass(frozen=True)
class Message:
    """One queued message; ``seq`` increases in the order messages were added."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """A persistent FIFO of MQTT messages in an SQLite file.

    Args:
        path: the database file (created with its directory when missing).
        max_messages: the size bound; when exceeded, the oldest rows are dropped.

    Raises:
        ConfigError: the file cannot be created or opened, or is not an outbox.
    """

    def __init__(self, path: Union[str, Path], max_messages: int = DEFAULT_MAX_MESSAGES) -> None:
        if max_messages < 1:
            raise ConfigError(f"outbox max_messages must be at least 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves.
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            # No checkpoints (and their fsyncs) on the writer's thread: see checkpoint().
            self._db.execute("PRAGMA wal_autocheckpoint=0")
            self._db.executescript(_SCHEMA)
            self._count = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"cannot open the outbox {self.path}: {exc} (check the state directory and its permissions)"
            ) from exc
        self._closed = False
        self._checkpointer: Optional[sqlite3.Connection] = None
        self._puts_since_checkpoint = 0
        if self._count:
            log.info("outbox %s holds %s unsent messages from an earlier run", self.path, self._count)

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Append a message and commit it; return its sequence number.

        When the outbox is full, the oldest messages are deleted in the same
        transaction and counted as dropped. Raises ``sqlite3.Error`` when the
        disk refuses the write (full disk, I/O error).
        """
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO outbox (topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?)",
                    (topic, payload, qos, int(retain), time.time()),
                )
                seq = int(cur.lastrowid or 0)
                excess = self._count + 1 - self.max_messages
                if excess > 0:
                    oldest = "SELECT seq FROM outbox ORDER BY seq LIMIT ?"
                    db.execute(f"DELETE FROM outbox WHERE seq IN ({oldest})", (excess,))  # noqa: S608
                    db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (excess,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count += 1 - max(excess, 0)
            self._puts_since_checkpoint += 1
            if self._puts_since_checkpoint >= _INLINE_CHECKPOINT_EVERY:  # nobody calls checkpoint()
                self._puts_since_checkpoint = 0
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if excess > 0:
                log.debug("outbox full (%s messages): dropped the oldest %s", self.max_messages, excess)
            return seq

    def peek(self, after_seq: int = 0, limit: int = 100) -> List[Message]:
        """Return up to ``limit`` messages with ``seq > after_seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
        return [Message(int(s), str(t), bytes(p), int(q), bool(r)) for s, t, p, q, r in rows]

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete the given messages (acknowledged by the broker); return how many were present."""
        batch = [(int(s),) for s in seqs]
        if not batch:
            return 0
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany("DELETE FROM outbox WHERE seq = ?", batch)
                removed = db.total_changes - before
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            self._count -= removed
            return removed

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database (with its fsync) on the calling thread.

        The MQTT network thread calls this about once a second, so the frame loop's commits
        never wait for a disk sync. It uses its own connection and does not block writers.
        """
        if self._closed:
            return
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._checkpointer.execute("PRAGMA busy_timeout=5000")
        try:
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._puts_since_checkpoint = 0
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > _WAL_TRUNCATE_BYTES:
                # A writer that never pauses keeps a passive checkpoint from finishing, so the log
                # would only grow: finish it, briefly holding back writers, and empty the log.
                self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OSError, sqlite3.Error) as exc:
            log.warning("outbox checkpoint failed: %s", exc)

    def __len__(self) -> int:
        """The number of messages waiting (the queue depth)."""
        return self._count

    @property
    def dropped(self) -> int:
        """How many messages the size bound has dropped since the outbox was created."""
        with self._lock:
            return int(self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])

    def close(self) -> None:
        """Checkpoint the write-ahead log and close the database; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._checkpointer is not None:
                self._checkpointer.close()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox checkpoint failed: %s", exc)
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
