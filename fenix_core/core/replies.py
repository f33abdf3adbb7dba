"""ReplyIntake: replies checked and made durable with group commit.

A reply is checked against the session it answers: in memory, with no SQL,
when this engine holds the session (``ReplySink.held``), otherwise in the
database inside the transaction that writes it, as one transaction did
before. Replies that arrive together share that transaction: each caller
queues its reply, then takes the engine lock; whoever gets the lock with its
reply still unwritten writes *every* queued reply (one ``executemany``, one
commit) and marks them done, which their callers, blocked on the lock, find
when they get it. So a caller returns only once its row is committed, and a
failed write raises its error in every caller of the batch, having committed
nothing.

Why the lock hands the writer role over instead of a separate writer thread
or a "first caller is the writer" flag: the engine lock is reentrant and a
signal handler may reply while its thread holds it (inside a step). A caller
that waited on an event while holding the lock would deadlock with a writer
waiting for the lock; here nobody waits for anything but the lock.

A burst (``submit_many``) all for one session this engine holds is not
committed on its own: checked on the held working set, it is handed to
``carry``, which runs the session's step at once with the replies
(:class:`CarriedReplies`) and writes them in that step's fenced
transaction, already processed: one commit for the step and the burst, and
the callers still return only once it is durable. If that step does not
commit them (fenced out, a database error, a step already under way on
this thread: a receiver replying from inside one), the burst is checked
and written again the ordinary way, so either every accepted reply is
recorded or the callers get the write's error.

Pure of SQL itself: the database is reached through ``InboxTransaction``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

import attrs

from ..errors import Conflict, FenixError, Forbidden, InvalidInput, NotFound
from ..model import Reply
from ..states import InstanceAction, InstanceState, normalize_reply_state
from .ports import ReplySink, WorkingSetLike

__all__ = [
    "AcceptedReply",
    "CarriedReplies",
    "InboxTransaction",
    "ProjectFacts",
    "ProjectState",
    "ReplyFacts",
    "ReplyIntake",
    "check_reply",
]

#: Replies to these states name an action per affected instance.
INSTANCE_CHOICE_STATES = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")
_KNOWN_ACTIONS = frozenset(a.value for a in InstanceAction)
_REQUESTED = InstanceState.ACTION_REQUESTED.value


@attrs.frozen
class ProjectFacts:
    """What a reply is checked against of one project of a session."""

    state: str | None
    awaiting: bool
    reply_at: datetime | None


class ProjectState(Protocol):
    """What a reply is checked against of one project: a
    :class:`ProjectFacts`, or a held working set's project record itself."""

    @property
    def state(self) -> str | None: ...
    @property
    def awaiting(self) -> bool: ...
    @property
    def reply_at(self) -> datetime | None: ...


class ReplyFacts(Protocol):
    """What checking a reply needs of a session, from memory or the database."""

    @property
    def session_state(self) -> str: ...
    @property
    def allowed_actions(self) -> Sequence[str]: ...
    @property
    def requires_instance_actions(self) -> bool: ...
    def project(self, project_id: str) -> ProjectState | None: ...
    def reply_pending(self, project_id: str) -> bool:
        """A reply of this project is committed and not yet processed."""
        ...

    def instance_states(self, project_id: str, named: Collection[str]) -> Mapping[str, str]:
        """Instance id -> state for the project's instances that are
        ACTION_REQUESTED or in ``named`` (more is allowed)."""
        ...

    def note_reply(self, project_id: str) -> None:
        """A reply of this project was just committed (a held set records it
        so a second one is refused without SQL; the database's facts need not)."""
        ...


@attrs.frozen
class AcceptedReply:
    """A checked reply, as its inbox row is written."""

    session_id: str
    reply: Reply
    received_at: datetime

    def inbox_row(
        self, processed_at: datetime | None = None, outcome: str | None = None
    ) -> tuple[object, ...]:
        """Its inbox row (``StepWrite.new_inbox``, ``statements.INBOX_ROW``
        order); unprocessed unless a step carried it and processed it."""
        reply = self.reply
        return (
            reply.project_id,
            reply.state,
            dict(reply.instance_actions),
            self.received_at,
            processed_at,
            outcome,
        )


class CarriedReplies:
    """Checked replies to one session, carried by a step of it (its runner
    processes them and the step's write inserts them with their outcome).

    ``outcomes``: one per reply the step processed, in order (those it did
    not get to are written unprocessed, for the session's next load);
    ``committed``: set once the step's write committed them."""

    __slots__ = ("committed", "outcomes", "replies")

    def __init__(self, replies: Sequence[AcceptedReply]) -> None:
        self.replies = tuple(replies)
        self.outcomes: list[str] = []
        self.committed = False

    def rows(self, processed_at: datetime) -> list[tuple[object, ...]]:
        """The inbox rows (``StepWrite.new_inbox``) as the step leaves them."""
        done = len(self.outcomes)
        return [
            r.inbox_row(processed_at, self.outcomes[i]) if i < done else r.inbox_row()
            for i, r in enumerate(self.replies)
        ]

    def mark_committed(self) -> None:
        self.committed = True


class InboxTransaction(Protocol):
    def facts(self, session_id: str) -> ReplyFacts:
        """The session's facts read in this transaction; NotFound if none."""
        ...

    def insert(self, rows: Sequence[AcceptedReply]) -> None:
        """Write the rows in this order (one executemany)."""
        ...


def check_reply(
    facts: ReplyFacts,
    session_id: str,
    reply: Reply,
    now: datetime,
    answered: Collection[str] = (),
    parsed: tuple[bool, str] | None = None,
) -> None:
    """Raise what the reply would be refused with, or return.

    ``answered``: projects of this session whose reply is accepted but not
    committed yet (earlier in the same batch). ``parsed``: the reply's
    state as ``_parse`` split it, when the caller did already. Pure:
    ``facts`` reads."""
    ack, awaited = _parse(reply) if parsed is None else parsed
    project_id = reply.project_id
    project = facts.project(project_id)
    if project is None:
        raise NotFound("project", project_id, session_id=session_id)
    if not (project.awaiting and project.state == awaited):
        raise Conflict(
            f"project {project_id} is not asked for {awaited} now "
            f"(session {facts.session_state}, project {project.state or 'not asked yet'})",
            session_id=session_id,
            state=project.state,
        )
    if project.reply_at is not None and now > project.reply_at:
        raise Conflict(
            f"the deadline for {awaited} passed at {project.reply_at.isoformat()}",
            session_id=session_id,
            state=project.state,
        )
    if project_id in answered or facts.reply_pending(project_id):
        raise Conflict(
            f"project {project_id} already answered {awaited}",
            session_id=session_id,
            state=project.state,
        )
    _check_instance_actions(facts, session_id, project_id, ack, awaited, reply.instance_actions)


def _check_instance_actions(
    facts: ReplyFacts,
    session_id: str,
    project_id: str,
    ack: bool,
    awaited: str,
    actions: Mapping[str, str],
) -> None:
    if awaited not in INSTANCE_CHOICE_STATES or not ack:
        if actions:
            raise InvalidInput(
                "instance_actions", f"not expected in a reply to {awaited} with this state"
            )
        return
    mine = facts.instance_states(project_id, actions.keys())
    affected = {iid for iid, state in mine.items() if state == _REQUESTED}
    allowed = list(facts.allowed_actions)
    for instance_id, action in actions.items():
        field = f"instance_actions.{instance_id}"
        if instance_id not in mine:
            raise Forbidden(
                project_id,
                f"instance {instance_id!r} is not one of its instances in this session",
                session_id=session_id,
            )
        if instance_id not in affected:
            raise InvalidInput(field, f"instance is not affected by {awaited} now")
        if action not in _KNOWN_ACTIONS:
            raise InvalidInput(field, f"unknown action {action!r}")
        if action not in allowed:
            raise InvalidInput(
                field, f"{action} is not allowed here; allowed: {', '.join(allowed)}"
            )
    missing = sorted(affected - set(actions))
    if missing and facts.requires_instance_actions:
        raise InvalidInput("instance_actions", "no action given for " + ", ".join(missing))


class _Item:
    """One queued reply and the answer its caller waits for.

    ``done`` is a plain flag, not an event: it is set and read only under
    the engine lock (a caller never waits on it, it takes the lock), and
    an event per reply was a lock and a condition for each one of a burst."""

    __slots__ = ("carriable", "done", "error", "parsed", "received_at", "reply", "session_id")

    def __init__(
        self,
        session_id: str,
        reply: Reply,
        parsed: tuple[bool, str],
        received_at: datetime,
        carriable: bool = False,
    ) -> None:
        self.session_id = session_id
        self.reply = reply
        self.parsed = parsed  # (ack, awaited state): split once, on arrival
        self.received_at = received_at
        self.carriable = carriable  # of a burst: may be written by a step of its session
        self.done = False
        self.error: BaseException | None = None


class _BatchFailed(Exception):
    """Marks a write failure that every caller of the batch re-raises."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ReplyIntake:
    """Checks replies and commits them in groups.

    ``sink.held(session_id)`` gives the working set when this engine holds
    the session, read through ``facts_of`` (no SQL); ``transaction()`` opens
    one database transaction (committed when its context exits cleanly,
    rolled back when it raises); ``lock`` is the engine lock, under which
    held working sets are read and every batch is written; ``clock`` stamps
    ``received_at`` when a reply arrives.
    """

    def __init__(
        self,
        *,
        sink: ReplySink,
        facts_of: Callable[[WorkingSetLike], ReplyFacts],
        transaction: Callable[[], AbstractContextManager[InboxTransaction]],
        lock: AbstractContextManager[object],
        clock: Callable[[], datetime],
        carry: Callable[[str, CarriedReplies], bool] | None = None,
        append: Callable[[Sequence[AcceptedReply]], None] | None = None,
    ) -> None:
        """``carry(session_id, replies)``: run a step of that held session
        now, writing ``replies`` in its transaction; whether it committed
        them (None: bursts are committed on their own). ``append(rows)``:
        commit accepted replies in a transaction of their own that reads
        nothing, for a batch whose sessions are all held (checked on their
        working sets, the transaction has nothing to read; None: such a
        batch goes through ``transaction()`` like any other)."""
        self._sink = sink
        self._facts_of = facts_of
        self._transaction = transaction
        self._lock = lock
        self._clock = clock
        self._carry = carry
        self._append = append
        self._queue_lock = threading.Lock()
        self._queue: list[_Item] = []
        self.batches = 0  # transactions written: what the group commit saved is replies/batches

    @property
    def queued(self) -> int:
        """Replies waiting for the next batch (their callers are blocked)."""
        with self._queue_lock:
            return len(self._queue)

    def submit(self, session_id: str, reply: Reply) -> None:
        """Check and commit one reply; returns once its row is durable.

        Raises the refusal (nothing written) or the write's error."""
        parsed = _parse(reply)
        if not isinstance(session_id, str):
            raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")
        item = _Item(session_id, reply, parsed, self._clock())
        self._run([item])
        if item.error is not None:
            raise _unwrap(item.error)

    def submit_many(self, replies: Sequence[tuple[str, Reply]]) -> list[FenixError | None]:
        """Check each reply and commit every valid one in one transaction.

        One result per item: None (committed) or the error it was refused
        with. A failed write raises (nothing is committed)."""
        results: list[FenixError | None] = [None] * len(replies)
        items: list[tuple[int, _Item]] = []
        now = self._clock()
        for index, (session_id, reply) in enumerate(replies):
            try:
                parsed = _parse(reply)
                if not isinstance(session_id, str):
                    raise InvalidInput(
                        "session_id", f"expected a string, got {type(session_id).__name__}"
                    )
            except FenixError as error:
                results[index] = error
                continue
            items.append((index, _Item(session_id, reply, parsed, now, carriable=True)))
        self._run([item for _, item in items])
        for index, item in items:
            if isinstance(item.error, _BatchFailed):
                raise item.error.cause
            if item.error is not None:
                assert isinstance(item.error, FenixError)
                results[index] = item.error
        return results

    def _run(self, items: Sequence[_Item]) -> None:
        if not items:
            return
        with self._queue_lock:
            self._queue.extend(items)  # contiguous: one batch takes them all
        with self._lock:
            if not items[-1].done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._write(batch)
        # Written by this thread or by the lock holder before it.
        assert all(item.done for item in items)

    def _write(self, batch: list[_Item]) -> None:
        """Check and write ``batch`` in one transaction (or in its session's
        step); called under the lock."""
        if self._carry is not None and self._carried(batch, self._carry):
            return
        accepted: list[_Item] = []
        held: dict[str, ReplyFacts] = {}
        try:
            if self._append is not None and self._all_held(batch, held):
                answered_held: dict[str, set[str]] = {}
                for item in batch:
                    seen = answered_held.setdefault(item.session_id, set())
                    if _accepts(held[item.session_id], item, seen):
                        accepted.append(item)
                if accepted:
                    self._append(
                        [AcceptedReply(i.session_id, i.reply, i.received_at) for i in accepted]
                    )
            else:
                self._write_in_transaction(batch, accepted, held)
        except BaseException as failed:
            failure = _BatchFailed(failed)
            for item in batch:
                if item.error is None:
                    item.error = failure
                item.done = True
            if not isinstance(failed, Exception):
                raise
            return
        self._written(batch, accepted, held)

    def _all_held(self, batch: list[_Item], held: dict[str, ReplyFacts]) -> bool:
        """Whether every session of ``batch`` is held here; ``held`` gets
        their facts (read on the working sets: no SQL)."""
        return all(self._held_facts(item.session_id, held) is not None for item in batch)

    def _held_facts(self, session_id: str, held: dict[str, ReplyFacts]) -> ReplyFacts | None:
        """The facts of ``session_id`` read on its working set if this engine
        holds it (kept in ``held``), else None."""
        facts = held.get(session_id)
        if facts is None:
            working_set = self._sink.held(session_id)
            if working_set is not None:
                facts = held[session_id] = self._facts_of(working_set)
        return facts

    def _write_in_transaction(
        self, batch: list[_Item], accepted: list[_Item], held: dict[str, ReplyFacts]
    ) -> None:
        """Check ``batch`` in one transaction (the facts of a session not
        held read in it) and write the accepted replies there; ``accepted``
        and ``held`` (the facts read on working sets) are filled in."""
        with self._transaction() as tx:
            answered: dict[str, set[str]] = {}
            facts: dict[str, ReplyFacts] = {}
            for item in batch:
                try:
                    session_facts = facts.get(item.session_id)
                    if session_facts is None:
                        session_facts = self._held_facts(item.session_id, held)
                        if session_facts is None:
                            session_facts = tx.facts(item.session_id)
                        facts[item.session_id] = session_facts
                except FenixError as refused:
                    item.error = refused
                    continue
                if _accepts(session_facts, item, answered.setdefault(item.session_id, set())):
                    accepted.append(item)
            if accepted:
                tx.insert([AcceptedReply(i.session_id, i.reply, i.received_at) for i in accepted])

    def _written(
        self, batch: list[_Item], accepted: list[_Item], held: Mapping[str, ReplyFacts]
    ) -> None:
        """After the commit of ``batch``: the held sets note their replies,
        their sessions are woken, every caller's reply is done."""
        self.batches += 1
        woken: set[str] = set()
        for item in accepted:
            if item.session_id in held:
                held[item.session_id].note_reply(item.reply.project_id)
            if item.session_id not in woken:
                woken.add(item.session_id)
                self._sink.wake(item.session_id)
        for item in batch:
            item.done = True

    def _carried(self, batch: list[_Item], carry: Callable[[str, CarriedReplies], bool]) -> bool:
        """Whether ``batch`` was written by a step of its session: a burst
        all for one session this engine holds, checked on its working set
        (refused replies get their error; none accepted: nothing to write).
        False, with nothing written and no item answered, otherwise."""
        session_id = batch[0].session_id
        for item in batch:
            if not item.carriable or item.session_id != session_id:
                return False
        working_set = self._sink.held(session_id)
        if working_set is None:
            return False
        facts = self._facts_of(working_set)
        seen: set[str] = set()
        accepted = [item for item in batch if _accepts(facts, item, seen)]
        if accepted:
            carried = CarriedReplies(
                [AcceptedReply(session_id, i.reply, i.received_at) for i in accepted]
            )
            try:
                written = carry(session_id, carried)
            except BaseException as failed:  # not an Exception: the engine's carry logs those
                for item in batch:
                    if item in accepted and not carried.committed:
                        item.error = _BatchFailed(failed)
                    item.done = True
                raise
            if not written:
                for item in batch:
                    item.error = None  # the ordinary write checks them all again
                return False
            self.batches += 1
        for item in batch:
            item.done = True
        return True


def _accepts(facts: ReplyFacts, item: _Item, seen: set[str]) -> bool:
    """Check ``item`` against its session's ``facts`` (``seen``: the projects
    accepted before it in the batch, which it joins); a refusal is its error."""
    try:
        check_reply(facts, item.session_id, item.reply, item.received_at, seen, item.parsed)
    except FenixError as refused:
        item.error = refused
        return False
    seen.add(item.reply.project_id)
    return True


def _parse(reply: Reply) -> tuple[bool, str]:
    """(ack, awaited state); a malformed state is refused before queueing."""
    parsed = normalize_reply_state(reply.state)
    if parsed is None:
        raise InvalidInput("state", f"{reply.state!r} is not a reply state (ACK_x / NACK_x)")
    return parsed


def _unwrap(error: BaseException) -> BaseException:
    return error.cause if isinstance(error, _BatchFailed) else error
