"""What the lease keepers share (the keeper itself is
:class:`fenix_core.core.leases.SqlLeaseKeeper`): the error of a step fenced
out because another worker took its session, and whether a stored lease is
still running."""

from __future__ import annotations

from datetime import UTC, datetime

from ..errors import FenixError

__all__ = ["LeaseLost", "live_holder"]


class LeaseLost(FenixError):
    """Another worker took the session over: this worker's step must not commit."""


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
