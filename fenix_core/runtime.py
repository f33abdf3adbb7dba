"""One session's working set while the engine works on it.

A :class:`LoadedSession` holds the session's rows (hosts, instances, projects,
open operations, timers) in one long-lived ORM session, plus the indexes a
workflow needs (instances per host, vcpus used per host), so that a step costs
what it changes, not the size of the cloud. Workflows change state only
through its methods: they check the transition tables, keep the indexes right
and record what the step owes (notifications, operations, timers). The engine
commits all of it in one transaction per step; if a step raises, the working
set is thrown away and reloaded from the last commit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .constraints import CloudConstraints, ConstraintSet
from .core.records import (
    HOST_COLUMNS,
    INSTANCE_COLUMNS,
    PROJECT_COLUMNS,
    host_record,
    instance_record,
    project_record,
    row_values,
)
from .model import ActionSpec, Instance, SessionRequest
from .states import (
    DONE_HOST_STATES,
    FINAL_SESSION_STATES,
    WORK_HOST_STATES,
    HostState,
    InstanceAction,
    InstanceState,
    SessionLifecycle,
    SessionState,
    check_host_transition,
    check_instance_transition,
)
from .store.schema import (
    HostChangeRow,
    HostRow,
    InstanceRow,
    OperationRow,
    OutboxRow,
    ProjectRow,
    SessionRow,
    TimerRow,
)

__all__ = ["ANY_HOST", "LoadedSession", "iso"]

#: ``open_ops(host=ANY_HOST)``: operations on any host or none.
ANY_HOST: object = object()

#: Instance states in which the instance no longer occupies capacity anywhere.
_ABSENT = frozenset({InstanceState.GONE})


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class LoadedSession:
    """The rows of one session, indexed, and what the current step owes."""

    def __init__(
        self,
        orm: Session,
        row: SessionRow,
        *,
        service: str,
        admin_project_id: str | None,
    ) -> None:
        self.orm = orm
        self.row = row
        self.id = row.id
        self.service = service
        self.admin_project_id = admin_project_id
        self.request = SessionRequest.from_dict(row.request)
        self.lifecycle = SessionLifecycle(row.id, row.state)
        self.now: datetime = row.updated_at
        sid = row.id
        self.hosts: dict[str, HostRow] = {
            h.name: h
            for h in orm.scalars(
                select(HostRow).where(HostRow.session_id == sid).order_by(HostRow.position)
            )
        }
        self.instances: dict[str, InstanceRow] = {
            i.instance_id: i
            for i in orm.scalars(select(InstanceRow).where(InstanceRow.session_id == sid))
        }
        self.projects: dict[str, ProjectRow] = {
            p.project_id: p
            for p in orm.scalars(select(ProjectRow).where(ProjectRow.session_id == sid))
        }
        self.ops: dict[str, OperationRow] = {
            o.key: o
            for o in orm.scalars(
                select(OperationRow).where(
                    OperationRow.session_id == sid, OperationRow.handled.is_(False)
                )
            )
        }
        # Operations recorded by an earlier commit but not known to be started:
        # the process that recorded them may have called the plug-in before
        # it died. The engine looks them up by key before starting them.
        self.in_doubt: set[str] = {k for k, o in self.ops.items() if o.status == "pending"}
        self.timers: list[TimerRow] = list(
            orm.scalars(select(TimerRow).where(TimerRow.session_id == sid))
        )
        # Indexes kept in step with the instance rows by the methods below.
        self.on_host: dict[str, set[str]] = defaultdict(set)
        self.used: dict[str, int] = defaultdict(int)
        self.projects_on: dict[str, Counter[str]] = defaultdict(Counter)
        self.reserved: dict[str, int] = defaultdict(int)
        for inst in self.instances.values():
            if inst.state not in _ABSENT:
                self._occupy(inst, inst.host)
            if inst.state == InstanceState.IN_ACTION and inst.target:
                self.reserved[inst.target] += inst.vcpus
        # Whether a project has an application manager (the engine answers).
        self.subscribed: Callable[[str], bool] = lambda _project_id: False
        # Hosts that other running sessions maintain, with their state there
        # (the engine answers, once per step).
        self.foreign_hosts: Callable[[], Mapping[str, str]] = dict
        # Constraints set through the API, current at this step (the engine answers).
        self.api_constraints: Callable[[], ConstraintSet] = ConstraintSet
        self._constraint_cache: tuple[object, object, ConstraintSet] | None = None
        # What the current step owes, handed to the engine after commit.
        self.new_ops: list[OperationRow] = []
        self.new_outbox: list[OutboxRow] = []
        self.new_host_changes: list[HostChangeRow] = []
        # The engine's inventory generation this session last reconciled with
        # (-1: not yet, which a session does when it is loaded).
        self.inventory_seen = -1

    # ------------------------------------------------------------------ session

    @property
    def state(self) -> SessionState:
        return SessionState(self.row.state)

    @property
    def data(self) -> dict[str, Any]:
        return self.row.data

    def set_data(self, **values: Any) -> None:
        # JSON columns track changes by assignment, so copy-and-assign.
        self.row.data = {**self.row.data, **values}

    @property
    def final(self) -> bool:
        return self.state in FINAL_SESSION_STATES

    def fire(self, trigger: str, *, reason: str | None = None) -> None:
        """Change the session state through the lifecycle Machine and notify."""
        before = self.row.state
        new_state = self.lifecycle.fire(trigger)
        self.row.state = new_state.value
        self.row.phase = ""
        if new_state == SessionState.MAINTENANCE_FAILED:
            self.row.reason = reason
            self.row.failed_state = before
            self.row.finished_at = self.now
        elif new_state == SessionState.MAINTENANCE_CANCELLED:
            self.row.reason = reason
            self.row.finished_at = self.now
        elif new_state == SessionState.MAINTENANCE_DONE:
            self.row.reason = None
            self.row.finished_at = self.now
        else:
            self.row.reason = None
        self.update_percent()
        self.announce()

    def announce(self) -> None:
        """Send ``maintenance_session`` with the current state."""
        self.emit(
            "maintenance_session",
            {
                "service": self.service,
                "session_id": self.id,
                "state": self.row.state,
                "percent_done": self.row.percent_done,
                "reason": self.row.reason,
            },
        )

    def update_percent(self) -> None:
        if self.state == SessionState.MAINTENANCE_DONE:
            self.row.percent_done = 100
            return
        in_scope = [h for h in self.hosts.values() if h.state in WORK_HOST_STATES]
        done = sum(1 for h in in_scope if h.state in DONE_HOST_STATES)
        self.row.percent_done = int(100 * done / len(in_scope)) if in_scope else 0

    # ------------------------------------------------------------------ notifications

    def emit(self, signal: str, payload: dict[str, Any]) -> None:
        self.row.seq += 1
        payload = {**payload, "seq": self.row.seq}
        out = OutboxRow(
            session_id=self.id,
            seq=self.row.seq,
            signal=signal,
            payload=payload,
            created_at=self.now,
            delivered_at=None,
        )
        self.orm.add(out)
        self.new_outbox.append(out)

    def notify_project(
        self,
        project_id: str,
        state: str,
        instance_ids: Sequence[str],
        *,
        allowed_actions: Sequence[str] = (),
        reply_at: datetime | None = None,
        actions_at: datetime | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        self.emit(
            "maintenance_planned",
            {
                "service": self.service,
                "session_id": self.id,
                "project_id": project_id,
                "state": state,
                "instance_ids": list(instance_ids),
                "allowed_actions": list(allowed_actions),
                "reply_at": iso(reply_at),
                "actions_at": iso(actions_at),
                "metadata": dict(metadata or {}),
            },
        )

    def notify_host(self, host: str, state: str) -> None:
        self.emit(
            "maintenance_host",
            {
                "service": self.service,
                "session_id": self.id,
                "host": host,
                "state": state,
                "project_id": self.admin_project_id,
            },
        )

    # ------------------------------------------------------------------ hosts

    def set_host_state(self, host: HostRow, state: HostState, *, reason: str | None = None) -> None:
        check_host_transition(HostState(host.state), state, host=host.name)
        host.state = state.value
        if reason is not None:
            host.reason = reason
        if state == HostState.IN_MAINTENANCE:
            host.started_at = self.now
        if state in (HostState.MAINTAINED, HostState.FAILED):
            host.finished_at = self.now
        self.update_percent()

    def add_host(
        self, name: str, type: str, vcpus: int, enabled: bool, state: HostState
    ) -> HostRow:
        """A host the session did not know (it appeared in the cloud meanwhile)."""
        position = max((h.position for h in self.hosts.values()), default=-1) + 1
        host = new_host_row(self.id, name, type, vcpus, enabled, state, position)
        self.orm.add(host)
        self.hosts[name] = host
        return host

    def hosts_in(self, *states: HostState, type: str | None = None) -> list[HostRow]:
        wanted = {s.value for s in states}
        return [
            h for h in self.hosts.values() if h.state in wanted and (type is None or h.type == type)
        ]

    def instances_on(self, host: str) -> list[InstanceRow]:
        return [self.instances[i] for i in sorted(self.on_host.get(host, ()))]

    def is_empty(self, host: str) -> bool:
        return not self.on_host.get(host)

    def free_vcpus(self, host: HostRow) -> int | None:
        """Free vcpus counting arrivals in flight; None if the capacity is unknown."""
        if host.vcpus <= 0:
            return None
        return host.vcpus - self.used[host.name] - self.reserved[host.name]

    # ------------------------------------------------------------------ instances

    def set_instance_state(self, inst: InstanceRow, state: InstanceState) -> None:
        check_instance_transition(InstanceState(inst.state), state, instance_id=inst.instance_id)
        was_absent = inst.state in _ABSENT
        if inst.state == InstanceState.IN_ACTION and inst.target and state != inst.state:
            self.reserved[inst.target] -= inst.vcpus
        if state == InstanceState.IN_ACTION and inst.target:
            self.reserved[inst.target] += inst.vcpus
        inst.state = state.value
        if state in _ABSENT and not was_absent:
            self._vacate(inst, inst.host)
        elif was_absent and state not in _ABSENT:
            self._occupy(inst, inst.host)

    def place_instance(self, inst: InstanceRow, host: str) -> None:
        """Record that the instance now runs on ``host``."""
        if inst.host == host:
            return
        if inst.state not in _ABSENT:
            self._vacate(inst, inst.host)
            self._occupy(inst, host)
        inst.host = host

    def _occupy(self, inst: InstanceRow, host: str) -> None:
        self.on_host[host].add(inst.instance_id)
        self.used[host] += inst.vcpus
        self.projects_on[host][inst.project_id] += 1

    def _vacate(self, inst: InstanceRow, host: str) -> None:
        self.on_host[host].discard(inst.instance_id)
        self.used[host] -= inst.vcpus
        self.projects_on[host][inst.project_id] -= 1

    def add_instance(self, found: Instance, state: InstanceState) -> InstanceRow:
        inst = InstanceRow(**row_values(INSTANCE_COLUMNS, instance_record(self.id, found, state)))
        self.orm.add(inst)
        self.instances[inst.instance_id] = inst
        if state not in _ABSENT:
            self._occupy(inst, inst.host)
        return inst

    def ensure_project(self, project_id: str, managed: bool) -> ProjectRow:
        project = self.projects.get(project_id)
        if project is None:
            project = ProjectRow(
                **row_values(PROJECT_COLUMNS, project_record(self.id, project_id, managed))
            )
            self.orm.add(project)
            self.projects[project_id] = project
        return project

    def default_action(self, inst: InstanceRow) -> str:
        """How the engine moves an instance itself: live if it can."""
        allowed = self.allowed_actions
        for action in (InstanceAction.LIVE_MIGRATE, InstanceAction.MIGRATE, InstanceAction.EVICT):
            if action in allowed and (
                action != InstanceAction.LIVE_MIGRATE or inst.live_migratable
            ):
                return action.value
        return allowed[0]

    @property
    def allowed_actions(self) -> list[str]:
        return list(self.row.data.get("allowed_actions", ()))

    # ------------------------------------------------------------------ constraints

    def constraints(self) -> ConstraintSet:
        """The constraints in force now: the API's, over the cloud's defaults."""
        api = self.api_constraints()
        cloud = self.row.data.get("cloud_constraints")
        cached = self._constraint_cache
        if cached is not None and cached[0] is api and cached[1] is cloud:
            return cached[2]
        resolved = ConstraintSet(
            groups=api.groups,
            instances=api.instances,
            cloud=_cloud_constraints(cloud),
            # The session's own default (written at creation); older sessions: the engine's.
            default_group=self.request.default_group_constraints or api.default_group,
        )
        self._constraint_cache = (api, cloud, resolved)
        return resolved

    # ------------------------------------------------------------------ operations

    def start_op(
        self,
        kind: str,
        *,
        host: str | None = None,
        instance_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> OperationRow:
        """Record an operation; the engine starts it right after the commit."""
        counter = int(self.row.data.get("op_counter", 0)) + 1
        self.set_data(op_counter=counter)
        op = OperationRow(
            session_id=self.id,
            kind=kind,
            key=f"{self.id}:{counter}",
            host=host,
            instance_id=instance_id,
            params=dict(params or {}),
            status="pending",
            handle=None,
            next_poll=self.now,
            deadline=self.now + timedelta(seconds=timeout) if timeout else None,
            polls=0,
            detail=None,
            result={},
            handled=False,
            created_at=self.now,
            started_at=None,
            finished_at=None,
        )
        self.orm.add(op)
        self.ops[op.key] = op
        self.new_ops.append(op)
        return op

    def open_ops(
        self, *, host: str | object | None = ANY_HOST, kind: str | None = None
    ) -> Iterator[OperationRow]:
        """Operations not handled yet; ``host=None`` selects session-wide ones
        (pre/post actions, inventory), the default any host."""
        for op in self.ops.values():
            if op.handled:
                continue
            if host is not ANY_HOST and op.host != host:
                continue
            if kind is not None and op.kind != kind:
                continue
            yield op

    def abandon_op(self, op: OperationRow, why: str) -> None:
        """Stop following an operation whose outcome no longer matters."""
        op.status = "abandoned"
        op.detail = why
        op.finished_at = self.now
        op.next_poll = None
        self.close_op(op)

    def reopen_op(self, op: OperationRow, timeout: float) -> None:
        """Follow an operation that passed its deadline for ``timeout`` more
        seconds: same key and handle, polled again now (a stuck migration the
        session decided to keep waiting for)."""
        op.status = "running"
        op.handled = False
        op.finished_at = None
        op.next_poll = self.now
        op.deadline = self.now + timedelta(seconds=timeout)
        self.ops[op.key] = op

    def close_op(self, op: OperationRow) -> None:
        op.handled = True
        self.ops.pop(op.key, None)

    # ------------------------------------------------------------------ timers

    def set_timer(self, kind: str, due: datetime, **data: Any) -> TimerRow:
        timer = TimerRow(session_id=self.id, kind=kind, due=due, data=data)
        self.orm.add(timer)
        self.timers.append(timer)
        return timer

    def cancel_timers(self, kind: str | None = None, **match: Any) -> None:
        """Drop timers of ``kind`` (all if None) whose data has ``match``."""
        keep: list[TimerRow] = []
        for timer in self.timers:
            if (kind is None or timer.kind == kind) and all(
                timer.data.get(k) == v for k, v in match.items()
            ):
                self._drop_timer(timer)
            else:
                keep.append(timer)
        self.timers = keep

    def pop_due_timers(self) -> list[TimerRow]:
        due = sorted((t for t in self.timers if t.due <= self.now), key=lambda t: t.due)
        for timer in due:
            self.timers.remove(timer)
            self._drop_timer(timer)
        return due

    def _drop_timer(self, timer: TimerRow) -> None:
        if timer in self.orm.new:
            self.orm.expunge(timer)
        else:
            self.orm.delete(timer)

    # ------------------------------------------------------------------ scheduling

    def next_wake(self) -> datetime | None:
        """Earliest moment this session has something to do."""
        candidates: list[datetime] = [t.due for t in self.timers]
        for op in self.ops.values():
            if op.handled:
                continue
            if op.status in ("pending", "done", "failed"):
                candidates.append(self.now)
            else:
                if op.next_poll is not None:
                    candidates.append(op.next_poll)
                if op.deadline is not None:
                    candidates.append(op.deadline)
        return min(candidates) if candidates else None

    # ------------------------------------------------------------------ actions

    def actions_of(self, *types: str) -> list[ActionSpec]:
        """The request's actions of these types, in run order (type, order, name)."""
        rank = {t: i for i, t in enumerate(types)}
        chosen = [a for a in self.request.actions if a.type in rank]
        return sorted(chosen, key=lambda a: (rank[a.type], a.order, a.plugin))

    def release(self) -> None:
        self.lifecycle.release()


def _cloud_constraints(data: Any) -> CloudConstraints:
    return CloudConstraints.from_dict(data)


def new_host_row(
    session_id: str,
    name: str,
    type: str,
    vcpus: int,
    enabled: bool,
    state: HostState,
    position: int,
) -> HostRow:
    """A session's host row, before any work on it."""
    record = host_record(session_id, name, type, vcpus, enabled, state, position)
    return HostRow(**row_values(HOST_COLUMNS, record))


def ids(rows: Iterable[InstanceRow]) -> list[str]:
    return [r.instance_id for r in rows]
