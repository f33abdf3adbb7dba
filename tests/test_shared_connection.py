"""An in-memory database is one connection that every thread shares: a read
another thread makes on it while an extension's transaction is open ends
that transaction (the driver's rollback is the connection's). So every
public call of the engine that reads the database waits for the engine lock,
which :meth:`Engine.transaction` holds.

Found by the REST webhook test: the sender thread's ``finish`` failed with
"cannot commit - no transaction is active" while ``run_until_done`` read the
session's state in the main thread, and the POSTs behind it waited a minute.
The last test holds that read (between two steps of ``run_until_done``),
found by its SQL through SQLAlchemy's events, while the other thread writes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from sqlalchemy import event
from sqlalchemy.orm import Session

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.store.schema import SubscriptionRow
from fenix_core.testing import ScriptedManager, SimulatedCloud


def small_cloud() -> SimulatedCloud:
    cloud = SimulatedCloud()
    for host in ("cmp-0", "cmp-1"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-a1", project_id="pa", host="cmp-0", vcpus=2)
    return cloud


class Caller(threading.Thread):
    """Makes one call of the engine's in a thread of its own, keeping what
    it raised."""

    def __init__(self, call: Callable[[], object]) -> None:
        super().__init__()
        self.call = call
        self.failures: list[BaseException] = []

    def run(self) -> None:
        try:
            self.call()
        except BaseException as exc:  # reported by the test
            self.failures.append(exc)


def write_a_subscription(orm: Session) -> None:
    orm.add(SubscriptionRow(project_id="late", created_at=datetime.now(UTC)))
    orm.flush()


def assert_written_and_read(engine: Engine, other: Caller) -> None:
    other.join(timeout=30)
    assert not other.is_alive()
    assert other.failures == []
    assert "late" in engine.subscriptions()


READERS: dict[str, Callable[[Engine, str], object]] = {
    "lease_holder": lambda engine, sid: engine.lease_holder(sid),
    "list_sessions": lambda engine, sid: engine.list_sessions(),
    "subscriptions": lambda engine, sid: engine.subscriptions(),
    "get_plan": lambda engine, sid: engine.get_plan(sid),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_read_from_another_thread_leaves_an_open_transaction_alone(reader: str) -> None:
    cloud = small_cloud()
    with Engine(clock=SimClock(), plugins=[cloud], load_entry_points=False) as engine:
        ScriptedManager(engine, "pa", cloud=cloud)
        session_id = engine.create_session({"approval": "required"})
        other = Caller(lambda: READERS[reader](engine, session_id))
        with engine.transaction() as orm:
            write_a_subscription(orm)
            other.start()
            other.join(timeout=1.0)  # without the lock it has read (and rolled back) by now
        assert_written_and_read(engine, other)


def test_run_until_done_looking_at_a_finished_session_leaves_an_open_transaction_alone() -> None:
    """run_until_done's read of the session's state (between steps) is made
    to happen while another thread opens a transaction: that thread waits
    for it (the engine lock) instead of losing its write to it."""
    cloud = small_cloud()
    with Engine(clock=SimClock(), plugins=[cloud], load_entry_points=False) as engine:
        ScriptedManager(engine, "pa", cloud=cloud)
        session_id = engine.create_session({})
        engine.run_until_done(session_id)
        reading, wrote, read_over = threading.Event(), threading.Event(), threading.Event()
        other = Caller(lambda: engine.run_until_done(session_id))

        def hold_the_read(_c: object, _k: object, statement: str, *_rest: object) -> None:
            if threading.current_thread() is other and statement.startswith(
                "SELECT sessions.state, session_clock.next_wake"
            ):
                reading.set()
                wrote.wait(timeout=1.0)  # without the lock, the write below is open by now

        def read_ended(_connection: object) -> None:  # its connection rolled back
            if threading.current_thread() is other and reading.is_set():
                read_over.set()

        event.listen(engine.database, "before_cursor_execute", hold_the_read)
        event.listen(engine.database, "rollback", read_ended)
        other.start()
        assert reading.wait(timeout=30)
        with engine.transaction() as orm:
            write_a_subscription(orm)
            wrote.set()
            read_over.wait(timeout=1.0)  # without the lock, the read has ended this transaction
        other.join(timeout=30)
        event.remove(engine.database, "before_cursor_execute", hold_the_read)
        event.remove(engine.database, "rollback", read_ended)
        assert_written_and_read(engine, other)
