"""The cost of one step's write through the core-v2 session store
(fenix_core.core.sql_store), next to the raw-sqlite3 floors of the same run
(benchmarks/floors.py): a typical step (one migration ended, the next
started, a notification owed: 4 statements on SQLite, the ended and the new
operation in one upsert, one commit) and 20,000 instance
rows updated in one write. CPU time (``time.process_time``)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from floors import _connect, _fill, ratio, transaction_floor, updates_floor
from sqlalchemy import event, update

from fenix_core.core.ports import Fence, NewSession
from fenix_core.core.sql_store import SqlSessionStore
from fenix_core.core.working_set import (
    HostRec,
    InstanceRec,
    OpRec,
    SessionRec,
)
from fenix_core.store.database import migrate, open_database
from fenix_core.store.schema import SessionClockRow

OWNER = "bench"


def _session(instances: int) -> NewSession:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    hosts = max(instances // 20, 2)
    session = SessionRec(
        "s", "rolling", {}, t0, "MAINTENANCE", "", None, None, 0, t0, t0, None,
        0, 0, None, None, 0, None, 0, 0,
    )  # fmt: skip
    return NewSession(
        session=session.row(),
        hosts=[
            HostRec(
                f"compute-{n:05d}", "compute", 24, "PENDING", n, 0, True, False, 0, None, None, None
            ).row()
            for n in range(hosts)
        ],
        instances=[
            InstanceRec(
                f"vm-{n}",
                f"p{n % 200}",
                "",
                f"compute-{n // 20:05d}",
                1,
                True,
                "PENDING",
                None,
                None,
                0,
                0,
                None,
                None,
                None,
                None,
                None,
            ).row()
            for n in range(instances)
        ],
        projects=[],
    )


def measure(directory: Path, repeats: int, rows: int) -> dict[str, float]:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    database = open_database(f"sqlite:///{directory / 'store.db'}")
    migrate(database)
    store = SqlSessionStore(database)
    store.insert(_session(max(rows, 40)))
    with database.begin() as db:
        db.execute(update(SessionClockRow).values(lease_owner=OWNER, lease_token=1))
    ws = store.load("s")
    statements = 0

    def count(*_args: object) -> None:
        nonlocal statements
        statements += 1

    n_inst = len(ws.instances)
    elapsed = 0.0
    for n in range(repeats):
        # a typical step: one move ended, the next started, a notice owed
        if n:
            ws.update_op(f"s:{n}", status="done", handled=True, finished_at=t0)
        ended = f"vm-{(2 * n) % n_inst}"
        ws.update_instance(ended, moves=n + 1)
        ws.set_instance_state(f"vm-{(2 * n + 1) % n_inst}", "IN_ACTION" if n % 2 else "PENDING")
        ws.add_op(OpRec(f"s:{n + 1}", "move", "compute-00000", ended, {}, "pending", None, None,
                        None, 0, None, {}, False, t0, None, None))  # fmt: skip
        ws.emit("maintenance_instance", {"instance_id": ended})
        write = ws.take_write(Fence("s", OWNER, 1, ws.version), next_wake=t0, lease_expires=t0)
        if n == repeats - 1:
            event.listen(database, "before_cursor_execute", count)
        start = time.process_time()
        store.write(write)
        elapsed += time.process_time() - start
    event.remove(database, "before_cursor_execute", count)
    per_write = elapsed / repeats
    for n in range(rows):
        ws.place(f"vm-{n}", f"compute-{(n + 20) // 20:05d}")
    write = ws.take_write(Fence("s", OWNER, 1, ws.version), next_wake=t0, lease_expires=t0)
    start = time.process_time()
    store.write(write)
    bulk = time.process_time() - start
    database.dispose()
    return {"write_s": per_write, "statements": statements, "updates_s": bulk}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2_000)
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        raw = _connect(directory / "floor.db")
        _fill(raw, 20_000)
        floor_tx = transaction_floor(raw, args.repeats)
        floor_updates = updates_floor(raw, args.rows)
        raw.close()
        got = measure(directory, args.repeats, args.rows)
    print("what                              store        raw floor    ratio")
    print(
        f"typical step write ({int(got['statements'])} statements)  "
        f"{got['write_s'] * 1e6:8.1f} us  {floor_tx * 1e6:8.1f} us  "
        f"{ratio(got['write_s'], floor_tx):>6}"
    )
    print(
        f"{args.rows:,} instance rows, one write  "
        f"{got['updates_s'] * 1e3:8.1f} ms  {floor_updates * 1e3:8.1f} ms  "
        f"{ratio(got['updates_s'], floor_updates):>6}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
