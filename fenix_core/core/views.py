"""The read side of the engine: the public views
(:class:`~fenix_core.model.SessionView`, ``ProjectView``, ``OperationView``)
built from a working set and the operations table, the outbox backlog and
the next wake-up of the sessions this engine could step.

The session and project views are built by the builders
(:mod:`fenix_core.views`) over the records, which carry the columns those
builders read under the same names; what the ``data`` of an earlier
release's session held for them comes from the records: pause and the current wait from the host
pipeline's component, the start and finish of each host from its
``started_at`` / ``finished_at``, skipped hosts from their state, stuck
work from the operation records (:func:`~fenix_core.core.stuck.stuck_work`
over those the view loads: the running ones and those that failed by their
deadline, handled or not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs
from sqlalchemy import bindparam, or_, select
from sqlalchemy.engine import Engine as SAEngine

from ..contract import OpKind, OpStatus
from ..controls import Controls
from ..model import IgnoredConstraint, OperationView, ProjectView, SessionView
from ..states import HostState
from ..store.schema import (
    OperationRow,
    OutboxRow,
    SessionClockRow,
    SessionRow,
    operations_in_recorded_order,
    session_operations,
    session_outbox,
)
from ..views import build_operation_view, build_project_view, build_session_view
from .admin import pipeline_state
from .pipeline import PipelineState
from .stuck import stuck_work
from .working_set import OpRec, StoredRecords, WorkingSet
from .ws_port import SESSION_COMPONENT

__all__ = [
    "operation_views",
    "outbox_backlog",
    "project_view",
    "session_exists",
    "session_ids",
    "session_view",
    "stored_wakes",
]

_MOVES = (OpKind.MOVE.value, OpKind.WATCH.value)


@attrs.frozen
class _StoredSession:
    """The attributes of a ``sessions`` row that the view builders read."""

    id: str
    workflow: str
    state: str
    percent_done: int
    reason: str | None
    created_at: datetime
    updated_at: datetime
    maintenance_at: datetime | None
    finished_at: datetime | None
    request: Mapping[str, Any]
    data: Mapping[str, Any]


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _waiting(pipe: PipelineState, ops: Iterable[OpRec]) -> str | None:
    """What the session waits for; for a gate, the gate's latest word (its
    running check's detail in ``ops``, e.g. "answered 503, expected 200")."""
    if pipe.gate_running and pipe.gate_host and (pipe.waiting_cause or "").startswith("gate:"):
        for op in ops:
            params = op.params or {}
            if (
                op.kind == OpKind.GATE.value
                and op.status == OpStatus.RUNNING.value
                and params.get("host") == pipe.gate_host
                and op.detail
            ):
                return f"gate {params.get('gate')} before {pipe.gate_host}: {op.detail}"
    return pipe.waiting_reason


def _stored(ws: StoredRecords, live: StoredRecords) -> _StoredSession:
    s = ws.session
    pipe = pipeline_state(ws)
    session_data = ws.components.get(SESSION_COMPONENT)
    hosts = ws.hosts.values()
    waiting = _waiting(pipe, live.ops.values())
    data = {
        "paused": pipe.paused,
        "pause_reason": pipe.pause_reason,
        "ctl_waiting": {"reason": waiting} if waiting else None,
        "ctl_started": {h.name: _iso(h.started_at) for h in hosts if h.started_at},
        "ctl_finished": {h.name: _iso(h.finished_at) for h in hosts if h.finished_at},
        "ctl_skipped": [h.name for h in hosts if h.state == HostState.SKIPPED],
        "approval": session_data.body.get("approval") if session_data is not None else None,
    }
    # The request as it stands: an admin may have moved its start since.
    request = {**s.request, "maintenance_at": _iso(s.maintenance_at)}
    return _StoredSession(
        id=s.id, workflow=s.workflow, state=s.state, percent_done=s.percent_done,
        reason=s.reason, created_at=s.created_at, updated_at=s.updated_at,
        maintenance_at=s.maintenance_at, finished_at=s.finished_at, request=request,
        data=data,
    )  # fmt: skip


def session_view(
    ws: StoredRecords,
    now: datetime,
    ignored: Sequence[IgnoredConstraint] = (),
    held: WorkingSet | None = None,
) -> SessionView:
    """``get_session``'s view of a session's records (as committed: a
    working set, or the lighter records of ``SqlSessionStore.load_view``,
    whose operations are those the view reads); ``ignored``: the stored
    constraints the cloud contradicts; ``held``: this engine's copy, if it
    holds the session, whose running operations' details may be newer than
    the stored ones (a step that only polled need not write)."""
    hosts = sorted(ws.hosts.values(), key=lambda h: h.position)
    projects = list(ws.projects.values())
    controls = Controls.from_dict(ws.session.request.get("controls"))
    stuck = stuck_work(ws.ops.values(), controls)
    # The records have the row's attribute names (see the module docstring).
    row: Any = _stored(ws, held or ws)
    return build_session_view(row, hosts, projects, now, ignored, stuck)  # type: ignore[arg-type]


def _number(session_id: str) -> Any:
    """The session's number, as a subquery (its operations' ids count from it)."""
    return select(SessionRow.number).where(SessionRow.id == session_id).scalar_subquery()


# Built once: a front end asks at every call.
_SESSION_EXISTS = select(SessionRow.id).where(SessionRow.id == bindparam("session_id"))


def project_view(
    ws: WorkingSet, project_id: str, held: WorkingSet | None = None
) -> ProjectView | None:
    """One project's instances and their states (None: not in the session);
    ``held``: this engine's copy, if it holds the session, whose running
    moves' details may be newer than the stored ones (a step that only
    polled need not write: a drain waiting on a disruption budget says why
    in its polls)."""
    project = ws.projects.get(project_id)
    if project is None:
        return None
    ids = ws.instance_index.by_project.get(project_id, ())
    instances = [ws.instances[i] for i in ids]
    details = {
        op.instance_id: op.detail
        for op in (held or ws).ops.values()
        if op.status == OpStatus.RUNNING.value
        and op.kind in _MOVES
        and op.instance_id
        and op.detail
    }
    return build_project_view(ws.session.id, project, instances, details)  # type: ignore[arg-type]


def operation_views(db: SAEngine, session_id: str) -> list[OperationView]:
    """Every operation the session recorded, in the order recorded."""
    with db.connect() as connection:
        rows = connection.execute(
            select(OperationRow)
            .where(session_operations(_number(session_id)))
            .order_by(*operations_in_recorded_order())
        ).all()
    return [build_operation_view(row) for row in rows]  # type: ignore[arg-type]


def session_exists(db: SAEngine, session_id: str) -> bool:
    with db.connect() as connection:
        found = connection.scalar(_SESSION_EXISTS, {"session_id": session_id})
    return found is not None


def session_ids(db: SAEngine) -> list[str]:
    """Every session, oldest first."""
    with db.connect() as connection:
        return list(connection.scalars(select(SessionRow.id).order_by(SessionRow.created_at)))


def outbox_backlog(db: SAEngine, sent: Callable[[str], int]) -> tuple[int, datetime | None]:
    """Notifications written and not delivered yet, of every session: how
    many, and when the oldest was written. Delivered means at or below the
    session's watermark: the stored one, or ``sent(session_id)`` for a
    session this engine holds (its next write stores it)."""
    clock, o = SessionClockRow, OutboxRow
    number = SessionRow.number
    with db.connect() as connection:
        # Each session's rows above its watermark: a range of outbox ids.
        rows = connection.execute(
            select(clock.session_id, o.seq, o.created_at)
            .join(SessionRow, SessionRow.id == clock.session_id)
            .join(o, session_outbox(number, clock.delivered_seq))
        ).all()
    left = [at for sid, seq, at in rows if seq > sent(sid)]
    return len(left), min(left, default=None)


_c = SessionClockRow
_STORED_WAKES = (
    select(_c.session_id, _c.next_wake)
    .where(
        _c.next_wake.is_not(None),
        or_(
            _c.lease_owner.is_(None),
            _c.lease_owner == bindparam("owner"),
            _c.lease_expires.is_(None),
            _c.lease_expires <= bindparam("lease_now"),
        ),
    )
    .order_by(_c.next_wake)
    .limit(bindparam("limit"))
)


def stored_wakes(
    db: SAEngine, owner: str, lease_now: datetime, limit: int
) -> list[tuple[str, datetime]]:
    """The first ``limit`` stored wake-ups, earliest first, of the sessions
    this worker may step: unleased, their lease expired, or its own."""
    with db.connect() as connection:
        found = connection.execute(
            _STORED_WAKES, {"owner": owner, "lease_now": lease_now, "limit": limit}
        )
        return [(sid, wake) for sid, wake in found if wake is not None]
