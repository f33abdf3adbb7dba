"""A session's initial records as plain tuples in the tables' column
orders, built by pure code: the session factory builds a new session's rows
with them, and the engine the rows of hosts, instances and projects that
appear during a session (one copy of each row's starting values)."""

from __future__ import annotations

from typing import Any

from ..model import Instance
from ..states import HostState, InstanceState

__all__ = [
    "HOST_COLUMNS",
    "INSTANCE_COLUMNS",
    "PROJECT_COLUMNS",
    "SESSION_COLUMNS",
    "host_record",
    "instance_record",
    "project_record",
    "row_values",
]

SESSION_COLUMNS = (
    "id",
    "workflow",
    "request",
    "state",
    "phase",
    "reason",
    "failed_state",
    "percent_done",
    "data",
    "seq",
    "version",
    "next_wake",
    "maintenance_at",
    "created_at",
    "updated_at",
    "finished_at",
)
HOST_COLUMNS = (
    "session_id",
    "name",
    "type",
    "vcpus",
    "state",
    "position",
    "stage",
    "enabled",
    "disabled_by_session",
    "started_at",
    "finished_at",
    "reason",
)
INSTANCE_COLUMNS = (
    "session_id",
    "instance_id",
    "project_id",
    "name",
    "host",
    "vcpus",
    "live_migratable",
    "state",
    "action",
    "target",
    "moves",
    "attempts",
)
PROJECT_COLUMNS = (
    "session_id",
    "project_id",
    "managed",
    "state",
    "awaiting",
    "reply_at",
    "replied_at",
)


def host_record(
    session_id: str,
    name: str,
    type: str,
    vcpus: int,
    enabled: bool,
    state: HostState,
    position: int,
) -> tuple[Any, ...]:
    """A session's host before any work on it (HOST_COLUMNS order)."""
    return (
        session_id,
        name,
        type,
        vcpus,
        state.value,
        position,
        0,
        enabled,
        False,
        None,
        None,
        None,
    )


def instance_record(session_id: str, found: Instance, state: InstanceState) -> tuple[Any, ...]:
    """A session's instance as the cloud listed it (INSTANCE_COLUMNS order)."""
    return (
        session_id,
        found.instance_id,
        found.project_id,
        found.name,
        found.host,
        found.vcpus,
        found.live_migratable,
        state.value,
        None,
        None,
        0,
        0,
    )


def project_record(session_id: str, project_id: str, managed: bool) -> tuple[Any, ...]:
    """A project not asked anything yet (PROJECT_COLUMNS order)."""
    return (session_id, project_id, managed, None, False, None, None)


def row_values(columns: tuple[str, ...], record: tuple[Any, ...]) -> dict[str, Any]:
    """A record as keyword arguments for its table's row."""
    return dict(zip(columns, record, strict=True))
