"""The Engine: the public API of fenix-core, a facade over the core.

A session is created by the pure ``fenix_core.core.factory.SessionFactory``
and inserted by ``fenix_core.core.sql_store.SqlSessionStore``; it is
stepped by the ``fenix_core.core.stepper.Stepper`` (due queue, leases
on ``session_clock`` held by ``fenix_core.core.leases.SqlLeaseKeeper``,
one fenced write per step, database errors retried) running contract
workflows (:mod:`fenix_core.contract`) through
``fenix_core.core.runner.CoreRunner``; notifications go out through the
``fenix_core.core.outbox.Outbox`` as blinker signals (``sender`` is the
Engine), and replies come in through
``fenix_core.core.replies.ReplyIntake`` (checked on the held working
set without SQL, group commit).

The admin's controls live in ``fenix_core.core.admin``, the read side in
``fenix_core.core.views``, approve-then-execute in
``fenix_core.core.approvals`` and
``fenix_core.approval_service.ApprovalService``, the inventory in
``fenix_core.core.inventory.InventoryCache`` (what ``Inventory``,
``ListHosts`` and ``Locate`` find is applied to the records before the
workflow hears of it: ``fenix_core.core.listings``), constraints in the
``fenix_core.core.constraint_service.ConstraintService`` (a change makes
every held session decide again), stuck work in ``fenix_core.core.stuck``.
See docs/internals.md.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any, ClassVar, Self, TypeVar, cast

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from . import approval
from .approval_service import ApprovalService, check_plan_id
from .clock import Clock, RealClock
from .constraint_store import cloud_groups
from .constraints import CloudConstraints, ConstraintSet, GroupConstraints, InstanceConstraints
from .contract import Workflow
from .core import views
from .core.admin import SessionAdmin
from .core.approvals import SqlApprovals
from .core.busy_hosts import check_hosts_free
from .core.constraint_service import ConstraintService, warn_ignored
from .core.factory import CloudRead, CloudSnapshot, SessionFactory, default_group_rules
from .core.inventory import HostChangeRec, InventoryCache
from .core.leases import DatabaseClock, SqlLeaseKeeper
from .core.operations import CoreOperations
from .core.outbox import Outbox
from .core.poller import SqlDbPoller
from .core.ports import NewSession, OutboxRec, WorkingSetLike
from .core.receivers import Receivers
from .core.records import HOST_COLUMNS, INSTANCE_COLUMNS, PROJECT_COLUMNS, SESSION_COLUMNS
from .core.replies import (
    AcceptedReply,
    CarriedReplies,
    ProjectState,
    ReplyFacts,
    ReplyIntake,
)
from .core.reply_inbox import SqlReplyInbox
from .core.retry import DbRetry, check_retry_arguments, is_database_fault
from .core.runner import CoreRunner
from .core.sql_store import SqlSessionStore
from .core.stepper import StepFrame, StepOutcome, Stepper
from .core.working_set import (
    ComponentRec,
    HostRec,
    InstanceRec,
    ProjectRec,
    SessionRec,
    StoredRecords,
    WorkingSet,
)
from .core.ws_port import SESSION_COMPONENT, Steering
from .errors import FenixError, InvalidInput, NotFound, Replanned
from .inventory import change_payload, list_cloud_hosts, to_value
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
from .operations import OperationRunner
from .plugins import Plugins
from .plugins.hookspecs import HostQueue, HostQueueChanges
from .signals import SIGNALS, maintenance_host
from .states import FINAL_SESSION_STATES, HostState, InstanceState
from .store.database import migrate, open_database
from .store.leases import live_holder
from .store.schema import SessionClockRow, SessionRow, SubscriptionRow
from .views import build_approval_view

__all__ = ["Engine"]

log = logging.getLogger("fenix_core.core")

_Loaded = TypeVar("_Loaded")

_FINAL = frozenset(s.value for s in FINAL_SESSION_STATES)
_REQUESTED = InstanceState.ACTION_REQUESTED.value


def working_rows(new: NewSession) -> NewSession:
    """The factory's rows (the column orders of :mod:`.records`) as the
    working set's records store them (``FIELDS`` orders, migration 0007's
    columns at their starting values; ``sessions.data`` becomes the
    ``session`` component)."""

    def named(columns: tuple[str, ...], row: Sequence[Any]) -> dict[str, Any]:
        return dict(zip(columns, row, strict=True))

    s = named(SESSION_COLUMNS, new.session)
    session = SessionRec(
        **{f: s[f] for f in SessionRec.FIELDS if f in s and f not in SessionRec.CLOCK},
        version=0, seq=0, next_wake=s["next_wake"], lease_owner=None, lease_token=0,
        lease_expires=None, delivered_seq=0, inbox_seen_id=0,
    )  # fmt: skip
    hosts = []
    for row in new.hosts:
        h = named(HOST_COLUMNS, row)
        h.pop("session_id")
        hosts.append(HostRec(**h, marks=0).row())
    instances = []
    for row in new.instances:
        i = named(INSTANCE_COLUMNS, row)
        i.pop("session_id")
        extra = {"wave": None, "not_before": None, "impacted_until": None}
        instances.append(InstanceRec(**i, **extra, moved_from=None, refused=None).row())
    projects = []
    for row in new.projects:
        p = named(PROJECT_COLUMNS, row)
        p.pop("session_id")
        projects.append(ProjectRec(**p, draining=False).row())
    return NewSession(
        session=session.row(),
        hosts=hosts,
        instances=instances,
        projects=projects,
        components=[ComponentRec(SESSION_COMPONENT, 1, dict(s["data"] or {})).row()],
    )


class _HeldFacts:
    """ReplyFacts read from a held working set: no SQL."""

    def __init__(
        self, ws: WorkingSet, noted: set[str], allowed: Sequence[str], requires: bool
    ) -> None:
        self._ws = ws
        self._noted = noted
        self.allowed_actions = tuple(allowed)
        self.requires_instance_actions = requires

    @property
    def session_state(self) -> str:
        return self._ws.session.state

    def project(self, project_id: str) -> ProjectState | None:
        # The record itself: read at once, under the engine lock.
        return self._ws.projects.get(project_id)

    def reply_pending(self, project_id: str) -> bool:
        return project_id in self._noted

    def instance_states(self, project_id: str, named: Collection[str]) -> Mapping[str, str]:
        # From the index of requested instances (the host being drained), not
        # a pass over every instance of the project.
        # Set intersections: C loops over the smaller side of each.
        index = self._ws.instance_index
        mine = index.by_project.get(project_id)
        if not mine:
            return {}
        instances = self._ws.instances
        wanted = mine.intersection(named)
        requested = index.by_state.get(_REQUESTED)
        if requested:
            wanted |= mine & requested
        return {i: instances[i].state for i in wanted}

    def note_reply(self, project_id: str) -> None:
        self._noted.add(project_id)


#: Whether a session has ended with nothing left to follow: its state and
#: stored wake-up only (the rest of its rows are not needed for that).
_STATE_AND_WAKE = (
    select(SessionRow.state, SessionClockRow.next_wake)
    .join(SessionClockRow, SessionClockRow.session_id == SessionRow.id)
    .where(SessionRow.id == bindparam("session_id"))
)


def _session_id(session_id: object) -> None:
    """InvalidInput for a session id that is not a string."""
    if not isinstance(session_id, str):
        raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")


def _cloud_groups(ws: StoredRecords) -> dict[str, str]:
    """The cloud's groups the session was created with: id -> project."""
    rec = ws.components.get(SESSION_COMPONENT)
    return cloud_groups(rec.body if rec is not None else None)


class Engine:
    """Runs maintenance sessions (see docs/user-guide.md).

    ``plugins`` give the cloud driver, the actions, the gates and the
    workflows (the built-in ones are always there); ``workflows`` (name ->
    :class:`~fenix_core.contract.Workflow` subclass), if given, replaces the
    workflows the plug-ins provide (tests use it)."""

    #: The previewer of engines given none; ``fenix_core/__init__.py`` sets
    #: it (the preview runs an engine of its own: importing it here would
    #: make an import circle).
    default_previewer: ClassVar[approval.Previewer | None] = None

    def __init__(
        self,
        database_url: str = "sqlite://",
        clock: Clock | None = None,
        plugins: Sequence[object] = (),
        *,
        workflows: Mapping[str, type[Workflow]] | None = None,
        service: str = "fenix",
        admin_project_id: str | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 30.0,
        lease_clock: Clock | None = None,
        default_group_constraints: Mapping[str, Any] | None = None,
        previewer: approval.Previewer | None = None,
        load_entry_points: bool = True,
        db_retries: int = 5,
        db_retry_seconds: float = 0.1,
        max_sessions: int | None = None,
    ) -> None:
        check_retry_arguments(db_retries, db_retry_seconds)
        if max_sessions is not None and (
            isinstance(max_sessions, bool) or not isinstance(max_sessions, int) or max_sessions < 1
        ):
            raise InvalidInput(
                "max_sessions", f"must be a whole number >= 1 or None, got {max_sessions!r}"
            )
        self.max_sessions = max_sessions
        self.db_retries = db_retries
        self.db_retry_seconds = float(db_retry_seconds)
        # A lost database connection: a step, a poll or a claim is made again.
        self._retry = DbRetry(db_retries, self.db_retry_seconds)
        self.clock: Clock = clock if clock is not None else RealClock()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_seconds = float(lease_seconds)
        self.service = service
        self.admin_project_id = admin_project_id
        self.plugins = Plugins(plugins, self.clock, load_entry_points=load_entry_points)
        self._workflows = dict(workflows) if workflows is not None else dict(self.plugins.workflows)
        self._db = open_database(database_url)
        migrate(self._db)
        # Leases run on the database's clock where there is one (PostgreSQL).
        self.lease_clock: Clock = (
            lease_clock
            if lease_clock is not None
            else DatabaseClock()
            if self._db.dialect.name == "postgresql"
            else RealClock()
        )
        if isinstance(self.lease_clock, DatabaseClock) and self._db.dialect.name == "postgresql":
            with self._db.connect() as connection:  # right from the start, not at the first poll
                self.lease_clock.measure(connection)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._store = SqlSessionStore(self._db)
        self._leases = SqlLeaseKeeper(
            self._db, self.worker_id, self.lease_seconds, self.lease_clock
        )
        self._noted: dict[str, set[str]] = {}
        self.admin_project_id = admin_project_id
        self.default_group_constraints = default_group_rules(default_group_constraints)
        self._constraints = ConstraintService(
            self._db,
            clock=self.clock,
            driver=lambda: self.plugins.driver,
            default_group=self.default_group_constraints,
            changed=self._constraints_changed,
            lock=self._lock,
        )
        self._inventory = InventoryCache(self._db)
        # Host changes committed and not announced yet: those a dead process
        # left, then this engine's own.
        self._host_changes: list[HostChangeRec] = self._inventory.undelivered()
        self._next_look_at: datetime | None = None
        self._runner = CoreRunner(
            workflows=self._workflows,
            operations=CoreOperations(OperationRunner(self.plugins)),
            load=self._store.load,
            replies=self._unprocessed,
            service=service,
            admin_project_id=admin_project_id,
            now=self.clock.now,
            lease_seconds=self.lease_seconds,
            steering=self._steering(),
            inventory=self._inventory,
            subscribed=self._subscribed,
            host_changes=lambda changes: self._host_changes.extend(changes),
            list_hosts=self._cloud_hosts,
            constraints=lambda: self._constraints.constraints(),
        )
        # Each signal's receivers for this engine, kept until one (dis)connects.
        self._receivers = Receivers()
        self._outbox = Outbox(self._send)
        poller = SqlDbPoller(
            self._db,
            self.lease_clock,
            owner=self.worker_id,
            reading=self._store.reading,
            held=lambda: self._stepper.held_ids(),
        )
        self._stepper = Stepper(
            self._store,
            self._leases,
            self._runner,
            self._outbox,
            clock=self.clock,
            lease_clock=self.lease_clock,
            lease_seconds=self.lease_seconds,
            poller=poller,
            quiet=poller.quiet,
            leftovers=self._store,
            retry=self._retry,
            flush=self._runner.flush,
            capacity=max_sessions,
        )
        self._replies = ReplyIntake(
            sink=self,
            facts_of=self._facts_of,
            transaction=self._reply_transaction,
            lock=self._lock,
            clock=self.clock.now,
            carry=self._carry,
            append=self._append_replies,
        )
        self._factory = SessionFactory(self._workflows, self.plugins.actions, self.plugins.gates)
        self._admin = SessionAdmin(
            database=self._db,
            store=self._store,
            stepper=self._stepper,
            runner=self._runner,
            clock=self.clock,
        )
        self.default_group_constraints = default_group_rules(default_group_constraints)
        self._approvals = ApprovalService(
            previewer=previewer if previewer is not None else type(self).default_previewer,
            constraints=self.constraints,
            managed=self.subscriptions,
            now=self.clock.now,
        )
        self._approval_store = SqlApprovals(self._db)

    def _steering(self) -> Steering:
        """How the cloud driver steers new instances around queued hosts."""
        driver: object = self.plugins.driver
        if not isinstance(driver, HostQueue):
            return None
        return "each" if isinstance(driver, HostQueueChanges) else "whole"

    # ------------------------------------------------------------------ lifecycle

    @property
    def database(self) -> SAEngine:
        """The SQLAlchemy engine of the database (the seam for instrumentation).
        An in-memory database is one connection for every thread: use it
        from the thread that drives the engine, and :meth:`transaction`
        from any other."""
        return self._db

    def held_sessions(self) -> list[str]:
        """The ids of the sessions this worker holds now (leased, kept in
        memory between steps), sorted; as Engine.held_sessions."""
        with self._lock:
            return self._stepper.held_sessions()

    def lease_holder(self, session_id: str) -> tuple[str, datetime] | None:
        """The worker holding a live lease on the session and when that lease
        expires (aware UTC, on ``lease_clock``), or None when no worker
        does; NotFound for an unknown session (as Engine.lease_holder)."""
        if not isinstance(session_id, str):
            raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")
        with self._reading() as db:
            found = db.execute(
                select(SessionClockRow.lease_owner, SessionClockRow.lease_expires).where(
                    SessionClockRow.session_id == session_id
                )
            ).one_or_none()
        if found is None:
            raise NotFound("session", session_id, session_id=session_id)
        return live_holder(found.lease_owner, found.lease_expires, self.lease_clock.now())

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for one of the engine's reads, under the engine lock:
        an in-memory database is one connection for every thread, and a read
        on it from another thread would end (roll back) a transaction open
        there, such as an extension's :meth:`transaction`."""
        with self._lock, self._db.connect() as db:
            yield db

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A SQLAlchemy session on the engine's database, in a transaction that
        commits on exit, serialised with the engine's own calls (as
        Engine.transaction: for extensions that keep their own tables next to
        the engine's, such as the REST front end's webhook queue)."""
        with self._lock, Session(self._db) as orm, orm.begin():
            yield orm

    def close(self) -> None:
        with self._lock:
            self._stepper.release()
            self._store.close()
            self._db.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sessions

    def create_session(self, request: SessionRequest | Mapping[str, Any]) -> str:
        """Validate the request against the cloud, insert the session, wake it.

        Conflict, writing nothing, if another running session maintains one
        of its hosts (checked in the insert's transaction). With ``approval:
        "required"`` the session stores its plan and waits in
        ``AWAITING_APPROVAL`` (nothing due) for :meth:`approve_session`."""
        req = self._factory.check(request, default_group_constraints=self.default_group_constraints)
        read = self._read_cloud(req)
        plan = self._approvals.plan(req, read) if req.approval == "required" else None
        session_id = str(uuid.uuid4())
        now = self.clock.now()
        new = self._factory.records(
            req,
            read,
            subscribed=set(self.subscriptions()),
            session_id=session_id,
            now=now,
            approval=plan,
        )
        rows = working_rows(new)
        pending = HostState.PENDING.value
        scope = [h[0] for h in rows.hosts if h[HostRec.FIELDS.index("state")] == pending]
        # The inventory's listing is written in the insert's transaction (no
        # commit of its own); the cache follows it once that committed.
        synced: list[Callable[[], list[HostChangeRec]] | None] = []

        def listing(db: Connection) -> None:
            synced.append(
                self._inventory.sync_in(
                    db, read.hosts, now=now, session_id=session_id, adding=req.add_hosts
                )
            )

        with self._lock:
            self._store.insert(
                rows,
                check=lambda db: check_hosts_free(db, [*scope, *req.add_hosts]),
                also=listing,
            )
            for committed in synced:
                if committed is not None:
                    self._host_changes += committed()
            if plan is None:
                # Its first step's write takes the lease: no claim of its own.
                self._leases.fresh(session_id)
                self._stepper.wake(session_id)
            self._deliver_host_changes()
        data = dict(zip(SESSION_COLUMNS, new.session, strict=True))["data"]
        contradicted = self._constraints.contradicted(session_id, cloud_groups(data))
        warn_ignored(session_id, contradicted)
        if plan is None:
            self._wake.set()
        return session_id

    def _read_cloud(self, req: SessionRequest, *, drop_gone: bool = False) -> CloudRead:
        cloud = CloudSnapshot.read(self.plugins.require_driver())
        return self._factory.fit(
            req, cloud, self.constraints(cloud.constraints), drop_gone=drop_gone
        )

    @property
    def previewer(self) -> approval.Previewer | None:
        """What makes the plan of a session awaiting approval."""
        return self._approvals.previewer

    # ------------------------------------------------------------------ approval

    def get_plan(self, session_id: str) -> ApprovalView:
        """The plan of a session created with ``approval: "required"`` (as
        Engine.get_plan); NotFound for a session that has none."""
        with self._lock:
            _, record, _ = self._approval_store.awaiting(session_id)
        found = build_approval_view(record)
        if found is None:
            raise NotFound("plan", session_id, session_id=session_id)
        return found

    def approve_session(self, session_id: str, plan_id: str | None = None) -> SessionView:
        """Start a session that awaits approval if its plan still fits the
        cloud and the constraints; else re-plan it and raise Replanned (as
        Engine.approve_session)."""
        check_plan_id(plan_id)
        with self._lock:
            state, record, request = self._approval_store.awaiting(session_id)
        self._approvals.require_awaiting(session_id, state, record, plan_id)
        assert record is not None
        req = SessionRequest.from_dict(request)
        read = self._read_cloud(req, drop_gone=True)
        changes = self._approvals.changes(record, read)
        now = self.clock.now()
        with self._lock:
            # The cloud as read now is the inventory's too (as at create_session):
            # a host gone before the approval is not a removal during the run.
            self._host_changes += self._inventory.sync(read.hosts, now=now, session_id=session_id)
            self._deliver_host_changes()
        if changes:
            plan = self._approvals.plan(req, read, changes)
            new = self._factory.records(
                req,
                read,
                subscribed=set(self.subscriptions()),
                session_id=session_id,
                now=now,
                approval=plan,
            )
            with self._lock:
                self._approval_store.replan(session_id, record["plan_id"], working_rows(new), now)
            log.info("session %s re-planned as %s", session_id, plan["plan_id"])
            raise Replanned(session_id, plan["plan_id"], changes)
        with self._lock:
            approved = self._approvals.approved(record, now)
            self._approval_store.approve(session_id, record["plan_id"], approved, now)
            self._stepper.wake(session_id)
        self._wake.set()
        log.info("session %s: plan %s approved", session_id, record["plan_id"])
        return self.get_session(session_id)

    def get_session(self, session_id: str) -> SessionView:
        """The session: state, percent done, hosts and their states, reason,
        waits and stuck work (a ``SessionView``)."""
        with self._lock:
            ws = self._committed(session_id, self._store.load_view)  # no instances
            ignored = self._constraints.contradicted(session_id, _cloud_groups(ws))
            held = cast(WorkingSet | None, self._stepper.held(session_id))
            return views.session_view(ws, self.clock.now(), ignored, held)

    def list_sessions(self) -> list[SessionView]:
        """Every session, oldest first."""
        with self._lock:
            ids = views.session_ids(self._db)
        return [self.get_session(sid) for sid in ids]  # steps go on between them

    def list_operations(self, session_id: str) -> list[OperationView]:
        """Every operation the session recorded, in that order (read-only).
        An operation started after its step's commit shows ``pending`` until
        the session's next step writes its status."""
        with self._lock:
            self._require_session(session_id)
            return views.operation_views(self._db, session_id)

    def project_view(self, session_id: str, project_id: str) -> ProjectView:
        """One project's instances in the session and their states, nothing else."""
        _str(project_id, "project_id")
        with self._lock:
            ws = self._working_set(session_id)  # checks session_id
            held = cast(WorkingSet | None, self._stepper.held(session_id))
            found = views.project_view(ws, project_id, held)
        if found is None:
            raise NotFound("project", project_id, session_id=session_id)
        return found

    def outbox_backlog(self) -> tuple[int, datetime | None]:
        """Notifications written but not yet delivered, of every session: how
        many, and when the oldest was written (the engine's clock: the
        core's outbox rows carry the time of their step). Read-only: for
        metrics."""
        with self._lock:
            return views.outbox_backlog(self._db, self._outbox.watermark)

    # ------------------------------------------------------------------ admin controls

    def pause(self, session_id: str, reason: str = "by the admin") -> SessionView:
        """Stop starting new hosts and moves; work in flight ends normally.

        Conflict if the session has ended or is paused already."""
        _str(reason, "reason")
        with self._lock:
            self._require_session(session_id)
            self._admin.pause(session_id, reason)
        return self._changed(session_id)

    def resume(self, session_id: str) -> SessionView:
        """Let a paused session go on. Conflict if it is not paused."""
        with self._lock:
            self._require_session(session_id)
            self._admin.resume(session_id)
        return self._changed(session_id)

    def cancel(self, session_id: str, reason: str = "cancelled by the admin") -> SessionView:
        """End the session (MAINTENANCE_CANCELLED): no new work; migrations in
        flight are followed to their end; the host this session disabled, and
        only that, is put back into service. Conflict if it has ended."""
        _str(reason, "reason")
        with self._lock:
            self._require_session(session_id)
            if not self._approval_store.cancel(session_id, reason, self.clock.now()):
                self._admin.cancel(session_id, reason)
        return self._changed(session_id)

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
            self._require_session(session_id)
            now = self.clock.now()
            awaiting = not upd.retry and self._approval_store.reschedule(
                session_id, upd.maintenance_at, now
            )
            if not awaiting:
                self._admin.update(session_id, upd)
        return self._changed(session_id)

    def delete_session(self, session_id: str) -> None:
        """Remove a finished session and everything recorded about it."""
        with self._lock:
            self._require_session(session_id)
            self._admin.delete(session_id)
            self._noted.pop(session_id, None)

    def _changed(self, session_id: str) -> SessionView:
        self._wake.set()
        return self.get_session(session_id)

    def _require_session(self, session_id: str) -> None:
        """InvalidInput for a session id that is not a string; NotFound for
        a session that does not exist."""
        _session_id(session_id)
        if self._stepper.held(session_id) is None and not views.session_exists(
            self._db, session_id
        ):
            raise NotFound("session", session_id, session_id=session_id)

    def _working_set(self, session_id: str) -> WorkingSet:
        return self._committed(session_id, self._store.load)

    def _committed(self, session_id: str, load: Callable[[str], _Loaded]) -> _Loaded:
        """The session as last committed (by any worker: the copy this engine
        holds may be behind a control written through the database), read
        by ``load``: InvalidInput for an id that is not a string, NotFound
        for a session the load does not find (no query of its own first)."""
        _session_id(session_id)
        try:
            return load(session_id)
        except NotFound:
            raise NotFound("session", session_id, session_id=session_id) from None

    def subscribe(self, project_id: str) -> None:
        """Record that ``project_id`` has an application manager listening.

        Projects subscribed when a session starts get the dialogue; the others
        get the session's ``project_policy``. InvalidInput for a project id
        that is not a name (not a string, empty, longer than 255 characters,
        or with a NUL character)."""
        _str(project_id, "project_id")
        with self._lock, self._db.begin() as db:
            known = db.scalar(
                select(SubscriptionRow.project_id).where(SubscriptionRow.project_id == project_id)
            )
            if known is None:
                db.execute(
                    insert(SubscriptionRow).values(
                        project_id=project_id, created_at=self.clock.now()
                    )
                )

    def unsubscribe(self, project_id: str) -> None:
        _str(project_id, "project_id")
        with self._lock, self._db.begin() as db:
            db.execute(delete(SubscriptionRow).where(SubscriptionRow.project_id == project_id))

    def subscriptions(self) -> list[str]:
        with self._reading() as db:
            return list(
                db.scalars(select(SubscriptionRow.project_id).order_by(SubscriptionRow.project_id))
            )

    def _subscribed(self, project_id: str) -> bool:
        with self._reading() as db:
            return (
                db.scalar(
                    select(SubscriptionRow.project_id).where(
                        SubscriptionRow.project_id == project_id
                    )
                )
                is not None
            )

    # ------------------------------------------------------------------ inventory

    def refresh_inventory(self) -> list[HostChange]:
        """Compare the cloud's hosts with the inventory; store and announce the
        differences (``maintenance_host`` ``HOST_ADDED`` / ``HOST_REMOVED``, each
        change once) and return them; held sessions follow them at once, the
        others when next loaded. The first listing stored is the baseline:
        nothing is announced for it. As :meth:`Engine.refresh_inventory`."""
        hosts = list_cloud_hosts(self.plugins.require_driver())
        with self._lock:
            changes = self._inventory.sync(hosts, now=self.clock.now(), session_id=None)
            self._host_changes += changes
            if changes:
                for session_id in self._stepper.held_sessions():
                    self._stepper.wake(session_id)
            self._deliver_host_changes()
        self._wake.set()
        return [to_value(c) for c in changes]

    def _cloud_hosts(self) -> list[Host] | None:
        """The cloud's hosts now, or None if it cannot say (logged)."""
        try:
            return list(self.plugins.require_driver().list_hosts())
        except Exception:
            log.exception("listing the cloud's hosts failed")
            return None

    def _look_at_others(self, now: datetime) -> bool:
        """Now and then (``now``: the lease clock), read what other workers
        and processes committed that the held sessions decide on: the host
        changes (held sessions follow them at their next step) and the
        constraints (held sessions decide again with them); whether it read."""
        if self._next_look_at is not None and now < self._next_look_at:
            return False
        self._next_look_at = now + timedelta(seconds=self.lease_seconds / 4)
        if self._retry("reading host changes", self._inventory.poll):
            for session_id in self._stepper.held_sessions():
                self._stepper.wake(session_id)
        if self._retry("reading the constraints' revision", self._constraints.changed_elsewhere):
            self._constraints_changed()
        return True

    def _deliver_host_changes(self) -> None:
        """Announce the committed host changes, then mark them delivered (at
        least once: a crash in between sends them again)."""
        if not self._host_changes:
            return
        sending, self._host_changes = self._host_changes, []
        for change in sending:
            payload = change_payload(
                change, service=self.service, admin_project_id=self.admin_project_id
            )
            for receiver in self._receivers(maintenance_host, self):
                try:
                    receiver(self, payload=payload)
                except Exception:
                    log.exception("receiver of maintenance_host failed (host change %s)", change.id)
        ids, now = [c.id for c in sending], self.clock.now()
        self._retry("marking host changes delivered", lambda: self._inventory.delivered(ids, now))

    # ------------------------------------------------------------------ constraints

    def set_group_constraints(
        self, group: GroupConstraints | Mapping[str, Any], *, project_id: str | None = None
    ) -> GroupConstraints:
        """As :meth:`Engine.set_group_constraints`."""
        return self._constraints.set_group(group, project_id=project_id)

    def set_instance_constraints(
        self,
        instance: InstanceConstraints | Mapping[str, Any],
        *,
        group: GroupConstraints | Mapping[str, Any] | None = None,
        project_id: str | None = None,
    ) -> InstanceConstraints:
        """As :meth:`Engine.set_instance_constraints`."""
        return self._constraints.set_instance(instance, group=group, project_id=project_id)

    def get_group_constraints(
        self, group_id: str, *, project_id: str | None = None
    ) -> GroupConstraints:
        return self._constraints.get_group(group_id, project_id=project_id)

    def get_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> InstanceConstraints:
        return self._constraints.get_instance(instance_id, project_id=project_id)

    def list_group_constraints(self, project_id: str | None = None) -> list[GroupConstraints]:
        return self._constraints.list_groups(project_id)

    def list_instance_constraints(self, project_id: str | None = None) -> list[InstanceConstraints]:
        return self._constraints.list_instances(project_id)

    def delete_group_constraints(self, group_id: str, *, project_id: str | None = None) -> None:
        self._constraints.delete_group(group_id, project_id=project_id)

    def delete_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> None:
        self._constraints.delete_instance(instance_id, project_id=project_id)

    def constraints(self, cloud: CloudConstraints | None = None) -> ConstraintSet:
        """The constraints in force now (plus ``cloud``'s defaults), resolved."""
        return self._constraints.constraints(cloud)

    def _constraints_changed(self) -> None:
        """Every held session decides again with the new values at its next step."""
        with self._lock:
            for session_id in self._stepper.held_sessions():
                self._runner.reconsider(session_id)
                self._stepper.wake(session_id)
        self._wake.set()

    # ------------------------------------------------------------------ replies

    def reply(
        self,
        session_id: str,
        project_id: str,
        state: str,
        instance_actions: Mapping[str, str] | None = None,
    ) -> None:
        """Record a project's reply (returns once committed); as Engine.reply."""
        answer = Reply(project_id=project_id, state=state, instance_actions=instance_actions or {})
        self._replies.submit(session_id, answer)

    def reply_many(self, replies: Iterable[tuple[str, Reply]]) -> list[FenixError | None]:
        """Record a burst of replies, ``(session_id, fenix_core.model.Reply)`` each, at once.

        Returns one result per item, in order: None when it was recorded, or
        the error :meth:`reply` would have raised for it (the other items are
        recorded all the same; of two replies of one project in a burst, the
        second is refused as already answered). If the write itself fails,
        that error is raised and none of them is recorded. An item that is
        not a Reply is refused as a whole (InvalidInput ``replies[i]``,
        nothing written): it is a caller's bug, not a project's answer."""
        items = list(replies)
        for index, (_, answer) in enumerate(items):
            if not isinstance(answer, Reply):
                raise InvalidInput(
                    f"replies[{index}]", f"expected a Reply, got {type(answer).__name__}"
                )
        return self._replies.submit_many(items)

    # ReplySink
    def held(self, session_id: str) -> WorkingSetLike | None:
        return self._stepper.held(session_id)

    def wake(self, session_id: str) -> None:
        self._runner.replies_arrived(session_id)
        self._stepper.wake(session_id)
        self._wake.set()

    def _facts_of(self, working_set: WorkingSetLike) -> ReplyFacts:
        assert isinstance(working_set, WorkingSet)
        ws = working_set
        workflow = self._workflows.get(ws.session.workflow)
        requires = workflow is None or workflow.requires_instance_actions
        allowed = ws.components.get(SESSION_COMPONENT)
        actions = (allowed.body if allowed else {}).get("allowed_actions", ())
        noted = self._noted.setdefault(ws.session.id, set())
        return _HeldFacts(ws, noted, [str(a) for a in actions], requires)

    def _carry(self, session_id: str, replies: CarriedReplies) -> bool:
        """Record a burst of checked replies to a session this engine holds
        in a step of it run now (its fenced transaction writes them,
        processed): whether that step committed them. A step that fails is
        logged, as the loop logs one, and the burst is written on its own."""

        def run(working_set: WorkingSetLike, now: datetime, frame: StepFrame) -> StepOutcome:
            return self._runner.run(working_set, now, frame, carried=replies)

        try:
            self._stepper.step_held(session_id, run, replies.mark_committed)
        except Exception:
            log.exception("session %s: the step carrying replies failed", session_id)
        if replies.committed:
            self._deliver_host_changes()
            self._wake.set()  # the session's next wake-up changed
        return replies.committed

    @property
    def steps_run(self) -> int:
        """Session steps this engine has run: those of :meth:`step` (its
        return values added up) and those :meth:`reply_many` ran to record a
        burst in the step of the session it answers."""
        return self._stepper.steps_run

    @contextmanager
    def _reply_transaction(self) -> Iterator[SqlReplyInbox]:
        # The store's: on SQLite the connection the steps write on.
        with self._store.transaction() as connection:
            yield SqlReplyInbox(connection, self._requires_instance_actions, self._store)

    def _append_replies(self, rows: Sequence[AcceptedReply]) -> None:
        # Replies to held sessions: checked in memory, nothing to read.
        self._store.append_replies([(r.session_id, r.inbox_row()) for r in rows])

    def _requires_instance_actions(self, workflow_name: str) -> bool:
        workflow = self._workflows.get(workflow_name)
        return workflow is None or workflow.requires_instance_actions

    def _unprocessed(self, session_id: str) -> list[tuple[Any, ...]]:
        self._noted.pop(session_id, None)  # read now: no longer pending after this step
        return self._store.unprocessed_replies(session_id)

    # ------------------------------------------------------------------ running

    def step(self) -> int:
        """Step every session due now; return how many committed a step."""
        with self._lock:
            # One reading of the lease clock for both, unless the database was read between.
            lease_now = self.lease_clock.now()
            if self._look_at_others(lease_now):
                lease_now = self.lease_clock.now()
            stepped = self._stepper.step(lease_now)
            self._deliver_host_changes()
            return stepped

    def run_until_idle(self, max_steps: int = 1_000_000) -> int:
        steps = 0
        while self.step():
            steps += 1
            if steps >= max_steps:
                raise FenixError(f"still busy after {max_steps} steps")
            with self._lock:
                if not self._stepper.due_now():
                    break  # the next step() would find nothing: not called
        return steps

    def next_wake(self) -> datetime | None:
        """When the engine next has something to do (None: nothing scheduled):
        the sessions it holds, and those stored that it may take (sessions
        another worker holds a live lease on are not counted, nor, while it
        holds ``max_sessions``, any it does not hold)."""
        with self._lock:
            held, queue = self._stepper.held_ids(), self._stepper.queue
            parked = self._stepper.parked_ids()
            full = self.max_sessions is not None and len(held) >= self.max_sessions
            stored = None
            for sid, wake in views.stored_wakes(
                self._db, self.worker_id, self.lease_clock.now(), len(held) + len(parked) + 1
            ):
                if sid in parked:
                    continue  # this engine cannot step it
                if sid not in held:
                    stored = None if full else wake
                    break
                if sid not in queue:  # held, nothing scheduled, yet due in the database
                    self._stepper.reload_at(sid, wake)
            mine = self._stepper.next_wake()
            if self._stepper.next_poll() is None:
                # Not polled yet: what the first poll would find is ``stored``.
                mine = queue.next_wake()
        return min((w for w in (mine, stored) if w is not None), default=None)

    def run_until_done(self, session_id: str) -> SessionView:
        """Step until the session is final with nothing left to follow.

        A session this engine does not hold (created by another process, or
        left by one that died) is claimed first. While another live worker
        holds it, this one looks again every ``lease_seconds / 4`` (at most
        a second) of real time: that worker may
        finish the session, or die and leave it when its lease runs out.
        FenixError if no plug-in of this engine provides its workflow (the
        engine leaves it as it is). InvalidInput for a session id that is not
        a string, NotFound for an unknown session."""
        with self._lock:
            self._require_session(session_id)
        claimed = False
        while True:
            self.run_until_idle()
            why = self._stepper.parked(session_id)
            if why is not None:
                raise FenixError(f"session {session_id} {why}", session_id=session_id)
            if self._stepper.held(session_id) is None:
                if self._finished(session_id):
                    return self.get_session(session_id)
                if claimed:
                    self._wait_for_another_worker()
                claimed = True
                self._stepper.wake(session_id)
                continue
            claimed = False
            wake = self._stepper.next_wake()
            if wake is not None and wake <= self.clock.now():
                continue
            if self._wake.is_set():  # (clearing takes the event's lock: a step's worth)
                self._wake.clear()
            if not self.clock.wait(wake, self._wake) and wake is None:
                view = self.get_session(session_id)
                raise FenixError(
                    f"session {session_id} waits for nothing that can happen (state {view.state})",
                    session_id=session_id,
                )

    def _wait_for_another_worker(self) -> None:
        """A session this engine waits for is held by another live worker:
        wait a little (real time), or less if one of this engine's own
        sessions is due sooner on a real clock."""
        pause = min(1.0, self.lease_seconds / 4)
        wake = self._stepper.next_wake()
        if wake is not None and wake <= self.clock.now():
            return
        if wake is not None and isinstance(self.clock, RealClock):
            self.clock.wait(min(wake, self.clock.now() + timedelta(seconds=pause)), self._wake)
        else:
            self._wake.wait(pause)
        self._wake.clear()

    def run_forever(self) -> None:
        """The production loop (as Engine.run_forever): step what is due, then
        wait for the next wake-up, a reply or a new session, or the next look
        at the database for sessions nobody holds, until :meth:`stop` is
        called (from another thread or a plug-in): the loop returns after
        the step under way. A database that stays unreachable past
        ``db_retries`` does not end the loop: it is logged and the loop tries
        again every ``lease_seconds / 4``."""
        self._stop.clear()
        while not self._stop.is_set():
            try:
                # One step at a time, not run_until_idle(): a worker that is
                # never idle (taking new sessions as others end) still stops.
                if self.step():
                    continue
            except DBAPIError as exc:
                if not is_database_fault(exc):
                    raise
                self._database_lost(exc)
                continue
            if self._stop.is_set():
                break
            self._wait_for_work()

    def _database_lost(self, error: DBAPIError) -> None:
        """The database stayed unreachable through ``db_retries``: nothing
        commits, so this worker starts no operation and sends no
        notification (both come only after a commit). It keeps what it
        holds and tries again every ``lease_seconds / 4`` (at most a
        second); once the database is back, a session another worker took
        meanwhile (its lease expired) fences this worker's next write out,
        and the step is rolled back and the session dropped."""
        log.warning("worker %s: database unreachable (%s); trying again", self.worker_id, error)
        self._stop.wait(min(1.0, self.lease_seconds / 4))

    def stop(self) -> None:
        """Make :meth:`run_forever` return."""
        self._stop.set()
        self._wake.set()

    def _wait_for_work(self) -> None:
        wake = self._stepper.next_wake()
        poll = self._stepper.next_poll()
        # The poll is due on the lease clock (real time in production); a
        # simulated lease clock moves only when a test moves it.
        if poll is None:
            to_poll = None
        elif isinstance(self.lease_clock, RealClock | DatabaseClock):
            to_poll = max(0.0, (poll - self.lease_clock.now()).total_seconds())
        else:
            to_poll = min(1.0, self.lease_seconds / 4)
        if wake is not None and isinstance(self.clock, RealClock):
            if to_poll is not None:
                wake = min(wake, self.clock.now() + timedelta(seconds=to_poll))
            self.clock.wait(wake, self._wake)
        elif wake is not None:
            self.clock.wait(wake, self._wake)  # simulated: a jump, no real wait
        else:
            self._wake.wait(to_poll)
            self._wake.clear()

    def _finished(self, session_id: str) -> bool:
        with self._reading() as db:
            found = db.execute(_STATE_AND_WAKE, {"session_id": session_id}).one_or_none()
        if found is None:  # deleted meanwhile
            raise NotFound("session", session_id, session_id=session_id)
        return found.state in _FINAL and found.next_wake is None

    # ------------------------------------------------------------------ delivery

    def _send(self, row: OutboxRec) -> None:
        signal = SIGNALS[row.signal]
        for receiver in self._receivers(signal, self):
            try:
                receiver(self, payload=row.payload)
            except Exception:
                log.exception(
                    "receiver of %s failed (session %s, seq %s)",
                    row.signal,
                    row.session_id,
                    row.seq,
                )
