"""Several engine workers on one database (issue 19): claims batched and
bounded by ``max_sessions`` so that workers split the due sessions, leases
on the database's clock on PostgreSQL (a worker whose clock is minutes off
neither takes a live lease nor writes one that outlives ``lease_seconds``),
no operation started on a lease that may have been taken over, and a worker
that loses the database for longer than its lease."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from test_leases import LAYOUT, UPGRADE, build_cloud

from fenix_core import Engine, SessionRequest
from fenix_core.clock import Clock, RealClock, SimClock
from fenix_core.core.leases import DatabaseClock, SqlLeaseKeeper
from fenix_core.core.poller import SqlDbPoller
from fenix_core.errors import InvalidInput
from fenix_core.store.database import open_database
from fenix_core.testing import SimulatedCloud, TimedAction, migrations_per_instance
from fenix_core.testing.seams import stored_clock

FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")


class SkewedClock:
    """This machine's clock, ``by`` off the true time (NTP gone wrong)."""

    def __init__(self, by: timedelta) -> None:
        self.by = by
        self._real = RealClock()

    def now(self) -> datetime:
        return self._real.now() + self.by

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        return self._real.wait(None if until is None else until - self.by, wake)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        self._real.call_at(when - self.by, callback)


def empty_hosts(sessions: int) -> SimulatedCloud:
    """Two hosts without instances per session (``session_hosts(n)``): a
    session's instances would move to other sessions' hosts (every session
    plans on the whole fleet), which is not what these tests are about."""
    cloud = SimulatedCloud()
    for n in range(sessions):
        for host in session_hosts(n):
            cloud.add_host(host, vcpus=8)
    return cloud


def session_hosts(n: int) -> list[str]:
    return [f"cmp-{n}-{i}" for i in range(2)]


def sim_worker(
    url: str, name: str, clock: Clock, lease_clock: Clock, plugins: list[object], **options: Any
) -> Engine:
    """A worker on simulated time (its leases on ``lease_clock``)."""
    return Engine(
        url,
        clock=clock,
        lease_clock=lease_clock,
        plugins=plugins,
        load_entry_points=False,
        worker_id=name,
        **options,
    )


# --------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("bad", [0, -1, True, 2.5, "3"])
def test_max_sessions_must_be_a_whole_number_of_at_least_one(bad: object) -> None:
    with pytest.raises(InvalidInput) as error:
        Engine(max_sessions=bad, load_entry_points=False)  # type: ignore[arg-type]
    assert error.value.field == "max_sessions"


def test_workers_with_a_capacity_split_the_due_sessions(database_url: str) -> None:
    """Six sessions due at once: without a capacity the first worker to
    claim takes all six; with ``max_sessions=3`` each of two takes three, and
    both run their share to the end."""
    cloud, upgrade = empty_hosts(6), TimedAction("upgrade", seconds=60)
    clock, lease_clock = SimClock(), SimClock()

    def worker(name: str, capacity: int | None) -> Engine:
        return sim_worker(
            database_url, name, clock, lease_clock, [cloud, upgrade], max_sessions=capacity
        )

    greedy = worker("greedy", None)
    sids = [
        greedy.create_session(SessionRequest(hosts=session_hosts(n), actions=UPGRADE))
        for n in range(6)
    ]
    greedy.step()
    assert greedy.held_sessions() == sorted(sids)
    greedy.close()  # releases them all

    a, b = worker("a", 3), worker("b", 3)
    try:
        a.step()
        b.step()
        held_a, held_b = set(a.held_sessions()), set(b.held_sessions())
        assert len(held_a) == len(held_b) == 3
        assert held_a | held_b == set(sids)
        for _ in range(1000):
            if all(a.get_session(s).state in FINAL for s in sids):
                break
            a.run_until_idle()
            b.run_until_idle()
            assert set(a.held_sessions()) <= held_a
            assert set(b.held_sessions()) <= held_b
            wakes = [w for w in (a.next_wake(), b.next_wake()) if w is not None]
            if not wakes:
                break
            clock.advance_to(min(wakes))
        assert {a.get_session(s).state for s in sids} == {"MAINTENANCE_DONE"}
        assert {stored_clock(a.database, s).owner for s in sids} == {"a", "b"}
    finally:
        a.close()
        b.close()
    assert Counter(upgrade.hosts) == Counter(h for n in range(6) for h in session_hosts(n))


def test_a_worker_at_capacity_takes_the_sessions_left_out_as_its_own_end(
    database_url: str,
) -> None:
    """``max_sessions=2`` and five sessions due: never more than two held,
    and every session ends (the ones a claim left out are claimed once a
    held one is let go)."""
    cloud, upgrade = empty_hosts(5), TimedAction("upgrade", seconds=60)
    clock = SimClock()
    engine = sim_worker(database_url, "w", clock, SimClock(), [cloud, upgrade], max_sessions=2)
    try:
        sids = [
            engine.create_session(SessionRequest(hosts=session_hosts(n), actions=UPGRADE))
            for n in range(5)
        ]
        most = 0
        for _ in range(2000):
            if all(engine.get_session(s).state in FINAL for s in sids):
                break
            engine.step()
            most = max(most, len(engine.held_sessions()))
            wake = engine.next_wake()
            if wake is not None and wake > clock.now():
                clock.advance_to(wake)
        assert {engine.get_session(s).state for s in sids} == {"MAINTENANCE_DONE"}
        assert most == 2
    finally:
        engine.close()


# --------------------------------------------------------------------------- database clock


def database_now(engine: Engine) -> datetime:
    with engine.database.connect() as db:
        found: datetime = db.execute(select(func.now())).scalar_one()
    return found


def skewed_worker(url: str, name: str, by: timedelta, lease_seconds: float, **kw: Any) -> Engine:
    """A worker on a machine whose clock is ``by`` off: its engine clock and
    the base of its database lease clock both read that machine clock."""
    machine = SkewedClock(by)
    return Engine(
        url,
        clock=machine,
        lease_clock=DatabaseClock(machine),
        load_entry_points=False,
        worker_id=name,
        lease_seconds=lease_seconds,
        **kw,
    )


def test_postgresql_leases_default_to_the_database_clock(postgres_url: str) -> None:
    engine = Engine(postgres_url, load_entry_points=False)
    skewed = skewed_worker(postgres_url, "skewed", timedelta(minutes=-5), 30)
    try:
        assert isinstance(engine.lease_clock, DatabaseClock)
        # Measured when the engine is made, before any claim or poll.
        off = skewed.lease_clock.now() - database_now(skewed)
        assert abs(off) < timedelta(seconds=10), off
    finally:
        engine.close()
        skewed.close()


@pytest.mark.parametrize("due", [0, 2])
def test_postgresql_a_poll_reads_the_database_clock_in_its_own_statement(
    postgres_url: str,
    due: int,
) -> None:
    """The poller's look measures the lease clock's offset with the answer,
    in ONE statement (no ``SELECT now()`` round trip of its own), whether it
    finds sessions or none: a worker whose clock is 5 minutes behind reads
    the database's time after a poll, and finds the due sessions."""
    cloud = empty_hosts(due)
    plugins = [cloud, TimedAction("upgrade", seconds=0)]
    maker = Engine(postgres_url, plugins=plugins, load_entry_points=False, worker_id="maker")
    made = sorted(
        maker.create_session(SessionRequest(hosts=session_hosts(n), actions=UPGRADE))
        for n in range(due)
    )
    maker.close()
    machine = SkewedClock(timedelta(minutes=-5))
    clock = DatabaseClock(machine)
    db = open_database(postgres_url)
    try:
        poller = SqlDbPoller(db, clock, owner="poller")
        statements: list[str] = []
        event.listen(db, "before_cursor_execute", lambda *a: statements.append(a[2]))
        assert clock.offset == timedelta(0)  # not measured yet: 5 minutes behind
        found = poller.poll(machine.now() + timedelta(minutes=10))
        assert len(statements) == 1, statements
        assert set(made) <= set(found)
        with db.connect() as connection:
            off = clock.now() - connection.execute(select(func.now())).scalar_one()
        assert abs(off) < timedelta(seconds=10), off
    finally:
        db.dispose()


@pytest.mark.parametrize("asking", ["poll", "claim"])
def test_postgresql_a_worker_stalled_after_the_answer_does_not_read_the_database_clock_late(
    postgres_url: str,
    asking: str,
) -> None:
    """The database's ``now()`` is when the transaction began; the worker
    stalls 2 s after the answer came (a starved process) before it carries
    on. Its lease clock must not read that much behind the database's (it
    would count on 2 s of lease it does not have): the offset is taken
    against its clock read before asking, so it errs only a little ahead."""
    cloud = empty_hosts(1)
    plugins = [cloud, TimedAction("upgrade", seconds=0)]
    maker = Engine(postgres_url, plugins=plugins, load_entry_points=False, worker_id="maker")
    sid = maker.create_session(SessionRequest(hosts=session_hosts(0), actions=UPGRADE))
    maker.close()
    clock = DatabaseClock()
    stall = 2.0
    slow, fresh = open_database(postgres_url), open_database(postgres_url)
    event.listen(slow, "after_cursor_execute", lambda *_: time.sleep(stall))
    try:
        if asking == "poll":
            poller = SqlDbPoller(slow, clock, owner="slow")
            assert sid in poller.poll(clock.now() + timedelta(minutes=1))
        else:
            keeper = SqlLeaseKeeper(slow, "slow", 30, clock)
            assert sid in keeper.claim([sid])
        with fresh.connect() as connection:
            ahead = clock.now() - connection.execute(select(func.now())).scalar_one()
        assert timedelta(seconds=-0.5) <= ahead < timedelta(seconds=stall), ahead
    finally:
        slow.dispose()
        fresh.dispose()


@pytest.mark.parametrize("minutes", [5, -5])
def test_postgresql_a_skewed_worker_writes_its_lease_on_the_database_clock(
    postgres_url: str,
    minutes: int,
) -> None:
    """Five minutes ahead or behind, a worker's claim and its steps' writes
    store ``lease_expires`` ~``lease_seconds`` after the database's now()
    (its own clock would have made it five minutes early or late)."""
    cloud = build_cloud()
    worker = skewed_worker(
        postgres_url,
        "skewed",
        timedelta(minutes=minutes),
        30,
        plugins=[cloud, TimedAction("upgrade", seconds=600)],
    )
    try:
        sid = worker.create_session(SessionRequest(actions=UPGRADE))
        assert worker.step() == 1
        stored = stored_clock(worker.database, sid)
        assert stored.owner == "skewed"
        assert stored.version >= 1  # a step's write, not only the claim
        assert stored.expires is not None
        off = stored.expires - (database_now(worker) + timedelta(seconds=30))
        assert abs(off) < timedelta(seconds=10), off
        holder = worker.lease_holder(sid)
        assert holder is not None
        assert holder[0] == "skewed"  # its own view agrees
    finally:
        worker.close()


def test_postgresql_a_worker_minutes_ahead_neither_takes_a_live_lease_nor_keeps_one(
    postgres_url: str,
) -> None:
    """Worker "fast" runs five minutes ahead. A lease "b" holds is live by
    the database's clock: "fast" leaves it. A lease "fast" takes is over a
    second after it stops stepping (``lease_seconds=1``), not five minutes
    later: "b" takes the session then."""
    cloud = build_cloud()
    upgrade = TimedAction("upgrade", seconds=600)
    fast = skewed_worker(
        postgres_url, "fast", timedelta(minutes=5), 1, plugins=[cloud, upgrade], max_sessions=1
    )
    b = real_worker(postgres_url, "b", [cloud, upgrade], LONG_LEASE)
    try:
        first = b.create_session(SessionRequest(hosts=["cmp-0"], actions=UPGRADE))
        assert b.step() == 1
        assert fast.step() == 0  # b's lease is live: not fast's to take
        assert stored_clock(b.database, first).owner == "b"
        b.close()  # releases "first"
        fast.wake(first)  # its poll would find it within lease_seconds / 4
        assert fast.step() == 1
        assert stored_clock(fast.database, first).owner == "fast"
        time.sleep(1.5)  # fast stalls past its lease (by the database's clock)
        b = real_worker(postgres_url, "b", [cloud, upgrade], LONG_LEASE)
        b.wake(first)  # as a reply through b would: b claims it
        b.step()
        assert stored_clock(b.database, first).owner == "b"
        assert stored_clock(b.database, first).token == 3  # b, fast, b again
    finally:
        fast.close()
        b.close()


# ------------------------------------------------------------ operations after a stall


class StallAfterCommit:
    """The lease clock of a worker that stalls once, right after a step's
    commit: armed by the next fenced UPDATE of that step, its next reading
    (the check before the step's operations start) first moves the shared
    lease time 31 s on and lets ``meanwhile`` run (another worker's step)."""

    def __init__(self, shared: SimClock) -> None:
        self.shared = shared
        self.armed = False
        self.stalls = 0  # stalls left to arm
        self.meanwhile: Callable[[], object] = lambda: None

    def arm_on_fence(self, database: Any) -> None:
        self.stalls = 1

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            fenced = statement.lstrip().upper().startswith("UPDATE SESSION_CLOCK SET VERSION")
            if fenced and self.stalls:
                self.stalls -= 1
                self.armed = True

        event.listen(database, "before_cursor_execute", seen)

    def now(self) -> datetime:
        if self.armed:
            self.armed = False
            self.shared.advance(31)
            self.meanwhile()
        return self.shared.now()

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        return self.shared.wait(until, wake)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        self.shared.call_at(when, callback)


def counted_starts(cloud: SimulatedCloud, upgrade: TimedAction) -> Counter[str]:
    """Counts every call that asks the cloud or the action to do something:
    a move or an action run by idempotency key, a host disabled or enabled by
    host (a second call is no second effect, but it is a start on a lease
    that may be lost)."""
    calls: Counter[str] = Counter()
    start_move, start = cloud.start_move, upgrade.start
    disable, enable = cloud.disable_host, cloud.enable_host

    def move(instance_id: str, action: str, target: str | None, key: str) -> str:
        calls[key] += 1
        return start_move(instance_id, action, target, key)

    def run(context: Any) -> Any:
        calls[context.key] += 1
        return start(context)

    def disabled(host: str, reason: str) -> None:
        calls[f"disable {host}"] += 1
        disable(host, reason)

    def enabled(host: str) -> None:
        calls[f"enable {host}"] += 1
        enable(host)

    cloud.start_move = move  # type: ignore[method-assign]
    upgrade.start = run  # type: ignore[method-assign]
    cloud.disable_host = disabled  # type: ignore[method-assign]
    cloud.enable_host = enabled  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("taken", [False, True], ids=["still-its-own", "taken-over"])
def test_a_worker_stalled_past_its_lease_after_a_commit_starts_nothing_it_lost(
    database_url: str,
    taken: bool,
) -> None:
    """ "a" commits a step that submits operations, then stalls past its
    lease before starting them. Nobody took the session: "a" renews its
    lease (same token) and starts them. "b" took it meanwhile and started
    them: "a" starts nothing and lets the session go."""
    cloud, upgrade = build_cloud(), TimedAction("upgrade", seconds=60)
    calls = counted_starts(cloud, upgrade)
    clock, shared = SimClock(), SimClock()
    stalling = StallAfterCommit(shared)

    def worker(name: str, lease_clock: Clock) -> Engine:
        return sim_worker(database_url, name, clock, lease_clock, [cloud, upgrade])

    a, b = worker("a", stalling), worker("b", shared)
    try:
        sid = a.create_session(SessionRequest(actions=UPGRADE))
        assert a.step() == 1  # the session's first step: a reads the cloud
        assert not calls
        if taken:
            stalling.meanwhile = b.step
        stalling.arm_on_fence(a.database)
        assert a.step() == 1  # the next one submits operations, then a stalls
        assert calls, "the first step started nothing: the test proves nothing"
        assert set(calls.values()) == {1}, calls
        owner, token = stored_clock(a.database, sid).owner, stored_clock(a.database, sid).token
        if taken:
            assert (owner, token) == ("b", 2)
            assert a.held_sessions() == []
            assert b.held_sessions() == [sid]
            finisher = b
        else:
            assert (owner, token) == ("a", 1)
            assert a.held_sessions() == [sid]
            finisher = a
    except Exception:
        a.close()
        b.close()
        raise
    try:
        assert finisher.run_until_done(sid).state == "MAINTENANCE_DONE"
        assert set(calls.values()) == {1}, calls
        assert set(migrations_per_instance(cloud).values()) == {1}
    finally:
        a.close()
        b.close()


# ------------------------------------------------------------ the database lost


class CutOff:
    """The network between one worker and PostgreSQL, which the test
    controls: ``cut()`` has the server drop the worker's open connections
    (found by their ``application_name``) and refuses new ones until
    ``restore()``."""

    def __init__(self, worker: Engine, name: str, admin: Any) -> None:
        import psycopg

        self.down = threading.Event()
        self.name = name
        self.admin = admin  # a SQLAlchemy engine of another client

        def refuse(*_args: Any) -> None:
            if self.down.is_set():
                raise psycopg.OperationalError("connection refused (cut off by the test)")

        event.listen(worker.database, "do_connect", refuse)

    def cut(self) -> None:
        self.down.set()
        with self.admin.connect() as db:
            dropped = db.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = :name"
                ),
                {"name": self.name},
            ).scalar_one()
        assert dropped >= 1, "the worker had no connection to drop"

    def restore(self) -> None:
        self.down.clear()


def fast_cloud() -> tuple[SimulatedCloud, TimedAction]:
    """``LAYOUT`` with moves of 0.2 s and a host action of 1 s, real time."""
    cloud = SimulatedCloud(migration_seconds=0.2, live_migration_seconds=0.2)
    for host, instances in LAYOUT.items():
        cloud.add_host(host, vcpus=8)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)
    return cloud, TimedAction("upgrade", seconds=1)


#: The lease of a worker that must keep it however long the machine pauses.
LONG_LEASE = 30.0


def real_worker(url: str, name: str, plugins: list[object], lease_seconds: float = 1) -> Engine:
    """A worker on the real clock. A worker the test needs to lose its
    lease gets 1 s; one that must keep its lease while the test looks gets
    ``LONG_LEASE``, so that a pause of the machine cannot hand it over."""
    return Engine(
        f"{url}?application_name={name}",
        plugins=plugins,
        load_entry_points=False,
        worker_id=name,
        lease_seconds=lease_seconds,
        db_retries=1,
        db_retry_seconds=0.01,
    )


def test_postgresql_a_worker_cut_off_longer_than_its_lease_is_taken_over_and_fenced_out(
    postgres_url: str,
) -> None:
    """ "a" holds a session whose host action runs, and loses the database
    for longer than its 1 s lease. "b" takes the session over (by the
    database's clock). Back online, "a" steps its stale copy: the write is
    fenced out, nothing of it is committed, "a" lets the session go, and "b"
    ends it with every host action run once and every instance moved once
    (idempotency keys: what "a" had started is looked up, not started again)."""
    cloud, upgrade = fast_cloud()
    a = real_worker(postgres_url, "a", [cloud, upgrade])
    b = real_worker(postgres_url, "b", [cloud, upgrade], LONG_LEASE)
    line = CutOff(a, "a", b.database)
    try:
        sid = a.create_session(SessionRequest(actions=UPGRADE))
        deadline = time.monotonic() + 30
        while not upgrade.runs:  # until a host action runs
            a.step()
            assert time.monotonic() < deadline, "no host action started"
            time.sleep(0.01)
        assert a.held_sessions() == [sid]
        line.cut()
        time.sleep(1.5)  # longer than the lease
        b.wake(sid)
        b.step()
        assert stored_clock(b.database, sid).owner == "b"
        taken = stored_clock(b.database, sid).version
        line.restore()
        time.sleep(1.0)  # a's copy falls due (its host action's next poll)
        a.step()
        assert a.held_sessions() == []
        assert stored_clock(b.database, sid).version == taken  # nothing of a's step
        assert stored_clock(b.database, sid).token == 2
        assert b.run_until_done(sid).state == "MAINTENANCE_DONE"
    finally:
        line.restore()
        a.close()
        b.close()
    assert Counter(upgrade.hosts) == Counter(list(LAYOUT))
    assert set(migrations_per_instance(cloud).values()) == {1}


def test_postgresql_run_forever_outlives_a_database_outage_longer_than_the_lease(
    postgres_url: str,
) -> None:
    """The loop of a worker cut off for 2 s (its retries give up after
    ~10 ms) keeps going; once the database is back it finishes the session,
    each host action run once."""
    cloud, upgrade = fast_cloud()
    a = real_worker(postgres_url, "a", [cloud, upgrade])
    observer = Engine(postgres_url, load_entry_points=False)
    line = CutOff(a, "a", observer.database)
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            a.run_forever()
        except BaseException as exc:  # the test reports it
            errors.append(exc)

    worker = threading.Thread(target=loop)
    try:
        sid = a.create_session(SessionRequest(actions=UPGRADE))
        worker.start()
        deadline = time.monotonic() + 30
        while not upgrade.runs:
            assert time.monotonic() < deadline, "no host action started"
            time.sleep(0.01)
        line.cut()
        time.sleep(2.0)
        line.restore()
        while observer.get_session(sid).state not in FINAL:
            assert not errors, errors
            assert time.monotonic() < deadline + 30, "the session did not end"
            time.sleep(0.05)
        assert observer.get_session(sid).state == "MAINTENANCE_DONE"
        assert worker.is_alive()
    finally:
        line.restore()
        a.stop()
        worker.join(timeout=30)
        a.close()
        observer.close()
    assert not errors, errors
    assert Counter(upgrade.hosts) == Counter(list(LAYOUT))


def test_stop_ends_run_forever_after_the_step_under_way_even_when_never_idle() -> None:
    """A plug-in asks the engine to stop at the session's first host action.
    On simulated time the session always has a step due; the loop still
    returns after that step, the session unfinished (it ran to its end
    first, as ``run_until_idle()`` does, and a busy worker never stopped)."""
    cloud, upgrade = empty_hosts(1), TimedAction("upgrade", seconds=0)
    engine = sim_worker("sqlite://", "w", SimClock(), SimClock(), [cloud, upgrade])
    start = upgrade.start

    def stopping(context: Any) -> Any:
        engine.stop()
        return start(context)

    upgrade.start = stopping  # type: ignore[method-assign]
    try:
        sid = engine.create_session(SessionRequest(hosts=session_hosts(0), actions=UPGRADE))
        worker = threading.Thread(target=engine.run_forever)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive()
        assert upgrade.hosts == [session_hosts(0)[0]]
        assert engine.get_session(sid).state not in FINAL
        assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    finally:
        engine.close()
