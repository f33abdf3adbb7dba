"""Building the read-only views (``get_session``, ``project_view``) from rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .controls import Ledger, estimate_end
from .model import (
    ApprovalView,
    HostView,
    IgnoredConstraint,
    InstanceView,
    OperationView,
    Progress,
    ProjectView,
    SessionRequest,
    SessionView,
    StuckWork,
)
from .states import (
    DONE_HOST_STATES,
    FINAL_SESSION_STATES,
    HostState,
    InstanceState,
    SessionState,
    budget_hosts,
)
from .store.schema import HostRow, InstanceRow, OperationRow, ProjectRow, SessionRow

__all__ = [
    "build_approval_view",
    "build_operation_view",
    "build_project_view",
    "build_session_view",
]


#: Hosts that only receive instances (or are about to): not work, not counted.
_TARGETS = frozenset({HostState.OUT_OF_SCOPE, HostState.ADDING, HostState.ADDED})
_BUSY = frozenset({HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE})


def build_progress(row: SessionRow, hosts: Sequence[HostRow], now: datetime) -> Progress:
    """Hosts done / in progress / waiting / skipped / removed / failed (each
    host of the session's work in exactly one), per-host durations and the ETA."""
    removed = [h for h in hosts if h.state == HostState.REMOVED]
    ledger = Ledger.from_data(row.data or {}, removed=(h.name for h in removed))
    final = row.state in {s.value for s in FINAL_SESSION_STATES}
    flight = {} if final else ledger.in_progress()
    done = skipped = failed = 0
    in_progress: list[HostRow] = []
    waiting = 0
    for h in hosts:
        state = HostState(h.state)
        if state in _TARGETS or state == HostState.REMOVED:
            continue
        if state in DONE_HOST_STATES:
            done += 1
        elif state == HostState.SKIPPED:
            skipped += 1
        elif state == HostState.FAILED:
            failed += 1
        elif not final and (state in _BUSY or h.name in flight):
            in_progress.append(h)
        else:
            waiting += 1
    durations = ledger.durations()
    if final:
        end: datetime | None = row.finished_at
    else:
        controls = SessionRequest.from_dict(row.request).controls
        end = estimate_end(
            now,
            controls,
            ledger.history(controls, hosts=budget_hosts(h.state for h in hosts)),
            durations=list(durations.values()),
            in_progress=[flight.get(h.name) or h.started_at or now for h in in_progress],
            pending=waiting,
        )
    return Progress(
        hosts_done=done,
        hosts_in_progress=len(in_progress),
        hosts_waiting=waiting,
        hosts_skipped=skipped,
        durations=durations,
        estimated_end=end,
        eta_seconds=None if end is None else max(0.0, (end - now).total_seconds()),
        hosts_removed=len(removed),
        hosts_failed=failed,
    )


def _stuck(row: SessionRow) -> tuple[StuckWork, ...]:
    return tuple(
        StuckWork(
            kind=e["kind"],
            host=e.get("host"),
            instance_id=e.get("instance_id"),
            detail=e["detail"],
            since=datetime.fromisoformat(e["since"]),
            policy=e["policy"],
        )
        for e in (row.data or {}).get("ctl_stuck") or []
    )


def build_approval_view(record: Mapping[str, Any] | None) -> ApprovalView | None:
    """The plan a session stored under ``data["approval"]``, if it has one."""
    if not record:
        return None
    approved = record.get("approved_at")
    return ApprovalView(
        plan_id=record["plan_id"],
        planned_at=datetime.fromisoformat(record["planned_at"]),
        plan=dict(record["plan"]),
        changes=tuple(record.get("changes") or ()),
        approved_at=datetime.fromisoformat(approved) if approved else None,
    )


def _waiting(row: SessionRow, final: bool) -> str | None:
    if final:
        return None
    data = row.data or {}
    if row.state == SessionState.AWAITING_APPROVAL:
        return f"awaiting approval of plan {data['approval']['plan_id']}"
    reason: str | None = (data.get("ctl_waiting") or {}).get("reason")
    return reason


def build_session_view(
    row: SessionRow,
    hosts: Sequence[HostRow],
    projects: Sequence[ProjectRow],
    now: datetime | None = None,
    ignored: Sequence[IgnoredConstraint] = (),
    stuck: Sequence[StuckWork] | None = None,
) -> SessionView:
    """``stuck``: the session's stuck work, if not kept in ``row.data``."""
    data = row.data or {}
    final = row.state in {s.value for s in FINAL_SESSION_STATES}
    return SessionView(
        session_id=row.id,
        workflow=row.workflow,
        state=row.state,
        percent_done=row.percent_done,
        reason=row.reason,
        hosts=tuple(
            HostView(
                name=h.name,
                type=h.type,
                state=h.state,
                started_at=h.started_at,
                finished_at=h.finished_at,
                reason=h.reason,
            )
            for h in sorted(hosts, key=lambda h: h.position)
            if h.state != HostState.OUT_OF_SCOPE
        ),
        projects={p.project_id: p.state for p in sorted(projects, key=_project_key)},
        created_at=row.created_at,
        updated_at=row.updated_at,
        maintenance_at=row.maintenance_at,
        request=dict(row.request),
        paused=bool(data.get("paused")) and not final,
        waiting=_waiting(row, final),
        stuck=_stuck(row) if stuck is None else tuple(stuck),
        progress=build_progress(row, hosts, now or row.updated_at),
        ignored_constraints=tuple(ignored),
        approval=build_approval_view(data.get("approval")),
    )


def _project_key(project: ProjectRow) -> str:
    return project.project_id


def build_project_view(
    session_id: str,
    project: ProjectRow,
    instances: Sequence[InstanceRow],
    details: Mapping[str, str] | None = None,
) -> ProjectView:
    """``details``: instance id -> the detail of its move in progress."""
    shown = sorted(
        (i for i in instances if i.state != InstanceState.OUT_OF_SCOPE),
        key=lambda i: i.instance_id,
    )
    return ProjectView(
        session_id=session_id,
        project_id=project.project_id,
        state=project.state,
        reply_at=project.reply_at if project.awaiting else None,
        instance_ids=tuple(i.instance_id for i in shown if i.state != InstanceState.GONE),
        instances=tuple(
            InstanceView(
                instance_id=i.instance_id,
                instance_name=i.name,
                host=i.host,
                state=i.state,
                action=i.action,
                moves=i.moves,
                detail=(details or {}).get(i.instance_id, ""),
            )
            for i in shown
        ),
    )


def build_operation_view(row: OperationRow) -> OperationView:
    params = row.params or {}
    moves = row.kind in ("move", "watch")
    return OperationView(
        kind=row.kind,
        status=row.status,
        host=row.host,
        instance_id=row.instance_id,
        source=params.get("source") if moves else None,
        target=(row.result or {}).get("host") or params.get("target") if moves else None,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        detail=row.detail,
        moves_again=params.get("moves_again") if moves else None,
    )
