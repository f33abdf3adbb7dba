"""Building the read-only views (``get_session``, ``project_view``) from rows."""

from __future__ import annotations

from collections.abc import Sequence

from .model import HostView, InstanceView, OperationView, ProjectView, SessionView
from .states import HostState, InstanceState
from .store.schema import HostRow, InstanceRow, OperationRow, ProjectRow, SessionRow

__all__ = ["build_operation_view", "build_project_view", "build_session_view"]


def build_session_view(
    row: SessionRow, hosts: Sequence[HostRow], projects: Sequence[ProjectRow]
) -> SessionView:
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
    )


def _project_key(project: ProjectRow) -> str:
    return project.project_id


def build_project_view(
    session_id: str, project: ProjectRow, instances: Sequence[InstanceRow]
) -> ProjectView:
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
    )
