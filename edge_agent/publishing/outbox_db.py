"""The outbox's SQLite file: its schema, and the connection the outbox writes through."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_agent.errors import ConfigError

_COLUMNS = {"seq", "topic", "payload", "qos", "retain", "created"}

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


def open_database(path: Path) -> sqlite3.Connection:
    """Open (creating it when missing) the outbox database at ``path``: WAL mode,
    ``synchronous=NORMAL``, no automatic checkpoints (the outbox runs them off the writer's
    thread), transactions issued by the caller.

    Raises:
        ConfigError: the file holds an ``outbox`` table that is not an edge-agent outbox's.
        sqlite3.Error: SQLite cannot open or set up the file.
    """
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.execute("PRAGMA wal_autocheckpoint=0")
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
        if not _COLUMNS <= columns:
            raise ConfigError(
                f"{path} is not an edge-agent outbox (its outbox table has columns "
                f"{', '.join(sorted(columns))}): move it away or use another --state-dir"
            )
    except BaseException:
        db.close()
        raise
    return db
