"""SqlSessionStore: the store contract (tests/store_contract.py) on SQLite
and PostgreSQL, and MemorySessionStore, the reference, on the same suite;
statements per write counted with SQLAlchemy's engine events."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timezone
from pathlib import Path
from typing import Any

import pg_server
import pytest
from sqlalchemy import Engine, delete, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from store_contract import *  # noqa: F403 - the shared suite's tests run here
from store_contract import OWNER, T0, a_step, an_op, held, new_session

from fenix_core.core.memory_store import MemorySessionStore
from fenix_core.core.ports import Fence
from fenix_core.core.sql_store import SqlSessionStore
from fenix_core.store.database import migrate, open_database
from fenix_core.store.schema import InboxRow, OperationRow, OutboxRow, SessionClockRow, SessionRow


class MemoryHarness:
    def __init__(self) -> None:
        self.store = MemorySessionStore()

    def set_lease(self, session_id: str, owner: str | None, token: int) -> None:
        self.store.set_lease(session_id, owner, token, T0)

    def add_reply(self, session_id: str, project_id: str, state: str) -> int:
        return self.store.add_reply(session_id, project_id, state, {}, T0)

    def outbox(self, session_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        return self.store.outbox(session_id)

    def reply_outcomes(self, session_id: str) -> dict[int, str | None]:
        return {i: out for i, (_, out) in self.store.reply_outcomes(session_id).items()}


class SqlHarness:
    def __init__(self, database: Engine) -> None:
        self.database = database
        self.store = SqlSessionStore(database)

    def set_lease(self, session_id: str, owner: str | None, token: int) -> None:
        with self.database.begin() as db:
            db.execute(
                update(SessionClockRow)
                .where(SessionClockRow.session_id == session_id)
                .values(lease_owner=owner, lease_token=token, lease_expires=T0)
            )

    def add_reply(self, session_id: str, project_id: str, state: str) -> int:
        with self.database.begin() as db:
            row = db.execute(
                insert(InboxRow)
                .values(
                    session_id=session_id,
                    project_id=project_id,
                    state=state,
                    instance_actions={},
                    received_at=T0,
                )
                .returning(InboxRow.id)
            )
            return int(row.scalar_one())

    def outbox(self, session_id: str) -> list[tuple[int, str, dict[str, Any]]]:
        with self.database.connect() as db:
            rows = db.execute(
                select(OutboxRow.seq, OutboxRow.signal, OutboxRow.payload)
                .where(OutboxRow.session_id == session_id)
                .order_by(OutboxRow.seq)
            )
            return [tuple(r) for r in rows]  # type: ignore[misc]

    def reply_outcomes(self, session_id: str) -> dict[int, str | None]:
        with self.database.connect() as db:
            rows = db.execute(
                select(InboxRow.id, InboxRow.outcome).where(InboxRow.session_id == session_id)
            )
            return {int(i): out for i, out in rows}


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def harness(
    request: pytest.FixtureRequest, tmp_path: Path, postgres: pg_server.PostgresServer | None
) -> Iterator[Any]:
    if request.param == "memory":
        yield MemoryHarness()
        return
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'fenix.db'}"
    else:
        if postgres is None:
            pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
        url = postgres.new_database()
    database = open_database(url)
    migrate(database)
    harness = SqlHarness(database)
    yield harness
    harness.store.close()
    database.dispose()


# --------------------------------------------------------------------------- statements


class Counted:
    def __init__(self, database: Engine) -> None:
        self.statements: list[str] = []
        self.commits = 0
        event.listen(database, "before_cursor_execute", self._statement)
        event.listen(database, "commit", self._commit)

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        words = statement.split()
        self.statements.append(f"{words[0]} {words[2 if words[0] == 'INSERT' else 1]}")

    def _commit(self, *_args: Any) -> None:
        self.commits += 1


@pytest.fixture
def sqlite_harness(tmp_path: Path) -> Iterator[SqlHarness]:
    database = open_database(f"sqlite:///{tmp_path / 'fenix.db'}")
    migrate(database)
    harness = SqlHarness(database)
    yield harness
    harness.store.close()
    database.dispose()


def test_a_typical_step_is_one_transaction_of_four_statements(sqlite_harness: SqlHarness) -> None:
    """One migration ended and the next started, a notice owed: the fence,
    the instances, the operations (the new one and the ended one in one
    upsert), the outbox (plan §3.2)."""
    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    fence = Fence("s-1", OWNER, 1, ws.version)
    ws.update_op("s-1:1", status="done", handled=True, finished_at=T0)
    ws.set_instance_state("vm-0-1", "DONE")
    ws.place("vm-0-1", "cmp-2")
    ws.set_target("vm-1-0", "cmp-2")
    ws.set_instance_state("vm-1-0", "IN_ACTION")
    ws.add_op(an_op("s-1:2", "cmp-1", "vm-1-0"))
    ws.emit("maintenance_instance", {"instance_id": "vm-0-1"})
    counter = Counted(h.database)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert counter.commits == 1
    assert counter.statements == [
        "UPDATE session_clock",
        "UPDATE session_instances",
        "INSERT operations",
        "INSERT outbox",
    ], counter.statements
    print(f"\nstatements per typical write: {len(counter.statements)}, commits: 1")
    with h.database.connect() as db:
        rows = db.execute(
            select(OperationRow.key, OperationRow.status, OperationRow.handled).order_by(
                OperationRow.key
            )
        ).all()
    assert [tuple(r) for r in rows] == [("s-1:1", "done", True), ("s-1:2", "pending", False)]


def test_the_sql_store_refuses_a_duplicate_operation_key(sqlite_harness: SqlHarness) -> None:
    """As the memory store: a new operation whose key exists already (the
    upsert that writes new and changed operations together must not turn
    it into an update) fails the write, and nothing of it is committed."""
    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    ws.update_op("s-1:1", handled=True)
    h.store.write(ws.take_write(Fence("s-1", OWNER, 1, 1), next_wake=None, lease_expires=T0))
    ws, fence = held(h)
    assert "s-1:1" not in ws.ops  # handled: not loaded
    a_step(ws)  # the same key again
    with pytest.raises(KeyError, match="s-1:1"):
        h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert h.store.load("s-1").version == 2
    with h.database.connect() as db:
        handled = db.execute(select(OperationRow.handled).where(OperationRow.key == "s-1:1"))
        assert handled.scalar_one() is True  # not overwritten by the refused row


@pytest.mark.parametrize("key", ["move-1", "s-2:1", "s-1:", "s-1:x1"])
def test_the_sql_store_refuses_an_operation_key_not_of_its_session(
    sqlite_harness: SqlHarness, key: str
) -> None:
    """The operations are keyed by (session, the key's number): a key that
    is not ``<session id>:<n>`` could not be found again by its number, and
    fails the write before anything of it is committed."""
    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    ws.add_op(an_op(key, "cmp-0", "vm-0-1"))
    with pytest.raises(ValueError, match="is not 's-1:<number>'"):
        h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert h.store.load("s-1").version == 0


def test_a_reply_only_step_is_three_statements(sqlite_harness: SqlHarness) -> None:
    h = sqlite_harness
    h.store.insert(new_session())
    reply = h.add_reply("s-1", "p0", "ACK_PREPARE")
    ws, fence = held(h)
    ws.update_project("p0", awaiting=False, state="ACK_PREPARE", replied_at=T0)
    ws.processed(reply, "accepted", T0)
    counter = Counted(h.database)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert counter.statements == [
        "UPDATE session_clock",
        "UPDATE session_projects",
        "UPDATE inbox",
    ]
    assert counter.commits == 1


def test_a_step_that_changed_nothing_writes_only_the_fence(sqlite_harness: SqlHarness) -> None:
    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    ws.set_instance_state("vm-0-0", "PENDING")  # the value it has: nothing changes
    counter = Counted(h.database)
    h.store.write(ws.take_write(fence, next_wake=datetime(2026, 1, 2), lease_expires=T0))
    assert counter.statements == ["UPDATE session_clock"]


def test_the_memory_store_refuses_a_duplicate_operation_key() -> None:
    h = MemoryHarness()
    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    ws.update_op("s-1:1", handled=True)
    h.store.write(ws.take_write(Fence("s-1", OWNER, 1, 1), next_wake=None, lease_expires=T0))
    ws, fence = held(h)
    assert "s-1:1" not in ws.ops  # handled: not loaded
    a_step(ws)  # the same key again, as a unique key refuses in SQL
    with pytest.raises(KeyError, match="s-1:1"):
        h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert h.store.load("s-1").version == 2


def test_remembered_bound_values_are_the_types_own() -> None:
    """The SQLite write path remembers a datetime's bound text and None's
    bound form; what it binds equals what the column types bind, for an
    instant given in another zone (the same instant: the same text), for
    None and for JSON bodies, which are encoded afresh each time (a body
    changed in place binds its new content)."""
    from datetime import timedelta

    from sqlalchemy.dialects import sqlite

    from fenix_core.core.sql_store import Prepared
    from fenix_core.core.statements import STATEMENTS

    prepared = Prepared(STATEMENTS.update_ops, sqlite.dialect())
    compiled = STATEMENTS.update_ops.compile(dialect=sqlite.dialect())
    own = compiled._bind_processors
    east = timezone(timedelta(hours=2))
    body: dict[str, Any] = {"host": "cmp-0"}
    samples = [
        ("b_next_poll", T0),
        ("b_next_poll", T0.astimezone(east)),
        ("b_next_poll", None),
        ("b_finished_at", T0 + timedelta(seconds=1)),
        ("b_result", None),
        ("b_result", body),
    ]
    for name, value in samples * 2:
        index = prepared.names.index(name)
        assert prepared.processors[index](value) == own[name](value), (name, value)
    # Statements of one store share what a type's values bound as: another
    # statement's datetime column answers from it with the same text.
    known: dict[str, Any] = {}
    first = Prepared(STATEMENTS.update_ops, sqlite.dialect(), known)
    other = Prepared(STATEMENTS.insert_ops, sqlite.dialect(), known)
    other_own = STATEMENTS.insert_ops.compile(dialect=sqlite.dialect())._bind_processors
    for value in (T0, T0.astimezone(east), None):
        at = first.processors[first.names.index("b_next_poll")](value)
        again = other.processors[other.names.index("b_created_at")](value)
        assert at == again == other_own["b_created_at"](value)
    body["host"] = "cmp-1"
    index = prepared.names.index("b_result")
    assert prepared.processors[index](body) == own["b_result"](body) == '{"host": "cmp-1"}'


def test_a_new_utc_instant_is_bound_without_sqlalchemys_processors() -> None:
    """Most instants a step binds are new (its time, the next poll): an aware
    UTC one is written as SQLite's text straight away, the type decorator's
    processor called for none of them (an instant in another zone still
    goes through it), and the text is the column type's."""
    from datetime import timedelta
    from unittest import mock

    from sqlalchemy.dialects import sqlite

    from fenix_core.core.sql_store import Prepared
    from fenix_core.core.statements import STATEMENTS
    from fenix_core.store.schema import UTCDateTime

    own = STATEMENTS.update_ops.compile(dialect=sqlite.dialect())._bind_processors
    real = UTCDateTime.process_bind_param
    with mock.patch.object(UTCDateTime, "process_bind_param", autospec=True) as through:
        through.side_effect = real
        prepared = Prepared(STATEMENTS.update_ops, sqlite.dialect())
        bind = prepared.processors[prepared.names.index("b_next_poll")]
        through.reset_mock()  # the processors were compared with samples
        instants = [T0 + timedelta(seconds=n, microseconds=n % 2) for n in range(3)]
        texts = [bind(at) for at in instants]
        assert through.call_count == 0
        east = T0.astimezone(timezone(timedelta(hours=2))) + timedelta(minutes=1)
        assert bind(east) == own["b_next_poll"](east)
        assert through.call_count >= 1
    assert texts == [own["b_next_poll"](at) for at in instants]
    assert texts[1] == "2026-01-01 00:00:01.000001"


def _written_once(h: SqlHarness) -> Any:
    """A new session, held by OWNER, with one step written (an instance
    done; due at T0, its lease to T0); the working set."""
    h.store.insert(new_session())
    ws, fence = held(h)
    ws.set_instance_state("vm-0-0", "DONE")
    h.store.write(ws.take_write(fence, next_wake=T0, lease_expires=T0))
    return ws


def test_the_writes_connection_is_given_back_by_close_and_taken_again(
    sqlite_harness: SqlHarness,
) -> None:
    """On SQLite the writes keep one connection (checked out of the pool);
    close() gives it back, and a later write takes one again."""
    h = sqlite_harness
    pool = h.database.pool
    ws = _written_once(h)
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    h.store.close()
    assert pool.checkedout() == 0  # type: ignore[attr-defined]
    fence = Fence("s-1", OWNER, 1, ws.version)
    ws.set_instance_state("vm-0-1", "DONE")
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert h.store.load("s-1").instances["vm-0-1"].state == "DONE"


def test_reads_and_reply_batches_use_the_writes_connection_and_leave_it_free(
    sqlite_harness: SqlHarness,
) -> None:
    """On SQLite the poller's reads, a step's inbox read and a reply batch
    use the connection the writes keep (no other is checked out: its page
    cache outlives each commit); a read through SQLAlchemy leaves no
    transaction open, so the next write begins its own, and a transaction
    that raised commits nothing."""
    from fenix_core.core.poller import SqlDbPoller

    h = sqlite_harness
    pool = h.database.pool
    ws = _written_once(h)
    poller = SqlDbPoller(h.database, reading=h.store.reading)
    assert poller.poll(T0) == ["s-1"]  # due at T0, its lease (to T0) expired
    with h.store.transaction() as db:
        db.execute(
            insert(InboxRow).values(
                session_id="s-1",
                project_id="p0",
                state="ACK_PREPARE",
                instance_actions={},
                received_at=T0,
            )
        )

    def refused() -> None:
        with h.store.transaction() as db:
            db.execute(update(SessionClockRow).values(seq=99))
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError):
        refused()
    assert [r[1] for r in h.store.unprocessed_replies("s-1")] == ["p0"]
    with h.store.reading() as db:
        assert db.execute(select(SessionClockRow.seq)).scalar_one() == 0
    assert pool.checkedout() == 1  # type: ignore[attr-defined]
    fence = Fence("s-1", OWNER, 1, ws.version)
    ws.set_instance_state("vm-0-1", "DONE")
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert h.store.load("s-1").instances["vm-0-1"].state == "DONE"
    assert pool.checkedout() == 1  # type: ignore[attr-defined]


def test_a_write_whose_commit_failed_is_written_again_from_the_last_commit(
    harness: Any,
) -> None:
    """A COMMIT that fails on the way (the connection dropped before it
    reached the database) writes nothing, and the step made again from the
    last commit (loaded again, the same fence) is written once: the failed
    transaction does not linger on a connection the store keeps, where it
    would hold SQLite's write lock and fence its own retry out."""
    if isinstance(harness, MemoryHarness):
        pytest.skip("no connection to lose")
    _a_commit_fails_then_the_step_is_written_again(harness)


def test_a_failed_commit_keeps_an_in_memory_sqlite_database() -> None:
    """The store gives back (does not discard) the connection a write failed
    on: an in-memory SQLite database is that one connection."""
    database = open_database("sqlite://")
    migrate(database)
    harness = SqlHarness(database)
    try:
        _a_commit_fails_then_the_step_is_written_again(harness)
    finally:
        harness.store.close()
        database.dispose()


def test_a_commit_the_driver_refuses_is_raised_as_sqlalchemys_and_rolled_back(
    sqlite_harness: SqlHarness,
) -> None:
    """The step's write commits at the driver (no SQLAlchemy transaction
    around it): a COMMIT the driver itself refuses (``disk I/O error``)
    must still reach the caller as SQLAlchemy's OperationalError, which
    the engine retries, with the transaction rolled back (nothing written,
    SQLite's write lock not held) and the ``commit`` listeners called as
    SQLAlchemy calls them; the step made again is written once."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    counted = Counted(h.database)
    dialect = h.database.dialect
    original = dialect.do_commit
    refuse: list[bool] = [True]

    def do_commit(connection: Any) -> None:
        if refuse:
            refuse.clear()
            raise sqlite3.OperationalError("disk I/O error")
        original(connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    try:
        with pytest.raises(OperationalError):
            h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
        assert counted.commits == 1
        again = h.store.load("s-1")
        assert again.version == 0
        assert not again.ops
        a_step(again)
        h.store.write(again.take_write(fence, next_wake=None, lease_expires=T0))
    finally:
        dialect.do_commit = original  # type: ignore[method-assign]
    assert counted.commits == 2
    assert h.store.load("s-1").version == 1


def test_a_fenced_out_write_leaves_no_transaction_open(sqlite_harness: SqlHarness) -> None:
    """A write fenced out (another worker's token) began a transaction at
    the driver with its fence's UPDATE: it is rolled back, not left open on
    the connection the store keeps, where it would hold SQLite's write lock
    (no other connection could write) and carry into the next write."""
    import sqlite3

    from fenix_core.store.leases import LeaseLost

    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    taken = Fence(fence.session_id, fence.owner, fence.token + 1, fence.version)
    with pytest.raises(LeaseLost):
        h.store.write(ws.take_write(taken, next_wake=None, lease_expires=T0))
    path = h.database.url.database
    assert path is not None
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if it were held
        other.execute("ROLLBACK")
    finally:
        other.close()
    again, _ = held(h)
    assert again.version == 0
    assert not again.ops


def _a_commit_fails_then_the_step_is_written_again(h: SqlHarness) -> None:
    from sqlalchemy.exc import OperationalError

    h.store.insert(new_session())
    ws, fence = held(h)
    a_step(ws)
    lose: list[bool] = [True]

    def dropped(_conn: Any) -> None:
        if lose:
            lose.clear()
            raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))

    event.listen(h.database, "commit", dropped)
    with pytest.raises(OperationalError):
        h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    again = h.store.load("s-1")
    assert again.version == 0
    assert not again.ops
    a_step(again)
    h.store.write(again.take_write(fence, next_wake=None, lease_expires=T0))
    written = h.store.load("s-1")
    assert written.version == 1
    assert list(written.ops) == ["s-1:1"]
    assert [seq for seq, _, _ in h.outbox("s-1")] == [1]


def test_a_timer_set_for_the_first_time_is_only_inserted(sqlite_harness: SqlHarness) -> None:
    """A timer with no stored row needs no DELETE before its INSERT (one
    statement, not two); one stored already is updated (one statement: it
    was a DELETE and an INSERT), one set and cancelled within the step
    writes nothing."""
    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    ws.set_timer("deadline", T0, {"project": "p0"})
    ws.set_timer("gone", T0)
    ws.cancel_timer("gone")
    counter = Counted(h.database)
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    assert counter.statements == ["UPDATE session_clock", "INSERT timers"]
    later = datetime(2026, 1, 2, tzinfo=T0.tzinfo)
    ws.set_timer("deadline", later, {"project": "p0"})
    counter = Counted(h.database)
    h.store.write(ws.take_write(Fence("s-1", OWNER, 1, 1), next_wake=None, lease_expires=T0))
    assert counter.statements == ["UPDATE session_clock", "UPDATE timers"]
    loaded = h.store.load("s-1")
    assert [(t.name, t.due, t.data) for t in loaded.timers.values()] == [
        ("deadline", later, {"project": "p0"})
    ]
    ws.cancel_timer("deadline")
    counter = Counted(h.database)
    h.store.write(ws.take_write(Fence("s-1", OWNER, 1, 2), next_wake=None, lease_expires=T0))
    assert counter.statements == ["UPDATE session_clock", "DELETE FROM"]
    assert h.store.load("s-1").timers == {}


def test_a_timer_updated_whose_row_is_missing_is_written_anew(sqlite_harness: SqlHarness) -> None:
    """A timer held since the step began has a stored row; should the
    update find none (the row deleted behind the store), the timer is
    still written: by a delete and an insert, as before the update."""
    from sqlalchemy import delete

    from fenix_core.store.schema import TimerRow

    h = sqlite_harness
    h.store.insert(new_session())
    ws, fence = held(h)
    ws.set_timer("deadline", T0, {"project": "p0"})
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    with h.database.begin() as db:
        db.execute(delete(TimerRow))
    later = datetime(2026, 1, 2, tzinfo=T0.tzinfo)
    ws.set_timer("deadline", later, {"project": "p1"})
    ws.set_timer("other", later)
    counter = Counted(h.database)
    h.store.write(ws.take_write(Fence("s-1", OWNER, 1, 1), next_wake=None, lease_expires=T0))
    assert counter.statements == [
        "UPDATE session_clock",
        "UPDATE timers",
        "DELETE FROM",
        "INSERT timers",
    ]
    loaded = h.store.load("s-1")
    assert sorted((t.name, t.due, t.data) for t in loaded.timers.values()) == [
        ("deadline", later, {"project": "p1"}),
        ("other", later, {}),
    ]


def _bound_value(kind: Any) -> Any:
    """A strategy of Python values a column of this bind type takes."""
    from datetime import UTC, timedelta

    from hypothesis import strategies as st
    from sqlalchemy import JSON, Boolean, Integer

    if isinstance(kind, JSON):
        plain = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5))
        return st.one_of(
            st.none(),
            st.dictionaries(st.text(max_size=5), plain, max_size=3),
            st.lists(plain, max_size=3),
        )
    if isinstance(kind, Boolean):
        return st.booleans()
    if isinstance(kind, Integer):
        return st.integers(-(2**31), 2**31)
    if getattr(kind, "_type_affinity", None) is not None and kind._type_affinity.__name__ in (
        "DateTime",
    ):
        zones = st.sampled_from([UTC, timezone(timedelta(hours=2)), timezone(-timedelta(hours=5))])
        instants = st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=zones
        )
        return st.one_of(st.none(), instants)
    return st.one_of(st.none(), st.text(max_size=8))


def _step_statements() -> list[tuple[Any, tuple[str, ...]]]:
    from fenix_core.core.statements import OP_CHANGED, OP_ROW, STATEMENTS
    from fenix_core.core.working_set import (
        ComponentRec,
        HostRec,
        InstanceRec,
        ProjectRec,
    )

    s = STATEMENTS
    return [
        (s.upsert_ops_sqlite, (*OP_ROW, OP_CHANGED)),
        (s.insert_ops, OP_ROW),
        (s.update_ops, OP_ROW),
        (s.update_instances, InstanceRec.FIELDS),
        (s.insert_instances, InstanceRec.FIELDS),
        (s.update_hosts, HostRec.FIELDS),
        (s.insert_hosts, HostRec.FIELDS),
        (s.update_projects, ProjectRec.FIELDS),
        (s.upsert_components["sqlite"], ComponentRec.FIELDS),
        (s.insert_outbox, ("id", "seq", "signal", "payload", "created_at")),
    ]


@pytest.mark.parametrize(
    "serializer",
    [
        pytest.param("sqlalchemys", marks=pytest.mark.no_cover),
        pytest.param("the engines", marks=pytest.mark.no_cover),
        "another",  # traced: it or "sqlalchemys" is the only test of a branch (docs/testing.md)
    ],
)
def test_rows_bind_what_the_column_types_bind(serializer: str) -> None:
    """Prepared.rows (generated per record layout: datetimes from memory,
    booleans and None inline, empty JSON containers made once, JSON text
    joined from the C encoder's pieces when the dialect serialises with
    json_text.dumps) binds every value of every step statement as the
    column type's own processor does, and as Prepared.row does from a dict
    of the same values; with SQLAlchemy's default serializer, the engine's
    (open_database gives json_text.dumps) and another one."""
    import json

    from hypothesis import given, settings
    from hypothesis import strategies as st
    from sqlalchemy.dialects import sqlite

    from fenix_core.core.sql_store import Prepared
    from fenix_core.core.statements import params
    from fenix_core.store.json_text import dumps

    dialect = {
        "sqlalchemys": sqlite.dialect(),
        "the engines": sqlite.dialect(json_serializer=dumps),
        "another": sqlite.dialect(json_serializer=lambda v: json.dumps(v, sort_keys=True)),
    }[serializer]
    known: dict[str, Any] = {}
    cases = []
    for statement, fields in _step_statements():
        compiled = statement.compile(dialect=dialect)
        kinds = {name: compiled.binds[name].type for name in compiled.positiontup or ()}
        values = [
            _bound_value(kinds[f"b_{f}"]) if f"b_{f}" in kinds else st.integers() for f in fields
        ]
        prepared = Prepared(statement, dialect, known)
        cases.append((prepared, compiled, fields, st.lists(st.tuples(*values), max_size=3)))

    @settings(max_examples=60, deadline=None)
    @given(st.data())
    def check(data: Any) -> None:
        for prepared, compiled, fields, rows_of in cases:
            rows = data.draw(rows_of)
            own = compiled._bind_processors
            expected = []
            for row in rows:
                values = params(fields, row, session_id="s-1")
                expected.append(
                    tuple(
                        own[n](values[n]) if n in own else values[n] for n in compiled.positiontup
                    )
                )
            assert prepared.rows(fields, rows, "s-1") == expected
            assert [prepared.row(params(fields, r, session_id="s-1")) for r in rows] == expected

    check()


def test_json_values_are_bound_without_a_python_call_each() -> None:
    """With the engine's serializer, a non-empty dict or list is bound by the
    generated code from the C encoder's pieces: binding rows makes no Python
    call per JSON value (it made three: the empty-container check,
    SQLAlchemy's processor, the serializer), and the text is the
    processor's."""
    import sys

    from sqlalchemy.dialects import sqlite

    from fenix_core.core.sql_store import Prepared
    from fenix_core.core.statements import OP_ROW, STATEMENTS
    from fenix_core.store.json_text import dumps

    dialect = sqlite.dialect(json_serializer=dumps)
    prepared = Prepared(STATEMENTS.insert_ops, dialect)
    fields = tuple(OP_ROW)
    compiled = STATEMENTS.insert_ops.compile(dialect=dialect)
    json_names = [n for n in compiled.positiontup or () if n in ("b_params", "b_result")]
    assert len(json_names) == 2

    def row(i: int) -> tuple[Any, ...]:
        values: dict[str, Any] = dict.fromkeys(fields)
        values.update(
            n=i, key=f"s-1:{i}", kind="move", params={"target": f"cmp-{i}", "refused": []},
            status="pending", polls=0, result=["é", i], handled=False, created_at=None,
        )  # fmt: skip
        return tuple(values[f] for f in fields)

    rows = [row(i) for i in range(5)]
    prepared.rows(fields, rows[:1], "s-1")  # generated at the first call
    calls: list[str] = []

    def profile(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(profile)
    try:
        bound = prepared.rows(fields, rows, "s-1")
    finally:
        sys.setprofile(None)
    assert calls == ["rows", "convert", "<listcomp>"] or calls == ["rows", "convert"]
    own = compiled._bind_processors
    for values, source in zip(bound, rows, strict=True):
        by_name = dict(zip(compiled.positiontup or (), values, strict=True))
        assert by_name["b_params"] == own["b_params"](source[fields.index("params")])
        assert by_name["b_result"] == own["b_result"](source[fields.index("result")])
    assert by_name["b_result"] == '["\\u00e9", 4]'


def sql_with_two_sessions(harness: Any) -> SqlHarness:
    """The SQL store (the test is skipped on the others) with sessions s-1
    and s-2, for the writes of accepted replies."""
    if not isinstance(harness, SqlHarness):
        pytest.skip("the SQL stores' write of accepted replies")
    harness.store.insert(new_session("s-1"))
    harness.store.insert(new_session("s-2"))
    return harness


def test_accepted_replies_of_two_sessions_are_one_insert_each_and_read_back_as_sent(
    harness: Any,
) -> None:
    """The reply path's write (``insert_replies``): one executemany per
    session in the caller's transaction, each row read back by the step's
    query as it was accepted (its instance actions, its time)."""
    h = sql_with_two_sessions(harness)
    received = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    counter = Counted(h.database)
    with h.store.transaction() as db:
        h.store.insert_replies(
            db,
            [
                (
                    "s-1",
                    ("p0", "ACK_PLANNED_MAINTENANCE", {"vm-0": "MIGRATE"}, received, None, None),
                ),
                ("s-2", ("p1", "ACK_MAINTENANCE", {}, received, None, None)),
                ("s-1", ("p1", "NACK_MAINTENANCE", {}, received, None, None)),
            ],
        )
    assert counter.statements == ["INSERT inbox", "INSERT inbox"]
    assert counter.commits == 1
    first = h.store.unprocessed_replies("s-1")
    assert [row[1:] for row in first] == [
        ("p0", "ACK_PLANNED_MAINTENANCE", {"vm-0": "MIGRATE"}, received),
        ("p1", "NACK_MAINTENANCE", {}, received),
    ]
    assert [row[1:3] for row in h.store.unprocessed_replies("s-2")] == [("p1", "ACK_MAINTENANCE")]


def test_accepted_replies_appended_on_their_own_are_one_insert_each_and_one_commit(
    harness: Any,
) -> None:
    """``append_replies``: replies checked in memory (held sessions), written
    in a transaction of their own that reads nothing: one executemany per
    session and a commit (on SQLite by the kept connection's driver, no
    SQLAlchemy transaction begun); one that fails leaves nothing, and the
    next is written."""
    h = sql_with_two_sessions(harness)
    received = datetime(2026, 1, 1, 12, 0, 30, tzinfo=UTC)
    rows: list[tuple[str, tuple[Any, ...]]] = [
        ("s-1", ("p0", "ACK_PLANNED_MAINTENANCE", {"vm-0": "MIGRATE"}, received, None, None)),
        ("s-2", ("p1", "ACK_MAINTENANCE", {}, received, None, None)),
        ("s-1", ("p1", "NACK_MAINTENANCE", {}, received, None, None)),
    ]
    counter = Counted(h.database)
    begun: list[object] = []
    event.listen(h.database, "begin", begun.append)
    with pytest.raises((sqlite3.IntegrityError, IntegrityError)):  # no such session
        h.store.append_replies([rows[0], ("s-9", rows[1][1])])
    h.store.append_replies(rows)
    assert counter.statements[-2:] == ["INSERT inbox", "INSERT inbox"]
    assert counter.commits == 1
    if h.database.dialect.name == "sqlite":
        assert begun == []
        assert h.database.pool.checkedout() == 1  # type: ignore[attr-defined]
    assert [row[1:] for row in h.store.unprocessed_replies("s-1")] == [
        ("p0", "ACK_PLANNED_MAINTENANCE", {"vm-0": "MIGRATE"}, received),
        ("p1", "NACK_MAINTENANCE", {}, received),
    ]
    assert [row[1:3] for row in h.store.unprocessed_replies("s-2")] == [("p1", "ACK_MAINTENANCE")]


# --------------------------------------------------------------------------- 0014: numbers


def test_each_sessions_notifications_are_its_own_range_of_outbox_ids(harness: Any) -> None:
    """Migration 0014: a session is numbered at insert and its notification
    ``seq`` is stored as ``number * 2**32 + seq``; two sessions' steps,
    written in turn, read back only their own rows, from the watermark on,
    by a store that did not insert them (a restarted engine) too."""
    if not isinstance(harness, SqlHarness):
        pytest.skip("the SQL store's outbox ids")
    h = harness
    for sid in ("s-1", "s-2"):
        h.store.insert(new_session(sid))
    # The last round is written by a store that neither inserted nor loaded
    # the sessions (it reads each number in the write's transaction).
    fresh = SqlSessionStore(h.database)
    for n, store in enumerate((h.store, h.store, fresh)):
        for sid in ("s-1", "s-2"):
            ws, fence = held(h, sid)
            ws.emit("maintenance_host", {"host": f"{sid}/{n}"})
            store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    fresh.close()
    with h.database.connect() as db:
        numbers = dict(db.execute(select(SessionRow.id, SessionRow.number)).all())
        ids = db.execute(select(OutboxRow.session_id, OutboxRow.seq, OutboxRow.id)).all()
    assert len(set(numbers.values())) == 2
    assert sorted(ids) == sorted(
        (sid, seq, numbers[sid] * 2**32 + seq) for sid in numbers for seq in (1, 2, 3)
    )
    for store in (h.store, SqlSessionStore(h.database)):
        for sid in ("s-1", "s-2"):
            rows = store.undelivered(sid, 1)
            assert [(r.session_id, r.seq) for r in rows] == [(sid, 2), (sid, 3)]
            assert [r.payload["host"] for r in rows] == [f"{sid}/1", f"{sid}/2"]


def test_two_workers_inserting_sessions_at_once_get_two_numbers(
    postgres: pg_server.PostgresServer | None,
) -> None:
    """On PostgreSQL two workers' session inserts run at the same time (each
    transaction open, its session inserted, until both are): the sequence
    gives each its own number. The highest plus one would give both the
    same, and the second insert would wait on the first's unique entry."""
    if postgres is None:
        pytest.skip(f"no PostgreSQL server: {pg_server.unavailable()}")
    url = postgres.new_database()
    first = open_database(url)
    migrate(first)
    second = open_database(url)
    both = threading.Barrier(2, timeout=20)
    failed: list[BaseException] = []

    def create(database: Engine, sid: str) -> None:
        try:
            SqlSessionStore(database).insert(new_session(sid), also=lambda _db: both.wait())
        except BaseException as error:
            failed.append(error)
            both.abort()

    threads = [
        threading.Thread(target=create, args=(database, sid))
        for database, sid in ((first, "s-1"), (second, "s-2"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    try:
        assert failed == []
        with first.connect() as db:
            numbers = db.execute(select(SessionRow.number)).scalars().all()
        assert len(numbers) == 2
        assert len(set(numbers)) == 2
    finally:
        first.dispose()
        second.dispose()


def test_a_new_session_is_not_numbered_into_a_deleted_ones_notifications(harness: Any) -> None:
    """The outbox has no foreign key: a session deleted by hand (not by the
    engine's delete, which deletes its range) leaves its notifications. The
    next session still gets a number of its own, and its notifications are
    written and read as its own."""
    if not isinstance(harness, SqlHarness):
        pytest.skip("the SQL store's session numbers")
    h = harness
    h.store.insert(new_session("s-1"))
    ws, fence = held(h, "s-1")
    ws.emit("maintenance_host", {"host": "old"})
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    with h.database.begin() as db:
        db.execute(delete(SessionRow).where(SessionRow.id == "s-1"))
    h.store.insert(new_session("s-2"))
    ws, fence = held(h, "s-2")
    ws.emit("maintenance_host", {"host": "new"})
    h.store.write(ws.take_write(fence, next_wake=None, lease_expires=T0))
    rows = h.store.undelivered("s-2", 0)
    assert [(r.session_id, r.seq, r.payload["host"]) for r in rows] == [("s-2", 1, "new")]
    assert [sid for sid, _, _ in _all_outbox(h)] == ["s-1", "s-2"]


def _all_outbox(h: SqlHarness) -> list[tuple[Any, ...]]:
    with h.database.connect() as db:
        found = db.execute(
            select(OutboxRow.session_id, OutboxRow.seq, OutboxRow.id).order_by(OutboxRow.id)
        )
        return [tuple(r) for r in found]
