"""Which engine worker steps which session: the lease keeper of the
redesigned engine (plan §6), ported from :mod:`fenix_core.store.leases`.

A lease is ``lease_owner``, ``lease_token`` (its generation: +1 whenever
another worker takes the session) and ``lease_expires``. ``claim`` takes the
leases that are free, expired or already this worker's; on PostgreSQL the
candidate rows are read with ``FOR UPDATE SKIP LOCKED`` so two workers never
wait on each other, and each take is a compare-and-set on the token, which
also makes it correct on SQLite (one writer at a time). Renewal is not a
statement of its own: every step's fenced write sets ``lease_expires`` in
the UPDATE whose WHERE holds the owner, token and version (the store's job;
:meth:`SqlLeaseKeeper.fence` gives what that WHERE must match).

Leases are about real processes, so they run on the database's clock where
there is one: on PostgreSQL ``now()`` decides what has expired, and
:attr:`SqlLeaseKeeper.clock` follows the database's time (offset measured at
each claim) for the expiry a step writes. SQLite has no clock of its own
apart from the machine's, so there it is the real clock. Tests pass a clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, Engine, Table, bindparam, func, literal, or_, select, update

from ..clock import Clock, RealClock, as_utc
from ..store.leases import LeaseLost
from ..store.schema import Base, UTCDateTime
from .ports import Fence

__all__ = ["DatabaseClock", "LeaseLost", "SqlLeaseKeeper"]

_TABLE: Table = Base.metadata.tables["sessions"]
_T = _TABLE.c
#: The table that holds the leases, and its session id column: today's
#: ``sessions`` row, or migration 0007's ``session_clock`` (whose fenced
#: UPDATE is the core's step write).
LEASE_TABLES: dict[str, tuple[Table, str]] = {
    "sessions": (_TABLE, "id"),
    "session_clock": (Base.metadata.tables["session_clock"], "session_id"),
}


class DatabaseClock:
    """Real time as the database sees it: the machine's clock plus the
    offset to the database's clock measured at the last claim."""

    def __init__(self) -> None:
        self._real = RealClock()
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self._real.now() + self.offset

    def measured(self, database_now: datetime) -> None:
        self.offset = as_utc(database_now) - self._real.now()

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        return self._real.wait(None if until is None else until - self.offset, wake)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        self._real.call_at(when - self.offset, callback)


def _claimable(
    owner: str, now: ColumnElement[datetime], table: Table = _TABLE
) -> ColumnElement[bool]:
    c = table.c
    return or_(
        c.lease_owner.is_(None),
        c.lease_owner == owner,
        c.lease_expires.is_(None),
        c.lease_expires <= now,
    )


class SqlLeaseKeeper:
    """Implements :class:`fenix_core.core.ports.LeaseKeeper` on the sessions table."""

    def __init__(
        self,
        db: Engine,
        owner: str,
        lease_seconds: float,
        clock: Clock | None = None,
        *,
        table: str = "sessions",
    ) -> None:
        self._table, key = LEASE_TABLES[table]
        self._key = self._table.c[key]
        self._db = db
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._database_clock = clock is None and db.dialect.name == "postgresql"
        self.clock: Clock = clock if clock is not None else DatabaseClock()
        # Session id -> (token, version at the claim) of the leases held.
        self._held: dict[str, tuple[int, int]] = {}

    def claim(self, session_ids: Sequence[str]) -> dict[str, Fence]:
        """Take or renew the leases of those of ``session_ids`` that are free,
        expired or this worker's; return their fences. One transaction."""
        wanted = sorted(set(session_ids))
        if not wanted:
            return {}
        now: ColumnElement[datetime] = (
            func.now() if self._database_clock else literal(self.clock.now(), UTCDateTime())
        )
        claimed: dict[str, Fence] = {}
        table, key, c = self._table, self._key, self._table.c
        with self._db.begin() as connection:
            rows = connection.execute(
                select(key, c.lease_owner, c.lease_token, c.version, now.label("now"))
                .where(key.in_(wanted), _claimable(self.owner, now, table))
                .order_by(key)
                .with_for_update(skip_locked=True)
            ).all()
            if rows and isinstance(self.clock, DatabaseClock) and self._database_clock:
                self.clock.measured(rows[0].now)
            expires = self.clock.now() + self.lease
            for session_id, holder, token, version, _ in rows:
                new_token = token if holder == self.owner else token + 1
                result = connection.execute(
                    update(table)
                    .where(
                        key == session_id,
                        c.lease_token == token,
                        _claimable(self.owner, now, table),
                    )
                    .values(
                        lease_owner=self.owner,
                        lease_token=new_token,
                        lease_expires=bindparam("expires", expires, type_=UTCDateTime()),
                    )
                )
                if result.rowcount == 1:
                    self._held[session_id] = (new_token, version)
                    claimed[session_id] = Fence(session_id, self.owner, new_token, version)
        for session_id in wanted:
            if session_id not in claimed:
                self._held.pop(session_id, None)  # someone else's now
        return claimed

    def fence(self, session_id: str) -> Fence:
        """What a step's write must match: this worker's token (and the version
        seen at the claim; the stepper keeps the current one). LeaseLost if
        this worker holds no lease on ``session_id``."""
        held = self._held.get(session_id)
        if held is None:
            raise LeaseLost(
                f"worker {self.owner} holds no lease on session {session_id}",
                session_id=session_id,
            )
        return Fence(session_id, self.owner, held[0], held[1])

    def lost(self, session_id: str) -> None:
        """Forget a lease the store found taken over (a fenced-out write)."""
        self._held.pop(session_id, None)

    def release(self, session_id: str) -> None:
        """Give up this worker's lease on ``session_id`` (if it holds it)."""
        self._held.pop(session_id, None)
        with self._db.begin() as connection:
            connection.execute(
                update(self._table)
                .where(self._key == session_id, self._table.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires=None)
            )

    def release_all(self) -> None:
        """Give up every lease this worker holds (the tokens stay: they only grow)."""
        self._held.clear()
        with self._db.begin() as connection:
            connection.execute(
                update(self._table)
                .where(self._table.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires=None)
            )
