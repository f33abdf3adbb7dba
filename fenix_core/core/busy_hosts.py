"""The rule that one host is maintained by one running session at a time,
checked in the caller's transaction (creation, approval): either engine's
sessions count, since they share the tables. A session awaiting approval
holds no host."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, select

from ..errors import Conflict
from ..states import HOLDS_NO_HOSTS, HostState
from ..store.schema import HostRow, SessionRow

__all__ = ["NOT_MAINTAINED", "check_hosts_free"]

_HOLDS_NO_HOSTS = tuple(s.value for s in HOLDS_NO_HOSTS)
#: Host rows that do not take a host from other sessions: targets, and hosts gone.
NOT_MAINTAINED = tuple(
    s.value
    for s in (HostState.OUT_OF_SCOPE, HostState.ADDED, HostState.REMOVED, HostState.DECOMMISSIONED)
)


def check_hosts_free(db: Connection, hosts: Iterable[str], *, besides: str = "") -> None:
    """Conflict naming the host and the session if a running session other
    than ``besides`` maintains one of ``hosts``."""
    names = list(hosts)
    if not names:
        return
    busy = db.execute(
        select(HostRow.name, HostRow.session_id)
        .join(SessionRow, SessionRow.id == HostRow.session_id)
        .where(
            SessionRow.state.not_in(_HOLDS_NO_HOSTS),
            SessionRow.id != besides,
            HostRow.state.not_in(NOT_MAINTAINED),
            HostRow.name.in_(names),
        )
        .order_by(HostRow.session_id, HostRow.position)
        .limit(1)
    ).first()
    if busy is not None:
        host, session_id = busy
        raise Conflict(
            f"host {host} is already in running session {session_id}", session_id=session_id
        )
