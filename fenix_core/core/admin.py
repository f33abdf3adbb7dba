"""The admin's controls on sessions: pause, resume, cancel,
``update_session`` (retry, move ``maintenance_at``), delete, and the rule
that two running sessions never maintain the same host (refusals as
:class:`~fenix_core.errors.Conflict` / ``InvalidInput``, see docs/user-guide.md).

A control is an event of a step, like a reply: its refusals are checked on
the working set before anything changes, then the step runs with the change
first (:data:`~fenix_core.core.runner.Control`), ``advance`` after it, and
one fenced write. The workflow sees the change through the contract: the
pipeline pauses and resumes (``StepContext.pause`` / ``resume``); a cancel
moves the session to ``MAINTENANCE_CANCELLED``, abandons what only waits
(a manager's own action, a listing, a gate) and
lets the workflow wind down in ``advance`` (the built-in workflows enable again
the host they disabled once nothing runs on it); a retry moves a failed
session back to ``MAINTENANCE`` and calls ``on_retry``.

Leases: a session this engine holds, or can lease
(free, expired, its own), is changed in memory and written under its lease.
Pause, resume and cancel of a session another live worker holds go through
the database: the session is loaded as stored, changed, and written in one
transaction fenced by that worker's lease as stored (owner, token, version),
with ``next_wake`` now; that worker's next write is fenced out by the
version, it reloads the session and carries on from the change (it starts
the operations and sends the notifications the control wrote). ``update_session``
needs the lease, as today: Conflict while another worker holds it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import cast

from sqlalchemy import delete, select
from sqlalchemy.engine import Engine as SAEngine

from ..clock import Clock
from ..contract import OpKind, OpStatus, Workflow
from ..errors import Conflict, InvalidInput
from ..model import SessionUpdate
from ..states import FINAL_SESSION_STATES, HostState, InstanceState, SessionState
from ..store.leases import LeaseLost
from ..store.schema import (
    OperationRow,
    OutboxRow,
    SessionClockRow,
    SessionRow,
    session_operations,
    session_outbox,
)
from .busy_hosts import check_hosts_free
from .context import StepContext
from .pipeline import PipelineState
from .ports import Fence, WorkingSetLike
from .runner import Control, CoreRunner
from .sql_store import SqlSessionStore
from .stepper import StepFrame, StepOutcome, Stepper
from .working_set import StoredRecords, WorkingSet
from .ws_port import WorkingSetAdapter, started_ops

__all__ = ["SessionAdmin", "pipeline_state"]

_FINAL = frozenset(s.value for s in FINAL_SESSION_STATES)
#: What only waits: no longer followed once the session is cancelled.
_ABANDONED_ON_CANCEL = frozenset({OpKind.WATCH, OpKind.LIST_HOSTS, OpKind.LOCATE, OpKind.GATE})
_OPEN = frozenset({OpStatus.PENDING.value, OpStatus.RUNNING.value})
#: Tries before a control gives up on a session whose steps keep racing it.
_ATTEMPTS = 3
_BUSY_WORKER = "another engine worker is working on this session; try again shortly"


def pipeline_state(ws: StoredRecords) -> PipelineState:
    """The host pipeline's stored state (pause, what it waits for)."""
    rec = ws.components.get(PipelineState.component)
    if rec is None:
        return PipelineState()
    return PipelineState.from_json(rec.body, rec.schema_version)


def _require_running(ws: WorkingSet, verb: str) -> None:
    state = ws.session.state
    if state in _FINAL:
        raise Conflict(
            f"session has ended ({state}) and cannot be {verb}",
            session_id=ws.session.id,
            state=state,
        )


class SessionAdmin:
    """The controls of :class:`~fenix_core.Engine` (which
    calls them under its lock, with a session id it checked exists)."""

    def __init__(
        self,
        *,
        database: SAEngine,
        store: SqlSessionStore,
        stepper: Stepper,
        runner: CoreRunner,
        clock: Clock,
    ) -> None:
        self._db = database
        self._store = store
        self._stepper = stepper
        self._runner = runner
        self._clock = clock

    # ------------------------------------------------------------------ pause, resume, cancel

    def pause(self, session_id: str, reason: str) -> None:
        def check(ws: WorkingSet) -> None:
            _require_running(ws, "paused")
            pipe = pipeline_state(ws)
            if pipe.paused:
                raise Conflict(
                    f"session is paused already ({pipe.pause_reason})",
                    session_id=session_id,
                    state=ws.session.state,
                )

        def pause(ctx: StepContext, _a: WorkingSetAdapter, _w: Workflow) -> None:
            ctx.pause(reason)

        self._control(session_id, check, pause, through_database=True)

    def resume(self, session_id: str) -> None:
        def check(ws: WorkingSet) -> None:
            _require_running(ws, "resumed")
            if not pipeline_state(ws).paused:
                raise Conflict(
                    f"session is not paused ({ws.session.state})",
                    session_id=session_id,
                    state=ws.session.state,
                )

        def resume(ctx: StepContext, _a: WorkingSetAdapter, _w: Workflow) -> None:
            ctx.resume()

        self._control(session_id, check, resume, through_database=True)

    def cancel(self, session_id: str, reason: str) -> None:
        def check(ws: WorkingSet) -> None:
            _require_running(ws, "cancelled")

        def cancel(ctx: StepContext, adapter: WorkingSetAdapter, _w: Workflow) -> None:
            self._abandon_waits(adapter, f"session cancelled: {reason}")
            ctx.transition(SessionState.MAINTENANCE_CANCELLED, reason=reason)

        self._control(session_id, check, cancel, through_database=True)

    @staticmethod
    def _abandon_waits(adapter: WorkingSetAdapter, why: str) -> None:
        """Stop following what only waits; an
        instance whose manager's own action was watched is PENDING again.
        Migrations in flight are followed to their end by the workflow."""
        ws = adapter.ws
        for key, op in list(ws.ops.items()):
            if op.handled or op.status not in _OPEN or OpKind(op.kind) not in _ABANDONED_ON_CANCEL:
                continue
            ws.update_op(
                key,
                status=OpStatus.ABANDONED.value,
                detail=why,
                finished_at=adapter.now,
                next_poll=None,
                handled=True,
            )
            inst = ws.instances.get(op.instance_id or "")
            if inst is not None and inst.state == InstanceState.IN_ACTION.value:
                adapter.set_instance_state(inst.instance_id, InstanceState.PENDING, None)
                adapter.end_move(inst.instance_id)

    # ------------------------------------------------------------------ update

    def update(self, session_id: str, upd: SessionUpdate) -> None:
        """Retry a failed session from where it stopped and/or move its
        ``maintenance_at`` (only before host work starts). Needs the lease."""
        if not upd.retry and not upd.changes_start:
            raise InvalidInput("update", "nothing to change: give maintenance_at or retry")

        def check(ws: WorkingSet) -> None:
            state = ws.session.state
            if upd.retry:
                if state != SessionState.MAINTENANCE_FAILED:
                    raise Conflict(
                        f"only a failed session can be retried; this one is {state}",
                        session_id=session_id,
                        state=state,
                    )
                if ws.ops:  # loaded operations are the ones not handled yet
                    raise Conflict(
                        "the session is still putting hosts back into service; retry shortly",
                        session_id=session_id,
                        state=state,
                    )
                unfinished = [
                    h.name
                    for h in ws.hosts.values()
                    if h.state not in (HostState.MAINTAINED, HostState.OUT_OF_SCOPE)
                ]
                with self._db.connect() as db:
                    check_hosts_free(db, unfinished, besides=session_id)
            elif upd.changes_start and not self._before_host_work(ws):
                raise Conflict(
                    f"maintenance_at can only change before host work starts (session is {state})",
                    session_id=session_id,
                    state=state,
                )

        def update(ctx: StepContext, adapter: WorkingSetAdapter, workflow: Workflow) -> None:
            if upd.retry:
                ctx.transition(SessionState.MAINTENANCE)
                adapter.ws.update_session(failed_state=None, finished_at=None)
                workflow.on_retry(ctx)
            if upd.changes_start:
                adapter.reschedule(upd.maintenance_at)

        self._control(session_id, check, update, through_database=False)

    @staticmethod
    def _before_host_work(ws: WorkingSet) -> bool:
        """In MAINTENANCE and nothing started yet: no operation recorded (an
        action, a listing, a host's work all are) and no host admitted.
        Today's ``can_reschedule`` (phases before the ``pre`` actions)."""
        if ws.session.state != SessionState.MAINTENANCE:
            return False
        return started_ops(ws) == 0 and not any(h.started_at for h in ws.hosts.values())

    # ------------------------------------------------------------------ delete

    def delete(self, session_id: str) -> None:
        """Remove a finished session and everything recorded about it."""
        with self._db.connect() as db:
            state, next_wake = db.execute(
                select(SessionRow.state, SessionClockRow.next_wake)
                .join(SessionClockRow, SessionClockRow.session_id == SessionRow.id)
                .where(SessionRow.id == session_id)
            ).one()
        if state not in _FINAL:
            raise Conflict(
                f"session is still running ({state}); wait until it ends",
                session_id=session_id,
                state=state,
            )
        if next_wake is not None:
            raise Conflict(
                "the session is still putting hosts back into service",
                session_id=session_id,
                state=state,
            )
        number = select(SessionRow.number).where(SessionRow.id == session_id).scalar_subquery()
        with self._db.begin() as db:
            # The outbox and the operations have no foreign key (their rows
            # are keyed by the session's number): their ranges of ids go
            # with the session.
            db.execute(delete(OutboxRow).where(session_outbox(number)))
            db.execute(delete(OperationRow).where(session_operations(number)))
            db.execute(delete(SessionRow).where(SessionRow.id == session_id))
        self._stepper.forget(session_id)
        self._runner.forget(session_id)

    # ------------------------------------------------------------------ the control's step

    def _control(
        self,
        session_id: str,
        check: Callable[[WorkingSet], None],
        change: Control,
        *,
        through_database: bool,
    ) -> None:
        """Check, then step the session with ``change`` first: under this
        engine's lease (claimed if free), or, ``through_database``, fenced by
        the lease of the worker that holds it."""

        def checked(ws: WorkingSetLike) -> None:
            check(cast(WorkingSet, ws))

        def run(ws: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
            return self._runner.run(ws, now, frame, change)

        for _ in range(_ATTEMPTS):
            if self._stepper.step_now(session_id, run, check=checked):
                return
            if not through_database:
                raise Conflict(_BUSY_WORKER, session_id=session_id)
            if self._write_through(session_id, check, change):
                return
        raise Conflict(_BUSY_WORKER, session_id=session_id)

    def _write_through(
        self, session_id: str, check: Callable[[WorkingSet], None], change: Control
    ) -> bool:
        """The control on the session as stored, written fenced by its
        holder's lease; False if that lease is gone or the holder wrote
        meanwhile (the caller tries again)."""
        ws = self._store.load(session_id)
        check(ws)
        s = ws.session
        if s.lease_owner is None or s.lease_expires is None:
            return False  # nobody holds it now: lease it
        fence = Fence(session_id, s.lease_owner, s.lease_token, s.version)
        frame = StepFrame(fence, lease_expires=s.lease_expires, delivered_seq=s.delivered_seq)
        try:
            outcome = self._runner.run(ws, self._clock.now(), frame, change)
            if outcome.write is None:
                return False
            self._store.write(outcome.write)
        except LeaseLost:
            return False
        finally:
            self._runner.forget(session_id)
        return True
