"""Session leases: which engine worker works on which session, and the fence
that keeps a worker that lost its lease from committing a step.

A lease is three columns of ``sessions``: ``lease_owner`` (a worker id),
``lease_expires`` (real time) and ``lease_token`` (the lease's generation,
incremented each time another worker takes the session). A worker claims due
sessions that are free, expired or already its own; PostgreSQL locks the rows
it looks at with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two workers never
wait on each other, and every claim is a compare-and-set on the token, which
also makes it correct on SQLite (one writer at a time).

Each step's transaction renews the lease with ``UPDATE ... WHERE lease_owner =
me AND lease_token = mine``; when that matches no row, another worker took the
session over and the step is rolled back (:class:`LeaseLost`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, Table, or_, select, update
from sqlalchemy.orm import Session

from ..errors import FenixError
from .schema import Base, SessionRow

__all__ = ["LeaseLost", "claim", "claimable", "held_by_others", "release", "renew"]

_TABLE: Table = Base.metadata.tables["sessions"]
_T = _TABLE.c


class LeaseLost(FenixError):
    """Another worker took the session over: this worker's step must not commit."""


def claimable(owner: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition: the session's lease is free, expired, or ``owner``'s."""
    return or_(
        SessionRow.lease_owner.is_(None),
        SessionRow.lease_owner == owner,
        SessionRow.lease_expires.is_(None),
        SessionRow.lease_expires <= now,
    )


def held_by_others(owner: str, now: datetime) -> ColumnElement[bool]:
    """SQL condition: another worker holds a live lease on the session."""
    return (
        SessionRow.lease_owner.is_not(None)
        & (SessionRow.lease_owner != owner)
        & (SessionRow.lease_expires > now)
    )


def claim(
    orm: Session, session_ids: Iterable[str], owner: str, now: datetime, expires: datetime
) -> dict[str, int]:
    """Take or renew the leases of those of ``session_ids`` that are claimable;
    return session id -> lease token. Commits."""
    wanted = sorted(set(session_ids))
    if not wanted:
        return {}
    candidates = orm.execute(
        select(SessionRow.id, SessionRow.lease_owner, SessionRow.lease_token)
        .where(SessionRow.id.in_(wanted), claimable(owner, now))
        .order_by(SessionRow.id)
        .with_for_update(skip_locked=True)
    ).all()
    claimed: dict[str, int] = {}
    for session_id, holder, token in candidates:
        new_token = token if holder == owner else token + 1
        result = orm.execute(
            update(_TABLE)
            .where(
                _T.id == session_id,
                _T.lease_token == token,
                claimable(owner, now),
            )
            .values(lease_owner=owner, lease_token=new_token, lease_expires=expires)
        )
        if result.rowcount == 1:  # type: ignore[attr-defined]
            claimed[session_id] = new_token
    orm.commit()
    return claimed


def renew(orm: Session, session_id: str, owner: str, token: int, expires: datetime) -> None:
    """Inside a step's transaction: extend the lease, or raise LeaseLost."""
    result = orm.execute(
        update(_TABLE)
        .where(_T.id == session_id, _T.lease_owner == owner, _T.lease_token == token)
        .values(lease_expires=expires)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(
            f"worker {owner} lost the lease on session {session_id} to another worker",
            session_id=session_id,
        )


def release(connection: Connection, owner: str) -> None:
    """Give up every lease ``owner`` holds (the token stays: it only grows)."""
    connection.execute(
        update(_TABLE).where(_T.lease_owner == owner).values(lease_owner=None, lease_expires=None)
    )


def live_holder(
    owner: str | None, expires: datetime | None, now: datetime
) -> tuple[str, datetime] | None:
    """``(owner, expires)`` of a lease still running at ``now``, else None
    (SQLite hands back naive UTC times: they are made aware)."""
    if owner is None or expires is None:
        return None
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return (owner, expires) if expires > now else None
