"""Faults and what the engine does about them: migrations that keep failing,
plug-ins and cloud APIs that raise, and a database connection lost in the
middle of a step (retried with back-off, no effect done twice)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fill, row_counts
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl
from fenix_core.errors import CloudError, InvalidInput
from fenix_core.testing import (
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
)
from fenix_core.testing.seams import stored_clock

LAYOUT = {
    "cmp-0": [("vm-a", "pa", 2), ("vm-b", "pb", 2)],
    "cmp-1": [("vm-c", "pa", 2)],
    "cmp-2": [],
}
UPGRADE = [ActionSpec("upgrade", "host")]


class CountingCloud(SimulatedCloud):
    """Counts start_move calls per key; ``on_start`` runs after each."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.starts: Counter[str] = Counter()
        self.lookups: list[str] = []
        self.on_start: Any = None
        self.broken: dict[str, list[Exception]] = {}

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        self._maybe_raise("start_move")
        handle = super().start_move(instance_id, action, target, key)
        self.starts[key] += 1
        if self.on_start is not None:
            self.on_start()
        return handle

    def find_move(self, key: str) -> str | None:
        self.lookups.append(key)
        return super().find_move(key)

    def disable_host(self, host: str, reason: str) -> None:
        self._maybe_raise("disable_host")
        super().disable_host(host, reason)

    def _maybe_raise(self, method: str) -> None:
        errors = self.broken.get(method)
        if errors:
            raise errors.pop(0)


class NoLookupCloud(SimulatedCloud):
    """A driver without the MoveLookup capability that does not remember keys."""

    find_move = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.starts: Counter[str] = Counter()
        self.on_start: Any = None

    def start_move(self, instance_id: str, action: str, target: str | None, key: str) -> str:
        self.starts[key] += 1
        handle = super().start_move(instance_id, action, target, f"{key}#{self.starts[key]}")
        if self.on_start is not None:
            self.on_start()
        return handle


class LostConnection:
    """Makes the next commit(s) of an engine's database fail like a dropped
    connection: before the commit reaches the database, or after it did (the
    answer is lost)."""

    def __init__(self, engine: Engine) -> None:
        self.db = engine.database
        self.before = 0
        self.after = 0
        self.raised = 0
        event.listen(self.db, "commit", self._before)
        original = self.db.dialect.do_commit

        def do_commit(dbapi_connection: Any) -> None:
            original(dbapi_connection)
            if self.after:
                self.after -= 1
                self._raise()

        self.db.dialect.do_commit = do_commit  # type: ignore[method-assign]

    def _before(self, _conn: Any) -> None:
        if self.before:
            self.before -= 1
            self._raise()

    def _raise(self) -> None:
        self.raised += 1
        raise OperationalError("COMMIT", {}, ConnectionError("server closed the connection"))


@pytest.fixture
def cloud() -> CountingCloud:
    counting = CountingCloud()
    fill(counting, LAYOUT)
    return counting


@pytest.fixture
def engines(tmp_path: Path, fenix_clock: SimClock) -> Iterator[Any]:
    made: list[Engine] = []

    def make(*plugins: object, **kwargs: Any) -> Engine:
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=fenix_clock,
            plugins=list(plugins),
            load_entry_points=False,
            db_retry_seconds=0.001,
            **kwargs,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


# --------------------------------------------------------------------------- migrations


def test_failing_migration_backs_off_then_fails_naming_instance_and_error(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud)
    for _ in range(3):
        cloud.fail_next_migration("vm-a", error="compute service unreachable")
    sid = engine.create_session(SessionRequest(max_migration_retries=2))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "vm-a" in (view.reason or "")
    assert "compute service unreachable" in (view.reason or "")
    assert "3 attempt(s)" in (view.reason or "")
    failed = [e.time for e in cloud.events if e.kind == "migration_failed"]
    started = [
        e.time for e in cloud.events if e.kind == "migration_started" and e.instance_id == "vm-a"
    ]
    waits = [(s - f).total_seconds() for f, s in zip(failed, started[1:], strict=False)]
    # Bounded retries with a doubling, jittered back-off: retry n waits between
    # half and all of 30 s x 2^(n-1).
    assert len(waits) == 2
    assert 15.0 <= waits[0] <= 30.0
    assert 30.0 <= waits[1] <= 60.0
    assert all(cloud.is_enabled(h) for h in LAYOUT)
    assert cloud.host_of("vm-a") == "cmp-0"


# --------------------------------------------------------------------------- cloud API errors


def test_cloud_refusing_to_disable_a_host_fails_the_session_and_leaves_nothing_disabled(
    cloud: CountingCloud, engines: Any
) -> None:
    cloud.broken["disable_host"] = [CloudError("nova-api: 503 Service Unavailable", host="cmp-2")]
    engine = engines(cloud, TimedAction("upgrade", 60))
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "disable host on cmp-2 failed: CloudError: nova-api: 503 Service Unavailable"
    )
    assert all(cloud.is_enabled(h) for h in LAYOUT)


def test_cloud_error_starting_a_migration_is_retried(cloud: CountingCloud, engines: Any) -> None:
    cloud.broken["start_move"] = [RuntimeError("HTTP 502 from the compute API")]
    engine = engines(cloud)
    sid = engine.create_session(SessionRequest())
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert set(migrations_per_instance(cloud).values()) == {1}


def test_cloud_error_reading_the_inventory_is_a_typed_error_and_writes_nothing(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud)
    before = row_counts(engine)

    def broken(hosts: Any = None) -> Any:
        raise ConnectionResetError("keystone: connection reset")

    cloud.list_instances = broken  # type: ignore[method-assign]
    with pytest.raises(CloudError, match="keystone: connection reset"):
        engine.create_session(SessionRequest())
    assert row_counts(engine) == before


class _RaisingOnHost:
    name = "firmware"

    def start(self, context: Any) -> Any:
        raise OSError(f"flash tool crashed on {context.host}")

    def poll(self, context: Any) -> Any:  # pragma: no cover - never reached
        raise AssertionError

    @hookimpl
    def fenix_actions(self) -> Any:
        return [self]


def test_host_action_that_raises_fails_the_session_and_re_enables_only_that_host(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud, _RaisingOnHost())
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("firmware", "host")]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert (
        view.reason
        == "host action 'firmware' failed on cmp-2: OSError: flash tool crashed on cmp-2"
    )
    assert [(e.kind, e.host) for e in cloud.events] == [
        ("disable_host", "cmp-2"),
        ("enable_host", "cmp-2"),
    ]


# --------------------------------------------------------------------------- database


@pytest.mark.parametrize("when", ["before", "after"])
def test_connection_lost_when_committing_a_started_move_is_retried_without_a_second_move(
    cloud: CountingCloud, engines: Any, when: str
) -> None:
    engine = engines(cloud, TimedAction("upgrade", 60))
    lost = LostConnection(engine)

    def drop_next_commit() -> None:
        setattr(lost, when, 1)

    cloud.on_start = drop_next_commit
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert lost.raised == sum(cloud.starts.values()) > 0
    assert set(cloud.starts.values()) == {1}  # no key started twice
    assert set(migrations_per_instance(cloud).values()) == {1}
    if when == "before":
        # The handle was never recorded: the retry found the move by its key.
        assert set(cloud.starts) <= set(cloud.lookups)


def test_without_move_lookup_an_in_doubt_move_is_started_again_with_its_key(
    engines: Any,
) -> None:
    cloud = NoLookupCloud()
    fill(cloud, {"cmp-0": [("vm-a", "pa", 2)], "cmp-1": []})
    engine = engines(cloud)
    lost = LostConnection(engine)
    cloud.on_start = lambda: setattr(lost, "before", 1) if len(cloud.starts) == 1 else None
    sid = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    engine.run_until_done(sid)
    # The same key was handed to the driver again after the lost commit: only
    # a driver that remembers keys (or offers find_move) avoids a second effect.
    first_key = next(iter(cloud.starts))
    assert cloud.starts[first_key] == 2


def test_connection_lost_for_good_reaches_the_caller_and_a_later_run_resumes(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud, TimedAction("upgrade", 60), db_retries=2)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    lost = LostConnection(engine)
    lost.before = 3  # the first try and both retries
    with pytest.raises(OperationalError):
        engine.run_until_done(sid)
    assert lost.raised == 3
    assert stored_clock(engine.database, sid).version == 0  # no step committed
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert set(cloud.starts.values()) == {1}


def test_a_failed_delivery_mark_does_not_send_the_notifications_again(
    cloud: CountingCloud, engines: Any
) -> None:
    """The write that carries the delivery watermark fails and the step is
    retried from the last commit: the stored watermark lags behind what this
    process sent, but it remembers what it sent and does not send it again
    (another process would: at least once; the chaos test found this one)."""
    engine = engines(cloud)
    seen: list[int] = []
    manager = ScriptedManager(engine, "pa", cloud=cloud, on_payload=lambda p: seen.append(p["seq"]))
    sid = engine.create_session(SessionRequest())
    lost: list[str] = []

    @event.listens_for(engine.database, "before_cursor_execute")
    def lose_the_first_mark(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # The step committed and the notifications went out; the write that
        # records them delivered (the next step's fenced UPDATE, which
        # carries the delivery watermark) fails.
        text = statement.lstrip().upper()
        marks = text.startswith("UPDATE SESSION_CLOCK") and "DELIVERED_SEQ" in text
        if marks and seen and not lost:
            lost.append(statement)
            raise OperationalError(statement, {}, ConnectionError("server closed the connection"))

    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    manager.close()
    assert len(lost) == 1
    assert len(seen) > 1
    assert seen == sorted(set(seen))  # each once, in seq order


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("db_retries", -1),
        ("db_retries", 1.5),
        ("db_retries", True),
        ("db_retries", "3"),
        ("db_retry_seconds", 0),
        ("db_retry_seconds", -0.5),
        ("db_retry_seconds", False),
        ("db_retry_seconds", "0.1"),
    ],
)
def test_bad_retry_settings_are_invalid_input_naming_the_field(
    tmp_path: Path, field: str, value: Any
) -> None:
    with pytest.raises(InvalidInput) as caught:
        Engine(f"sqlite:///{tmp_path / 'fenix.db'}", load_entry_points=False, **{field: value})
    assert caught.value.field == field
    assert not (tmp_path / "fenix.db").exists()  # refused before the database is opened


def test_connection_lost_reading_the_replies_is_retried_and_does_not_fail_the_session(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud)
    manager = ScriptedManager(engine, "pa", cloud=cloud)
    sid = engine.create_session(SessionRequest())
    lost: list[str] = []

    @event.listens_for(engine.database, "before_cursor_execute")
    def lose_the_first_inbox_read(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        # A step reads the replies that arrived (inside the workflow's hooks):
        # a database error there is the database's, not the workflow's.
        text = " ".join(statement.upper().split())
        if text.startswith("SELECT INBOX.ID") and "PROCESSED_AT IS NULL" in text and not lost:
            lost.append(statement)
            raise OperationalError(statement, {}, ConnectionError("server closed the connection"))

    view = engine.run_until_done(sid)
    manager.close()
    assert lost
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert set(migrations_per_instance(cloud).values()) == {1}


def test_closing_an_engine_whose_database_is_gone_leaves_the_leases_to_expire(
    cloud: CountingCloud, engines: Any
) -> None:
    engine = engines(cloud, TimedAction("upgrade", 60), db_retries=0)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    engine.step()
    assert engine.held_sessions() == [sid]
    lost = LostConnection(engine)
    lost.before = 1_000
    engine.close()  # no error: the session's lease runs out instead
    assert lost.raised >= 1
    lost.before = 0
    holder = engines(cloud, TimedAction("upgrade", 60)).lease_holder(sid)
    assert holder is not None
    assert holder[0] == engine.worker_id


def test_only_database_faults_are_retried() -> None:
    """A lost connection is retried whatever the driver called it
    (OperationalError, InterfaceError for a connection closed under it, a
    DBAPI error SQLAlchemy took for a disconnect); a refused statement is
    raised at once."""
    from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError

    from fenix_core.core.retry import DbRetry, is_database_fault

    invalidated = DBAPIError("SELECT 1", {}, Exception("gone"), connection_invalidated=True)
    faults = [
        OperationalError("SELECT 1", {}, Exception("server closed the connection")),
        InterfaceError("SELECT 1", {}, Exception("the connection is closed")),
        invalidated,
    ]
    refused = IntegrityError("INSERT", {}, Exception("duplicate key"))
    assert all(is_database_fault(f) for f in faults)
    assert not is_database_fault(refused)
    assert not is_database_fault(ValueError("not the database"))
    retry = DbRetry(2, 0.001, sleep=lambda _: None)
    for fault in faults:
        calls: list[int] = []

        def flaky(fault: Exception = fault, calls: list[int] = calls) -> str:
            calls.append(1)
            if len(calls) == 1:
                raise fault
            return "done"

        assert retry("a call", flaky) == "done"
        assert len(calls) == 2
    calls = []

    def refusing() -> None:
        calls.append(1)
        raise refused

    with pytest.raises(IntegrityError):
        retry("a call", refusing)
    assert len(calls) == 1
