"""Which engine worker steps which session: the lease keeper.

A lease is ``session_clock``'s ``lease_owner``, ``lease_token`` (its
generation: +1 whenever another worker takes the session) and
``lease_expires``. ``claim`` takes, in
ONE statement, the leases that are free, expired or already this worker's,
up to a ``limit`` (the worker's free capacity): an ``UPDATE ... WHERE session_id IN
(SELECT ... LIMIT n FOR UPDATE SKIP LOCKED) RETURNING``. On PostgreSQL two
workers claiming from the same due list at once split it (each skips the
rows the other locked) instead of waiting on each other; on SQLite (one
writer at a time) the statement is atomic. Renewal is not a statement of
its own: every step's fenced write sets ``lease_expires`` in the UPDATE
whose WHERE holds the owner, token and version (the store's job;
:meth:`SqlLeaseKeeper.fence` gives what that WHERE must match).

Leases are about real processes, so on PostgreSQL they run on the
database's clock, not the worker's: ``now()`` in SQL decides what has
expired (here and in the poller's query), a claim writes ``now() + lease``,
and :class:`DatabaseClock` (the machine's clock plus the offset to the
database's, measured at each claim and each poll from the ``now()`` it
returns and the machine's clock read before asking) gives the expiry a step's
write sets and the time the worker's own lease decisions read. A worker
whose clock is minutes off neither takes a live lease nor writes one that
outlives its ``lease_seconds``. SQLite has no clock of its own apart from
the machine's, so there it is the machine's clock. Tests pass a clock.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Interval,
    Select,
    Table,
    bindparam,
    case,
    func,
    or_,
    select,
    update,
)

from ..clock import Clock, RealClock, as_utc
from ..store.leases import LeaseLost
from ..store.schema import Base, UTCDateTime
from .ports import Fence

__all__ = ["DatabaseClock", "LeaseLost", "SqlLeaseKeeper", "on_database_clock"]

#: The table that holds the leases: ``session_clock``, whose fenced UPDATE
#: is also every step's write (the lease columns of ``sessions`` are those
#: of releases before migration 0007, no longer read or written).
_TABLE: Table = Base.metadata.tables["session_clock"]


class DatabaseClock:
    """Real time as the database sees it: this machine's clock (``base``,
    the real one by default; tests give a skewed one) plus the offset to the
    database's clock measured at the last claim or poll."""

    def __init__(self, base: Clock | None = None) -> None:
        self._real: Clock = base if base is not None else RealClock()
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return self._real.now() + self.offset

    def machine_now(self) -> datetime:
        """This machine's clock, to take before asking the database (:meth:`measured`)."""
        return self._real.now()

    def measured(self, database_now: datetime, asked: datetime | None = None) -> None:
        """``database_now``: the ``now()`` of a transaction this worker began
        at ``asked`` on its machine's clock (None: now). The machine's clock
        read BEFORE the question errs on the early side, by the time the
        question took to reach the server: the lease clock then reads a
        little ahead, so the worker thinks its leases end a little sooner
        than they do. Read after the answer it would err the other way, by
        however long the answer took, stalls of the worker included (a
        starved process, a pause), and the worker would count on lease time
        it no longer has."""
        taken = asked if asked is not None else self._real.now()
        self.offset = as_utc(database_now) - taken

    def measure(self, connection: Connection) -> None:
        """Read the database's ``now()`` on ``connection`` (PostgreSQL), not
        in a transaction already begun (``now()`` is when it began)."""
        asked = self._real.now()
        self.measured(connection.execute(select(func.now())).scalar_one(), asked)

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        return self._real.wait(None if until is None else until - self.offset, wake)

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        self._real.call_at(when - self.offset, callback)


def on_database_clock(db: Engine, clock: Clock | None) -> bool:
    """Whether leases on ``db`` follow the database's clock: on PostgreSQL,
    unless a clock other than a :class:`DatabaseClock` is given (a test's
    simulated lease clock)."""
    return db.dialect.name == "postgresql" and (clock is None or isinstance(clock, DatabaseClock))


def _claimable(owner: str, now: ColumnElement[datetime]) -> ColumnElement[bool]:
    c = _TABLE.c
    return or_(
        c.lease_owner.is_(None),
        c.lease_owner == owner,
        c.lease_expires.is_(None),
        c.lease_expires <= now,
    )


class SqlLeaseKeeper:
    """Implements :class:`fenix_core.core.ports.LeaseKeeper` on ``session_clock``."""

    def __init__(
        self,
        db: Engine,
        owner: str,
        lease_seconds: float,
        clock: Clock | None = None,
    ) -> None:
        self._db = db
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)
        self._database_clock = on_database_clock(db, clock)
        self.clock: Clock = clock if clock is not None else DatabaseClock()
        # Session id -> (token, version at the claim) of the leases held.
        self._held: dict[str, tuple[int, int]] = {}
        # Sessions this worker inserted and has not stepped yet: their first
        # write takes the lease (a claim of their own would be one more
        # commit per session). Session id -> the token that write stores.
        self._fresh: dict[str, int] = {}
        # Those a claim answered with the claiming fence already: asked for
        # again, the stepper let the session go (its write was fenced out,
        # or not made), and the lease is claimed as usual. A step retried
        # after a lost connection keeps the claiming fence (:meth:`fence`):
        # should the lost commit have happened, that write is fenced out.
        self._handed: set[str] = set()

    def fresh(self, session_id: str, token: int = 1) -> None:
        """``session_id`` was just inserted by this worker with no lease
        (token ``token - 1``): its first write claims it in the step's fenced
        UPDATE (:attr:`Fence.claims`), which matches only while nobody has
        leased it. Another worker that claims it first fences that write
        out; this one then claims as usual and finds it taken."""
        self._fresh[session_id] = token

    def took(self, fence: Fence) -> None:
        """A write under the claiming fence ``fence`` committed: the lease is
        this worker's, as a claim at ``fence.version`` would have made it."""
        if self._fresh.pop(fence.session_id, None) is not None:
            self._handed.discard(fence.session_id)
            self._held[fence.session_id] = (fence.token, fence.version)

    def claim(self, session_ids: Sequence[str], limit: int | None = None) -> dict[str, Fence]:
        """Take or renew the leases of those of ``session_ids`` that are free,
        expired or this worker's, at most ``limit`` of them (None: all), in
        session id order; return their fences. One statement: the candidates
        are read ``FOR UPDATE SKIP LOCKED`` (rows another worker is claiming
        are left to it, not waited for) and updated in the same round trip."""
        wanted = sorted(set(session_ids))
        if not wanted or (limit is not None and limit <= 0):
            return {}
        claimed: dict[str, Fence] = {}
        for session_id in [sid for sid in wanted if sid in self._fresh]:
            if session_id in self._handed:  # asked again: claimed as usual
                self._fresh.pop(session_id)
                self._handed.discard(session_id)
                continue
            if limit is not None and len(claimed) >= limit:
                break
            # Claimed by its first write (the fence's UPDATE).
            self._handed.add(session_id)
            claimed[session_id] = self.fence(session_id)
            wanted.remove(session_id)
        if limit is not None:
            limit -= len(claimed)
        if not wanted or (limit is not None and limit <= 0):
            return claimed
        table, c = _TABLE, _TABLE.c
        key = c.session_id
        on_db = self._database_clock
        now: ColumnElement[datetime] = (
            func.now() if on_db else bindparam("now", self.clock.now(), type_=UTCDateTime())
        )
        expires: ColumnElement[datetime] = (
            func.now() + bindparam("lease", self.lease, type_=Interval())
            if on_db
            else bindparam("expires", self.clock.now() + self.lease, type_=UTCDateTime())
        )
        candidates = (
            select(key)
            .where(key.in_(wanted), _claimable(self.owner, now))
            .order_by(key)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        claim = (
            update(table)
            .where(key.in_(candidates), _claimable(self.owner, now))
            .values(
                lease_owner=self.owner,
                # The same token for a renewal, the next one for a take.
                lease_token=case(
                    (c.lease_owner == self.owner, c.lease_token), else_=c.lease_token + 1
                ),
                lease_expires=expires,
            )
            .returning(key, c.lease_token, c.version, func.now() if on_db else c.version)
        )
        rows: list[Sequence[Any]]
        database_clock = self.clock if on_db and isinstance(self.clock, DatabaseClock) else None
        asked = database_clock.machine_now() if database_clock is not None else None
        with self._db.begin() as connection:
            if self._db.dialect.update_returning:
                rows = list(connection.execute(claim).all())
            else:  # SQLite before 3.35: no RETURNING
                rows = self._claim_each(connection, candidates, expires, now)
        if rows and database_clock is not None:
            database_clock.measured(rows[0][3], asked)
        for session_id, token, version, _ in sorted(rows, key=lambda row: str(row[0])):
            self._held[session_id] = (token, version)
            claimed[session_id] = Fence(session_id, self.owner, token, version)
        for session_id in wanted:
            if session_id not in claimed:
                self._held.pop(session_id, None)  # someone else's now (or over the limit)
        return claimed

    def _claim_each(
        self,
        connection: Connection,
        candidates: Select[Any],
        expires: ColumnElement[datetime],
        now: ColumnElement[datetime],
    ) -> list[Sequence[Any]]:
        """The claim as a read of the candidates and a compare-and-set on
        each one's token (SQLite without RETURNING: one writer at a time)."""
        table, c = _TABLE, _TABLE.c
        key = c.session_id
        found = connection.execute(
            select(key, c.lease_owner, c.lease_token, c.version).where(key.in_(candidates))
        ).all()
        rows: list[Sequence[Any]] = []
        for session_id, holder, token, version in found:
            new_token = token if holder == self.owner else token + 1
            taken = connection.execute(
                update(table)
                .where(key == session_id, c.lease_token == token, _claimable(self.owner, now))
                .values(lease_owner=self.owner, lease_token=new_token, lease_expires=expires)
            )
            if taken.rowcount == 1:
                rows.append((session_id, new_token, version, None))
        return rows

    def fence(self, session_id: str, version: int | None = None) -> Fence:
        """What a step's write must match: this worker's token and ``version``
        (None: the version seen at the claim; the stepper keeps the current
        one and passes it). LeaseLost if this worker holds no lease on
        ``session_id``. A session it inserted and has not written yet has a
        claiming fence (:meth:`fresh`)."""
        token = self._fresh.get(session_id)
        if token is not None:
            return Fence(session_id, self.owner, token, version or 0, claims=True)
        held = self._held.get(session_id)
        if held is None:
            raise LeaseLost(
                f"worker {self.owner} holds no lease on session {session_id}",
                session_id=session_id,
            )
        return Fence(session_id, self.owner, held[0], held[1] if version is None else version)

    def lost(self, session_id: str) -> None:
        """Forget a lease the store found taken over (a fenced-out write)."""
        self._held.pop(session_id, None)
        self._fresh.pop(session_id, None)
        self._handed.discard(session_id)

    def release(self, session_id: str) -> None:
        """Give up this worker's lease on ``session_id`` (if it holds it)."""
        self._held.pop(session_id, None)
        self._fresh.pop(session_id, None)
        self._handed.discard(session_id)
        with self._db.begin() as connection:
            connection.execute(
                update(_TABLE)
                .where(_TABLE.c.session_id == session_id, _TABLE.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires=None)
            )

    def release_all(self) -> None:
        """Give up every lease this worker holds (the tokens stay: they only grow)."""
        self._held.clear()
        self._fresh.clear()
        self._handed.clear()
        with self._db.begin() as connection:
            connection.execute(
                update(_TABLE)
                .where(_TABLE.c.lease_owner == self.owner)
                .values(lease_owner=None, lease_expires=None)
            )
