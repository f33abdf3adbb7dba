"""The Engine: the public API, and the loop that moves sessions forward.

One step of the loop, for each session with something due (a new session, a
reply, a timer, an operation to poll):

1. poll the operations whose next poll (or deadline) has come;
2. hand the workflow the replies, ended operations and due timers, then let
   it advance; it changes rows in memory and records operations to start,
   notifications and timers;
3. commit all of it in one transaction;
4. start the recorded operations on the driver / action plug-ins and commit
   their handles;
5. deliver the notifications as blinker signals, then mark them delivered.

The engine never sleeps on its own and has no thread per session: the clock
waits for the earliest due time or a reply (``run_until_done``,
``run_forever``), and with :class:`~fenix_core.clock.SimClock` that wait is a
jump in simulated time.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, ClassVar, NoReturn, TypeVar

from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, load_only

from . import approval, constraint_store, inventory
from .approval_service import ApprovalService
from .clock import Clock, RealClock
from .constraints import (
    CloudConstraints,
    ConstraintSet,
    GroupConstraints,
    InstanceConstraints,
)
from .core.busy_hosts import NOT_MAINTAINED, check_hosts_free
from .core.constraint_service import ConstraintService, warn_ignored
from .core.factory import CloudRead, CloudSnapshot, SessionFactory, default_group_rules
from .core.ports import NewSession
from .core.records import (
    HOST_COLUMNS,
    INSTANCE_COLUMNS,
    PROJECT_COLUMNS,
    SESSION_COLUMNS,
    row_values,
)
from .core.replies import ReplyIntake
from .errors import (
    Conflict,
    FenixError,
    InvalidInput,
    NotFound,
    Replanned,
)
from .hookspecs import HostQueue
from .model import (
    ApprovalView,
    Host,
    HostChange,
    OperationView,
    ProjectView,
    Reply,
    SessionRequest,
    SessionUpdate,
    SessionView,
    _str,
)
from .operations import OperationRunner, record_status
from .plugins import Plugins
from .reply_inbox import SqlReplyInbox, UnheldSink
from .runtime import LoadedSession
from .signals import SIGNALS, maintenance_host
from .states import (
    FINAL_SESSION_STATES,
    HOLDS_NO_HOSTS,
    HostState,
    SessionState,
    normalize_reply_state,
)
from .store import leases
from .store.database import migrate, open_database
from .store.schema import (
    HostChangeRow,
    HostRow,
    InboxRow,
    InstanceRow,
    OperationRow,
    OutboxRow,
    ProjectRow,
    SessionRow,
    SubscriptionRow,
)
from .views import build_operation_view, build_project_view, build_session_view
from .workflows.base import Workflow

__all__ = ["Engine", "LegacyEngine"]

_T = TypeVar("_T")

log = logging.getLogger("fenix_core")

_FINAL = tuple(s.value for s in FINAL_SESSION_STATES)
_HOLDS_NO_HOSTS = tuple(s.value for s in HOLDS_NO_HOSTS)


class LegacyEngine:
    """Runs maintenance sessions.

    ``database_url`` defaults to an in-memory SQLite database; give a file
    (``sqlite:///fenix.db``) to survive restarts: a new Engine on the same
    database resumes every running session. ``clock`` defaults to the real
    clock. ``plugins`` are a cloud plug-in and any action or workflow plug-ins;
    plug-ins published in the ``fenix`` entry-point group are loaded too unless
    ``load_entry_points`` is false.

    Several engines (processes) may share one PostgreSQL database: each works
    on the sessions it leases. ``worker_id`` names this engine among them
    (unique among live workers; the default is host, pid and a random part; a
    restarted worker that keeps its id takes its own sessions back at once).
    A lease lasts ``lease_seconds`` of real time after the worker's last step
    on the session; then another worker may take the session over.
    ``db_retries`` / ``db_retry_seconds``: a step that loses the database
    (``OperationalError``) is retried that many times, waiting
    ``db_retry_seconds`` and doubling, before the error reaches the caller.
    ``previewer`` makes the plan of a session awaiting approval (default
    :attr:`~fenix_core.engine.Engine.default_previewer`).
    """

    #: The previewer of engines given none: :func:`fenix_core.plan_preview.preview`,
    #: set when the fenix_core package is imported (the preview runs an Engine of
    #: its own, so the engine module cannot import it).
    default_previewer: ClassVar[approval.Previewer | None] = None

    def __init__(
        self,
        database_url: str = "sqlite://",
        clock: Clock | None = None,
        plugins: Sequence[object] = (),
        *,
        service: str = "fenix",
        admin_project_id: str | None = None,
        load_entry_points: bool = True,
        default_group_constraints: Mapping[str, Any] | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        lease_clock: Clock | None = None,
        db_retries: int = 5,
        db_retry_seconds: float = 0.1,
        previewer: approval.Previewer | None = None,
    ) -> None:
        if worker_id is not None:
            _str(worker_id, "worker_id")
        for field, value in (
            ("lease_seconds", lease_seconds),
            ("db_retry_seconds", db_retry_seconds),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidInput(field, f"must be a positive number of seconds, got {value!r}")
        if isinstance(db_retries, bool) or not isinstance(db_retries, int) or db_retries < 0:
            raise InvalidInput("db_retries", f"must be a whole number >= 0, got {db_retries!r}")
        self.clock: Clock = clock if clock is not None else RealClock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = float(lease_seconds)
        # Leases are about real processes, not the (maybe simulated) maintenance time.
        self.lease_clock: Clock = lease_clock if lease_clock is not None else RealClock()
        self.db_retries = db_retries
        self.db_retry_seconds = float(db_retry_seconds)
        self.service = service
        self.admin_project_id = admin_project_id
        self.plugins = Plugins(plugins, self.clock, load_entry_points=load_entry_points)
        self._db = open_database(database_url)
        migrate(self._db)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._replies = ReplyIntake(
            sink=UnheldSink(self._wake.set),
            facts_of=UnheldSink.facts_of,
            transaction=self._reply_transaction,
            lock=self._lock,
            clock=self.clock.now,
        )
        self._stop = threading.Event()
        self._loaded: dict[str, tuple[LoadedSession, Workflow]] = {}
        # Session id -> (lease token, lease expiry) of the leases this worker holds.
        self._leases: dict[str, tuple[int, datetime]] = {}
        self._runner = OperationRunner(self.plugins)
        self._leftovers_delivered = False
        # Undelivered notifications of sessions taken over from another worker.
        self._leftovers: list[OutboxRow] = []
        # Sessions whose workflow no plug-in provides: left as they are (a new
        # engine with the plug-in resumes them), and not woken for nothing.
        self._unrunnable: set[str] = set()
        # Bumped whenever the stored inventory changes: a loaded session that
        # saw an older generation reconciles its hosts at its next step.
        self._inventory_gen = 0
        # Host changes committed and not delivered yet (HOST_ADDED / HOST_REMOVED).
        self._host_changes: list[HostChangeRow] = []
        self.default_group_constraints = default_group_rules(default_group_constraints)
        self._approvals = ApprovalService(
            previewer=previewer if previewer is not None else type(self).default_previewer,
            constraints=self.constraints,
            managed=self.subscriptions,
            now=self.clock.now,
        )
        self._constraints = ConstraintService(
            self._db,
            clock=self.clock,
            driver=lambda: self.plugins.driver,
            default_group=self.default_group_constraints,
            changed=self._wake.set,
            lock=self._lock,
        )
        self._factory = SessionFactory(
            self.plugins.workflows, self.plugins.actions, self.plugins.gates
        )

    @property
    def previewer(self) -> approval.Previewer | None:
        """What makes the plan of a session awaiting approval."""
        return self._approvals.previewer

    @previewer.setter
    def previewer(self, previewer: approval.Previewer | None) -> None:
        self._approvals.previewer = previewer

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the loaded sessions, their leases and the database."""
        with self._lock:
            for loaded, _ in self._loaded.values():
                loaded.orm.close()
                loaded.release()
            self._loaded.clear()
            self._leases.clear()
            try:
                with self._db.begin() as connection:
                    leases.release(connection, self.worker_id)
            except OperationalError:
                log.warning("could not release the leases of %s; they expire", self.worker_id)
            self._db.dispose()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A SQLAlchemy session on the engine's database, in a transaction that
        commits on exit, serialised with the engine's own calls.

        For extensions that keep their own tables next to the engine's (the
        REST front end's webhook queue); not needed to use the engine.
        """
        with self._lock, Session(self._db) as orm, orm.begin():
            yield orm

    @property
    def database(self) -> SAEngine:
        """The SQLAlchemy engine of the engine's database.

        The seam for instrumentation (SQLAlchemy's ``before_cursor_execute``
        and ``commit`` events count what the engine sends, as
        ``benchmarks/sqlcount.py`` does) and for reading the stored rows. A
        write through it is not serialised with the engine's own: use
        :meth:`transaction` for that.
        """
        return self._db

    def held_sessions(self) -> list[str]:
        """The ids of the sessions this worker holds now (leased, kept in
        memory between steps), sorted. Another worker steps them only once
        this one lets them go or its lease runs out."""
        with self._lock:
            return sorted(self._loaded)

    def lease_holder(self, session_id: str) -> tuple[str, datetime] | None:
        """The worker holding a live lease on the session and when that lease
        expires (aware UTC, on ``lease_clock``), or None when no worker
        does (never claimed, released, or expired). NotFound for an unknown
        session."""
        _str(session_id, "session_id")
        with self._lock, Session(self._db) as orm:
            row = self._session_row(orm, session_id)
            return leases.live_holder(row.lease_owner, row.lease_expires, self.lease_clock.now())

    # ------------------------------------------------------------------ admin API

    def create_session(self, request: SessionRequest | Mapping[str, Any]) -> str:
        """Start a maintenance session; returns its id.

        Validates the request against the registered workflows and actions
        and the cloud's hosts; raises InvalidInput / Conflict and writes
        nothing if anything is wrong. With ``approval: "required"`` the
        session computes and stores its plan and waits in
        ``AWAITING_APPROVAL`` for :meth:`approve_session`.
        """
        req = self._factory.check(request, default_group_constraints=self.default_group_constraints)
        read = self._read_cloud(req)
        plan = self._make_plan(req, read) if req.approval == "required" else None
        now = self.clock.now()
        session_id = str(uuid.uuid4())
        new = self._factory.records(
            req,
            read,
            subscribed=set(self.subscriptions()),
            session_id=session_id,
            now=now,
            approval=plan,
        )
        with self._lock, Session(self._db, expire_on_commit=False) as orm, orm.begin():
            self._check_hosts_free(orm, [*read.scope, *req.add_hosts])
            orm.add(SessionRow(**row_values(SESSION_COLUMNS, new.session)))
            orm.flush()
            changes = self._write_session_rows(orm, new, req, read.hosts)
        self._inventory_changed(changes)
        log.info(
            "session %s created over %d host(s)%s",
            session_id,
            len(read.scope),
            f", awaiting approval of plan {plan['plan_id']}" if plan else "",
        )
        self._warn_ignored(session_id)
        self._wake.set()
        return session_id

    def _workflow_for(self, req: SessionRequest) -> type[Workflow]:
        workflow = self.plugins.workflows.get(req.workflow)
        if workflow is None:
            raise InvalidInput(
                "workflow",
                f"unknown workflow {req.workflow!r}; known: "
                + ", ".join(sorted(self.plugins.workflows)),
            )
        return workflow

    def _read_cloud(self, req: SessionRequest, *, drop_gone: bool = False) -> CloudRead:
        """The cloud's hosts, instances and constraints, checked against the
        request (:meth:`SessionFactory.fit`)."""
        cloud = CloudSnapshot.read(self.plugins.require_driver())
        return self._factory.fit(
            req, cloud, self.constraints(cloud.constraints), drop_gone=drop_gone
        )

    def _write_session_rows(
        self, orm: Session, new: NewSession, req: SessionRequest, listed: Sequence[Host]
    ) -> list[HostChangeRow]:
        """The session's host, instance and project rows (in the transaction
        that writes or re-plans the session), and the inventory's changes."""
        session_id = new.session[0]
        orm.add_all(HostRow(**row_values(HOST_COLUMNS, h)) for h in new.hosts)
        changes = inventory.sync(
            orm,
            list(listed),
            now=new.session[13],
            session_id=session_id,
            pending=inventory.pending_adds(orm) | set(req.add_hosts),
        )
        orm.add_all(InstanceRow(**row_values(INSTANCE_COLUMNS, i)) for i in new.instances)
        orm.add_all(ProjectRow(**row_values(PROJECT_COLUMNS, p)) for p in new.projects)
        return changes

    def get_session(self, session_id: str) -> SessionView:
        """The session: state, percent done, hosts and their states, reason."""
        with self._lock, Session(self._db) as orm:
            row = self._session_row(orm, session_id)
            hosts = orm.scalars(select(HostRow).where(HostRow.session_id == session_id)).all()
            projects = orm.scalars(
                select(ProjectRow).where(ProjectRow.session_id == session_id)
            ).all()
            ignored = self._constraints.contradicted(
                row.id, constraint_store.cloud_groups(row.data), orm=orm
            )
            return build_session_view(row, hosts, projects, self.clock.now(), ignored)

    def list_sessions(self) -> list[SessionView]:
        """Every session, oldest first."""
        with self._lock, Session(self._db) as orm:
            ids = orm.scalars(select(SessionRow.id).order_by(SessionRow.created_at)).all()
        return [self.get_session(sid) for sid in ids]

    def list_operations(self, session_id: str) -> list[OperationView]:
        """Every operation the session started (moves, actions, host toggles),
        in the order they were recorded. Read-only: timelines and reports use it."""
        with self._lock, Session(self._db) as orm:
            self._session_row(orm, session_id)
            rows = orm.scalars(
                select(OperationRow)
                .where(OperationRow.session_id == session_id)
                .order_by(OperationRow.id)
            ).all()
            return [build_operation_view(row) for row in rows]

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        """Notifications written but not yet delivered to their receivers, of
        every session: how many, and when the oldest was written (engine
        clock; None when there is none). Read-only: for metrics."""
        with self._lock, Session(self._db) as orm:
            count, oldest = orm.execute(
                select(func.count(), func.min(OutboxRow.created_at)).where(
                    OutboxRow.delivered_at.is_(None)
                )
            ).one()
        return int(count), oldest

    def update_session(
        self,
        session_id: str,
        update: SessionUpdate | Mapping[str, Any] | None = None,
        **changes: Any,
    ) -> SessionView:
        """Move ``maintenance_at`` (before host work starts) or ``retry`` a
        failed session from where it stopped."""
        if isinstance(update, SessionUpdate):
            upd = update
        elif update is not None and not isinstance(update, Mapping):
            raise InvalidInput("update", f"expected an object, got {type(update).__name__}")
        else:
            upd = SessionUpdate.from_dict({**dict(update or {}), **changes})
        if not upd.retry and not upd.changes_start:
            raise InvalidInput("update", "nothing to change: give maintenance_at or retry")
        with self._lock:
            self._session_exists(session_id)
            if not self._claim([session_id]):
                raise Conflict(
                    "another engine worker is working on this session; try again shortly",
                    session_id=session_id,
                )
            loaded, workflow = self._load(session_id)
            try:
                outbox = self._apply_update(loaded, workflow, upd)
            except Exception:
                # Rejected or broken: drop the working set; the database has
                # the last committed state and the next step reloads it.
                self._unload(session_id, rollback=True)
                raise
            outbox = self._take_leftovers() + outbox
        self._deliver(outbox)
        self._wake.set()
        return self.get_session(session_id)

    def _apply_update(
        self, loaded: LoadedSession, workflow: Workflow, upd: SessionUpdate
    ) -> list[OutboxRow]:
        session_id = loaded.id
        loaded.now = self.clock.now()
        if upd.retry:
            if loaded.state != SessionState.MAINTENANCE_FAILED:
                raise Conflict(
                    f"only a failed session can be retried; this one is {loaded.state}",
                    session_id=session_id,
                    state=loaded.state,
                )
            if any(loaded.open_ops()):
                raise Conflict(
                    "the session is still putting hosts back into service; retry shortly",
                    session_id=session_id,
                    state=loaded.state,
                )
            unfinished = [
                h.name
                for h in loaded.hosts.values()
                if h.state not in (HostState.MAINTAINED, HostState.OUT_OF_SCOPE)
            ]
            self._check_hosts_free(loaded.orm, unfinished, besides=session_id)
            loaded.orm.commit()  # end the read; nothing was changed
        if upd.changes_start and not upd.retry and not workflow.can_reschedule():
            raise Conflict(
                "maintenance_at can only change before host work starts "
                f"(session is {loaded.state})",
                session_id=session_id,
                state=loaded.state,
            )
        if upd.retry:
            workflow.retry()
        if upd.changes_start:
            workflow.reschedule(upd.maintenance_at)
        loaded.row.next_wake = loaded.now
        loaded.row.updated_at = loaded.now
        self._renew(loaded)
        loaded.orm.commit()
        return self._take_outbox(loaded)

    # ------------------------------------------------------------------ operational controls

    def pause(self, session_id: str, reason: str = "by the admin") -> SessionView:
        """Stop starting new hosts and moves; work in flight ends normally.

        Conflict if the session has ended or is paused already."""
        _str(reason, "reason")

        def pause(loaded: LoadedSession, workflow: Workflow) -> None:
            self._require_running(loaded, "paused")
            if loaded.data.get("paused"):
                raise Conflict(
                    f"session is paused already ({loaded.data.get('pause_reason')})",
                    session_id=loaded.id,
                    state=loaded.state,
                )
            workflow.pause(reason)

        return self._control(session_id, pause)

    def resume(self, session_id: str) -> SessionView:
        """Let a paused session go on. Conflict if it is not paused."""

        def resume(loaded: LoadedSession, workflow: Workflow) -> None:
            self._require_running(loaded, "resumed")
            if not loaded.data.get("paused"):
                raise Conflict(
                    f"session is not paused ({loaded.state})",
                    session_id=loaded.id,
                    state=loaded.state,
                )
            workflow.resume()

        return self._control(session_id, resume)

    def cancel(self, session_id: str, reason: str = "cancelled by the admin") -> SessionView:
        """End the session (MAINTENANCE_CANCELLED): no new work; migrations in
        flight are followed to their end; every host this session disabled,
        and only those, is put back into service. Conflict if it has ended."""
        _str(reason, "reason")

        def cancel(loaded: LoadedSession, workflow: Workflow) -> None:
            self._require_running(loaded, "cancelled")
            workflow.cancel(reason)

        return self._control(session_id, cancel)

    # ------------------------------------------------------------------ approval

    def get_plan(self, session_id: str) -> ApprovalView:
        """The plan of a session created with ``approval: "required"``: the
        one it awaits approval of, or was approved on. NotFound for a session
        that has none."""
        found = self.get_session(session_id).approval
        if found is None:
            raise NotFound("plan", session_id, session_id=session_id)
        return found

    def approve_session(self, session_id: str, plan_id: str | None = None) -> SessionView:
        """Start a session that awaits approval, if its plan still fits.

        The cloud and the constraints are read again. When they still match
        what the plan was made from, the session goes to ``MAINTENANCE`` and
        runs as any other; its hosts must be free of other running sessions
        (Conflict otherwise; it keeps waiting). When anything differs (hosts
        gone or new in the scope, instances moved, capacity, constraints,
        managers), the session is re-planned on the cloud as it is now, keeps
        waiting, and :class:`~fenix_core.errors.Replanned` says what changed
        and names the new plan: review it, approve again. ``plan_id`` (the
        plan the admin reviewed) refuses, with Conflict, a plan that was
        replaced meanwhile. Conflict too if the session does not await
        approval.
        """
        if plan_id is not None:
            _str(plan_id, "plan_id")
        with self._lock:
            stored, req = self._awaiting(session_id, plan_id)  # refused: nothing written
            if not self._claim([session_id]):
                raise Conflict(
                    "another engine worker is working on this session; try again shortly",
                    session_id=session_id,
                )
            self._unload(session_id)  # read the rows as committed
        read = self._read_cloud(req, drop_gone=True)
        changes = self._approvals.changes(stored, read)
        if changes:
            self._replan(session_id, stored, req, read, changes)
        now = self.clock.now()
        with self._lock:
            loaded, _ = self._load(session_id)
            loaded.now = now
            try:
                self._require_awaiting(loaded.row, stored["plan_id"])
                busy = [
                    h.name for h in loaded.hosts.values() if h.state not in NOT_MAINTAINED
                ] + list(req.add_hosts)
                self._check_hosts_free(loaded.orm, busy, besides=session_id)
                loaded.fire("approve")
                loaded.set_data(approval=self._approvals.approved(stored, now))
                loaded.row.next_wake = now
                loaded.row.updated_at = now
                self._renew(loaded)
                loaded.orm.commit()
            except Exception:
                self._unload(session_id, rollback=True)
                raise
            outbox = self._take_outbox(loaded)
        log.info("session %s: plan %s approved", session_id, stored["plan_id"])
        self._deliver(outbox)
        self._wake.set()
        return self.get_session(session_id)

    def _awaiting(
        self, session_id: str, plan_id: str | None
    ) -> tuple[dict[str, Any], SessionRequest]:
        """The stored plan record and request of a session awaiting approval."""
        with Session(self._db) as orm:
            row = self._session_row(orm, session_id)
            self._require_awaiting(row, plan_id)
            return dict(row.data["approval"]), SessionRequest.from_dict(row.request)

    @staticmethod
    def _require_awaiting(row: SessionRow, plan_id: str | None) -> None:
        record = (row.data or {}).get("approval")
        ApprovalService.require_awaiting(row.id, row.state, record, plan_id)

    def _replan(
        self,
        session_id: str,
        stored: Mapping[str, Any],
        req: SessionRequest,
        read: CloudRead,
        changes: Sequence[str],
    ) -> NoReturn:
        """Store a new plan over the cloud as ``read`` (the session's rows
        too), then raise Replanned."""
        plan = self._make_plan(req, read, changes)
        now = self.clock.now()
        subscribed = set(self.subscriptions())
        with self._lock:
            with Session(self._db, expire_on_commit=False) as orm, orm.begin():
                row = self._session_row(orm, session_id)
                self._require_awaiting(row, stored["plan_id"])
                for table in (InstanceRow, ProjectRow, HostRow):
                    orm.execute(delete(table).where(table.session_id == session_id))
                new = self._factory.records(
                    req,
                    read,
                    subscribed=subscribed,
                    session_id=session_id,
                    now=now,
                    approval=plan,
                )
                inventory_changes = self._write_session_rows(orm, new, req, read.hosts)
                row.data = {**row.data, **new.session[SESSION_COLUMNS.index("data")]}
                row.updated_at = now
            self._inventory_changed(inventory_changes)
        log.info("session %s re-planned as %s: %s", session_id, plan["plan_id"], "; ".join(changes))
        raise Replanned(session_id, plan["plan_id"], changes)

    def _make_plan(
        self, req: SessionRequest, read: CloudRead, changes: Sequence[str] = ()
    ) -> dict[str, Any]:
        """The plan record stored under ``data["approval"]`` (ApprovalService.plan)."""
        return self._approvals.plan(req, read, changes)

    @staticmethod
    def _require_running(loaded: LoadedSession, verb: str) -> None:
        if loaded.final:
            raise Conflict(
                f"session has ended ({loaded.state}) and cannot be {verb}",
                session_id=loaded.id,
                state=loaded.state,
            )

    def _control(
        self, session_id: str, change: Callable[[LoadedSession, Workflow], None]
    ) -> SessionView:
        with self._lock:
            loaded, workflow = self._load(session_id)
            loaded.now = self.clock.now()
            try:
                change(loaded, workflow)
                loaded.row.next_wake = loaded.now
                loaded.row.updated_at = loaded.now
                loaded.orm.commit()
            except Exception:
                self._unload(session_id, rollback=True)
                raise
            outbox = self._take_outbox(loaded)
        self._deliver(outbox)
        self._wake.set()
        return self.get_session(session_id)

    def delete_session(self, session_id: str) -> None:
        """Remove a finished session and everything recorded about it."""
        with self._lock:
            with Session(self._db) as orm, orm.begin():
                row = self._session_row(orm, session_id)
                if row.state not in _FINAL:
                    raise Conflict(
                        f"session is still running ({row.state}); wait until it ends",
                        session_id=session_id,
                        state=row.state,
                    )
                if row.next_wake is not None:
                    raise Conflict(
                        "the session is still putting hosts back into service",
                        session_id=session_id,
                        state=row.state,
                    )
                orm.execute(delete(SessionRow).where(SessionRow.id == session_id))
            self._unload(session_id)
            self._leases.pop(session_id, None)

    def refresh_inventory(self) -> list[HostChange]:
        """Compare the cloud's hosts with the stored inventory; store and announce
        the differences (``maintenance_host`` ``HOST_ADDED`` / ``HOST_REMOVED``,
        each change once) and return them. Running sessions follow the changes
        at their next step. The first listing an engine stores is the baseline:
        nothing is announced for it.
        """
        hosts = inventory.list_cloud_hosts(self.plugins.require_driver())
        with self._lock:
            with Session(self._db, expire_on_commit=False) as orm, orm.begin():
                changes = inventory.sync(
                    orm,
                    hosts,
                    now=self.clock.now(),
                    session_id=None,
                    pending=inventory.pending_adds(orm),
                )
            self._inventory_changed(changes)
            delivering, self._host_changes = self._host_changes, []
        self._deliver_host_changes(delivering)
        self._wake.set()
        return [inventory.to_value(c) for c in changes]

    def _inventory_changed(self, changes: Sequence[HostChangeRow]) -> None:
        """Committed host changes: to be delivered, and followed by the sessions."""
        if changes:
            self._inventory_gen += 1
            self._host_changes.extend(changes)

    # ------------------------------------------------------------------ project API

    def subscribe(self, project_id: str) -> None:
        """Record that ``project_id`` has an application manager listening.

        Projects subscribed when a session starts get the dialogue; the others
        get the session's ``project_policy``.
        """
        _str(project_id, "project_id")
        with self._lock, Session(self._db) as orm, orm.begin():
            if orm.get(SubscriptionRow, project_id) is None:
                orm.add(SubscriptionRow(project_id=project_id, created_at=self.clock.now()))

    def unsubscribe(self, project_id: str) -> None:
        _str(project_id, "project_id")
        with self._lock, Session(self._db) as orm, orm.begin():
            orm.execute(delete(SubscriptionRow).where(SubscriptionRow.project_id == project_id))

    def subscriptions(self) -> list[str]:
        with self._lock, Session(self._db) as orm:
            return list(orm.scalars(select(SubscriptionRow.project_id).order_by("project_id")))

    def project_view(self, session_id: str, project_id: str) -> ProjectView:
        """One project's instances in the session and their states, nothing else."""
        _str(project_id, "project_id")
        with self._lock, Session(self._db) as orm:
            self._session_row(orm, session_id)
            project = orm.get(ProjectRow, (session_id, project_id))
            if project is None:
                raise NotFound("project", project_id, session_id=session_id)
            instances = orm.scalars(
                select(InstanceRow).where(
                    InstanceRow.session_id == session_id, InstanceRow.project_id == project_id
                )
            ).all()
            return build_project_view(
                session_id, project, instances, self._move_details(orm, session_id)
            )

    @staticmethod
    def _move_details(orm: Session, session_id: str) -> dict[str, str]:
        """Instance id -> what its running move or watch is waiting for."""
        ops = orm.scalars(
            select(OperationRow).where(
                OperationRow.session_id == session_id,
                OperationRow.status == "running",
                OperationRow.kind.in_(("move", "watch")),
                OperationRow.instance_id.is_not(None),
            )
        ).all()
        return {op.instance_id: op.detail for op in ops if op.instance_id and op.detail}

    def reply(
        self,
        session_id: str,
        project_id: str,
        state: str,
        instance_actions: Mapping[str, str] | None = None,
    ) -> None:
        """Record a project's reply; the engine acts on it at its next step.

        Returns once the reply is committed. Raises, writing nothing:
        NotFound (session, or project not in it), InvalidInput (unknown state
        or action, an action not allowed, an instance not affected or
        missing), Conflict (that state is not awaited from this project now),
        Forbidden (an instance that is not the project's own). Safe to call
        from inside a signal handler and from any thread; replies sent from
        several threads at once share one transaction (group commit).
        """
        answer = Reply(project_id=project_id, state=state, instance_actions=instance_actions or {})
        self._replies.submit(session_id, answer)

    def reply_many(self, replies: Iterable[tuple[str, Reply]]) -> list[FenixError | None]:
        """Record a burst of replies, ``(session_id, fenix_core.model.Reply)`` each, at once.

        Returns one result per item, in order: None when it was recorded, or
        the error :meth:`reply` would have raised for it (the other items are
        recorded all the same; of two replies of one project in a burst, the
        second is refused as already answered). If the write itself fails,
        that error is raised and none of them is recorded.
        """
        items = list(replies)
        for index, (_, answer) in enumerate(items):
            if not isinstance(answer, Reply):
                raise InvalidInput(
                    f"replies[{index}]", f"expected a Reply, got {type(answer).__name__}"
                )
        return self._replies.submit_many(items)

    @contextmanager
    def _reply_transaction(self) -> Iterator[SqlReplyInbox]:
        with self._db.begin() as connection:
            yield SqlReplyInbox(connection, self._requires_instance_actions)

    def _requires_instance_actions(self, workflow_name: str) -> bool:
        workflow = self.plugins.workflows.get(workflow_name)
        return workflow is None or workflow.requires_instance_actions

    # ------------------------------------------------------------------ constraints

    def set_group_constraints(
        self, group: GroupConstraints | Mapping[str, Any], *, project_id: str | None = None
    ) -> GroupConstraints:
        """Create or replace an instance group's constraints.

        ``project_id`` is the acting project (None: the admin); a project may
        only set its own groups (Forbidden otherwise). Groups are kept per
        project: another project's group of the same id is a different group.
        Running sessions use the new values from their next decision on.
        """
        return self._constraints.set_group(group, project_id=project_id)

    def set_instance_constraints(
        self,
        instance: InstanceConstraints | Mapping[str, Any],
        *,
        group: GroupConstraints | Mapping[str, Any] | None = None,
        project_id: str | None = None,
    ) -> InstanceConstraints:
        """Create or replace one instance's constraints.

        Only the project the cloud lists the instance in may set them
        (NotFound otherwise, as for an instance that does not exist; see
        :class:`~fenix_core.hookspecs.InstanceOwner` for drivers that cannot
        say). Its ``group_id`` must name an existing group of the same
        project, or the ``group`` given in the same call (both are written
        together).
        """
        return self._constraints.set_instance(instance, group=group, project_id=project_id)

    def get_group_constraints(
        self, group_id: str, *, project_id: str | None = None
    ) -> GroupConstraints:
        """The group's constraints of ``project_id`` (NotFound if it holds none,
        also when another project does); the admin (None) gets the one row of
        that id, Conflict when several projects hold it."""
        return self._constraints.get_group(group_id, project_id=project_id)

    def get_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> InstanceConstraints:
        """The instance's constraints of ``project_id`` (NotFound if it holds
        none, also when another project does); the admin (None) gets the one
        row of that id, Conflict when several projects hold it."""
        return self._constraints.get_instance(instance_id, project_id=project_id)

    def list_group_constraints(self, project_id: str | None = None) -> list[GroupConstraints]:
        """Every group's constraints (of one project, if given)."""
        return self._constraints.list_groups(project_id)

    def list_instance_constraints(self, project_id: str | None = None) -> list[InstanceConstraints]:
        """Every instance's constraints (of one project, if given)."""
        return self._constraints.list_instances(project_id)

    def delete_group_constraints(self, group_id: str, *, project_id: str | None = None) -> None:
        """Delete a group; its members follow their project's implicit group."""
        self._constraints.delete_group(group_id, project_id=project_id)

    def delete_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> None:
        """Delete an instance's constraints (it follows its project's implicit group)."""
        self._constraints.delete_instance(instance_id, project_id=project_id)

    def constraints(self, cloud: CloudConstraints | None = None) -> ConstraintSet:
        """The constraints in force now (plus ``cloud``'s defaults), resolved."""
        return self._constraints.constraints(cloud)

    def _warn_ignored(self, session_id: str) -> None:
        with self._lock, Session(self._db) as orm:
            row = self._session_row(orm, session_id)
            found_all = self._constraints.contradicted(
                row.id, constraint_store.cloud_groups(row.data), orm=orm
            )
        warn_ignored(session_id, found_all)

    # ------------------------------------------------------------------ running

    def step(self) -> int:
        """Handle everything that is due now; return how many sessions moved."""
        now = self.clock.now()
        with self._lock:
            claimed = self._claim(self._due_sessions(now))
            outbox = self._take_leftovers()
            if not self._leftovers_delivered:
                outbox += self._undelivered()
                self._host_changes[:0] = self._undelivered_host_changes()
                self._leftovers_delivered = True
            for session_id in claimed:
                outbox += self._advance_retrying(session_id)
            changes, self._host_changes = self._host_changes, []
        self._deliver(outbox)
        self._deliver_host_changes(changes)
        return len(claimed)

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        """Step until nothing is due at the current time (the clock does not move)."""
        steps = 0
        while self.step():
            steps += 1
            if steps >= max_steps:
                raise FenixError(f"still busy after {max_steps} steps")
        return steps

    def run_until_done(self, session_id: str) -> SessionView:
        """Drive the session to MAINTENANCE_DONE or MAINTENANCE_FAILED (and the
        clean-up after a failure); return the final view.

        With SimClock this takes no real time; with RealClock it waits for real.
        """
        self._session_exists(session_id)
        while True:
            self.run_until_idle()
            if session_id in self._unrunnable:
                raise FenixError(
                    f"session {session_id} uses a workflow that no plug-in of this engine provides",
                    session_id=session_id,
                )
            with self._lock, Session(self._db) as orm:
                row = self._session_row(orm, session_id)
                finished = row.state in _FINAL and row.next_wake is None
            if finished:
                return self.get_session(session_id)
            if not self._wait():
                raise FenixError(
                    f"session {session_id} waits for nothing that can happen (state {row.state})",
                    session_id=session_id,
                )

    def run_forever(self) -> None:
        """The production loop: handle what is due, wait for the next due time
        or a reply, until :meth:`stop` is called (from another thread)."""
        self._stop.clear()
        while not self._stop.is_set():
            self.run_until_idle()
            if self._stop.is_set():
                break
            if not self._wait():
                self._wake.wait()
                self._wake.clear()

    def stop(self) -> None:
        """Make :meth:`run_forever` return."""
        self._stop.set()
        self._wake.set()

    def next_wake(self) -> datetime | None:
        """When the engine next has something to do (None: nothing scheduled).

        Sessions another worker holds a live lease on are not counted."""
        with self._lock, Session(self._db) as orm:
            wake: datetime | None = orm.scalar(
                select(func.min(SessionRow.next_wake)).where(
                    SessionRow.id.not_in(self._unrunnable),
                    leases.claimable(self.worker_id, self.lease_clock.now()),
                )
            )
            return wake

    def _wait(self) -> bool:
        """Wait for the next due time or a wake-up; False if nothing can come.

        While other workers hold leases on sessions with something scheduled,
        look again every so often (real time): they may die and leave them."""
        with self._lock, Session(self._db) as orm:
            others = orm.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(
                    SessionRow.next_wake.is_not(None),
                    leases.held_by_others(self.worker_id, self.lease_clock.now()),
                )
            )
        if others:
            wake = self.next_wake()
            if wake is not None and wake <= self.clock.now():
                return True
            if wake is None or not isinstance(self.clock, RealClock):
                self._wake.wait(min(1.0, self.lease_seconds / 4))
                self._wake.clear()
                return True
        return self.clock.wait(self.next_wake(), self._wake)

    # ------------------------------------------------------------------ internals

    def _session_row(self, orm: Session, session_id: str, *, light: bool = False) -> SessionRow:
        """The session's row; ``light`` loads only its id, state and workflow
        (other columns load when first read), which is what a reply needs."""
        if not isinstance(session_id, str):
            raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")
        options = [load_only(SessionRow.id, SessionRow.state, SessionRow.workflow)] if light else []
        row = orm.get(SessionRow, session_id, options=options)
        if row is None:
            raise NotFound("session", session_id, session_id=session_id)
        return row

    @staticmethod
    def _hosts_elsewhere(orm: Session, besides: str) -> list[tuple[str, str, str]]:
        """(host, state, session) for hosts that running sessions other than
        ``besides`` maintain. A session awaiting approval holds none: its hosts
        are checked again when it is approved."""
        query = (
            select(HostRow.name, HostRow.state, HostRow.session_id)
            .join(SessionRow, SessionRow.id == HostRow.session_id)
            .where(
                SessionRow.state.not_in(_HOLDS_NO_HOSTS),
                SessionRow.id != besides,
                HostRow.state.not_in(NOT_MAINTAINED),
            )
        )
        return [(name, state, session) for name, state, session in orm.execute(query)]

    @staticmethod
    def _check_hosts_free(orm: Session, hosts: Iterable[str], *, besides: str = "") -> None:
        """Conflict if another running session maintains one of ``hosts`` (the
        core's rule, in ``orm``'s transaction)."""
        check_hosts_free(orm.connection(), hosts, besides=besides)

    def _foreign_hosts(self, orm: Session, session_id: str) -> dict[str, str]:
        """Hosts other running sessions maintain, with their state there."""
        return {name: state for name, state, _ in self._hosts_elsewhere(orm, session_id)}

    def _session_exists(self, session_id: str) -> None:
        with self._lock, Session(self._db) as orm:
            self._session_row(orm, session_id)

    def _due_sessions(self, now: datetime) -> list[str]:
        with Session(self._db) as orm:
            due = set(
                orm.scalars(
                    select(SessionRow.id).where(
                        SessionRow.next_wake.is_not(None), SessionRow.next_wake <= now
                    )
                )
            )
            due.update(
                orm.scalars(select(InboxRow.session_id).where(InboxRow.processed_at.is_(None)))
            )
        # Loaded sessions that have not followed the latest host set changes yet.
        due.update(
            sid
            for sid, (loaded, _) in self._loaded.items()
            if loaded.inventory_seen != self._inventory_gen and not loaded.final
        )
        return sorted(due - self._unrunnable)

    # ------------------------------------------------------------------ leases

    def _claim(self, session_ids: Iterable[str]) -> list[str]:
        """Lease what can be leased of ``session_ids``; return those, in order.

        A session taken from another worker (a new token) is worked on from
        its last commit: a working set this worker kept is dropped, and the
        notifications the other worker did not deliver are sent first."""
        wanted = list(session_ids)
        if not wanted:
            return []
        now = self.lease_clock.now()
        expires = now + timedelta(seconds=self.lease_seconds)
        # A lease this worker holds with more than half its time left needs no
        # round trip: nobody else can take it before it expires, and each
        # step's commit checks it anyway (the fence in _renew).
        half = timedelta(seconds=self.lease_seconds / 2)
        fresh = {
            sid: held[0]
            for sid in wanted
            if (held := self._leases.get(sid)) is not None and held[1] - now > half
        }
        to_claim = [sid for sid in wanted if sid not in fresh]

        def claim() -> dict[str, int]:
            if not to_claim:
                return {}
            with Session(self._db) as orm:
                return leases.claim(orm, to_claim, self.worker_id, now, expires)

        tokens = self._retrying("claiming sessions", claim)
        for sid, token in fresh.items():
            self._leases[sid] = (token, self._leases[sid][1])
        taken_over: list[str] = []
        for session_id, token in tokens.items():
            held = self._leases.get(session_id)
            if held is None or held[0] != token:
                self._unload(session_id, rollback=True)
                taken_over.append(session_id)
            self._leases[session_id] = (token, expires)
        if taken_over and self._leftovers_delivered:
            self._leftovers += self._undelivered(only=taken_over)
        return [sid for sid in wanted if sid in tokens or sid in fresh]

    def _renew(self, loaded: LoadedSession) -> None:
        """In the step's transaction: extend this worker's lease or raise LeaseLost."""
        token, _ = self._leases.get(loaded.id, (-1, self.lease_clock.now()))
        expires = self.lease_clock.now() + timedelta(seconds=self.lease_seconds)
        leases.renew(loaded.orm, loaded.id, self.worker_id, token, expires)
        self._leases[loaded.id] = (token, expires)

    def _lease_margin_left(self, session_id: str) -> bool:
        """Whether the lease lasts long enough to start operations safely."""
        held = self._leases.get(session_id)
        if held is None:
            return False
        margin = timedelta(seconds=self.lease_seconds / 3)
        return self.lease_clock.now() + margin < held[1]

    def _load(self, session_id: str) -> tuple[LoadedSession, Workflow]:
        if not isinstance(session_id, str):
            raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")
        cached = self._loaded.get(session_id)
        if cached is not None:
            return cached
        orm = Session(self._db, expire_on_commit=False, autoflush=False)
        row = orm.get(SessionRow, session_id)
        if row is None:
            orm.close()
            raise NotFound("session", session_id, session_id=session_id)
        workflow_cls = self.plugins.workflows.get(row.workflow)
        if workflow_cls is None:
            orm.close()
            raise FenixError(
                f"session {session_id} uses workflow {row.workflow!r}, which no plug-in provides",
                session_id=session_id,
            )
        loaded = LoadedSession(
            orm, row, service=self.service, admin_project_id=self.admin_project_id
        )
        loaded.subscribed = lambda pid: orm.get(SubscriptionRow, pid) is not None
        orm.commit()  # end the read transaction; the rows stay loaded
        pair = (loaded, workflow_cls(loaded))
        self._loaded[session_id] = pair
        return pair

    def _unload(self, session_id: str, *, rollback: bool = False) -> None:
        pair = self._loaded.pop(session_id, None)
        if pair is None:
            return
        loaded, _ = pair
        if rollback:
            loaded.orm.rollback()
        loaded.orm.close()
        loaded.release()

    def _advance_retrying(self, session_id: str) -> list[OutboxRow]:
        """One step of a session; a lost database connection is retried with
        back-off. The retry starts from the last commit: operations recorded
        there and maybe started are looked up, not started again."""
        return self._retrying(f"session {session_id}", lambda: self._advance(session_id))

    def _retrying(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()``, again after a database error, waiting longer each time."""
        attempt = 0
        while True:
            try:
                return call()
            except OperationalError as exc:
                if attempt >= self.db_retries:
                    raise
                delay = self.db_retry_seconds * 2**attempt
                attempt += 1
                log.warning(
                    "%s: database error, retry %d of %d in %.2f s: %s",
                    what,
                    attempt,
                    self.db_retries,
                    delay,
                    exc,
                )
                time.sleep(delay)

    def _advance(self, session_id: str) -> list[OutboxRow]:
        try:
            loaded, workflow = self._load(session_id)
        except NotFound:
            return []  # deleted meanwhile
        except FenixError as exc:
            log.error("session %s cannot run here: %s", session_id, exc)
            self._unrunnable.add(session_id)
            return []
        now = self.clock.now()
        loaded.now = now
        foreign: list[dict[str, str]] = []

        def foreign_hosts() -> dict[str, str]:
            if not foreign:  # asked at most once per step
                foreign.append(self._foreign_hosts(loaded.orm, session_id))
            return foreign[0]

        loaded.foreign_hosts = foreign_hosts
        constraint_sets: list[ConstraintSet] = []

        def constraints() -> ConstraintSet:
            if not constraint_sets:  # read at most once per step
                constraint_sets.append(self._constraints.current(loaded.orm))
            return constraint_sets[0]

        loaded.api_constraints = constraints
        try:
            if loaded.state == SessionState.AWAITING_APPROVAL:
                # Only approve_session starts it; nothing else is due.
                loaded.row.next_wake = None
                self._renew(loaded)
                loaded.orm.commit()
                self._unload(session_id)
                return self._take_outbox(loaded)
            if loaded.inventory_seen != self._inventory_gen:
                loaded.inventory_seen = self._inventory_gen
                workflow.lifecycle.reconcile()
            self._poll_due(loaded, now)
            self._take_replies(loaded, workflow)
            ended = sorted(
                (op for op in loaded.ops.values() if op.status in ("done", "failed")),
                key=lambda op: (op.finished_at or now, op.created_at, op.key),
            )
            for op in ended:
                loaded.close_op(op)
                workflow.on_operation(op)
            for timer in loaded.pop_due_timers():
                workflow.on_timer(timer)
            before = loaded.row.state
            if loaded.row.version == 0 and not loaded.final:  # (cancelled before it began)
                workflow.start()
            workflow.advance()
            if loaded.row.state != before:
                log.info("session %s: %s -> %s", session_id, before, loaded.row.state)
            self._sync_queue(loaded)
            self._commit(loaded, now)
            self._start_pending(loaded)
        except OperationalError:
            self._unload(session_id, rollback=True)
            raise
        except leases.LeaseLost as exc:
            log.warning("%s", exc)
            self._unload(session_id, rollback=True)
            self._leases.pop(session_id, None)
            return []
        except Exception as exc:
            log.exception("session %s: workflow error", session_id)
            self._unload(session_id, rollback=True)
            return self._fail_broken(session_id, exc)
        outbox = self._take_outbox(loaded)
        changes, loaded.new_host_changes = loaded.new_host_changes, []
        self._inventory_changed(changes)
        if changes:
            loaded.inventory_seen = self._inventory_gen  # it followed them already
        if loaded.final and loaded.row.next_wake is None:
            self._unload(session_id)
        return outbox

    def _sync_queue(self, loaded: LoadedSession) -> None:
        """Tell a driver that steers new instances around queued hosts
        (:class:`~fenix_core.hookspecs.HostQueue`) which hosts the session
        still has to maintain, whenever that set changed (none once it ended)."""
        driver: object = self.plugins.driver
        if not isinstance(driver, HostQueue):
            return
        queued = (
            []
            if loaded.final
            else sorted(h.name for h in loaded.hosts.values() if h.state == HostState.PENDING)
        )
        if queued == list(loaded.data.get("queued_hosts", [])):
            return
        loaded.set_data(queued_hosts=queued)
        loaded.start_op("queue_hosts", params={"hosts": queued})

    def _poll_due(self, loaded: LoadedSession, now: datetime) -> None:
        for op in list(loaded.ops.values()):
            if op.status != "running":
                continue
            due = op.next_poll is None or op.next_poll <= now
            late = op.deadline is not None and op.deadline <= now
            if due or late:
                record_status(op, self._runner.poll(op, loaded.request, now), now)

    def _take_replies(self, loaded: LoadedSession, workflow: Workflow) -> None:
        inbox = loaded.orm.scalars(
            select(InboxRow)
            .where(InboxRow.session_id == loaded.id, InboxRow.processed_at.is_(None))
            .order_by(InboxRow.id)
        ).all()
        for message in inbox:
            parsed = normalize_reply_state(message.state)
            if parsed is None:  # validated on the way in; only a hand-edited row gets here
                outcome = "ignored: not a reply state"
            elif loaded.final:
                outcome = "ignored: session ended"
            else:
                ack, awaited = parsed
                project = loaded.projects.get(message.project_id)
                if (
                    project is not None
                    and project.reply_at is not None
                    and message.received_at > project.reply_at
                ):
                    outcome = "late: received after the deadline"
                else:
                    outcome = workflow.on_reply(
                        message.project_id, ack, awaited, dict(message.instance_actions)
                    )
            message.processed_at = loaded.now
            message.outcome = outcome

    def _commit(self, loaded: LoadedSession, now: datetime) -> None:
        loaded.row.updated_at = now
        loaded.row.version += 1
        loaded.row.next_wake = loaded.next_wake()
        self._renew(loaded)
        loaded.orm.commit()

    def _start_pending(self, loaded: LoadedSession) -> None:
        """Start the operations the last commit recorded.

        Their keys are committed before any plug-in is called. An operation
        that was already pending when the session was loaded may have been
        started by a process that died (or a step that lost the database)
        before recording the answer: the runner looks it up by key first."""
        pending = [op for op in loaded.ops.values() if op.status == "pending"]
        if not pending:
            return
        if not self._lease_margin_left(loaded.id):
            # The lease is about to lapse: leave them to whoever holds it next.
            return
        for op in pending:
            now = self.clock.now()
            in_doubt = op.key in loaded.in_doubt
            loaded.in_doubt.discard(op.key)
            record_status(op, self._runner.start(op, loaded.request, now, in_doubt=in_doubt), now)
        loaded.row.next_wake = loaded.next_wake()
        self._renew(loaded)
        loaded.orm.commit()

    def _fail_broken(self, session_id: str, exc: Exception) -> list[OutboxRow]:
        """A workflow raised: fail the session with the error rather than loop."""
        try:
            loaded, workflow = self._load(session_id)
            loaded.now = self.clock.now()
            why = f"internal error: {type(exc).__name__}: {exc}"
            if not loaded.final:
                workflow.fail(why)
            else:
                # It failed already and still raises (an operation it follows):
                # stop following what is left, rather than step again at once.
                for op in list(loaded.open_ops()):
                    loaded.abandon_op(op, why)
            self._commit(loaded, loaded.now)
            self._start_pending(loaded)
            return self._take_outbox(loaded)
        except leases.LeaseLost:
            self._unload(session_id, rollback=True)
            return []
        except Exception:
            log.exception("session %s: could not record the failure", session_id)
            self._unload(session_id, rollback=True)
            with Session(self._db) as orm, orm.begin():
                orm.execute(
                    update(SessionRow).where(SessionRow.id == session_id).values(next_wake=None)
                )
            return []

    def _take_leftovers(self) -> list[OutboxRow]:
        leftovers, self._leftovers = self._leftovers, []
        return leftovers

    @staticmethod
    def _take_outbox(loaded: LoadedSession) -> list[OutboxRow]:
        outbox, loaded.new_outbox = loaded.new_outbox, []
        return outbox

    def _undelivered(self, only: Sequence[str] | None = None) -> list[OutboxRow]:
        """Notifications left undelivered (by a dead process or worker), of the
        sessions ``only`` or of every session no other live worker holds."""
        query = (
            select(OutboxRow)
            .join(SessionRow, SessionRow.id == OutboxRow.session_id)
            .where(OutboxRow.delivered_at.is_(None))
            .order_by(OutboxRow.created_at, OutboxRow.session_id, OutboxRow.seq)
        )
        if only is not None:
            query = query.where(OutboxRow.session_id.in_(list(only)))
        else:
            query = query.where(leases.claimable(self.worker_id, self.lease_clock.now()))
        with Session(self._db, expire_on_commit=False) as orm:
            rows = orm.scalars(query).all()
            orm.expunge_all()
        return list(rows)

    def _undelivered_host_changes(self) -> list[HostChangeRow]:
        with Session(self._db, expire_on_commit=False) as orm:
            rows = list(inventory.undelivered(orm))
            orm.expunge_all()
        return rows

    def _deliver_host_changes(self, changes: Sequence[HostChangeRow]) -> None:
        """Send HOST_ADDED / HOST_REMOVED, then mark them delivered (at least once)."""
        if not changes:
            return
        for change in changes:
            payload = inventory.change_payload(
                change, service=self.service, admin_project_id=self.admin_project_id
            )
            for receiver in list(maintenance_host.receivers_for(self)):
                try:
                    receiver(self, payload=payload)
                except Exception:
                    log.exception("receiver of maintenance_host failed (host change %s)", change.id)
        with self._lock, Session(self._db) as orm, orm.begin():
            orm.execute(
                update(HostChangeRow)
                .where(
                    HostChangeRow.id.in_([c.id for c in changes]),
                    HostChangeRow.delivered_at.is_(None),
                )
                .values(delivered_at=self.clock.now())
            )

    def _deliver(self, outbox: Iterable[OutboxRow]) -> None:
        """Send the notifications, then mark them delivered (at least once)."""
        delivered: dict[str, list[int]] = {}
        for message in outbox:
            signal = SIGNALS[message.signal]
            for receiver in list(signal.receivers_for(self)):
                try:
                    receiver(self, payload=message.payload)
                except Exception:
                    log.exception(
                        "receiver of %s failed (session %s, seq %s)",
                        message.signal,
                        message.session_id,
                        message.seq,
                    )
            delivered.setdefault(message.session_id, []).append(message.seq)
        if not delivered:
            return
        now = self.clock.now()
        try:
            with self._lock, Session(self._db) as orm, orm.begin():
                for session_id, seqs in delivered.items():
                    orm.execute(
                        update(OutboxRow)
                        .where(
                            OutboxRow.session_id == session_id,
                            OutboxRow.seq.in_(seqs),
                            OutboxRow.delivered_at.is_(None),
                        )
                        .values(delivered_at=now)
                    )
        except OperationalError:
            # Delivered but not marked: they go out again (at least once).
            log.warning("could not mark notifications delivered; they will be sent again")
            self._leftovers_delivered = False


# ---------------------------------------------------------------- cut-over rehearsal
from .core.engine_v2 import CoreEngine  # noqa: E402


class Engine(CoreEngine):
    """Rehearsal: the public Engine as CoreEngine with today's constructor."""
