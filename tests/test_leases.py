"""Several engine workers on one database: session leases, take-over after a
worker dies, and the fence that keeps a worker that lost its lease from
committing. Each test runs on a SQLite file and, where a PostgreSQL server can
be started (see pg_server.py), on PostgreSQL."""

from __future__ import annotations

import gc
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.core.working_set import WorkingSet
from fenix_core.errors import Conflict, NotFound
from fenix_core.signals import SIGNALS
from fenix_core.store.schema import OutboxRow
from fenix_core.testing import (
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
)
from fenix_core.testing.crash import CrashHarness, CrashReport
from fenix_core.testing.seams import stored_clock

LAYOUT = {
    "cmp-0": [("vm-a", "p1", 2), ("vm-b", "p2", 2)],
    "cmp-1": [("vm-c", "p1", 2)],
    "cmp-2": [],
}
UPGRADE = [ActionSpec(plugin="upgrade", type="host")]


def build_cloud() -> SimulatedCloud:
    cloud = SimulatedCloud()
    for host, instances in LAYOUT.items():
        cloud.add_host(host, vcpus=8)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)
    return cloud


Workers = Callable[..., Engine]


@pytest.fixture
def workers(database_url: str) -> Iterator[Workers]:
    """make(worker_id) -> an Engine on the shared database, cloud and clocks."""
    clock, lease_clock = SimClock(), SimClock()
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=60)
    made: list[Engine] = []

    def make(worker_id: str, own_lease_clock: SimClock | None = None) -> Engine:
        """``own_lease_clock``: the worker reads its leases' time there instead
        (a stalled process, whose leases never seem to run out)."""
        engine = Engine(
            database_url,
            clock=clock,
            plugins=[cloud, upgrade],
            load_entry_points=False,
            worker_id=worker_id,
            lease_seconds=30,
            lease_clock=own_lease_clock or lease_clock,
            db_retry_seconds=0.01,
        )
        engine.cloud = cloud  # type: ignore[attr-defined]
        engine.upgrade = upgrade  # type: ignore[attr-defined]
        engine.lease_clock_ = lease_clock  # type: ignore[attr-defined]
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def lease_of(engine: Engine, session_id: str) -> tuple[str | None, int]:
    """The stored lease: its owner and token (the token grows by one each
    time another worker takes the session)."""
    stored = stored_clock(engine.database, session_id)
    return stored.owner, stored.token


def versions(engine: Engine, session_id: str) -> int:
    """How many steps of the session were committed."""
    return stored_clock(engine.database, session_id).version


def test_a_leased_session_is_left_alone_by_other_workers(workers: Workers) -> None:
    a, b = workers("a"), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    assert a.step() == 1
    assert lease_of(a, sid) == ("a", 1)
    before = versions(a, sid)
    assert b.step() == 0
    assert b.run_until_idle() == 0
    assert versions(a, sid) == before
    assert b.next_wake() is None  # not b's to wake for
    with pytest.raises(Conflict, match="another engine worker"):
        b.update_session(sid, retry=True)


def test_a_dead_workers_session_is_taken_over_from_its_last_commit(workers: Workers) -> None:
    a, b = workers("a"), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    for _ in range(6):  # a few steps in, then "a" dies without a word
        a.run_until_idle()
        wake = a.next_wake()
        assert wake is not None
        a.clock.advance_to(wake)  # type: ignore[attr-defined]
    assert a.get_session(sid).state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    assert b.step() == 0
    b.lease_clock_.advance(31)  # type: ignore[attr-defined]
    assert b.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert lease_of(b, sid) == ("b", 2)
    cloud: SimulatedCloud = b.cloud  # type: ignore[attr-defined]
    assert set(migrations_per_instance(cloud).values()) == {1}
    assert Counter(b.upgrade.hosts) == Counter(list(LAYOUT))  # type: ignore[attr-defined]
    with Session(b.database) as orm:
        seqs = orm.scalars(select(OutboxRow.seq).where(OutboxRow.session_id == sid)).all()
    assert sorted(seqs) == list(range(1, stored_clock(b.database, sid).seq + 1))


def test_a_worker_that_lost_its_lease_cannot_commit_a_step(workers: Workers) -> None:
    # "a" stalls: its lease clock stops, so its lease never seems to run out.
    a, b = workers("a", own_lease_clock=SimClock()), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    assert a.step() == 1  # "a" holds the lease and the working set
    assert a.held_sessions() == [sid]
    b.lease_clock_.advance(31)  # type: ignore[attr-defined]
    assert b.step() == 1  # "a" stalled too long: "b" took the session over
    taken = versions(b, sid)
    assert lease_of(b, sid) == ("b", 2)
    # "a" wakes up when the session is next due, still believing it holds the
    # lease: its step runs and its commit is refused by the fence.
    wake = max(w for w in (a.next_wake(), b.next_wake()) if w is not None)
    a.clock.advance_to(wake)  # type: ignore[attr-defined]
    a.step()
    assert versions(a, sid) == taken  # nothing of a's step was committed
    assert a.held_sessions() == []
    assert lease_of(a, sid) == ("b", 2)
    assert b.held_sessions() == [sid]
    assert b.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_a_worker_that_lost_its_lease_keeps_nothing_of_the_session(workers: Workers) -> None:
    """Its working set is dropped with the session, not kept by its runner
    until the session comes back to it (never, here: "b" finishes it)."""
    a, b = workers("a", own_lease_clock=SimClock()), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    gc.collect()
    gc.disable()
    try:
        assert a.step() == 1
        b.lease_clock_.advance(31)  # type: ignore[attr-defined]
        assert b.step() == 1
        wake = max(w for w in (a.next_wake(), b.next_wake()) if w is not None)
        a.clock.advance_to(wake)  # type: ignore[attr-defined]
        a.step()  # refused by the fence: "a" lets the session go
        assert a.held_sessions() == []
        assert b.run_until_done(sid).state == "MAINTENANCE_DONE"
        held = [o for o in gc.get_objects() if isinstance(o, WorkingSet) and o.session.id == sid]
    finally:
        gc.enable()
    assert held == []


def test_run_until_done_waits_while_another_live_worker_holds_the_session(
    workers: Workers,
) -> None:
    """As two processes on one database do: "b" asked to finish a session
    that "a" holds waits (looking again now and then) instead of giving up,
    and takes it over once "a"'s lease runs out ("a" stalled)."""
    a, b = workers("a"), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    assert a.step() == 1
    expire = threading.Timer(0.2, b.lease_clock_.advance, args=(31,))  # type: ignore[attr-defined]
    expire.start()
    try:
        assert b.run_until_done(sid).state == "MAINTENANCE_DONE"
    finally:
        expire.join()
    assert lease_of(b, sid) == ("b", 2)


def test_lease_holder_names_the_live_lease_and_its_expiry(workers: Workers) -> None:
    a, b = workers("a"), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    assert b.lease_holder(sid) is None  # created, not claimed yet
    a.step()
    expires = a.lease_clock.now() + timedelta(seconds=30)
    assert b.lease_holder(sid) == ("a", expires)
    b.lease_clock_.advance(31)  # type: ignore[attr-defined]
    assert b.lease_holder(sid) is None  # expired: nobody holds it
    with pytest.raises(NotFound):
        b.lease_holder("no-such-session")


def test_closing_a_worker_releases_its_leases(workers: Workers) -> None:
    a, b = workers("a"), workers("b")
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    a.step()
    a.close()
    assert lease_of(b, sid) == (None, 1)
    assert b.step() == 1  # at once, without waiting for an expiry
    assert lease_of(b, sid) == ("b", 2)


def test_a_closed_worker_leaves_nothing_to_send_again_or_in_doubt(workers: Workers) -> None:
    """Closing a worker writes what its steps left for their next write:
    the delivery watermark (the next worker sends nothing again) and the
    status of the operations it started (followed, not started again)."""
    a, b = workers("a"), workers("b")
    cloud: SimulatedCloud = a.cloud  # type: ignore[attr-defined]
    delivered: Counter[int] = Counter()

    def count(_sender: object, payload: dict[str, Any]) -> None:
        delivered[payload["seq"]] += 1

    for engine in (a, b):
        for signal in SIGNALS.values():
            signal.connect(count, sender=engine, weak=False)
    upgrade: TimedAction = a.upgrade  # type: ignore[attr-defined]
    starts: Counter[str] = Counter()
    start = upgrade.start

    def counted(context: Any) -> Any:
        starts[context.key] += 1
        return start(context)

    upgrade.start = counted  # type: ignore[method-assign]
    a.subscribe("p1")
    first = ScriptedManager(a, "p1", cloud=cloud)
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    a.run_until_idle()  # announced, and the empty host's upgrade started
    first.close()
    assert delivered
    a.close()
    assert stored_clock(b.database, sid).delivered_seq == max(delivered)
    second = ScriptedManager(b, "p1", cloud=cloud)
    assert b.run_until_done(sid).state == "MAINTENANCE_DONE"
    second.close()
    assert set(delivered.values()) == {1}
    assert sorted(delivered) == list(range(1, stored_clock(b.database, sid).seq + 1))
    assert Counter(upgrade.hosts) == Counter(list(LAYOUT))
    assert set(starts.values()) == {1}  # each run asked to start once


class _Killed(BaseException):
    """The worker process ends here, as with SIGKILL: nothing after it runs."""


@pytest.mark.parametrize("taker", ["another worker", "the same worker, restarted"])
def test_a_question_a_dead_worker_committed_and_never_sent_is_sent_before_its_deadline(
    workers: Workers, taker: str
) -> None:
    """A worker killed between a step's commit and the delivery of its
    notifications leaves them stored and unsent. Whoever takes the session
    sends them as soon as it may take it, and the project can answer: the
    session used to wait for its next wake-up, the question's reply
    deadline, and the project was found silent at the moment it was asked."""
    a = workers("a")
    a.subscribe("p1")
    asked: list[tuple[int, str]] = []

    def killed(_sender: object, payload: dict[str, Any]) -> None:
        raise _Killed

    signal = SIGNALS["maintenance_planned"]
    signal.connect(killed, sender=a, weak=False)
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    with pytest.raises(_Killed):
        a.run_until_idle()  # committed the question to p1, then died sending it
    signal.disconnect(killed, sender=a)
    stored = stored_clock(a.database, sid)
    assert stored.delivered_seq < stored.seq
    deadline = a.project_view(sid, "p1").reply_at
    assert deadline is not None

    if taker == "another worker":
        taker_engine = workers("b")
        assert taker_engine.run_until_idle() == 0  # a's lease is live
        taker_engine.lease_clock_.advance(31)  # type: ignore[attr-defined]
    else:
        taker_engine = workers("a")  # its lease is its own: no wait
    signal.connect(
        lambda _s, payload: asked.append((payload["seq"], payload["state"])),
        sender=taker_engine,
        weak=False,
    )
    manager = ScriptedManager(taker_engine, "p1", cloud=taker_engine.cloud)  # type: ignore[attr-defined]
    taker_engine.run_until_idle()
    assert taker_engine.clock.now() < deadline
    assert asked[0] == (stored.seq, "MAINTENANCE")
    assert taker_engine.project_view(sid, "p1").state == "ACK_MAINTENANCE"
    assert taker_engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    manager.close()
    assert [seq for seq, _ in asked] == sorted({seq for seq, _ in asked})  # each once


# --------------------------------------------------------------------------- processes


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> CrashReport:
    """The crash harness's session run once, without crashes, on SQLite."""
    harness = CrashHarness(tmp_path_factory.mktemp("reference"))
    harness.prepare()
    return harness.run()


def test_postgresql_two_worker_processes_one_killed_mid_session(
    postgres_url: str, reference: CrashReport, tmp_path: Path
) -> None:
    harness = CrashHarness(tmp_path, database_url=postgres_url, lease_seconds=1.0)
    harness.prepare()
    report = harness.run_two_workers(kill_first_after=reference.ticks[0] // 2)
    assert report.kills == 1
    assert harness.problems(report, reference) == [], _debug_reason(
        postgres_url, harness.session_id
    )
    engine = Engine(postgres_url, clock=SimClock(), load_entry_points=False)
    try:
        assert lease_of(engine, harness.session_id) == ("worker-b", 2)
    finally:
        engine.close()


def test_postgresql_crash_resume_at_kill_points(
    postgres_url: str, reference: CrashReport, tmp_path: Path
) -> None:
    harness = CrashHarness(tmp_path, database_url=postgres_url)
    harness.prepare()
    total = reference.ticks[0]
    report = harness.run([total // 3, total // 3, 5])
    assert report.kills == 3
    assert harness.problems(report, reference) == []


def _debug_reason(url: str, sid: str) -> str:
    engine = Engine(url, clock=SimClock(), load_entry_points=False)
    try:
        return str(engine.get_session(sid).reason)
    finally:
        engine.close()
