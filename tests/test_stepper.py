"""The stepper (plan §3.2, §3.3): due queue -> lease -> load -> hooks -> one
fenced write -> operations started after the commit. Built against the ports
with in-memory fakes that refuse what the real store refuses (a write whose
fence does not match the stored lease and version)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import cast

import attrs
import pytest
from sqlalchemy.exc import OperationalError

from fenix_core.clock import SimClock
from fenix_core.core.outbox import Outbox
from fenix_core.core.ports import Fence, NewSession, OutboxRec, StepWrite, WorkingSetLike
from fenix_core.core.stepper import Retrying, StepFrame, StepOutcome, Stepper
from fenix_core.store.leases import LeaseLost

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@attrs.define
class FakeSet:
    session_id: str
    version: int
    delivered_seq: int
    seq: int
    steps: int = 0


@attrs.define
class Stored:
    version: int = 0
    owner: str | None = None
    token: int = 0
    next_wake: datetime | None = T0
    delivered_seq: int = 0
    outbox: list[OutboxRec] = attrs.Factory(list)
    steps: int = 0


class FakeStore:
    """A SessionStore over dicts; ``write`` checks the fence as the SQL
    store's UPDATE ... WHERE does and writes nothing when it fails."""

    def __init__(self) -> None:
        self.rows: dict[str, Stored] = {}
        self.calls: list[str] = []

    def load(self, session_id: str) -> WorkingSetLike:
        self.calls.append(f"load {session_id}")
        row = self.rows[session_id]
        seq = row.outbox[-1].seq if row.outbox else 0
        return FakeSet(session_id, row.version, row.delivered_seq, seq, row.steps)

    def insert(self, new: NewSession) -> None:
        self.calls.append("insert")

    def write(self, write: StepWrite) -> None:
        fence = write.fence
        self.calls.append(f"write {fence.session_id}")
        row = self.rows[fence.session_id]
        if (row.owner, row.token, row.version) != (fence.owner, fence.token, fence.version):
            raise LeaseLost("fenced out", session_id=fence.session_id)
        row.version += 1
        row.next_wake = write.next_wake
        row.delivered_seq = write.delivered_seq
        row.outbox += write.outbox
        row.steps += 1

    def unprocessed_replies(self, session_id: str) -> list[tuple[object, ...]]:
        self.calls.append("replies")
        return []

    def undelivered(self, session_id: str, after_seq: int) -> list[OutboxRec]:
        self.calls.append(f"undelivered {session_id}")
        return [r for r in self.rows[session_id].outbox if r.seq > after_seq]


class FakeLeases:
    def __init__(self, store: FakeStore, owner: str = "me") -> None:
        self.store = store
        self.owner = owner
        self.calls: list[str] = []

    def claim(self, session_ids: Sequence[str]) -> dict[str, Fence]:
        self.calls.append("claim " + ",".join(session_ids))
        got = {}
        for sid in session_ids:
            row = self.store.rows[sid]
            if row.owner in (None, self.owner):
                if row.owner is None:
                    row.token += 1
                row.owner = self.owner
                got[sid] = self.fence(sid)
        return got

    def fence(self, session_id: str, version: int | None = None) -> Fence:
        row = self.store.rows[session_id]
        return Fence(session_id, self.owner, row.token, row.version if version is None else version)

    def release_all(self) -> None:
        self.calls.append("release_all")


class FakeRunner:
    """Each step emits one notification and submits one operation; the
    session finishes after ``finish_after`` steps."""

    def __init__(self, clock: SimClock, finish_after: int = 3) -> None:
        self.clock = clock
        self.finish_after = finish_after
        self.ran: list[str] = []
        self.started: list[tuple[str, object]] = []
        self.before_write: list[str] = []
        self.forgotten: list[str] = []
        self.replies: list[str] = []

    def run(self, working_set: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
        ws = working_set
        assert isinstance(ws, FakeSet)
        self.ran.append(ws.session_id)
        ws.steps += 1
        ws.seq += 1
        write = StepWrite(
            fence=frame.fence,
            next_wake=now,
            lease_expires=frame.lease_expires,
            delivered_seq=frame.delivered_seq,
            inbox_seen_id=0,
            outbox=[OutboxRec(ws.session_id, ws.seq, f"step{ws.steps}", {})],
        )
        finished = ws.steps >= self.finish_after
        return StepOutcome(
            write=write,
            wake=None if finished else now + timedelta(seconds=60),
            starts=[f"op{ws.steps}"],
            finished=finished,
        )

    def start(self, working_set: WorkingSetLike, starts: Sequence[object]) -> None:
        for op in starts:
            self.started.append((working_set.session_id, op))

    def forget(self, session_id: str) -> None:
        self.forgotten.append(session_id)

    def replies_arrived(self, session_id: str) -> None:
        self.replies.append(session_id)


class FakePoller:
    def __init__(self, store: FakeStore, owner: str = "me") -> None:
        self.store = store
        self.owner = owner
        self.calls = 0
        self.replied: frozenset[str] = frozenset()
        self.behind: frozenset[str] = frozenset()

    def poll(self, now: datetime) -> list[str]:
        self.calls += 1
        return sorted(
            sid
            for sid, row in self.store.rows.items()
            if row.owner is None and row.next_wake is not None and row.next_wake <= now
        )


class World:
    def __init__(
        self,
        *,
        poller: bool = False,
        send: Callable[[OutboxRec], None] | None = None,
        lease_clock: SimClock | None = None,
        retry: Retrying | None = None,
    ) -> None:
        """``send``: what delivering a notification does (default: note it in
        ``sent``); ``lease_clock``: the leases' own (default: the engine's)."""
        self.clock = SimClock(start=T0)
        self.store = FakeStore()
        self.leases = FakeLeases(self.store)
        self.runner = FakeRunner(self.clock)
        self.sent: list[tuple[str, int]] = []
        self.outbox = Outbox(send or (lambda r: self.sent.append((r.session_id, r.seq))))
        self.poller = FakePoller(self.store) if poller else None
        self.stepper = Stepper(
            self.store,
            self.leases,
            self.runner,
            self.outbox,
            clock=self.clock,
            lease_clock=lease_clock or self.clock,
            lease_seconds=30,
            poller=self.poller,
            poll_seconds=10,
            leftovers=self.store,
            retry=retry,
        )

    def session(self, sid: str) -> None:
        self.store.rows[sid] = Stored()

    def sql_calls(self) -> list[str]:
        return self.store.calls + self.leases.calls


def test_an_idle_stepper_calls_nothing() -> None:
    w = World()
    w.session("s1")  # exists, but nothing woke it and there is no poller
    for _ in range(5):
        assert w.stepper.step() == 0
        w.clock.advance(3600)
    assert w.sql_calls() == []
    assert w.runner.ran == []


def test_an_idle_stepper_with_a_poller_asks_only_each_poll_interval() -> None:
    w = World(poller=True)
    assert w.stepper.step() == 0
    assert w.stepper.step() == 0
    w.clock.advance(9)
    assert w.stepper.step() == 0
    assert w.poller is not None
    assert w.poller.calls == 1
    w.clock.advance(1)
    w.stepper.step()
    assert w.poller.calls == 2
    assert w.sql_calls() == []


def test_due_now_says_whether_a_step_would_find_work_without_stepping() -> None:
    """A session due in the queue, or the poller's look: a loop stepping
    until idle asks this instead of making a step that finds nothing."""
    w = World(poller=True)
    w.session("s1")
    w.store.rows["s1"].next_wake = None  # due only when woken
    assert w.stepper.due_now()  # never polled: the first step asks the database
    w.stepper.step()
    assert not w.stepper.due_now()
    w.stepper.wake("s1")
    assert w.stepper.due_now()
    w.stepper.step()
    assert not w.stepper.due_now()  # its next wake is later, the poll too
    assert w.runner.ran == ["s1"]
    w.clock.advance(10)
    assert w.stepper.due_now()  # the poll interval ended
    assert w.poller is not None
    calls = w.poller.calls
    assert w.stepper.due_now()  # asking changes nothing
    assert w.poller.calls == calls
    assert w.runner.ran == ["s1"]


def test_a_due_session_is_stepped_once_then_at_its_wake() -> None:
    w = World()
    w.session("s1")
    w.stepper.wake("s1")
    assert w.stepper.step() == 1
    assert w.runner.ran == ["s1"]
    assert w.store.calls == ["load s1", "undelivered s1", "write s1"]
    assert w.runner.started == [("s1", "op1")]  # after the commit
    assert w.sent == [("s1", 1)]
    assert w.stepper.step() == 0  # not due again until its wake
    assert w.store.calls == ["load s1", "undelivered s1", "write s1"]
    assert w.stepper.next_wake() == T0 + timedelta(seconds=60)
    w.clock.advance(60)
    assert w.stepper.step() == 1
    # held: no load and no claim the second time; the watermark rides the write
    assert w.store.calls[3:] == ["write s1"]
    assert w.leases.calls == ["claim s1"]
    assert w.store.rows["s1"].delivered_seq == 1


def test_a_finished_session_is_let_go() -> None:
    w = World()
    w.session("s1")
    w.stepper.wake("s1")
    for _ in range(3):
        w.stepper.step()
        w.clock.advance(60)
    assert w.runner.ran == ["s1"] * 3
    assert w.stepper.held("s1") is None
    assert w.stepper.next_wake() is None
    assert w.stepper.step() == 0


def test_a_reply_to_a_held_session_steps_it_without_a_poll() -> None:
    w = World(poller=True)
    w.session("s1")
    w.stepper.step()  # the first poll finds and steps s1
    assert w.poller is not None
    assert w.poller.calls == 1
    w.clock.advance(1)
    w.stepper.wake("s1")  # a reply came in
    assert w.stepper.step() == 1
    assert w.poller.calls == 1
    assert w.runner.ran == ["s1", "s1"]


def test_an_unleased_due_session_is_found_by_the_poller() -> None:
    w = World(poller=True)
    w.session("mine")
    w.session("theirs")
    w.store.rows["theirs"].owner = "other"
    assert w.stepper.step() == 1
    assert w.runner.ran == ["mine"]
    assert w.store.rows["mine"].owner == "me"


def test_a_session_held_by_another_worker_is_not_stepped() -> None:
    w = World()
    w.session("s1")
    w.store.rows["s1"].owner = "other"
    w.stepper.wake("s1")
    assert w.stepper.step() == 0
    assert w.runner.ran == []
    assert "load s1" not in w.store.calls


def test_lease_lost_rolls_the_step_back_and_drops_the_session() -> None:
    w = World()
    w.session("s1")
    w.stepper.wake("s1")
    w.stepper.step()
    before = attrs.evolve(w.store.rows["s1"])
    started = list(w.runner.started)
    sent = list(w.sent)
    # another worker takes the session over (its lease expired)
    w.store.rows["s1"].owner = "other"
    w.store.rows["s1"].token += 1
    w.clock.advance(60)
    assert w.stepper.step() == 0
    assert w.runner.ran == ["s1", "s1"]  # the hooks ran ...
    row = w.store.rows["s1"]
    assert (row.version, row.steps, row.outbox) == (before.version, before.steps, before.outbox)
    assert w.runner.started == started  # ... but nothing was started
    assert w.sent == sent  # ... nor delivered
    assert w.stepper.held("s1") is None
    assert "s1" not in w.stepper.queue
    assert w.runner.forgotten == ["s1"]  # nor does the runner keep anything of it
    w.clock.advance(3600)
    assert w.stepper.step() == 0
    assert w.runner.ran == ["s1", "s1"]


def test_a_taken_over_session_resends_its_leftovers_once_before_stepping() -> None:
    w = World()
    w.session("s1")
    w.store.rows["s1"].outbox = [OutboxRec("s1", 1, "a", {}), OutboxRec("s1", 2, "b", {})]
    w.store.rows["s1"].delivered_seq = 1  # the dead worker had sent 1 (maybe 2)
    w.stepper.wake("s1")
    w.stepper.step()
    assert w.sent == [("s1", 2), ("s1", 3)]
    assert w.store.rows["s1"].delivered_seq == 2


def test_a_failing_hook_leaves_nothing_written_and_the_session_unheld() -> None:
    w = World()
    w.session("s1")

    def boom(*args: object) -> StepOutcome:
        raise RuntimeError("workflow bug")

    w.runner.run = boom  # type: ignore[method-assign]
    w.stepper.wake("s1")
    with pytest.raises(RuntimeError):
        w.stepper.step()
    assert w.store.rows["s1"].version == 0
    assert w.stepper.held("s1") is None


def test_a_held_session_listed_by_the_poller_waits_for_its_own_wake() -> None:
    w = World(poller=True)
    w.session("s1")
    assert w.poller is not None
    w.poller.owner = "nobody"
    w.stepper.step()  # found and stepped: wake in 60 s
    w.poller.poll = lambda now: ["s1"]  # type: ignore[method-assign]
    w.clock.advance(30)  # the poll interval passed, the session's wake has not
    assert w.stepper.step() == 0
    w.clock.advance(30)
    assert w.stepper.step() == 1
    assert w.runner.ran == ["s1", "s1"]


def test_a_reply_sent_from_inside_the_delivery_wakes_the_session_at_once() -> None:
    """A receiver may reply while its notification is delivered, after the
    step committed: that wake-up is kept, not replaced by the step's own
    (later) wake."""
    w = World(send=lambda r: w.stepper.wake(r.session_id))
    w.session("s1")
    w.stepper.wake("s1")
    assert w.stepper.step() == 1
    assert w.stepper.next_wake() == T0  # the reply's, not T0 + 60 s
    assert w.stepper.step() == 1
    assert w.runner.ran == ["s1", "s1"]


def test_started_operations_may_bring_the_next_step_forward() -> None:
    """``StepRunner.start`` says when the operations it started need looking
    at (one that ended at once: now); the session is due then."""
    w = World()
    w.session("s1")
    w.runner.start = lambda ws, starts: T0 + timedelta(seconds=5)  # type: ignore[method-assign]
    w.stepper.wake("s1")
    assert w.stepper.step() == 1
    assert w.stepper.next_wake() == T0 + timedelta(seconds=5)


def test_a_held_idle_session_changed_through_the_database_is_loaded_again() -> None:
    """An admin's control written by another process under this worker's
    lease (version moved, next_wake now): the copy of a session held here
    with nothing scheduled is dropped when the poller lists it, and the
    session is loaded as stored."""
    w = World(poller=True)
    w.session("s1")
    runner_run = w.runner.run
    w.runner.run = lambda ws, now, frame: attrs.evolve(  # type: ignore[method-assign]
        runner_run(ws, now, frame), wake=None
    )
    w.stepper.wake("s1")
    assert w.stepper.step() == 1  # held, waiting for nothing (a reply, say)
    row = w.store.rows["s1"]
    row.version += 1  # the control's write, fenced by this worker's lease
    row.next_wake = w.clock.now()
    assert w.poller is not None
    w.poller.poll = lambda now: ["s1"] if w.store.rows["s1"].next_wake else []  # type: ignore[method-assign]
    w.clock.advance(10)  # the poll interval
    assert w.stepper.step() == 1  # the stale copy dropped: claimed, loaded, stepped
    assert w.store.calls.count("load s1") == 2
    assert row.steps == 2


def test_a_held_session_found_only_for_its_unsent_notifications_is_not_loaded_again() -> None:
    """The poller also finds sessions whose stored watermark is behind their
    last notification (a worker died before sending them). For a session
    held here that is only the watermark the next write carries: it is
    neither loaded again nor stepped before its wake-up."""
    w = World(poller=True)
    w.session("s1")
    w.stepper.wake("s1")
    assert w.stepper.step() == 1  # sent its notification; the next write marks it
    assert w.poller is not None
    w.poller.poll = lambda now: ["s1"]  # type: ignore[method-assign]
    w.poller.behind = frozenset({"s1"})
    w.stepper.queue.drop("s1")  # nothing scheduled: waiting for a reply, say
    w.clock.advance(10)  # the poll interval
    assert w.stepper.step() == 0
    assert w.store.calls.count("load s1") == 1
    assert w.runner.ran == ["s1"]
    assert w.stepper.held("s1") is not None


def test_a_fenced_out_session_is_looked_for_at_the_next_step() -> None:
    """A step fenced out (the session changed under this worker's lease)
    makes the next step poll at once, not a poll interval later."""
    w = World(poller=True)
    w.session("s1")
    w.stepper.wake("s1")
    assert w.stepper.step() == 1  # wake in 60 s
    w.store.rows["s1"].version += 1  # written by someone else under this lease
    w.clock.advance(60)
    assert w.stepper.step() == 0  # fenced out
    assert w.stepper.next_wake() == w.clock.now()  # poll now


class ReadCounting(SimClock):
    """A lease clock that counts its readings."""

    def __init__(self) -> None:
        super().__init__(start=T0)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now()


def _written_lease_expires(w: World) -> list[datetime]:
    seen: list[datetime] = []
    store_write = w.store.write

    def write(write: StepWrite) -> None:
        seen.append(write.lease_expires)
        store_write(write)

    w.store.write = write  # type: ignore[method-assign]
    return seen


def test_a_held_sessions_step_counts_its_lease_from_the_reading_it_was_handed() -> None:
    """The engine's step reads the lease clock once, for its own look at the
    host changes and for the stepper: the first session's lease expiry is
    counted from that reading (nothing took time in between), and the clock
    is read again only after the commit, before starting operations."""
    leases = ReadCounting()
    w = World(lease_clock=leases)
    w.session("s1")
    w.stepper.wake("s1")
    w.stepper.step()  # loaded and claimed: held from now on
    expires = _written_lease_expires(w)
    w.clock.advance(60)
    leases.advance(60)
    handed = leases.now() - timedelta(seconds=1)  # read by the caller a moment ago
    reads = leases.reads
    assert w.stepper.step(handed) == 1
    assert expires == [handed + timedelta(seconds=30)]
    assert leases.reads - reads == 1  # the check before starting the step's operations


def test_a_poll_before_the_step_means_a_new_lease_reading() -> None:
    """A look at the database between the reading and the step takes time:
    the lease expiry is counted from a reading made after it."""
    leases = ReadCounting()
    w = World(poller=True, lease_clock=leases)
    w.session("s1")
    w.stepper.wake("s1")
    w.stepper.step()
    expires = _written_lease_expires(w)
    assert w.poller is not None
    poll = w.poller.poll

    def slow_poll(now: datetime) -> list[str]:
        leases.advance(5)  # the database answered slowly
        return poll(now)

    w.poller.poll = slow_poll  # type: ignore[method-assign]
    w.clock.advance(60)
    leases.advance(60)
    handed = leases.now()
    assert w.stepper.step(handed) == 1
    assert expires == [handed + timedelta(seconds=35)]


def test_a_step_made_again_reads_the_lease_clock_anew() -> None:
    """A step retried after a lost connection (the retry waited) counts its
    lease from a new reading, not from the one handed to its first attempt."""
    leases = ReadCounting()
    attempts: list[int] = []

    def retry(what: str, call: Callable[[], object]) -> object:
        try:
            return call()
        except OperationalError:
            leases.advance(20)  # the wait before the retry
            return call()

    w = World(lease_clock=leases, retry=cast(Retrying, retry))
    w.session("s1")
    w.stepper.wake("s1")
    w.stepper.step()
    expires = _written_lease_expires(w)
    runner_run = w.runner.run

    def run_failing_once(ws: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
        attempts.append(1)
        if len(attempts) == 1:
            raise OperationalError("UPDATE", {}, Exception("connection lost"))
        return runner_run(ws, now, frame)

    w.runner.run = run_failing_once  # type: ignore[method-assign, assignment]
    w.clock.advance(60)
    leases.advance(60)
    handed = leases.now()
    assert w.stepper.step(handed) == 1
    assert len(attempts) == 2
    assert expires == [handed + timedelta(seconds=50)]
