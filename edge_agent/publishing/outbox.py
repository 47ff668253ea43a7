"""A durable, size-bounded queue of messages waiting for the broker's acknowledgement.

Every classification result is written here *before* it is acknowledged, and its row is
deleted only when the broker acknowledges it (QoS 1/2) or the message has been handed to the
network (QoS 0). The queue is an SQLite database in WAL mode with ``synchronous=NORMAL``.

Group commit: :meth:`Outbox.stage` and :meth:`Outbox.discard` only record the change in
memory; when the oldest change still recorded is (nearly) ``commit_interval`` seconds (5 ms)
old, a committer thread writes it in one transaction with the others but the messages staged
in the last 2 ms, whose acknowledgement is likely on its way. A staged message therefore
survives a crash or SIGKILL of the agent once that commit has returned, so a SIGKILL can lose
at most the last ``commit_interval`` of results (a few at 30 frames/s); only a power cut can
lose more (the last few commits). A message acknowledged within ``commit_interval`` of being
staged is never written at all, however steadily results flow (:attr:`Outbox.written` counts
the ones that were; :attr:`Outbox.before_commit` lets the publisher read acknowledgements that
have arrived just before a commit). :meth:`Outbox.put` and :meth:`Outbox.delete` commit at once.

Policy when full: the queue holds at most ``max_messages`` rows. Past that the *oldest*
rows are dropped and added to a persistent ``dropped`` counter (published in the stats
message), so a long outage keeps the most recent results.

A disk that refuses writes (full, I/O error) never stops the agent: the committer logs
one line, keeps up to :data:`PENDING_MAX` messages in memory (dropping and counting the
oldest past that), retries every second and logs again when the disk takes writes again.

One agent per outbox: the file is locked (``<outbox>.lock``) while open; a second opener
gets a ConfigError.

Thread safety: every method may be called from any thread; calls are serialised by a lock."""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

from edge_agent.errors import ConfigError
from edge_agent.publishing.outbox_db import open_database
from edge_agent.publishing.statelock import lock_file

log = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGES = 100_000
COMMIT_INTERVAL = 0.005  # s: the most a staged change waits for its commit (the SIGKILL window)
_COMMIT_SLACK = 0.0005  # s: a commit is made this much before the oldest change is due
_KEEP_YOUNGER = 0.002  # s: it leaves messages staged less than this long ago to a later commit
PENDING_MAX = 10_000  # messages held in memory while the disk refuses writes
RETRY_INTERVAL = 1.0  # s between commits while the disk refuses writes
CHECKPOINT_INTERVAL = 1.0  # s from a commit to the checkpoint that syncs it to disk
_WAL_TRUNCATE_BYTES = 16 * 1024 * 1024
_INLINE_CHECKPOINT_EVERY = 20_000  # commits; bounds the log when checkpoint() is never called


class Message(NamedTuple):
    """One queued message; ``seq`` increases in the order messages were added."""

    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    """A persistent FIFO of MQTT messages in an SQLite file, committed in groups.

    Args:
        path: the database file (created with its directory when missing).
        max_messages: the size bound; when exceeded, the oldest rows are dropped.
        commit_interval: the group-commit window in seconds.

    Raises:
        ConfigError: the file cannot be created or opened, is not an outbox, or another
            agent has it open.
    """

    def __init__(
        self, path: Union[str, Path], max_messages: int = DEFAULT_MAX_MESSAGES, commit_interval: float = COMMIT_INTERVAL
    ) -> None:
        if max_messages < 1:
            raise ConfigError(f"outbox max_messages must be at least 1, got {max_messages}")
        self.path = Path(path)
        self.max_messages = max_messages
        self.commit_interval = commit_interval
        # called by the committer just before it writes results that are due: a publisher reads the
        # acknowledgements that have arrived meanwhile (their rows then need no writing)
        self.before_commit: Optional[Callable[[], None]] = None
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._lock_fd: Optional[int] = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = lock_file(self.path.with_name(self.path.name + ".lock"))
            self._db = open_database(self.path)
            self._rows = int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
            last = self._db.execute(
                "SELECT MAX(s) FROM (SELECT MAX(seq) AS s FROM outbox UNION ALL "
                "SELECT seq FROM sqlite_sequence WHERE name = 'outbox')"
            ).fetchone()[0]
            self._dropped = int(self._db.execute("SELECT value FROM counters WHERE name = 'dropped'").fetchone()[0])
        except ConfigError:
            self._unlock()
            raise
        except (OSError, sqlite3.Error) as exc:
            self._unlock()
            raise ConfigError(
                f"cannot open the outbox {self.path}: {exc} (check the state directory and its permissions)"
            ) from exc
        self._next_seq = int(last or 0) + 1
        # staged inserts with the monotonic time they were staged, in seq order (dicts keep insertion order)
        self._pending: Dict[int, Tuple[Message, float]] = {}
        self._deletes: Set[int] = set()  # staged deletes of committed rows
        self._deletes_since = 0.0  # monotonic time the oldest staged delete was recorded
        self._idle = True  # the committer waits for a first change: stage() and discard() must wake it
        self._dropped_unsaved = 0  # dropped while the disk refused writes, not yet in the counter
        self.written = 0  # messages written to the database since it was opened
        self._failing: Optional[str] = None  # the disk's refusal while commits fail
        self._closed = False
        self._checkpointer: Optional[sqlite3.Connection] = None
        self._commits_since_checkpoint = 0
        self._committer = threading.Thread(target=self._run_committer, name="outbox-commit", daemon=True)
        self._committer.start()
        if self._rows:
            log.info("outbox %s holds %s unsent messages from an earlier run", self.path, self._rows)

    # ---- writing ------------------------------------------------------------------------------
    def stage(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> Message:
        """Append a message; it is committed within ``commit_interval`` s. Never touches the disk."""
        now = time.monotonic()
        with self._lock:
            seq = self._next_seq
            self._next_seq = seq + 1
            msg = Message(seq, topic, payload, qos, retain)
            pending = self._pending
            pending[seq] = (msg, now)
            if len(pending) > PENDING_MAX:  # only while the disk refuses writes
                del pending[next(iter(pending))]
                self._dropped_unsaved += 1
            if self._idle:
                self._idle = False
                self._wake.notify()
            return msg

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Append a message and commit it now; return its sequence number.

        Raises ``sqlite3.Error`` when the disk refuses the write (the message stays staged).
        """
        seq = self.stage(topic, payload, qos, retain).seq
        self.commit()
        return seq

    def discard(self, seqs: Iterable[int]) -> None:
        """Record that these messages were acknowledged; deleted with the next commit."""
        with self._lock:
            pending, deletes = self._pending, self._deletes
            had_deletes = bool(deletes)
            for seq in seqs:
                if pending.pop(seq, None) is None and seq < self._next_seq:
                    deletes.add(seq)
            if deletes and not had_deletes:
                self._deletes_since = time.monotonic()
                if self._idle:
                    self._idle = False
                    self._wake.notify()

    def delete(self, seqs: Iterable[int]) -> int:
        """Delete the given messages now (acknowledged by the broker); return how many were present."""
        wanted = set(int(s) for s in seqs)
        with self._lock:
            staged = sum(1 for s in wanted if s in self._pending)
        self.discard(wanted)
        return staged + self.commit()

    def commit(self, staged_before: Optional[float] = None) -> int:
        """Write every staged change in one transaction (of the staged messages only those staged
        before the monotonic time ``staged_before``, when given); return how many committed rows it
        deleted.

        Raises ``sqlite3.Error`` when the disk refuses (the changes stay staged for the next try).
        """
        with self._lock:
            if self._closed or not (self._pending or self._deletes or self._dropped_unsaved):
                return 0
            db, now, pending = self._db, time.time(), self._pending
            writing = [m for m, t in pending.values() if staged_before is None or t < staged_before]
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany(
                    "INSERT INTO outbox (seq, topic, payload, qos, retain, created) VALUES (?, ?, ?, ?, ?, ?)",
                    [(m.seq, m.topic, m.payload, m.qos, int(m.retain), now) for m in writing],
                )
                before = db.total_changes
                db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in self._deletes])
                removed = db.total_changes - before
                rows = self._rows + len(writing) - removed
                dropped = self._dropped_unsaved
                if rows > self.max_messages:
                    oldest = "SELECT seq FROM outbox ORDER BY seq LIMIT ?"
                    cur = db.execute(f"DELETE FROM outbox WHERE seq IN ({oldest})", (rows - self.max_messages,))  # noqa: S608
                    rows -= cur.rowcount
                    dropped += cur.rowcount
                if dropped:
                    db.execute("UPDATE counters SET value = value + ? WHERE name = 'dropped'", (dropped,))
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite has already rolled back after SQLITE_FULL
                    db.execute("ROLLBACK")
                raise
            self._rows, self.written = rows, self.written + len(writing)
            self._dropped += dropped - self._dropped_unsaved
            self._dropped_unsaved = 0
            if len(writing) == len(pending):
                pending.clear()
            else:
                for m in writing:
                    del pending[m.seq]
            self._deletes.clear()
            self._commits_since_checkpoint += 1
            if self._commits_since_checkpoint >= _INLINE_CHECKPOINT_EVERY:  # nobody calls checkpoint()
                self._commits_since_checkpoint = 0
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            return removed

    def _due(self) -> Optional[float]:
        """When the oldest staged change must be on disk (monotonic s), None with none; lock held."""
        due = next(iter(self._pending.values()))[1] if self._pending else None
        if self._deletes and (due is None or self._deletes_since < due):
            due = self._deletes_since
        return None if due is None else due + self.commit_interval

    def _run_committer(self) -> None:
        """The group committer: sleep until the oldest staged change is due, then commit every
        change staged by then (acknowledgements that came in meanwhile mean none may be left to
        write); about once a second after commits, checkpoint (the disk sync), here rather than on
        the network thread, so sending never waits for the disk."""
        checkpoint_at: Optional[float] = None  # when the commits since the last checkpoint are due
        while True:
            with self._lock:
                while not self._closed:
                    due = self._due()
                    if due is not None or self._dropped_unsaved:
                        break
                    if checkpoint_at is not None and time.monotonic() >= checkpoint_at:
                        break  # idle, with commits to sync
                    self._idle = True  # from now on the first change wakes us
                    self._wake.wait(None if checkpoint_at is None else max(0.0, checkpoint_at - time.monotonic()))
                self._idle = False
                if self._closed:
                    return
            now = time.monotonic()
            if checkpoint_at is not None and now >= checkpoint_at:
                self.checkpoint()
                checkpoint_at = None
                continue
            if self._failing is not None:
                time.sleep(RETRY_INTERVAL)
            elif due is not None and due > now + _COMMIT_SLACK:
                time.sleep(due - now - _COMMIT_SLACK)
                continue  # the oldest change may have been acknowledged meanwhile: look again
            hook = self.before_commit
            if hook is not None and self._failing is None:
                try:
                    hook()
                except Exception:  # the commit must happen whatever the hook does
                    log.exception("the outbox's before_commit hook failed")
            try:
                self.commit(None if self._failing else time.monotonic() - _KEEP_YOUNGER)
            except sqlite3.Error as exc:
                if self._failing is None:
                    log.error(
                        "cannot write to the outbox %s (%s): holding up to %s results in memory and retrying",
                        self.path,
                        exc,
                        PENDING_MAX,
                    )
                self._failing = str(exc)
                continue
            except Exception:  # never let the committer die silently: log and go on
                log.exception("outbox commit failed unexpectedly; retrying")
                time.sleep(RETRY_INTERVAL)
                continue
            if self._failing is not None:
                log.warning("the outbox %s takes writes again", self.path)
                self._failing = None
            if checkpoint_at is None:
                checkpoint_at = time.monotonic() + CHECKPOINT_INTERVAL

    # ---- reading ------------------------------------------------------------------------------
    def peek(self, after_seq: int = 0, limit: int = 100) -> List[Message]:
        """Return up to ``limit`` messages with ``seq > after_seq``, oldest first (staged ones included)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, qos, retain FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (after_seq, limit),
            ).fetchall()
            found = [Message(int(s), str(t), bytes(p), int(q), bool(r)) for s, t, p, q, r in rows]
            found = [m for m in found if m.seq not in self._deletes]
            staged = [m for m, _ in self._pending.values() if m.seq > after_seq]
        return sorted(found + staged, key=lambda m: m.seq)[:limit]

    @property
    def failing(self) -> Optional[str]:
        """The disk's last refusal while commits fail, else None."""
        return self._failing

    def checkpoint(self) -> None:
        """Copy the write-ahead log into the database (with its fsync) on the calling thread.

        The committer thread calls this about once a second after commits, so neither the frame
        loop nor the network thread waits for a disk sync. It uses its own connection and does not
        block writers.
        """
        if self._closed:
            return
        try:
            if self._checkpointer is None:
                self._checkpointer = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
                self._checkpointer.execute("PRAGMA busy_timeout=5000")
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._commits_since_checkpoint = 0
            wal = self.path.with_name(self.path.name + "-wal")
            if wal.exists() and wal.stat().st_size > _WAL_TRUNCATE_BYTES:
                # A writer that never pauses keeps a passive checkpoint from finishing, so the log
                # would only grow: finish it, briefly holding back writers, and empty the log.
                self._checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except (OSError, sqlite3.Error) as exc:
            log.warning("outbox checkpoint failed: %s", exc)

    def __len__(self) -> int:
        """The number of messages waiting (the queue depth), committed or staged."""
        return max(0, self._rows + len(self._pending) - len(self._deletes))

    @property
    def dropped(self) -> int:
        """How many messages the size bound (or a full disk) has dropped since the outbox was created."""
        return self._dropped + self._dropped_unsaved

    def close(self) -> None:
        """Commit what is staged, checkpoint the write-ahead log and close the database; idempotent."""
        try:
            self.commit()
        except sqlite3.Error as exc:
            log.error("could not commit %s results to the outbox before closing: %s", len(self._pending), exc)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._wake.notify_all()
        self._committer.join(timeout=5)
        with self._lock:
            if self._checkpointer is not None:
                self._checkpointer.close()
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                log.warning("outbox checkpoint failed: %s", exc)
            self._db.close()
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the lock
            self._lock_fd = None

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
