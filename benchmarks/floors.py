"""What this machine can do at best: raw sqlite3 on a file, measured in the
same run as the engine so that each engine figure has a floor next to it.

The floors use the engine's SQLite settings (WAL, synchronous=NORMAL) and
rows shaped like its own (a session row fenced by its version, an outbox and
an inbox row, an operation, an instance), with statements prepared once by
sqlite3's statement cache. CPU time (``time.process_time``) throughout.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, state TEXT, version INTEGER, next_wake TEXT);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, session_id TEXT, seq INTEGER, payload TEXT);
CREATE TABLE inbox (id INTEGER PRIMARY KEY, session_id TEXT, project_id TEXT,
                    state TEXT, processed INTEGER);
CREATE TABLE operations (id INTEGER PRIMARY KEY, session_id TEXT, status TEXT);
CREATE TABLE instances (id INTEGER PRIMARY KEY, session_id TEXT, host TEXT, state TEXT);
CREATE TABLE timers (id INTEGER PRIMARY KEY, session_id TEXT, due TEXT);
"""


@dataclass
class Floors:
    """CPU seconds of raw sqlite3 work on a file (per unit named by the field)."""

    transaction_s: float  # one 5-statement transaction, committed
    updates_20k_s: float  # 20,000 row updates in one executemany, one transaction
    reply_transaction_s: float  # a reply as its own transaction: SELECT, INSERT, commit
    reply_batched_s: float  # a reply in a batch: its INSERT in one executemany per batch

    @property
    def update_row_s(self) -> float:
        return self.updates_20k_s / 20_000

    def as_json(self) -> dict[str, Any]:
        return {name: round(value * 1e6, 2) for name, value in asdict(self).items()} | {
            "unit": "microseconds of CPU"
        }


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    return db


def _fill(db: sqlite3.Connection, instances: int) -> None:
    db.execute("BEGIN")
    db.execute("INSERT INTO sessions VALUES ('s', 'MAINTENANCE', 0, NULL)")
    db.executemany(
        "INSERT INTO instances VALUES (?, 's', ?, 'PENDING')",
        ((n, f"compute-{n // 20:05d}") for n in range(instances)),
    )
    db.executemany("INSERT INTO operations VALUES (?, 's', 'RUNNING')", ((n,) for n in range(100)))
    db.execute("COMMIT")


def transaction_floor(db: sqlite3.Connection, repeats: int) -> float:
    """One step's worth: fence and bump the session, an outbox row, an
    operation, an instance, a timer; commit."""
    start = time.process_time()
    for n in range(repeats):
        db.execute("BEGIN")
        cursor = db.execute(
            "UPDATE sessions SET version = version + 1, next_wake = ?"
            " WHERE id = 's' AND version = ?",
            (f"2026-01-01T00:00:{n % 60:02d}", n),
        )
        if cursor.rowcount != 1:
            raise RuntimeError("the fence of the floor transaction did not hold")
        db.execute("INSERT INTO outbox (session_id, seq, payload) VALUES ('s', ?, '{}')", (n,))
        db.execute("UPDATE operations SET status = 'DONE' WHERE id = ?", (n % 100,))
        db.execute("UPDATE instances SET state = 'MIGRATED' WHERE id = ?", (n % 20_000,))
        db.execute("INSERT INTO timers (session_id, due) VALUES ('s', ?)", (str(n),))
        db.execute("COMMIT")
    return (time.process_time() - start) / repeats


def updates_floor(db: sqlite3.Connection, rows: int = 20_000) -> float:
    start = time.process_time()
    db.execute("BEGIN")
    db.executemany(
        "UPDATE instances SET state = ?, host = ? WHERE id = ?",
        (("MIGRATED", f"compute-{(n + 1) // 20:05d}", n) for n in range(rows)),
    )
    db.execute("COMMIT")
    return time.process_time() - start


def reply_floors(db: sqlite3.Connection, replies: int) -> tuple[float, float]:
    """Per reply: (its own transaction, a share of one batched transaction)."""
    start = time.process_time()
    for n in range(replies):
        db.execute("BEGIN")
        db.execute("SELECT state, version FROM sessions WHERE id = 's'").fetchone()
        db.execute(
            "INSERT INTO inbox (session_id, project_id, state, processed) VALUES ('s', ?, ?, 0)",
            (f"project-{n:05d}", "ACK_MAINTENANCE"),
        )
        db.execute("COMMIT")
    one_by_one = (time.process_time() - start) / replies
    start = time.process_time()
    db.execute("BEGIN")
    db.execute("SELECT state, version FROM sessions WHERE id = 's'").fetchone()
    db.executemany(
        "INSERT INTO inbox (session_id, project_id, state, processed) VALUES ('s', ?, ?, 0)",
        ((f"project-{n:05d}", "ACK_MAINTENANCE") for n in range(replies)),
    )
    db.execute("COMMIT")
    return one_by_one, (time.process_time() - start) / replies


def measure(directory: Path, repeats: int = 2_000) -> Floors:
    """All the floors, on a fresh SQLite file in ``directory``."""
    path = directory / "floor.db"
    db = _connect(path)
    try:
        _fill(db, 20_000)
        transaction = transaction_floor(db, repeats)
        updates = updates_floor(db)
        reply_one, reply_batch = reply_floors(db, repeats)
    finally:
        db.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return Floors(transaction, updates, reply_one, reply_batch)


def ratio(value: float, floor: float) -> str:
    return f"{value / floor:,.0f}x" if floor > 0 and value > 0 else "n/a"
