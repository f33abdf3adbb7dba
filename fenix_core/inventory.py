"""The stored host inventory: what the engine knows of the cloud's host set.

The engine compares the cloud's host listing with the ``inventory_hosts``
table when a session starts, on ``engine.refresh_inventory()``, and whenever
an operation of a session lists the hosts anyway. Each difference is stored
as a :class:`~fenix_core.store.schema.HostChangeRow` in the same transaction
as the inventory change, so each is announced exactly once (at least once
across a crash, like every notification): ``maintenance_host`` with
``HOST_ADDED`` or ``HOST_REMOVED``.

The very first listing (an empty table) is the baseline: it is stored without
announcing anything, so that an engine put in front of an existing cloud does
not report every host as new. Hosts named in a running session's
``add_hosts`` are left out until that session brings them into service.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs
from sqlalchemy import Select, literal_column, select
from sqlalchemy.orm import Session

from .errors import CloudError, FenixError
from .model import Host, HostChange
from .states import FINAL_SESSION_STATES, HostState
from .store.schema import HostChangeRow, HostRow, InventoryHostRow, SessionRow

__all__ = [
    "HOST_ADDED",
    "HOST_REMOVED",
    "Change",
    "HostLister",
    "SyncPlan",
    "admit",
    "change_payload",
    "host_from_dict",
    "host_to_dict",
    "list_cloud_hosts",
    "load",
    "pending_adds",
    "pending_adds_query",
    "plan_sync",
    "retire",
    "sync",
    "to_value",
    "undelivered",
]

HOST_ADDED = "HOST_ADDED"
HOST_REMOVED = "HOST_REMOVED"

PRESENT, REMOVED, DECOMMISSIONED = "present", "removed", "decommissioned"

_FINAL = [s.value for s in FINAL_SESSION_STATES]


def host_to_dict(host: Host) -> dict[str, Any]:
    return {"name": host.name, "type": host.type, "vcpus": host.vcpus, "enabled": host.enabled}


def host_from_dict(data: Mapping[str, Any]) -> Host:
    return Host(
        name=str(data["name"]),
        type=str(data.get("type", "compute")),
        vcpus=int(data.get("vcpus", 0)),
        enabled=bool(data.get("enabled", True)),
    )


def load(orm: Session) -> dict[str, InventoryHostRow]:
    """Every inventory row as of now, also in a session's long-lived ORM session
    (no autoflush, no expiry on commit): rows changed in this transaction keep
    their changes, the others are read again, rows added are included."""
    for obj in list(orm.identity_map.values()):
        if isinstance(obj, InventoryHostRow) and obj not in orm.dirty:
            orm.expire(obj)
    rows = {row.name: row for row in orm.scalars(select(InventoryHostRow))}
    rows.update((o.name, o) for o in orm.new if isinstance(o, InventoryHostRow))
    return rows


def pending_adds_query(besides: str = "") -> Select[str]:
    """The hosts that running sessions (other than ``besides``) are still adding.

    The state is a literal, not a parameter: the planners (SQLite's, and
    PostgreSQL's generic plan of a prepared statement) use the partial index
    ``ix_session_hosts_adding`` only for a condition that matches its own."""
    return (
        select(HostRow.name)
        .join(SessionRow, SessionRow.id == HostRow.session_id)
        .where(
            HostRow.state == literal_column(f"'{HostState.ADDING.value}'"),
            SessionRow.state.not_in(_FINAL),
            SessionRow.id != besides,
        )
    )


def pending_adds(orm: Session, *, besides: str = "") -> set[str]:
    """Hosts that running sessions (other than ``besides``) are still adding."""
    return set(orm.scalars(pending_adds_query(besides)))


class HostLister(Protocol):
    """What :func:`list_cloud_hosts` needs of a cloud driver."""

    def list_hosts(self) -> Iterable[Host]: ...


def list_cloud_hosts(driver: HostLister) -> list[Host]:
    """The cloud's hosts now; a driver's failure is a CloudError."""
    try:
        return list(driver.list_hosts())
    except FenixError:
        raise
    except Exception as exc:
        raise CloudError(f"listing the cloud's hosts failed: {exc}") from exc


def _change(
    orm: Session, host: str, state: str, now: datetime, session_id: str | None
) -> HostChangeRow:
    change = HostChangeRow(
        host=host, state=state, session_id=session_id, created_at=now, delivered_at=None
    )
    orm.add(change)
    return change


def _add(
    orm: Session, host: Host, status: str, now: datetime, session_id: str | None
) -> InventoryHostRow:
    row = InventoryHostRow(
        name=host.name,
        type=host.type,
        vcpus=host.vcpus,
        enabled=host.enabled,
        status=status,
        changed_at=now,
        session_id=session_id,
    )
    orm.add(row)
    return row


def _refresh(row: InventoryHostRow, host: Host) -> None:
    # Assign only what changed: an unchanged row must cost no UPDATE.
    for field in ("type", "vcpus", "enabled"):
        value = getattr(host, field)
        if getattr(row, field) != value:
            setattr(row, field, value)


@attrs.frozen
class SyncPlan:
    """What a listing changes in the inventory (:func:`plan_sync`): rows to
    add (present), rows whose facts changed, status changes, and the host
    changes to announce, each ``(host, HOST_ADDED | HOST_REMOVED)``."""

    new: tuple[Host, ...]
    refresh: tuple[Host, ...]
    status: tuple[tuple[str, str], ...]
    changes: tuple[tuple[str, str], ...]


def plan_sync(
    known: Mapping[str, tuple[str, Host]], listed: Iterable[Host], pending: Iterable[str] = ()
) -> SyncPlan:
    """Compare a listing with the inventory (``known``: host -> (status,
    facts)); pure. ``pending``: hosts being added by a session, left out
    until it admits them (unless the inventory knows them as present). The
    first listing of an empty inventory is the baseline: nothing announced."""
    baseline = not known
    skip = {name for name in pending if name not in known or known[name][0] != PRESENT}
    new: list[Host] = []
    refresh: list[Host] = []
    status: list[tuple[str, str]] = []
    changes: list[tuple[str, str]] = []
    seen: set[str] = set()
    for host in listed:
        if host.name in skip or host.name in seen:
            continue
        seen.add(host.name)
        found = known.get(host.name)
        if found is None:
            new.append(host)
            if not baseline:
                changes.append((host.name, HOST_ADDED))
            continue
        was, facts = found
        if (facts.type, facts.vcpus, facts.enabled) != (host.type, host.vcpus, host.enabled):
            refresh.append(host)
        if was == REMOVED:
            status.append((host.name, PRESENT))
            changes.append((host.name, HOST_ADDED))
    for name, (was, _) in known.items():
        if was == PRESENT and name not in seen and name not in skip:
            status.append((name, REMOVED))
            changes.append((name, HOST_REMOVED))
    return SyncPlan(tuple(new), tuple(refresh), tuple(status), tuple(changes))


def sync(
    orm: Session,
    listed: Iterable[Host],
    *,
    now: datetime,
    session_id: str | None,
    pending: Iterable[str] = (),
) -> list[HostChangeRow]:
    """Bring the inventory in line with ``listed``; return the changes recorded
    (:func:`plan_sync` decides).

    ``pending``: hosts being added by a session, left out until it admits them
    (unless the inventory knows them as present already).
    """
    rows = load(orm)
    plan = plan_sync(
        {name: (row.status, _facts(row)) for name, row in rows.items()}, listed, pending
    )
    for host in plan.new:
        _add(orm, host, PRESENT, now, session_id)
    for host in plan.refresh:
        _refresh(rows[host.name], host)
    for name, status in plan.status:
        row = rows[name]
        row.status, row.changed_at, row.session_id = status, now, session_id
    return [_change(orm, name, state, now, session_id) for name, state in plan.changes]


def _facts(row: InventoryHostRow) -> Host:
    return Host(row.name, row.type, row.vcpus, row.enabled)


def admit(orm: Session, host: Host, *, now: datetime, session_id: str) -> list[HostChangeRow]:
    """A session brought ``host`` into service: HOST_ADDED unless it was known present."""
    row = load(orm).get(host.name)
    if row is None:
        _add(orm, host, PRESENT, now, session_id)
        return [_change(orm, host.name, HOST_ADDED, now, session_id)]
    _refresh(row, host)
    if row.status == PRESENT:
        return []
    row.status, row.changed_at, row.session_id = PRESENT, now, session_id
    return [_change(orm, host.name, HOST_ADDED, now, session_id)]


def retire(
    orm: Session, name: str, host_type: str, *, now: datetime, session_id: str
) -> list[HostChangeRow]:
    """A session decommissioned ``name``: HOST_REMOVED unless already reported gone."""
    row = load(orm).get(name)
    if row is None:
        _add(orm, Host(name, host_type, 0, False), DECOMMISSIONED, now, session_id)
        return [_change(orm, name, HOST_REMOVED, now, session_id)]
    was = row.status
    row.status, row.enabled, row.changed_at, row.session_id = DECOMMISSIONED, False, now, session_id
    if was == PRESENT:
        return [_change(orm, name, HOST_REMOVED, now, session_id)]
    return []


class Change(Protocol):
    """A host change as stored (a ``host_changes`` row, or the core's record of one)."""

    @property
    def id(self) -> int: ...
    @property
    def host(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def session_id(self) -> str | None: ...


def change_payload(change: Change, *, service: str, admin_project_id: str | None) -> dict[str, Any]:
    """The ``maintenance_host`` payload of a change (built the same on every delivery)."""
    return {
        "service": service,
        "session_id": change.session_id,
        "host": change.host,
        "state": change.state,
        "project_id": admin_project_id,
        "seq": change.id,
    }


def to_value(change: Change) -> HostChange:
    return HostChange(
        host=change.host, state=change.state, seq=change.id, session_id=change.session_id
    )


def undelivered(orm: Session) -> Sequence[HostChangeRow]:
    return orm.scalars(
        select(HostChangeRow).where(HostChangeRow.delivered_at.is_(None)).order_by(HostChangeRow.id)
    ).all()
