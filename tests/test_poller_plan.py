"""The poller's query on SQLite reads the unprocessed replies through the
partial index ``ix_inbox_unprocessed``: its cost follows the replies not yet
processed, not every reply the inbox ever received (a simulated clock polls
at almost every step, so a scan of the inbox made long runs quadratic)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import event

from fenix_core.clock import SimClock
from fenix_core.core.poller import SqlDbPoller
from fenix_core.store.database import migrate, open_database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_poller_reads_unprocessed_replies_through_their_partial_index(
    tmp_path: Path,
) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    migrate(db)
    sent: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        sent.append((statement, params))

    event.listen(db, "before_cursor_execute", record)
    assert SqlDbPoller(db, SimClock(T0)).poll(T0) == []
    event.remove(db, "before_cursor_execute", record)
    statement, params = sent[-1]
    with db.connect() as connection:
        plan = [
            str(row[-1])
            for row in connection.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, params)
        ]
    inbox = [step for step in plan if "inbox" in step]
    assert inbox, plan
    assert all("ix_inbox_unprocessed" in step for step in inbox), plan
    db.dispose()
