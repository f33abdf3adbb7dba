"""What the engine writes for approve-then-execute: a session awaiting
approval re-planned (its rows replaced) or approved (it starts), each in ONE
transaction that first checks, under the session row's lock, that the
session still awaits approval of the plan the caller read.

A session awaiting approval is never stepped (the runner leaves it alone and
nothing is due), so its ``session_clock`` version stays 0 and no lease is
needed to change it; the first step after the approval starts the workflow
and sends the session's first notice, as for a session created without
approval. The plan records and the checks are
:class:`~fenix_core.approval_service.ApprovalService`'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, delete, select, update
from sqlalchemy.engine import Engine as SAEngine

from ..approval_service import ApprovalService
from ..errors import NotFound
from ..states import SessionState
from ..store.schema import (
    HostRow,
    InstanceRow,
    ProjectRow,
    SessionClockRow,
    SessionRow,
    SessionStateRow,
)
from .busy_hosts import NOT_MAINTAINED, check_hosts_free
from .ports import NewSession
from .statements import STATEMENTS, params
from .working_set import ComponentRec, HostRec, InstanceRec, ProjectRec
from .ws_port import SESSION_COMPONENT

__all__ = ["SqlApprovals"]

_AWAITING = SessionState.AWAITING_APPROVAL.value
SESSIONS: Table = SessionRow.__table__  # type: ignore[assignment]
CLOCK: Table = SessionClockRow.__table__  # type: ignore[assignment]
STATE: Table = SessionStateRow.__table__  # type: ignore[assignment]
HOSTS: Table = HostRow.__table__  # type: ignore[assignment]

_TOUCH = (
    update(SESSIONS)
    .where(SESSIONS.c.id == bindparam("b_id"), SESSIONS.c.state == _AWAITING)
    .values(state=bindparam("b_state"), updated_at=bindparam("b_now"))
)
_READ = select(SESSIONS.c.state, SESSIONS.c.request).where(SESSIONS.c.id == bindparam("b_id"))
_BODY = select(STATE.c.body).where(
    STATE.c.session_id == bindparam("b_id"), STATE.c.component == SESSION_COMPONENT
)
_WAKE = (
    update(CLOCK)
    .where(CLOCK.c.session_id == bindparam("b_id"))
    .values(next_wake=bindparam("b_now"))
)
_MINE = select(HOSTS.c.name).where(
    HOSTS.c.session_id == bindparam("b_id"), HOSTS.c.state.not_in(NOT_MAINTAINED)
)
INSTANCES: Table = InstanceRow.__table__  # type: ignore[assignment]
PROJECTS: Table = ProjectRow.__table__  # type: ignore[assignment]
_ROWS = (INSTANCES, PROJECTS, HOSTS)


class SqlApprovals:
    """The approval writes of the engine on ``database`` (see the module docstring)."""

    def __init__(self, database: SAEngine) -> None:
        self.database = database
        self._upsert = STATEMENTS.upsert_components[database.dialect.name]

    def awaiting(self, session_id: str) -> tuple[str, dict[str, Any] | None, dict[str, Any]]:
        """The session's state, its plan record (None without one) and request."""
        with self.database.connect() as db:
            row = db.execute(_READ, {"b_id": session_id}).first()
            if row is None:
                raise NotFound("session", session_id, session_id=session_id)
            body = db.scalar(_BODY, {"b_id": session_id}) or {}
        return row.state, body.get("approval"), dict(row.request)

    def replan(self, session_id: str, plan_id: str, new: NewSession, now: datetime) -> None:
        """Replace the rows of a session awaiting approval of ``plan_id`` with
        ``new``'s (working-set layouts) and merge its session data."""
        with self.database.begin() as db:
            body = self._lock(db, session_id, plan_id, _AWAITING, now)
            for table in _ROWS:
                db.execute(delete(table).where(table.c.session_id == session_id))
            for statement, fields, rows in (
                (STATEMENTS.insert_hosts, HostRec.FIELDS, new.hosts),
                (STATEMENTS.insert_instances, InstanceRec.FIELDS, new.instances),
                (STATEMENTS.insert_projects, ProjectRec.FIELDS, new.projects),
            ):
                if rows:
                    db.execute(statement, [params(fields, r, session_id=session_id) for r in rows])
            data = dict(ComponentRec(*new.components[0]).body) if new.components else {}
            self._write_body(db, session_id, {**body, **data})

    def approve(
        self, session_id: str, plan_id: str, record: Mapping[str, Any], now: datetime
    ) -> None:
        """Start the session (MAINTENANCE, due now) with ``record`` as its
        plan record, if it awaits approval of ``plan_id`` and no other running
        session maintains one of its hosts (Conflict naming the host)."""
        with self.database.begin() as db:
            body = self._lock(db, session_id, plan_id, SessionState.MAINTENANCE.value, now)
            mine = list(db.scalars(_MINE, {"b_id": session_id}))
            check_hosts_free(db, mine, besides=session_id)
            self._write_body(db, session_id, {**body, "approval": dict(record)})
            db.execute(_WAKE, {"b_id": session_id, "b_now": now})

    def cancel(self, session_id: str, reason: str, now: datetime) -> bool:
        """End a session that awaits approval (MAINTENANCE_CANCELLED): it
        never ran, so nothing winds down. False if it does not await approval."""
        with self.database.begin() as db:
            done = db.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session_id, SESSIONS.c.state == _AWAITING)
                .values(
                    state=SessionState.MAINTENANCE_CANCELLED.value,
                    reason=reason,
                    finished_at=now,
                    updated_at=now,
                )
            )
            return done.rowcount == 1

    def reschedule(self, session_id: str, when: datetime | None, now: datetime) -> bool:
        """Move the start of a session that awaits approval (nothing is due
        until it is approved). False if it does not await approval."""
        with self.database.begin() as db:
            done = db.execute(
                update(SESSIONS)
                .where(SESSIONS.c.id == session_id, SESSIONS.c.state == _AWAITING)
                .values(maintenance_at=when, updated_at=now)
            )
            return done.rowcount == 1

    def _lock(
        self, db: Connection, session_id: str, plan_id: str, state: str, now: datetime
    ) -> dict[str, Any]:
        """Set the session's state (and take its row's lock) if it awaits
        approval of ``plan_id``; its session data. Conflict otherwise (the
        transaction is rolled back)."""
        if db.execute(_TOUCH, {"b_id": session_id, "b_state": state, "b_now": now}).rowcount != 1:
            row = db.execute(_READ, {"b_id": session_id}).first()
            if row is None:
                raise NotFound("session", session_id, session_id=session_id)
            ApprovalService.require_awaiting(session_id, row.state, None, plan_id)
        body = dict(db.scalar(_BODY, {"b_id": session_id}) or {})
        ApprovalService.require_awaiting(session_id, _AWAITING, body.get("approval"), plan_id)
        return body

    def _write_body(self, db: Connection, session_id: str, body: Mapping[str, Any]) -> None:
        db.execute(
            self._upsert,
            params(ComponentRec.FIELDS, (SESSION_COMPONENT, 1, dict(body)), session_id=session_id),
        )
