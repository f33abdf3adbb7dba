"""``CoreRunner``: the :class:`~fenix_core.core.stepper.StepRunner` that runs a
contract workflow's hooks on a working set.

One step, in this order: poll the running operations that are due
(through :class:`~fenix_core.core.operations.CoreOperations`), apply the
replies that arrived (``on_reply``), the operations that ended
(``on_operation``; a gate's end goes to the host pipeline), the timers that
are due (``on_timer``; the pipeline's own timer only wakes the session), then
``start`` on the first step and ``advance``. What the engine knows before a
hook runs is applied to the working set first, as the contract driver of
the workflow tests does: a reply's project state, a move's new host, a host
disabled or enabled, instances an inventory no longer finds.

A hook that raises does not crash the engine: the step's changes are
dropped (the working set is reloaded as stored) and the session fails with
the error as its reason; if it had failed
already, the operations it still follows are abandoned so that it does not
raise again at once.

Operations the step submitted, and any left pending by a process that died
(in doubt: looked up by key before being started again), are started by
:meth:`CoreRunner.start` only after the step committed; their status is
written by the session's next step, which :meth:`start` says is due when
the first of them needs looking at again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any, TypeAlias, cast

import attrs

from ..constraints import ConstraintSet
from ..contract import (
    DisableHost,
    EnableHost,
    Inventory,
    ListHosts,
    Locate,
    Move,
    OpKind,
    OpRef,
    OpResult,
    OpStatus,
    ProjectReply,
    TimerFired,
    Watch,
    Workflow,
)
from ..inventory import host_from_dict
from ..model import Host
from ..states import HostState, SessionState, normalize_reply_state
from ..store.leases import LeaseLost
from .context import PIPELINE_TIMER, StepContext
from .inventory import HostChangeRec, InventoryCache
from .listings import (
    ENGINE_OWNED,
    apply_inventory,
    apply_located,
    follow_inventory,
    host_listing,
    hosts_of,
)
from .operations import CoreOperations
from .ports import WorkingSetLike
from .replies import CarriedReplies
from .retry import is_database_fault
from .stepper import StepFrame, StepOutcome, Unrunnable
from .stuck import wait_longer
from .working_set import InboxRec, OpRec, WorkingSet
from .ws_port import Steering, WorkingSetAdapter

__all__ = ["Control", "CoreRunner"]

log = logging.getLogger("fenix_core.core")

#: An admin's change applied as the first event of a step (core/admin.py).
Control: TypeAlias = Callable[[StepContext, WorkingSetAdapter, Workflow], None]

_ENDED = frozenset({OpStatus.DONE.value, OpStatus.FAILED.value})
# Stored value -> member (a dict lookup instead of an Enum call per operation).
_STATUSES = {s.value: s for s in OpStatus}
_KINDS = {k.value: k for k in OpKind}
_AWAITING = SessionState.AWAITING_APPROVAL.value
# Stored values read in every step's loops (``Enum.value`` is a Python-level
# descriptor call each time it is read).
_PENDING = OpStatus.PENDING.value
_RUNNING = OpStatus.RUNNING.value
_DUE = attrgetter("due")
_FAILED = OpStatus.FAILED.value
_GATE = OpKind.GATE.value
_QUEUE_HOSTS = OpKind.QUEUE_HOSTS.value


def _by_end(ops: list[OpRec], now: datetime) -> list[OpRec]:
    """``ops`` (ended) in the order their hooks run: by when each ended."""
    if len(ops) > 1:  # most steps: one ended, or none
        ops.sort(key=lambda op: (op.finished_at or now, op.created_at, op.key))
    return ops


class CoreRunner:
    """Runs contract workflows (``workflows``: name -> class) on working sets.

    ``load(session_id)``: the stored working set (to drop a broken step);
    ``replies(session_id)``: its unprocessed inbox rows."""

    def __init__(
        self,
        *,
        workflows: Mapping[str, type[Workflow]],
        operations: CoreOperations,
        load: Callable[[str], WorkingSetLike],
        replies: Callable[[str], Sequence[tuple[Any, ...]]],
        service: str = "fenix",
        admin_project_id: str | None = None,
        now: Callable[[], datetime],
        lease_seconds: float | None = None,
        steering: Steering = None,
        inventory: InventoryCache | None = None,
        subscribed: Callable[[str], bool] = lambda _project: False,
        host_changes: Callable[[Sequence[HostChangeRec]], None] = lambda _changes: None,
        list_hosts: Callable[[], Sequence[Host] | None] | None = None,
        constraints: Callable[[], ConstraintSet] | None = None,
    ) -> None:
        """``lease_seconds``: a step that only polled operations still running
        is not written while the lease it last wrote has more than half of
        it left (None: every step is written). ``inventory``: the host
        inventory the sessions follow (None: listings change no host);
        ``subscribed(project)``: whether a project that joins a session has a
        manager; ``host_changes``: HOST_ADDED / HOST_REMOVED committed by a
        step, to be announced; ``list_hosts()``: the cloud's hosts now (None
        if the cloud cannot say), asked when work on a host failed;
        ``constraints()``: those set through the API, read when a session is
        loaded and when :meth:`reconsider` says they changed (the context's
        ``constraints`` lays them over the cloud's)."""
        self._workflows = {name: cls() for name, cls in workflows.items()}
        self._operations = operations
        self._load = load
        self._replies = replies
        self._service = service
        self._admin_project_id = admin_project_id
        self._now = now
        self._steering: Steering = steering
        self._adapters: dict[str, WorkingSetAdapter] = {}
        # Sessions whose inbox may hold unprocessed replies (a reply woke
        # them, or they were just loaded): read at their next step only.
        self._replies_due: set[str] = set()
        self._lease = timedelta(seconds=lease_seconds) if lease_seconds else None
        # Session id -> the lease expiry its last write stored.
        self._lease_written: dict[str, datetime] = {}
        self._inventory = inventory
        self._subscribed = subscribed
        self._host_changes = host_changes
        self._list_hosts = list_hosts
        self._constraints = constraints
        # Sessions whose workflow decides again at their next step (something
        # it decides on changed outside it: constraints, for example).
        self._reconsider: set[str] = set()

    # ------------------------------------------------------------------ helpers

    def replies_arrived(self, session_id: str) -> None:
        """A reply to ``session_id`` was committed: read the inbox at its next step."""
        self._replies_due.add(session_id)

    def adapter(self, ws: WorkingSet) -> WorkingSetAdapter:
        """The adapter of ``ws`` (a new one for a newly loaded working set)."""
        found = self._adapters.get(ws.session.id)
        if found is None or found.ws is not ws:
            found = self._adapters[ws.session.id] = WorkingSetAdapter(
                ws,
                service=self._service,
                admin_project_id=self._admin_project_id,
                steering=self._steering,
            )
            self._replies_due.add(ws.session.id)
            self._lease_written.pop(ws.session.id, None)  # the claim wrote its own
            if self._constraints is not None:
                found.api_constraints = self._constraints()
        return found

    def reconsider(self, session_id: str) -> None:
        """Run ``advance`` at the session's next step even if nothing of its
        own happened (what it decides on changed)."""
        self._reconsider.add(session_id)

    def forget(self, session_id: str) -> None:
        adapter = self._adapters.pop(session_id, None)
        if adapter is not None:
            adapter.close()  # its working set freed now, not at a cyclic collection
        self._lease_written.pop(session_id, None)

    def workflow(self, name: str) -> Workflow:
        found = self._workflows.get(name)
        if found is None:
            raise Unrunnable(f"uses a workflow that no plug-in of this engine provides: {name!r}")
        return found

    # ------------------------------------------------------------------ the step

    def run(
        self,
        working_set: WorkingSetLike,
        now: datetime,
        frame: StepFrame,
        control: Control | None = None,
        carried: CarriedReplies | None = None,
    ) -> StepOutcome:
        """One step; ``control`` (an admin's change) is its first event, and
        ``advance`` follows it even when it ended the session (a cancel: the
        workflow winds down). ``carried``: replies this step records (in its
        write, with their outcomes) and takes after those in the inbox."""
        ws: WorkingSet = working_set  # type: ignore[assignment]  # (no cast: a call a step)
        if ws.session.state == _AWAITING:
            # Nothing runs before the approval, which writes the session itself
            # (core.approvals): let it go, unwritten.
            return StepOutcome(write=None, wake=None, finished=True)
        adapter = self.adapter(ws)
        adapter.begin(now)
        workflow = self.workflow(ws.session.workflow)
        if carried is not None:
            carried.outcomes.clear()  # a step made again (a retry) takes them afresh
        try:
            self._hooks(ws, adapter, workflow, now, control, carried)
        except Exception as exc:
            if is_database_fault(exc):
                raise  # the database, not the workflow: the step is retried from its last commit
            log.exception("session %s: workflow error", ws.session.id)
            if carried is not None:
                carried.outcomes.clear()  # dropped with the step: recorded unprocessed
            adapter = self._drop_step(ws, now)
            self._fail_broken(ws, adapter, f"internal error: {type(exc).__name__}: {exc}", now)
        if adapter.host_events:
            self._record_host_events(adapter, now)
        adapter.flush()
        adapter.forget_components()
        starts: list[str] = []  # the pending operations, filled in the walk of _wake
        wake = self._wake(ws, now, starting=starts)
        if not starts and not adapter.final and carried is None and self._may_skip(ws, frame):
            return StepOutcome(write=None, wake=wake)
        self._lease_written[ws.session.id] = frame.lease_expires
        ws.delivered(frame.delivered_seq)
        write = ws.take_write(
            frame.fence,
            # Others see the step's own time while operations wait to start:
            # a worker taking over looks at them at once.
            next_wake=now if starts else wake,
            lease_expires=frame.lease_expires,
            at=now,
        )
        if carried is not None:
            write = attrs.evolve(write, new_inbox=carried.rows(now))
        finished = adapter.final and wake is None and not starts
        if finished and write.outbox:
            # Due until the stepper writes the watermark of these last
            # notifications: a worker that dies before that write leaves
            # them to whoever polls next (a final session nobody finds due
            # kept them undelivered for good).
            write = attrs.evolve(write, next_wake=now)
        if finished:  # the stepper lets it go: keep nothing of it either
            self.forget(ws.session.id)
            self._replies_due.discard(ws.session.id)
        return StepOutcome(write=write, wake=wake, starts=starts, finished=finished)

    def flush(self, working_set: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
        """Before the engine lets the session go (close): write what its
        steps changed and left for its next write (the status of operations
        started or polled since), so that the next engine follows those
        operations, asking their plug-ins, instead of finding them in doubt.
        No hook runs; nothing is started."""
        ws = cast(WorkingSet, working_set)
        self.forget(ws.session.id)
        if ws.session.state == _AWAITING:
            return StepOutcome(write=None, wake=None, finished=True)
        ws.delivered(frame.delivered_seq)
        # Never later than the stored wake-up: a step that started operations
        # stored its own time, so that whoever takes the session next looks
        # at it at once (a worker with a simulated clock finds sessions it
        # does not hold only at its polls of the database).
        wake, stored = self._wake(ws, now), ws.session.next_wake
        if wake is None or (stored is not None and stored < wake):
            wake = stored
        write = ws.take_write(
            frame.fence, next_wake=wake, lease_expires=frame.lease_expires, at=now
        )
        return StepOutcome(write=write, wake=None, finished=True)

    def _record_host_events(self, adapter: WorkingSetAdapter, now: datetime) -> None:
        """Hosts the step brought into service (``add_hosts``: ADDED) or
        retired (DECOMMISSIONED) go into the inventory, announced."""
        events, adapter.host_events = adapter.host_events, []
        if self._inventory is None or not events:
            return
        sid = adapter.ws.session.id
        changes: list[HostChangeRec] = []
        for name, state in events:
            rec = adapter.ws.hosts[name]
            if state is HostState.ADDED:
                host = Host(rec.name, rec.type, rec.vcpus, True)
                changes += self._inventory.admit(host, now=now, session_id=sid)
            else:
                changes += self._inventory.retire(rec.name, rec.type, now=now, session_id=sid)
        self._host_changes(changes)

    def _may_skip(self, ws: WorkingSet, frame: StepFrame) -> bool:
        """Only polls changed, and the stored lease has over half its time left."""
        written = self._lease_written.get(ws.session.id)
        if self._lease is None or written is None or not ws.only_polls():
            return False
        lease_now = frame.lease_expires - self._lease
        return written - lease_now > self._lease / 2

    def _hooks(
        self,
        ws: WorkingSet,
        adapter: WorkingSetAdapter,
        workflow: Workflow,
        now: datetime,
        control: Control | None = None,
        carried: CarriedReplies | None = None,
    ) -> None:
        """The step's events, then ``advance``. A step with no event (only
        polls of operations still running) does not call the workflow at all:
        nothing it decides on changed (time passing is an event: a timer)."""
        ended = self._poll_due(ws, adapter, now)
        timers = [t for t in ws.timers.values() if t.due <= now] if ws.timers else []
        if len(timers) > 1:
            timers.sort(key=lambda t: (t.due, t.name))
        replies = ws.session.id in self._replies_due
        first = ws.session.version == 0 or not adapter.stepped
        ctx: StepContext | None = None
        followed = False
        inventory = self._inventory
        if inventory is not None and adapter.inventory_seen != inventory.generation:
            ctx = StepContext(adapter, now)
            followed = follow_inventory(adapter, ctx, inventory)
            if followed:  # operations on a host that left ended with it
                ended = self._unhandled(ws, now)
        if inventory is not None and self._list_hosts is not None and not adapter.final:
            failed = [
                op
                for op in ended
                if op.status == _FAILED
                and op.kind != _GATE  # a gate's verdict is not the cloud's
                and not (op.result or {}).get("refused")  # the cloud said no: it is there
                and hosts_of(adapter, op)
            ]
            if failed:
                # Is the host still there? A host that left is a removal, not a failure.
                listed = self._list_hosts()
                if listed is not None:
                    ctx = ctx or StepContext(adapter, now)
                    self._host_changes(host_listing(adapter, ctx, inventory, listed))
                    ended = self._unhandled(ws, now)
        again = ws.session.id in self._reconsider
        self._reconsider.discard(ws.session.id)
        if again and self._constraints is not None:
            adapter.api_constraints = self._constraints()
        if not (ended or timers or replies or first or followed or again or control or carried):
            return
        adapter.stepped = True
        ctx = ctx or StepContext(adapter, now)
        if control is not None:
            control(ctx, adapter, workflow)
        if replies:
            self._replies_due.discard(ws.session.id)
            for row in self._replies(ws.session.id):
                message = InboxRec(*row)
                outcome = self._reply(ws, adapter, ctx, workflow, message)
                ws.processed(message.id, outcome, now)
        if carried is not None:
            for accepted in carried.replies:
                reply = accepted.reply
                message = InboxRec(
                    0, reply.project_id, reply.state, reply.instance_actions, accepted.received_at
                )
                carried.outcomes.append(self._reply(ws, adapter, ctx, workflow, message))
        for op in ended:
            ws.set_handled(op.key)
            self._ended(adapter, ctx, workflow, op)
        for timer in timers:
            ws.cancel_timer(timer.name)
            if timer.name != PIPELINE_TIMER:  # the pipeline's wait: a wake-up only
                workflow.on_timer(ctx, TimerFired(timer.name, timer.due, dict(timer.data)))
        if ws.session.version == 0 and not adapter.final:
            adapter.announce()  # the session exists: its first notice
            adapter.steer_all()
            workflow.start(ctx)
        if not adapter.final or control is not None:
            workflow.advance(ctx)

    def _poll_due(self, ws: WorkingSet, adapter: WorkingSetAdapter, now: datetime) -> list[OpRec]:
        """Poll the running operations that are due; return the ended ones
        not handled yet (:meth:`_unhandled`), found in the same walk of the
        operations (many are in flight at once in a large session): a poll
        changes only the operation it polls."""
        request = adapter.request
        found = []
        for key, op in list(ws.ops.items()):
            status = op.status
            if status == _RUNNING:
                due = op.next_poll is None or op.next_poll <= now
                late = op.deadline is not None and op.deadline <= now
                if not (due or late):
                    continue
                self._operations.poll(ws, key, request, now)
                if op.status == _FAILED:  # (the record changes in place) timed out?
                    wait_longer(adapter, key, now)
                status = op.status
            if status in _ENDED and not op.handled:
                found.append(op)
        return _by_end(found, now)

    @staticmethod
    def _unhandled(ws: WorkingSet, now: datetime) -> list[OpRec]:
        found = []
        for op in ws.ops.values():  # no comprehension's frame
            if op.status in _ENDED and not op.handled:
                found.append(op)
        return _by_end(found, now)

    def _reply(
        self,
        ws: WorkingSet,
        adapter: WorkingSetAdapter,
        ctx: StepContext,
        workflow: Workflow,
        message: InboxRec,
    ) -> str:
        parsed = normalize_reply_state(message.state)
        if parsed is None:  # checked on the way in; only a hand-edited row gets here
            return "ignored: not a reply state"
        if adapter.final:
            return "ignored: session ended"
        project = ws.projects.get(message.project_id)
        if project is None:
            return "ignored: not a project of the session"
        if project.reply_at is not None and message.received_at > project.reply_at:
            return "late: received after the deadline"
        ack, awaited = parsed
        state = f"{'ACK' if ack else 'NACK'}_{awaited}"
        adapter.answered(message.project_id, state, message.received_at)
        outcome = workflow.on_reply(
            ctx,
            ProjectReply(
                message.project_id, state, dict(message.instance_actions), message.received_at
            ),
        )
        if outcome.accepted:
            return "accepted"
        return outcome.why or "refused"

    def _ended(
        self, adapter: WorkingSetAdapter, ctx: StepContext, workflow: Workflow, rec: OpRec
    ) -> None:
        status = _STATUSES.get(rec.status) or OpStatus(rec.status)
        result: dict[str, Any] = dict(rec.result or {})
        op = adapter.typed_op(rec)
        if rec.kind == _QUEUE_HOSTS:
            return  # steering is best effort: nothing follows it
        if op is None:  # a gate: the pipeline's own
            stop = rec.detail if result.get("verdict") == "stop" else None
            ctx.gate_ended(str(rec.host), passed=status is OpStatus.DONE, stop=stop)
            return
        done = status is OpStatus.DONE
        if done and "cloud_constraints" in result:  # new instances' groups and rules
            adapter.merge_cloud_constraints(result["cloud_constraints"])
        if isinstance(op, Move | Watch):  # the most frequent first
            where = result.get("host")
            if done and not result.get("gone") and isinstance(where, str):
                adapter.place(op.instance_id, where)
            else:
                adapter.end_move(op.instance_id)
        elif isinstance(op, DisableHost | EnableHost) and done:
            enabled = isinstance(op, EnableHost)
            adapter.set_host_enabled(op.host, enabled, by_session=not enabled)
            if self._inventory is not None:
                self._inventory.set_enabled(op.host, enabled)
        elif isinstance(op, Inventory) and done:
            apply_inventory(adapter, result.get("instances", ()), op.hosts, self._subscribed)
        elif isinstance(op, Locate) and done:
            apply_located(adapter, dict(result.get("where") or {}))
        elif isinstance(op, ListHosts) and done and self._inventory is not None:
            listed = [host_from_dict(h) for h in result.get("hosts") or ()]
            self._host_changes(host_listing(adapter, ctx, self._inventory, listed))
        if rec.params.get(ENGINE_OWNED):
            return  # the engine's own (an appeared host's listing): no hook
        timed_out = status is OpStatus.FAILED and (rec.detail or "").startswith("timed out")
        workflow.on_operation(
            ctx,
            OpResult(
                OpRef(rec.key, _KINDS.get(rec.kind) or OpKind(rec.kind)),
                op,
                status,
                rec.detail,
                result,
                timed_out,
            ),
        )

    # ------------------------------------------------------------------ a broken step

    def _drop_step(self, ws: WorkingSet, now: datetime) -> WorkingSetAdapter:
        """Forget what the broken step changed: ``ws`` becomes the stored one.
        LeaseLost if another worker has written the session since ``ws`` was
        loaded (it took the session over while this one stalled): this
        worker's step is not written, the session is theirs."""
        fresh = self._load(ws.session.id)
        if fresh.version != ws.session.version:
            raise LeaseLost(
                f"session {ws.session.id}: written by another worker (version "
                f"{fresh.version}, {ws.session.version} here); the step is not written",
                session_id=ws.session.id,
            )
        ws.reset_to(cast(WorkingSet, fresh))
        self._adapters.pop(ws.session.id, None)
        self._lease_written.pop(ws.session.id, None)
        adapter = self.adapter(ws)
        adapter.begin(now)
        return adapter

    def _fail_broken(
        self, ws: WorkingSet, adapter: WorkingSetAdapter, why: str, now: datetime
    ) -> None:
        if not adapter.final:
            adapter.set_session_state(SessionState.MAINTENANCE_FAILED, why)
            return
        # It failed already and still raises (an operation it follows, a
        # timer it set, a stored state it cannot read): stop following what
        # is left, rather than step again at once. A timer left due raised
        # again at every step, for good.
        for name in list(ws.timers):
            ws.cancel_timer(name)
        for key, op in list(ws.ops.items()):
            if not op.handled:
                ws.update_op(
                    key,
                    status=OpStatus.ABANDONED.value,
                    detail=why,
                    finished_at=now,
                    next_poll=None,
                    handled=True,
                )

    # ------------------------------------------------------------------ scheduling

    def _wake(
        self, ws: WorkingSet, now: datetime, starting: list[str] | None = None
    ) -> datetime | None:
        """When the session has something to do next (None: only a reply).

        With ``starting``, the operations waiting to start (PENDING) are
        added to it, in the same walk of the operations, and left out: they
        start after the commit and :meth:`start` says when they need looking
        at (counting them as due now made a second step at the same instant
        that found nothing to do: one wasted step per operation)."""
        wakes = list(map(_DUE, ws.timers.values())) if ws.timers else []
        for op in ws.ops.values():
            status = op.status
            if starting is not None and status == _PENDING:
                starting.append(op.key)
            elif op.handled:
                continue
            elif status == _RUNNING:
                if op.next_poll is not None:
                    wakes.append(op.next_poll)
                if op.deadline is not None:
                    wakes.append(op.deadline)
            else:
                wakes.append(now)
        if ws.session.id in self._replies_due:
            wakes.append(now)
        return min(wakes) if wakes else None

    def start(self, working_set: WorkingSetLike, starts: Sequence[object]) -> datetime | None:
        """Start the operations ``starts`` (keys) after their step committed;
        return when the session must look at them again."""
        ws: WorkingSet = working_set  # type: ignore[assignment]  # (no cast: a call a step)
        adapter = self.adapter(ws)
        now = self._now()
        wakes: list[datetime] = []
        for key in starts:
            op = ws.ops.get(str(key))
            if op is None or op.status != _PENDING:
                continue
            # Pending when loaded: a process that died may have started it.
            in_doubt = op.key in adapter.in_doubt
            adapter.in_doubt.discard(op.key)
            self._operations.start(ws, op.key, adapter.request, now, in_doubt=in_doubt)
            op = ws.ops[op.key]
            if op.kind == _QUEUE_HOSTS:
                if op.status == _FAILED:
                    log.warning("session %s: steering failed: %s", ws.session.id, op.detail)
                # Best effort, followed by nothing: written with the next step,
                # which it brings forward only to be written before a final
                # session is let go.
                ws.set_handled(op.key)
                if adapter.final:
                    wakes.append(now)
                continue
            if op.status == _RUNNING and op.next_poll is not None:
                wakes.append(op.next_poll)
                if op.deadline is not None:  # a plug-in's ``retry_after`` may reach past it
                    wakes.append(op.deadline)
            else:
                wakes.append(now)
        return min(wakes) if wakes else None
