"""Building the read-only views (``get_session``, ``project_view``) from rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .model import HostView, InstanceView, ProjectView, SessionView
from .states import HostState, InstanceState
from .store.schema import HostRow, InstanceRow, ProjectRow, SessionRow

__all__ = ["build_project_view", "build_session_view"]


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
