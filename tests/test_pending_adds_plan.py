"""Which hosts running sessions are still adding is asked at every listing
of the cloud's hosts a session stores (``inventory.pending_adds_query``).
Every session records the whole fleet, so the answer must come through the
partial index ``ix_session_hosts_adding`` (migration 0009), not from a scan
of every session's host rows: 200 sessions over a 2,000-host cloud are
400,000 rows, and the scan was the costliest statement of
benchmarks/workers.py on PostgreSQL (80 ms a call)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.inventory import pending_adds_query
from fenix_core.testing import SimulatedCloud, TimedAction

FLEET = 3000


def test_pending_adds_are_read_through_their_partial_index(
    database_url: str,
) -> None:
    cloud = SimulatedCloud()
    for n in range(FLEET):
        cloud.add_host(f"cmp-{n:04d}", vcpus=8)
    engine = Engine(
        database_url,
        plugins=[cloud, TimedAction("upgrade", 0)],
        load_entry_points=False,
        worker_id="w",
    )
    try:
        engine.create_session(
            SessionRequest(
                hosts=["cmp-0000"],
                add_hosts=["new-0"],
                actions=[ActionSpec(plugin="upgrade", type="host")],
            )
        )
        db = engine.database
        sent: list[tuple[str, Any]] = []

        def record(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
            sent.append((statement, params))

        with db.connect() as connection:
            connection.exec_driver_sql("ANALYZE")
            event.listen(db, "before_cursor_execute", record)
            assert set(connection.scalars(pending_adds_query())) == {"new-0"}
            event.remove(db, "before_cursor_execute", record)
            (statement, params), *_ = sent
            explain = "EXPLAIN QUERY PLAN " if db.dialect.name == "sqlite" else "EXPLAIN "
            plan = " ".join(
                str(row[-1]) for row in connection.exec_driver_sql(explain + statement, params)
            )
        assert "ix_session_hosts_adding" in plan, plan
    finally:
        engine.close()
