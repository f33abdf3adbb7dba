"""The engine's step loop.

One step of one session: take it off the due queue (or from the poller when
nobody holds it), make sure this engine leases it, load its working set if it
is not held in memory, run the workflow's hooks through a context (the
:class:`StepRunner`), write everything the step changed in ONE fenced
transaction, then — only after the commit — start the operations the step
submitted and deliver its notifications. The next write carries the new
delivery watermark; there is no second commit.

A write fenced out (:class:`~fenix_core.store.leases.LeaseLost`: another
worker took the session) rolls the step back: the working set is dropped,
nothing is started or delivered, and the session leaves the due queue; the
poller finds it again if it becomes free.

An idle stepper (nothing due in memory, poll interval not reached) calls
neither the store, nor the lease keeper, nor the poller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol, TypeAlias, TypeVar, cast

import attrs

from ..clock import Clock
from ..errors import FenixError
from ..store.leases import LeaseLost
from .due import DbPoller, DueQueue
from .outbox import Outbox, OutboxSource
from .ports import Fence, LeaseKeeper, SessionStore, StepWrite, WorkingSetLike

__all__ = [
    "LoadedSet",
    "Retrying",
    "RunStep",
    "StepFrame",
    "StepOutcome",
    "StepRunner",
    "Stepper",
    "Unrunnable",
]

_T = TypeVar("_T")

log = logging.getLogger(__name__)

#: One DEBUG record per fenced commit, with the fields ``session_id``,
#: ``version`` (the one written), ``owner`` and ``token`` (the lease it was
#: written under). Off unless the logger is enabled for DEBUG; the chaos test
#: (tests/test_chaos.py) reads it to check that no two workers ever committed
#: the same step of a session.
commit_log = logging.getLogger("fenix_core.commits")


class Unrunnable(FenixError):
    """This engine cannot step the session (no plug-in of it provides its
    workflow). The stepper lets it go as it is, releases its lease and
    leaves it alone for the engine's lifetime; an engine that can run it
    takes it."""


class LoadedSet(WorkingSetLike, Protocol):
    """What the stepper reads of a loaded working set beyond the ports'."""

    @property
    def delivered_seq(self) -> int: ...


@attrs.frozen
class StepFrame:
    """What the stepper hands the runner for the step's write: the fence to
    commit under, the lease's new expiry and the delivery watermark."""

    fence: Fence
    lease_expires: datetime
    delivered_seq: int


@attrs.frozen
class StepOutcome:
    """What one step did.

    ``write``: the step's rows (``StepWrite.next_wake`` is what other workers
    see; with operations just started it is the step's own time); None when
    the step changed nothing that must be written now (polls of operations
    still running, with the lease far from expiring): nothing is committed. ``wake``:
    when this engine steps the session again (None: only a wake-up, such as
    a reply, brings it back). ``starts``: operations to start after the
    commit. ``finished``: the session reached a final state; it is let go."""

    write: StepWrite | None
    wake: datetime | None
    starts: Sequence[object] = ()
    finished: bool = False


class StepRunner(Protocol):
    """Runs the workflow's hooks on a working set through a context and
    collects the step's write."""

    def run(self, working_set: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome: ...

    def start(self, working_set: WorkingSetLike, starts: Sequence[object]) -> datetime | None:
        """Start operations; called only after their step committed. Returns
        when the session must step again to look at them (None: no sooner
        than the outcome's wake)."""

    def forget(self, session_id: str) -> None:
        """The stepper let the session go: keep nothing of it (its next load
        is a new working set)."""

    def replies_arrived(self, session_id: str) -> None:
        """A reply to ``session_id`` is in the database: read the inbox at
        its next step."""


class Retrying(Protocol):
    """Makes ``call`` again after a lost database connection
    (:class:`fenix_core.core.retry.DbRetry`); ``what`` names it in the log."""

    def __call__(self, what: str, call: Callable[[], _T]) -> _T: ...


class _Once:
    """No retry: the call, once."""

    def __call__(self, what: str, call: Callable[[], _T]) -> _T:
        return call()


#: What runs one step of a working set (the runner's ``run``, or an admin's
#: change wrapped around it).
RunStep: TypeAlias = Callable[[WorkingSetLike, datetime, StepFrame], StepOutcome]


class Stepper:
    """Due queue -> lease -> load -> hooks -> one write -> start operations."""

    def __init__(
        self,
        store: SessionStore,
        leases: LeaseKeeper,
        runner: StepRunner,
        outbox: Outbox,
        *,
        clock: Clock,
        lease_clock: Clock,
        lease_seconds: float,
        poller: DbPoller | None = None,
        poll_seconds: float | None = None,
        leftovers: OutboxSource | None = None,
        retry: Retrying | None = None,
        flush: RunStep | None = None,
        capacity: int | None = None,
        quiet: Callable[[datetime], bool] | None = None,
    ) -> None:
        """``retry``: how a poll, a claim and a session's step are made
        again after a lost database connection (default: not at all). A
        step is retried from the session's last commit: its working set is
        dropped and loaded again, and operations it started after its
        commit, not yet recorded as started, are looked up by key.
        ``flush``: run on each held session by :meth:`release` to write
        what its steps changed and left for the next write (the status of
        operations started since); None: nothing is written then.
        ``capacity``: how many sessions this engine holds at most (None: no
        bound); a claim takes no more than what is left, so that several
        workers share the due sessions instead of the first one taking all.
        ``quiet(now)``: whether a look of the poller at ``now`` would find
        nothing that was not there at its last look (the poller's
        ``quiet``); the looks that a simulated engine clock adds are skipped
        then (None: never skipped)."""
        self._store = store
        self._leases = leases
        self._runner = runner
        self._outbox = outbox
        self._clock = clock
        self._lease_clock = lease_clock
        self._lease_seconds = timedelta(seconds=lease_seconds)
        self._poller = poller
        self._poll_every = timedelta(
            seconds=poll_seconds if poll_seconds is not None else lease_seconds / 4
        )
        self._next_poll: datetime | None = None  # None: poll at the next step
        # The engine clock's time of the next poll (when it is not the lease clock).
        self._next_clock_poll: datetime | None = None
        self._leftovers = leftovers
        self._retry: Retrying = retry if retry is not None else _Once()
        self._flush = flush
        self._capacity = capacity
        # A claim left due sessions out for want of capacity: poll again as
        # soon as a held session is let go.
        self._left_out = False
        self._quiet = quiet
        # A session was let go since the last poll (its stored wake-up was
        # not among those that poll saw): the simulated-time look is not skipped.
        self._let_go_since_poll = False
        self.queue = DueQueue()
        self._held: dict[str, LoadedSet] = {}
        # Session id -> its stored version: loaded, then +1 per committed write
        # (the fence's version; the working set need not track it).
        self._versions: dict[str, int] = {}
        # Session id -> what this engine delivered of a session it let go
        # without writing that watermark (fenced out, or reloaded).
        self._sent: dict[str, int] = {}
        # Session id -> why this engine cannot step it (Unrunnable).
        self._parked: dict[str, str] = {}
        # Steps under way (a receiver replying from inside one must not
        # start another of its own).
        self._stepping = 0
        # The lease clock as ``step`` read it, for the first session it steps
        # (taken by that step's first attempt; None: read it anew).
        self._lease_reading: datetime | None = None
        #: Steps taken by :meth:`step` and :meth:`step_held` (what they returned).
        self.steps_run = 0

    # ------------------------------------------------------------ wake-ups

    def wake(self, session_id: str) -> None:
        """Step ``session_id`` at the next ``step()`` (a reply arrived, it was
        created, an admin changed it). A session this engine does not hold
        is claimed first."""
        self.queue.schedule(session_id, self._clock.now())

    def poll_soon(self) -> None:
        """Ask the database at the next step (e.g. after a take-over)."""
        self._next_poll = None

    def held(self, session_id: str) -> WorkingSetLike | None:
        """The working set of a session this engine holds (replies validate on it)."""
        return self._held.get(session_id)

    def parked(self, session_id: str) -> str | None:
        """Why this engine cannot step ``session_id`` (None: it can)."""
        return self._parked.get(session_id)

    def parked_ids(self) -> Collection[str]:
        """The sessions this engine leaves alone (a live view)."""
        return self._parked.keys()

    def held_ids(self) -> Collection[str]:
        """The sessions this engine holds (a live view)."""
        return self._held.keys()

    def held_sessions(self) -> list[str]:
        """The ids of the sessions this engine holds, sorted."""
        return sorted(self._held)

    def next_wake(self) -> datetime | None:
        """When the next ``step()`` has something to do (due session or poll).

        The poll runs on the lease clock (leases are about real processes);
        its time counts here only when that is the engine's clock too. With a
        simulated engine clock and a real lease clock, the poll is due every
        ``poll_seconds`` of real time (:meth:`next_poll`), and the simulated
        time does not stop for it; a step that comes ``poll_seconds`` of
        simulated time after the last poll polls too (:meth:`step`)."""
        if self._poller is not None and self._next_poll is None:
            return self._clock.now()
        wake = self.queue.next_wake()
        polls = self._next_poll if self._poller is not None else None
        if polls is None or self._lease_clock is not self._clock:
            return wake
        return polls if wake is None else min(wake, polls)

    def due_now(self) -> bool:
        """Whether a ``step()`` now has anything to do: a session due in the
        queue, or the poller's look. The queue answers, without a step (a
        loop stepping until idle ended each instant with one step that found
        nothing)."""
        now = self._clock.now()
        wake = self.queue.next_wake()
        if wake is not None and wake <= now:
            return True
        return self._poller is not None and self._poll_due(now, self._lease_clock.now())

    def next_poll(self) -> datetime | None:
        """When the poller next asks the database, on the lease clock (None:
        no poller; the time of the last step's look if it is overdue)."""
        return self._next_poll if self._poller is not None else None

    # ------------------------------------------------------------ steps

    def step(self, lease_now: datetime | None = None) -> int:
        """Step every session due now, once each; return how many committed.
        ``lease_now``: the lease clock read by the caller just before (the
        engine's step reads it once for its own look at the host changes)."""
        now = self._clock.now()
        due = self.queue.pop_due(now)
        if self._parked:  # (most engines park nothing: no filtering pass)
            due = [sid for sid in due if sid not in self._parked]
        polled_at = lease_now if lease_now is not None else self._lease_clock.now()
        # Nothing that takes time (a poll, a claim) between that reading and
        # the first session's step: its lease expiry is counted from it.
        fresh = True
        if self._poller is not None and self._poll_due(now, polled_at):
            fresh = False
            self._next_poll = polled_at + self._poll_every
            self._next_clock_poll = now + self._poll_every
            self._let_go_since_poll = False
            seen = set(due)
            poller = self._poller
            for sid in self._retry("polling sessions", lambda: poller.poll(now)):
                if sid in self._parked:
                    continue
                if sid in self._held and sid in poller.behind:
                    continue  # its steps send them (the next write marks them)
                replied = sid in self._held and sid in poller.replied
                if replied:
                    # A reply another worker or process wrote (this engine
                    # learns of those it accepts itself when it accepts them).
                    self._runner.replies_arrived(sid)
                if sid in seen:
                    continue
                if sid in self._held and sid in self.queue:
                    if not replied:
                        # It waits for its wake-up: its stored next_wake may
                        # be conservative (operations just started).
                        continue
                    self.queue.drop(sid)
                elif sid in self._held:
                    self.reload_at(sid, now)  # changed where this copy cannot see
                    self.queue.drop(sid)
                due.append(sid)
        if not due:
            return 0
        held = self._held
        fences: dict[str, Fence] = {}
        for sid in due:  # (a loop: most steps hold one session, held here)
            if sid not in held:
                fresh = False
                fences = self._retry("claiming sessions", lambda: self._claim_unheld(due))
                break
        stepped = 0
        for session_id in due:
            if session_id not in self._held and session_id not in fences:
                continue  # another worker holds it
            # Handed to the first step only, once: a retry reads the clock again.
            self._lease_reading = polled_at if fresh else None
            fresh = False
            try:
                if self._retry(f"session {session_id}", partial(self._step_one, session_id, now)):
                    stepped += 1
                    self.steps_run += 1
            except Unrunnable:
                continue  # parked: the others go on
            finally:
                self._lease_reading = None
        return stepped

    def step_held(
        self, session_id: str, run: RunStep, committed: Callable[[], None] | None = None
    ) -> bool:
        """Step a session this engine holds at once with ``run`` (one that
        carries replies), as :meth:`step` would when it is due: whether it
        stepped. False, with nothing done, when this engine does not hold
        it, or a step is under way (a receiver answering from inside one:
        that step's session, or one after it in the same ``step()``, would
        be stepped twice). Its wake-up in the queue is dropped first, as a
        reply's wake-up and the step that pops it would drop it: the step
        schedules the next one. ``committed`` is called right after its
        write commits."""
        if self._stepping or session_id not in self._held or session_id in self._parked:
            return False
        self.queue.drop(session_id)
        now = self._clock.now()
        step = partial(self._step_one, session_id, now, run, committed=committed)
        if not self._retry(f"session {session_id}", step):
            return False
        self.steps_run += 1
        return True

    def _poll_due(self, now: datetime, polled_at: datetime) -> bool:
        """Whether this step asks the database: every ``poll_seconds`` of the
        lease clock, and, when the engine's clock is another (simulated)
        one, every ``poll_seconds`` of that clock too, at the steps that
        happen anyway: a session another process (a command, a worker that
        closed) left due later in simulated time is found when it is due,
        not only at the next poll of real time."""
        if self._next_poll is None or self._next_poll <= polled_at:
            return True
        later = self._next_clock_poll
        if self._lease_clock is self._clock or later is None or later > now:
            return False
        # Skipped while nothing it could find is due yet.
        return self._quiet is None or self._let_go_since_poll or not self._quiet(now)

    def step_now(
        self,
        session_id: str,
        run: RunStep,
        *,
        check: Callable[[WorkingSetLike], None] | None = None,
    ) -> bool:
        """Step ``session_id`` at once with ``run`` in place of the runner's
        (an admin's change), claiming it first if this engine does not hold
        it. ``check`` sees the working set before anything changes; what it
        raises propagates and nothing is written. False, with nothing done,
        when another worker holds the session or took it meanwhile."""
        if session_id not in self._held and session_id not in self._leases.claim([session_id]):
            return False
        loaded = session_id not in self._held
        working_set = self._held.get(session_id) or self._load(session_id)
        if check is not None:
            try:
                check(working_set)
            except BaseException:
                if loaded:  # not scheduled yet: the poller finds it when it is due
                    self._let_go(session_id)
                raise
        # The operations the change submitted start at the session's next
        # step, not here: the caller may be a process without the plug-ins
        # (a command changing a session a worker runs).
        return self._step_one(session_id, self._clock.now(), run, start=False)

    def reload_at(self, session_id: str, when: datetime) -> None:
        """A session held here with nothing scheduled is due in the database:
        it was changed there (an admin's control written under this worker's
        lease by another process). Drop this copy; step it, loaded afresh,
        at ``when``."""
        self._let_go(session_id, keep_sent=True)
        self.queue.schedule(session_id, when)

    def forget(self, session_id: str) -> None:
        """Drop a session this engine holds, without writing (it was deleted)."""
        self._let_go(session_id)
        self._sent.pop(session_id, None)

    def release(self) -> None:
        """Let every held session go (engine close), each written first with
        ``flush`` (best effort: a session not written is resumed from its
        last commit, its unrecorded operations in doubt)."""
        now = self._clock.now()
        for session_id in list(self._held):
            if self._flush is not None:
                try:
                    self._step_one(session_id, now, self._flush)
                except Exception as exc:
                    log.warning("session %s not written at release: %s", session_id, exc)
            self._let_go(session_id)
        try:
            self._leases.release_all()
        except Exception as exc:  # the database is gone: the leases run out instead
            log.warning("could not release the leases; they expire: %s", exc)

    def _claim_unheld(self, due: list[str]) -> dict[str, Fence]:
        unheld = [sid for sid in due if sid not in self._held]
        if not unheld:
            return {}
        if self._capacity is None:
            return self._leases.claim(unheld)
        room = max(0, self._capacity - len(self._held))
        if room < len(unheld):
            self._left_out = True
        return self._leases.claim(unheld, room) if room else {}

    def _still_held(self, session_id: str, fence: Fence, frame: StepFrame) -> bool:
        """After a commit, before starting its operations: whether the lease
        that commit wrote holds long enough to start them. With less than a
        third of it left (this worker stalled between the commit and now;
        starting may take a while), another worker may take the session, or
        have taken it, and start them itself: the lease is claimed again
        first (one statement), and the same token means this worker's lease,
        renewed, and nobody else's meanwhile. Otherwise (or without the
        database) nothing is started."""
        if self._lease_clock.now() < frame.lease_expires - self._lease_seconds / 3:
            return True
        try:
            again = self._leases.claim([session_id]).get(session_id)
        except Exception as exc:
            log.warning("session %s: lease not renewed after a stall: %s", session_id, exc)
            return False
        return again is not None and again.token == fence.token

    def _step_one(
        self,
        session_id: str,
        now: datetime,
        run: RunStep | None = None,
        *,
        start: bool = True,
        committed: Callable[[], None] | None = None,
    ) -> bool:
        self._stepping += 1
        try:
            return self._step_once(session_id, now, run, start, committed)
        finally:
            self._stepping -= 1

    def _step_once(
        self,
        session_id: str,
        now: datetime,
        run: RunStep | None,
        start: bool,
        committed: Callable[[], None] | None,
    ) -> bool:
        # The lease clock as ``step`` read it just before, if it handed it
        # over (taken first: an attempt made again reads the clock anew).
        leased_at, self._lease_reading = self._lease_reading, None
        working_set = self._held.get(session_id)
        if working_set is None:
            working_set = self._load(session_id)
            leased_at = None  # (a load takes time)
        fence = self._leases.fence(session_id, self._versions[session_id])
        version = fence.version
        frame = StepFrame(
            fence,
            (leased_at or self._lease_clock.now()) + self._lease_seconds,
            self._outbox.watermark(session_id),
        )
        try:
            outcome = (run or self._runner.run)(working_set, now, frame)
            if outcome.write is not None:
                self._commit(outcome.write)
                if committed is not None:
                    committed()
        except LeaseLost:
            self._let_go(session_id, keep_sent=True)
            # Fenced out: taken over, or changed through the database by an
            # admin's control under this worker's own lease (then the next
            # poll claims it back at once and the step reloads it).
            self._next_poll = None
            return False
        except Unrunnable as error:
            self._let_go(session_id)
            self._leases.release(session_id)
            self._parked[session_id] = str(error)
            log.error("session %s left as it is: %s", session_id, error)
            raise
        except BaseException:
            # The step did not commit: its in-memory changes are void. What
            # this engine delivered before stays delivered: the reload (a
            # retry after a lost connection) sends only what lies above it.
            self._let_go(session_id, keep_sent=True)
            raise
        if outcome.write is not None:
            self._versions[session_id] = version + 1
        wake = outcome.wake
        if outcome.starts and not start:
            wake = now  # the next step starts them
        elif outcome.starts and not self._still_held(session_id, fence, frame):
            # Not started: whoever holds the session next (this worker too,
            # after loading it again) looks them up by key and starts them.
            log.warning("session %s: lease too short to start its operations", session_id)
            self._let_go(session_id, keep_sent=True)
            self._next_poll = None
            return True
        elif outcome.starts:
            started = self._runner.start(working_set, outcome.starts)
            if started is not None:
                wake = started if wake is None else min(wake, started)
        if outcome.write is not None and outcome.write.outbox:
            # A receiver may reply (and so wake the session) from in here.
            self._outbox.deliver(outcome.write.outbox)
        woken = self.queue.wake_of(session_id)
        if woken is not None:
            wake = woken if wake is None else min(wake, woken)
        if outcome.finished and wake is None:
            self._write_watermark(session_id, fence, outcome.write)
            self._let_go(session_id)
        elif wake is not None:
            self.queue.schedule(session_id, wake)
        return True

    def _write_watermark(self, session_id: str, fence: Fence, last: StepWrite | None) -> None:
        """A finished session is let go, so no next step carries the
        watermark of what its last step delivered: write it now (else those
        rows would count as undelivered for good). The last step stored
        the session due so that, should this write not happen, the next
        poller sends them; this one stores it due never again."""
        mark = self._outbox.watermark(session_id)
        if last is None or mark <= last.delivered_seq:
            return
        write = StepWrite(
            fence=attrs.evolve(fence, version=fence.version + 1, claims=False),
            next_wake=None,
            lease_expires=last.lease_expires,
            delivered_seq=mark,
            inbox_seen_id=last.inbox_seen_id,
        )
        try:
            self._commit(write)
        except LeaseLost:
            return  # taken over meanwhile: its new holder sends them again

    def _commit(self, write: StepWrite) -> None:
        self._store.write(write)
        if write.fence.claims:  # the first write of a session this engine inserted
            self._leases.took(write.fence)
        if commit_log.isEnabledFor(logging.DEBUG):
            fence = write.fence
            commit_log.debug(
                "session %s: version %d committed by %s (token %d)",
                fence.session_id,
                fence.version + 1,
                fence.owner,
                fence.token,
                extra={
                    "session_id": fence.session_id,
                    "version": fence.version + 1,
                    "owner": fence.owner,
                    "token": fence.token,
                },
            )

    def _load(self, session_id: str) -> LoadedSet:
        working_set = cast(LoadedSet, self._store.load(session_id))
        self._held[session_id] = working_set
        self._versions[session_id] = working_set.version
        delivered = max(working_set.delivered_seq, self._sent.get(session_id, 0))
        try:
            if self._leftovers is not None:
                self._outbox.leftovers(self._leftovers, session_id, delivered)
            else:
                self._outbox.restore(session_id, delivered)
        except BaseException:
            # Not loaded after all (the leftovers were not read): the next
            # load reads and sends them.
            self._let_go(session_id, keep_sent=True)
            raise
        self._sent.pop(session_id, None)
        return working_set

    def _let_go(self, session_id: str, *, keep_sent: bool = False) -> None:
        """``keep_sent``: remember what this engine delivered of it, so that a
        reload does not send again what the stored watermark lags behind."""
        self._let_go_since_poll = True
        if keep_sent:
            self._sent[session_id] = self._outbox.watermark(session_id)
        if self._left_out and session_id in self._held:
            self._left_out = False
            self._next_poll = None  # room for a session the last claim left out
        self._held.pop(session_id, None)
        self._versions.pop(session_id, None)
        self.queue.drop(session_id)
        self._outbox.forget(session_id)
        self._runner.forget(session_id)
