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
import threading
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import TracebackType
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from . import constraint_store
from .clock import Clock, RealClock
from .constraints import (
    DEFAULT_GROUP,
    CloudConstraints,
    ConstraintSet,
    GroupConstraints,
    InstanceConstraints,
)
from .errors import (
    CloudError,
    Conflict,
    FenixError,
    Forbidden,
    InvalidInput,
    NotFound,
)
from .hookspecs import ConstraintSource
from .model import (
    OperationView,
    ProjectView,
    Reply,
    SessionRequest,
    SessionUpdate,
    SessionView,
    _str,
)
from .operations import OperationRunner, cloud_constraints_dict, record_status
from .plugins import Plugins
from .runtime import LoadedSession
from .signals import SIGNALS
from .states import (
    FINAL_SESSION_STATES,
    HostState,
    InstanceAction,
    InstanceState,
    SessionState,
    normalize_reply_state,
)
from .store.database import migrate, open_database
from .store.schema import (
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

__all__ = ["Engine"]

log = logging.getLogger("fenix_core")

_INSTANCE_CHOICE_STATES = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")
_FINAL = tuple(s.value for s in FINAL_SESSION_STATES)


class Engine:
    """Runs maintenance sessions.

    ``database_url`` defaults to an in-memory SQLite database; give a file
    (``sqlite:///fenix.db``) to survive restarts: a new Engine on the same
    database resumes every running session. ``clock`` defaults to the real
    clock. ``plugins`` are a cloud plug-in and any action or workflow plug-ins;
    plug-ins published in the ``fenix`` entry-point group are loaded too unless
    ``load_entry_points`` is false.
    """

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
    ) -> None:
        self.clock: Clock = clock if clock is not None else RealClock()
        self.service = service
        self.admin_project_id = admin_project_id
        self.plugins = Plugins(plugins, self.clock, load_entry_points=load_entry_points)
        self._db = open_database(database_url)
        migrate(self._db)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._loaded: dict[str, tuple[LoadedSession, Workflow]] = {}
        self._runner = OperationRunner(self.plugins)
        self._leftovers_delivered = False
        # Sessions whose workflow no plug-in provides: left as they are (a new
        # engine with the plug-in resumes them), and not woken for nothing.
        self._unrunnable: set[str] = set()
        self.default_group_constraints = self._check_default_group(default_group_constraints)
        self._constraints: tuple[int, ConstraintSet] | None = None

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the database and the loaded sessions."""
        with self._lock:
            for loaded, _ in self._loaded.values():
                loaded.orm.close()
                loaded.release()
            self._loaded.clear()
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

    # ------------------------------------------------------------------ admin API

    def create_session(self, request: SessionRequest | Mapping[str, Any]) -> str:
        """Start a maintenance session; returns its id.

        Validates the request against the registered workflows and actions
        and the cloud's hosts; raises InvalidInput / Conflict and writes
        nothing if anything is wrong.
        """
        req = SessionRequest.coerce(request)
        workflow = self.plugins.workflows.get(req.workflow)
        if workflow is None:
            raise InvalidInput(
                "workflow",
                f"unknown workflow {req.workflow!r}; known: "
                + ", ".join(sorted(self.plugins.workflows)),
            )
        workflow.validate_request(req, self.plugins.actions)
        driver = self.plugins.require_driver()
        try:
            hosts = list(driver.list_hosts())
            instances = list(driver.list_instances(None))
            allowed = [str(a) for a in driver.allowed_actions()]
            cloud = (
                cloud_constraints_dict(driver.cloud_constraints(instances))
                if isinstance(driver, ConstraintSource)
                else None
            )
        except FenixError:
            raise
        except Exception as exc:
            raise CloudError(f"reading the cloud's inventory failed: {exc}") from exc
        by_name = {h.name: h for h in hosts}
        unknown = [h for h in req.hosts if h not in by_name]
        if unknown:
            raise InvalidInput("hosts", "unknown to the cloud: " + ", ".join(unknown))
        scope = list(req.hosts) if req.hosts else [h.name for h in hosts]
        if not scope:
            raise InvalidInput("hosts", "the cloud reports no hosts to maintain")
        unknown_actions = sorted(set(allowed) - {a.value for a in InstanceAction})
        if unknown_actions or not allowed:
            raise CloudError(f"cloud driver offers unusable instance actions: {allowed}")
        now = self.clock.now()
        session_id = str(uuid.uuid4())
        with self._lock, Session(self._db) as orm, orm.begin():
            self._check_hosts_free(orm, scope)
            subscribed = set(orm.scalars(select(SubscriptionRow.project_id)))
            orm.add(
                SessionRow(
                    id=session_id,
                    workflow=req.workflow,
                    request=req.to_dict(),
                    state=SessionState.MAINTENANCE.value,
                    phase="",
                    reason=None,
                    failed_state=None,
                    percent_done=0,
                    data={"allowed_actions": allowed}
                    | ({"cloud_constraints": cloud} if cloud else {}),
                    seq=0,
                    version=0,
                    next_wake=now,
                    maintenance_at=req.maintenance_at,
                    created_at=now,
                    updated_at=now,
                    finished_at=None,
                )
            )
            orm.flush()
            in_scope = set(scope)
            ordered = scope + [h.name for h in hosts if h.name not in in_scope]
            for position, name in enumerate(ordered):
                host = by_name[name]
                orm.add(
                    HostRow(
                        session_id=session_id,
                        name=name,
                        type=host.type,
                        vcpus=host.vcpus,
                        state=(HostState.PENDING if name in in_scope else HostState.OUT_OF_SCOPE),
                        position=position,
                        stage=0,
                        enabled=host.enabled,
                        disabled_by_session=False,
                        started_at=None,
                        finished_at=None,
                        reason=None,
                    )
                )
            projects: set[str] = set()
            for inst in instances:
                where = by_name.get(inst.host)
                if where is None or where.type != "compute":
                    continue
                affected = inst.host in in_scope
                if affected:
                    projects.add(inst.project_id)
                orm.add(
                    InstanceRow(
                        session_id=session_id,
                        instance_id=inst.instance_id,
                        project_id=inst.project_id,
                        name=inst.name,
                        host=inst.host,
                        vcpus=inst.vcpus,
                        live_migratable=inst.live_migratable,
                        state=(InstanceState.PENDING if affected else InstanceState.OUT_OF_SCOPE),
                        action=None,
                        target=None,
                        moves=0,
                        attempts=0,
                    )
                )
            for project_id in sorted(projects):
                orm.add(
                    ProjectRow(
                        session_id=session_id,
                        project_id=project_id,
                        managed=project_id in subscribed,
                        state=None,
                        awaiting=False,
                        reply_at=None,
                        replied_at=None,
                    )
                )
        log.info("session %s created over %d host(s)", session_id, len(scope))
        self._wake.set()
        return session_id

    def get_session(self, session_id: str) -> SessionView:
        """The session: state, percent done, hosts and their states, reason."""
        with self._lock, Session(self._db) as orm:
            row = self._session_row(orm, session_id)
            hosts = orm.scalars(select(HostRow).where(HostRow.session_id == session_id)).all()
            projects = orm.scalars(
                select(ProjectRow).where(ProjectRow.session_id == session_id)
            ).all()
            return build_session_view(row, hosts, projects)

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
        else:
            upd = SessionUpdate.from_dict({**dict(update or {}), **changes})
        if not upd.retry and not upd.changes_start:
            raise InvalidInput("update", "nothing to change: give maintenance_at or retry")
        with self._lock:
            loaded, workflow = self._load(session_id)
            try:
                outbox = self._apply_update(loaded, workflow, upd)
            except Exception:
                # Rejected or broken: drop the working set; the database has
                # the last committed state and the next step reloads it.
                self._unload(session_id, rollback=True)
                raise
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
        loaded.orm.commit()
        return self._take_outbox(loaded)

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
            return build_project_view(session_id, project, instances)

    def reply(
        self,
        session_id: str,
        project_id: str,
        state: str,
        instance_actions: Mapping[str, str] | None = None,
    ) -> None:
        """Record a project's reply; the engine acts on it at its next step.

        Raises, writing nothing: NotFound (session, or project not in it),
        InvalidInput (unknown state or action, an action not allowed, an
        instance not affected or missing), Conflict (that state is not awaited
        from this project now), Forbidden (an instance that is not the
        project's own). Safe to call from inside a signal handler and from any
        thread.
        """
        answer = Reply(project_id=project_id, state=state, instance_actions=instance_actions or {})
        parsed = normalize_reply_state(answer.state)
        if parsed is None:
            raise InvalidInput("state", f"{answer.state!r} is not a reply state (ACK_x / NACK_x)")
        ack, awaited = parsed
        now = self.clock.now()
        with self._lock, Session(self._db) as orm, orm.begin():
            row = self._session_row(orm, session_id)
            project = orm.get(ProjectRow, (session_id, project_id))
            if project is None:
                raise NotFound("project", project_id, session_id=session_id)
            if not (project.awaiting and project.state == awaited):
                raise Conflict(
                    f"project {project_id} is not asked for {awaited} now "
                    f"(session {row.state}, project {project.state or 'not asked yet'})",
                    session_id=session_id,
                    state=project.state,
                )
            if project.reply_at is not None and now > project.reply_at:
                raise Conflict(
                    f"the deadline for {awaited} passed at {project.reply_at.isoformat()}",
                    session_id=session_id,
                    state=project.state,
                )
            pending = orm.scalar(
                select(func.count())
                .select_from(InboxRow)
                .where(
                    InboxRow.session_id == session_id,
                    InboxRow.project_id == project_id,
                    InboxRow.processed_at.is_(None),
                )
            )
            if pending:
                raise Conflict(
                    f"project {project_id} already answered {awaited}",
                    session_id=session_id,
                    state=project.state,
                )
            self._check_instance_actions(orm, row, project, ack, awaited, answer.instance_actions)
            orm.add(
                InboxRow(
                    session_id=session_id,
                    project_id=project_id,
                    state=answer.state,
                    instance_actions=dict(answer.instance_actions),
                    received_at=now,
                    processed_at=None,
                    outcome=None,
                )
            )
        self._wake.set()

    def _check_instance_actions(
        self,
        orm: Session,
        row: SessionRow,
        project: ProjectRow,
        ack: bool,
        awaited: str,
        actions: Mapping[str, str],
    ) -> None:
        if awaited not in _INSTANCE_CHOICE_STATES or not ack:
            if actions:
                raise InvalidInput(
                    "instance_actions", f"not expected in a reply to {awaited} with this state"
                )
            return
        mine = {
            i.instance_id: i
            for i in orm.scalars(
                select(InstanceRow).where(
                    InstanceRow.session_id == row.id,
                    InstanceRow.project_id == project.project_id,
                )
            )
        }
        affected = {
            iid for iid, i in mine.items() if i.state == InstanceState.ACTION_REQUESTED.value
        }
        allowed = list(row.data.get("allowed_actions", ()))
        known = {a.value for a in InstanceAction}
        for instance_id, action in actions.items():
            field = f"instance_actions.{instance_id}"
            if instance_id not in mine:
                raise Forbidden(
                    project.project_id,
                    f"instance {instance_id!r} is not one of its instances in this session",
                    session_id=row.id,
                )
            if instance_id not in affected:
                raise InvalidInput(field, f"instance is not affected by {awaited} now")
            if action not in known:
                raise InvalidInput(field, f"unknown action {action!r}")
            if action not in allowed:
                raise InvalidInput(
                    field, f"{action} is not allowed here; allowed: {', '.join(allowed)}"
                )
        workflow = self.plugins.workflows.get(row.workflow)
        missing = sorted(affected - set(actions))
        if missing and (workflow is None or workflow.requires_instance_actions):
            raise InvalidInput("instance_actions", "no action given for " + ", ".join(missing))

    # ------------------------------------------------------------------ constraints

    def set_group_constraints(
        self, group: GroupConstraints | Mapping[str, Any], *, project_id: str | None = None
    ) -> GroupConstraints:
        """Create or replace an instance group's constraints.

        ``project_id`` is the acting project (None: the admin); a project may
        only set its own groups. Running sessions use the new values from their
        next decision on.
        """
        value = GroupConstraints.from_dict(group)
        self._write_constraints(group=value, instance=None, acting=project_id)
        return value

    def set_instance_constraints(
        self,
        instance: InstanceConstraints | Mapping[str, Any],
        *,
        group: GroupConstraints | Mapping[str, Any] | None = None,
        project_id: str | None = None,
    ) -> InstanceConstraints:
        """Create or replace one instance's constraints.

        Its ``group_id`` must name an existing group of the same project, or
        the ``group`` given in the same call (both are written together).
        """
        value = InstanceConstraints.from_dict(instance)
        group_value = GroupConstraints.from_dict(group) if group is not None else None
        self._write_constraints(group=group_value, instance=value, acting=project_id)
        return value

    def get_group_constraints(
        self, group_id: str, *, project_id: str | None = None
    ) -> GroupConstraints:
        """A group's constraints; NotFound if none were set."""
        _str(group_id, "group_id")
        with self._lock, Session(self._db) as orm:
            return constraint_store.get_group(orm, group_id, self._acting(project_id))

    def get_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> InstanceConstraints:
        """An instance's constraints; NotFound if none were set."""
        _str(instance_id, "instance_id")
        with self._lock, Session(self._db) as orm:
            return constraint_store.get_instance(orm, instance_id, self._acting(project_id))

    def list_group_constraints(self, project_id: str | None = None) -> list[GroupConstraints]:
        """Every group's constraints (of one project, if given)."""
        with self._lock, Session(self._db) as orm:
            return constraint_store.list_groups(orm, self._acting(project_id))

    def list_instance_constraints(self, project_id: str | None = None) -> list[InstanceConstraints]:
        """Every instance's constraints (of one project, if given)."""
        with self._lock, Session(self._db) as orm:
            return constraint_store.list_instances(orm, self._acting(project_id))

    def delete_group_constraints(self, group_id: str, *, project_id: str | None = None) -> None:
        """Delete a group; its members follow their project's implicit group."""
        _str(group_id, "group_id")
        with self._lock, Session(self._db) as orm, orm.begin():
            constraint_store.delete_group(orm, group_id, self._acting(project_id))
        self._constraints_changed()

    def delete_instance_constraints(
        self, instance_id: str, *, project_id: str | None = None
    ) -> None:
        """Delete an instance's constraints (it follows its project's implicit group)."""
        _str(instance_id, "instance_id")
        with self._lock, Session(self._db) as orm, orm.begin():
            constraint_store.delete_instance(orm, instance_id, self._acting(project_id))
        self._constraints_changed()

    def constraints(self, cloud: CloudConstraints | None = None) -> ConstraintSet:
        """The constraints in force now (plus ``cloud``'s defaults), resolved."""
        with self._lock, Session(self._db) as orm:
            current = self._constraint_set(orm)
        if cloud is None:
            return current
        return ConstraintSet(
            groups=current.groups,
            instances=current.instances,
            cloud=cloud,
            default_group=current.default_group,
        )

    def _write_constraints(
        self,
        *,
        group: GroupConstraints | None,
        instance: InstanceConstraints | None,
        acting: str | None,
    ) -> None:
        acting = self._acting(acting)
        now = self.clock.now()
        with self._lock, Session(self._db) as orm, orm.begin():
            constraint_store.write(orm, now, group=group, instance=instance, acting=acting)
        self._constraints_changed()

    def _constraints_changed(self) -> None:
        self._constraints = None
        self._wake.set()

    def _constraint_set(self, orm: Session) -> ConstraintSet:
        """The cached constraints, reloaded when any worker changed them."""
        revision = constraint_store.revision(orm)
        cached = self._constraints
        if cached is None or cached[0] != revision:
            revision, groups, instances = constraint_store.load_all(orm)
            cached = (
                revision,
                ConstraintSet(
                    groups=groups,
                    instances=instances,
                    default_group=self.default_group_constraints,
                ),
            )
            self._constraints = cached
        return cached[1]

    @staticmethod
    def _acting(project_id: str | None) -> str | None:
        if project_id is not None:
            _str(project_id, "project_id")
        return project_id

    @staticmethod
    def _check_default_group(value: Mapping[str, Any] | None) -> Mapping[str, Any]:
        rules = {**DEFAULT_GROUP, **(value or {})}
        for key in rules:
            if key not in DEFAULT_GROUP and key != "resource_mitigation":
                raise InvalidInput(f"default_group_constraints.{key}", "unknown field")
        try:
            GroupConstraints(group_id="default", project_id="default", **rules)
        except InvalidInput as exc:
            raise InvalidInput(f"default_group_constraints.{exc.field}", exc.reason) from None
        return rules

    # ------------------------------------------------------------------ running

    def step(self) -> int:
        """Handle everything that is due now; return how many sessions moved."""
        now = self.clock.now()
        with self._lock:
            due = self._due_sessions(now)
            outbox: list[OutboxRow] = []
            if not self._leftovers_delivered:
                outbox += self._undelivered()
                self._leftovers_delivered = True
            for session_id in due:
                outbox += self._advance(session_id)
        self._deliver(outbox)
        return len(due)

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
            if not self.clock.wait(self.next_wake(), self._wake):
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
            if not self.clock.wait(self.next_wake(), self._wake):
                self._wake.wait()
                self._wake.clear()

    def stop(self) -> None:
        """Make :meth:`run_forever` return."""
        self._stop.set()
        self._wake.set()

    def next_wake(self) -> datetime | None:
        """When the engine next has something to do (None: nothing scheduled)."""
        with self._lock, Session(self._db) as orm:
            wake: datetime | None = orm.scalar(
                select(func.min(SessionRow.next_wake)).where(SessionRow.id.not_in(self._unrunnable))
            )
            return wake

    # ------------------------------------------------------------------ internals

    def _session_row(self, orm: Session, session_id: str) -> SessionRow:
        if not isinstance(session_id, str):
            raise InvalidInput("session_id", f"expected a string, got {type(session_id).__name__}")
        row = orm.get(SessionRow, session_id)
        if row is None:
            raise NotFound("session", session_id, session_id=session_id)
        return row

    @staticmethod
    def _hosts_elsewhere(
        orm: Session, besides: str, names: Iterable[str] | None = None
    ) -> list[tuple[str, str, str]]:
        """(host, state, session) for hosts that running sessions other than
        ``besides`` maintain (only ``names``, if given)."""
        query = (
            select(HostRow.name, HostRow.state, HostRow.session_id)
            .join(SessionRow, SessionRow.id == HostRow.session_id)
            .where(
                SessionRow.state.not_in(_FINAL),
                SessionRow.id != besides,
                HostRow.state != HostState.OUT_OF_SCOPE.value,
            )
        )
        if names is not None:
            query = query.where(HostRow.name.in_(list(names)))
        return [(name, state, session) for name, state, session in orm.execute(query)]

    def _check_hosts_free(self, orm: Session, hosts: Iterable[str], *, besides: str = "") -> None:
        """Conflict if another running session maintains one of ``hosts``."""
        busy = self._hosts_elsewhere(orm, besides, hosts)
        if busy:
            host, _, session_id = busy[0]
            raise Conflict(
                f"host {host} is already in running session {session_id}",
                session_id=session_id,
            )

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
        return sorted(due - self._unrunnable)

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
                constraint_sets.append(self._constraint_set(loaded.orm))
            return constraint_sets[0]

        loaded.api_constraints = constraints
        try:
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
            if loaded.row.version == 0:
                workflow.start()
            workflow.advance()
            if loaded.row.state != before:
                log.info("session %s: %s -> %s", session_id, before, loaded.row.state)
            self._commit(loaded, now)
            self._start_pending(loaded)
        except OperationalError:
            self._unload(session_id, rollback=True)
            raise
        except Exception as exc:
            log.exception("session %s: workflow error", session_id)
            self._unload(session_id, rollback=True)
            return self._fail_broken(session_id, exc)
        outbox = self._take_outbox(loaded)
        if loaded.final and loaded.row.next_wake is None:
            self._unload(session_id)
        return outbox

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
        loaded.orm.commit()

    def _start_pending(self, loaded: LoadedSession) -> None:
        pending = [op for op in loaded.ops.values() if op.status == "pending"]
        if not pending:
            return
        for op in pending:
            now = self.clock.now()
            record_status(op, self._runner.start(op, loaded.request, now), now)
        loaded.row.next_wake = loaded.next_wake()
        loaded.orm.commit()

    def _fail_broken(self, session_id: str, exc: Exception) -> list[OutboxRow]:
        """A workflow raised: fail the session with the error rather than loop."""
        try:
            loaded, workflow = self._load(session_id)
            loaded.now = self.clock.now()
            if not loaded.final:
                workflow.fail(f"internal error: {type(exc).__name__}: {exc}")
            self._commit(loaded, loaded.now)
            self._start_pending(loaded)
            return self._take_outbox(loaded)
        except Exception:
            log.exception("session %s: could not record the failure", session_id)
            self._unload(session_id, rollback=True)
            with Session(self._db) as orm, orm.begin():
                orm.execute(
                    update(SessionRow).where(SessionRow.id == session_id).values(next_wake=None)
                )
            return []

    @staticmethod
    def _take_outbox(loaded: LoadedSession) -> list[OutboxRow]:
        outbox, loaded.new_outbox = loaded.new_outbox, []
        return outbox

    def _undelivered(self) -> list[OutboxRow]:
        with Session(self._db, expire_on_commit=False) as orm:
            rows = orm.scalars(
                select(OutboxRow)
                .where(OutboxRow.delivered_at.is_(None))
                .order_by(OutboxRow.created_at, OutboxRow.session_id, OutboxRow.seq)
            ).all()
            orm.expunge_all()
        return list(rows)

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
