"""Each index a step's write touches is one more page in its commit
(migrations 0010, 0011, 0013, 0014 and 0015): the operations and outbox rows a step
writes must not rewrite index entries that no query reads, a new operation
is appended at the end of its session's range, and the queries on
operations must still find a session's rows by its key, not by a scan."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from query_plans import sent_plans
from sqlalchemy import Connection, Engine, delete, inspect, select

from fenix_core.core.statements import STATEMENTS
from fenix_core.core.views import operation_views, outbox_backlog
from fenix_core.core.working_set import OpRec
from fenix_core.store.database import migrate, open_database
from fenix_core.store.schema import (
    OperationRow,
    OutboxRow,
    SessionRow,
    operations_in_recorded_order,
    session_operations,
    session_outbox,
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


def _indexed(engine: Engine, table: str) -> dict[str, set[str]]:
    return {
        str(ix["name"]): {str(c) for c in ix["column_names"]}
        for ix in inspect(engine).get_indexes(table)
    }


def test_a_steps_operation_update_rewrites_no_index_entry(db: Engine) -> None:
    """The step's upsert sets every operation field but the key; none of
    them may be indexed (``handled`` was: marking an operation handled moved
    its entry, two index pages a step)."""
    updated = set(OpRec.FIELDS) - {"key", "n"}
    for name, columns in _indexed(db, "operations").items():
        assert not columns & updated, f"{name} indexes {columns & updated}"


def test_a_notification_adds_no_entry_to_an_index_no_query_reads(db: Engine) -> None:
    """``outbox.delivered_at`` is no longer written (delivery goes by the
    watermark): no index of it, nor any other beside the primary key."""
    assert _indexed(db, "outbox") == {}


def test_the_steps_fenced_update_rewrites_no_index_entry(db: Engine) -> None:
    """Every step's fenced UPDATE of ``session_clock`` sets its wake, lease
    and counters: none may be indexed (0014 dropped ``next_wake``'s index,
    whose entry moved at nearly every step: a page of each commit)."""
    assert _indexed(db, "session_clock") == {}


def test_the_outbox_is_one_btree(db: Engine) -> None:
    """Migration 0014: a notification is a row of the outbox's rowid table
    alone (its ``id`` is the rowid): no key index beside it, and no foreign
    key, whose check at a session's delete would scan the table."""
    with db.connect() as connection:
        indexes = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'"
        ).all()
        keys = connection.exec_driver_sql("PRAGMA foreign_key_list(outbox)").all()
        connection.exec_driver_sql(
            "INSERT INTO outbox (id, session_id, seq, signal, payload, created_at) "
            "VALUES (8589934593, 's', 1, 'x', '{}', '2026-01-01')"
        )
        rowid = connection.exec_driver_sql("SELECT rowid FROM outbox").scalar_one()
    assert indexes == []
    assert keys == []
    assert rowid == 2 * 2**32 + 1


def _plan(engine: Engine, run: Callable[[Connection], object], table: str) -> list[str]:
    """The query plans of the statements on ``table`` that ``run`` sent."""
    return sent_plans(engine, run, table)


_SESSION_RANGE = "SEARCH outbox USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"


def test_the_reads_of_the_outbox_read_a_sessions_range_of_ids(db: Engine) -> None:
    """The watermark's read (a load), the backlog (a metrics scrape), the
    dashboard's and a session's delete each read the sessions' ranges of
    the outbox's b-tree, not the whole table."""
    number = select(SessionRow.number).where(SessionRow.id == "s").scalar_subquery()
    runs: dict[str, Callable[[Connection], object]] = {
        "undelivered": lambda c: c.execute(
            STATEMENTS.undelivered, {"b_session_id": "s", "b_after_seq": 0}
        ).all(),
        "dashboard": lambda c: c.execute(
            select(OutboxRow).where(session_outbox(number), OutboxRow.signal == "x")
        ).all(),
        "delete": lambda c: c.execute(delete(OutboxRow).where(session_outbox(number))),
    }
    for name, run in runs.items():
        assert all(_SESSION_RANGE in plan for plan in _plan(db, run, "outbox")), name
    backlog = _plan(db, lambda _c: outbox_backlog(db, lambda _sid: 0), "outbox")
    assert all(_SESSION_RANGE in plan for plan in backlog), backlog


def test_operations_are_one_btree(db: Engine) -> None:
    """Migrations 0011, 0013 and 0015: a step's new and ended operations are
    rows of one b-tree, the rowid table's (its ``id`` is the rowid: the
    session's number and the operation's), with no other index: no unique
    ``key`` index, no session index; and no foreign key, whose check at a
    session's delete would scan the table. (0013's WITHOUT ROWID key kept a
    whole row in each inner cell: a deep tree, two pages a commit.)"""
    with db.connect() as connection:
        indexes = connection.exec_driver_sql(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'operations'"
        ).all()
        keys = connection.exec_driver_sql("PRAGMA foreign_key_list(operations)").all()
        shape = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'operations'"
        ).scalar_one()
        columns = ", ".join(f'"{f}"' for f in OpRec.FIELDS)
        connection.exec_driver_sql(
            f"INSERT INTO operations (id, session_id, n, {columns}) VALUES (8589934595, 's', 3, "
            "'s:3', 'move', NULL, NULL, '{}', 'running', NULL, NULL, NULL, 0, NULL, '{}', 0, "
            "'2026-01-01', NULL, NULL)"
        )
        rowid = connection.exec_driver_sql("SELECT rowid FROM operations").scalar_one()
    assert indexes == []
    assert keys == []
    assert "WITHOUT ROWID" not in shape
    assert [c.name for c in OperationRow.__table__.primary_key] == ["id"]
    assert rowid == 2 * 2**32 + 3


_OPERATIONS_RANGE = "SEARCH operations USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"


def test_the_queries_on_operations_read_the_sessions_range_of_ids(db: Engine) -> None:
    """A load's two reads, the session view's operations, the
    operations' listing, the dashboard's moves and a session's delete each
    read the session's range of the operations' b-tree, not the table."""
    number = select(SessionRow.number).where(SessionRow.id == "s").scalar_subquery()
    sid = {"b_session_id": "s"}
    runs: dict[str, Callable[[Connection], object]] = {
        "load": lambda c: c.execute(STATEMENTS.load_ops, sid).all(),
        "last-number": lambda c: c.execute(STATEMENTS.last_op_number, sid).all(),
        "view": lambda c: c.execute(STATEMENTS.load_view_ops, sid).all(),
        "listing": lambda _c: operation_views(db, "s"),
        "dashboard-moves": lambda c: c.execute(
            select(OperationRow.key)
            .where(session_operations(number), OperationRow.kind == "move")
            .order_by(*operations_in_recorded_order())
        ).all(),
        "delete": lambda c: c.execute(delete(OperationRow).where(session_operations(number))),
    }
    for name, run in runs.items():
        plans = _plan(db, run, "operations")
        assert plans, name
        assert all(_OPERATIONS_RANGE in plan for plan in plans), (name, plans)
