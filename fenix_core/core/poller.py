"""The database side of finding due work: what the engine cannot see in memory.

:class:`SqlDbPoller` implements :class:`~fenix_core.core.due.DbPoller`:
sessions with a wake-up at or before ``now``, sessions with an unprocessed
reply, and sessions with notifications committed but not marked delivered,
whose lease is free, expired or this worker's, read from ``session_clock``
and the inbox's partial index of unprocessed rows. The sessions found for
a reply are flagged (:attr:`SqlDbPoller.replied`), and so are those found
only for their notifications (:attr:`SqlDbPoller.behind`): a worker that
died between a step's commit and the delivery of its notifications left
them to whoever takes the session next, at once, not at its next wake-up
(a question's reply deadline: the project would have been found silent
before it was asked). The wake-ups of the sessions this engine holds are
in its :class:`~fenix_core.core.due.DueQueue`: the stepper steps a held
session the poll finds only for a reply (one another worker or process
accepted) or when it has no wake-up queued (changed where its copy cannot
see); one found only for its notifications is this engine's to send,
which its steps do.

On PostgreSQL "expired" is decided by the database's ``now()``, as the
lease keeper decides it (:func:`~fenix_core.core.leases.on_database_clock`),
and each poll measures the offset of the worker's
:class:`~fenix_core.core.leases.DatabaseClock` to the database's clock (its
``now()`` is read by the poll's own statement, not by a round trip of its
own), so
the expiries the worker's steps write follow the database even when its own
clock is minutes off or jumps.

On SQLite, given the sessions this engine holds (``held``), a poll also
reads the earliest wake-up among the sessions it does not hold (now, for
one with an unprocessed reply), in the same statement: until the engine's
clock reaches it, a look at the database can find nothing that was there
at this poll (:meth:`SqlDbPoller.quiet`), unless another engine of this
process has committed to the same database file since. What another
process writes is found by the looks that the lease clock's interval
makes in any case.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Connection,
    Engine,
    Select,
    String,
    and_,
    bindparam,
    case,
    event,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    union,
    union_all,
)

from ..clock import Clock, RealClock
from ..store.schema import InboxRow, SessionClockRow, UTCDateTime
from .leases import DatabaseClock, on_database_clock
from .sql_store import Driver, Prepared

__all__ = ["SqlDbPoller"]

#: Commits to each SQLite database file by the engines of this process (its
#: path -> how many): a poller tells another engine's from its own's.
_COMMITS: Counter[str] = Counter()


def _unprocessed() -> Select[Any]:
    """Sessions with an unprocessed reply, through the partial index by name
    (SQLAlchemy renders no index hint for SQLite: the FROM is text)."""
    return (
        select(literal_column("session_id"))
        .select_from(text("inbox INDEXED BY ix_inbox_unprocessed"))
        .where(text("processed_at IS NULL"))
    )


#: Why a poll found a session (its rows' second column).
_WOKEN, _REPLIED, _BEHIND = 0, 1, 2


@cache  # the same statement for every engine on the same kind of database
def _due_query(database_clock: bool, sqlite: bool = False) -> CompoundSelect[Any]:
    """Sessions due by ``:now``, sessions with unprocessed replies and
    sessions whose stored delivery watermark is behind their last
    notification, whose lease is free, expired (by the database's ``now()``
    or ``:lease_now``) or ``:owner``'s: rows of (session id, why: ``_WOKEN``,
    ``_REPLIED`` or ``_BEHIND``; a session due by its wake-up is not also
    ``_BEHIND``).

    ``sqlite``: the unprocessed replies are read through the partial index
    ``ix_inbox_unprocessed`` by name. Left to itself SQLite's planner scans
    the covering index ``ix_inbox_session_open`` (every reply ever received:
    each poll cost grew with the inbox, and a simulated clock polls at
    almost every step).

    ``session_clock`` has no index of ``next_wake`` (migration 0014): the
    wake-ups are read from the table, one short row per session, which the
    earliest wake-up of :func:`_with_earliest` reads in full anyway."""
    t = SessionClockRow
    key = t.session_id
    lease_now: ColumnElement[datetime] = (
        func.now() if database_clock else bindparam("lease_now", type_=UTCDateTime())
    )
    free = or_(
        t.lease_owner.is_(None),
        t.lease_owner == bindparam("owner", type_=String()),
        t.lease_expires.is_(None),
        t.lease_expires <= lease_now,
    )
    due = and_(t.next_wake.is_not(None), t.next_wake <= bindparam("now", type_=UTCDateTime()))
    # (One scan of session_clock for both: it has no index of either.)
    woken: Select[Any, Any] = select(
        key,
        case((due, literal_column(str(_WOKEN))), else_=literal_column(str(_BEHIND))).label("why"),
    ).where(or_(due, t.delivered_seq < t.seq), free)
    if sqlite:
        replied: Select[Any, Any] = select(key, literal_column(str(_REPLIED))).where(
            key.in_(_unprocessed()), free
        )
    else:
        replied = (
            select(InboxRow.session_id, literal_column(str(_REPLIED)))
            .join(t, key == InboxRow.session_id)
            .where(InboxRow.processed_at.is_(None), free)
        )
    return union(woken, replied)


def _with_earliest(due: CompoundSelect[Any]) -> CompoundSelect[Any]:
    """``due``'s rows, each with a NULL, and one more row: two NULLs and the
    earliest wake-up (now for an unprocessed reply) among the sessions not
    in ``:held`` (a JSON list), NULL when none has one (SQLite)."""
    t = SessionClockRow
    key = t.session_id
    now = bindparam("now", type_=UTCDateTime())
    wake = case((key.in_(_unprocessed()), now), else_=t.next_wake)
    held: Select[Any] = select(literal_column("value")).select_from(
        func.json_each(bindparam("held", type_=String()))
    )
    ids = due.subquery()
    return union_all(
        select(ids.c[0], ids.c[1], null()),
        select(null(), null(), func.min(wake)).where(key.not_in(held)),
    )


class SqlDbPoller:
    """Due sessions no live lease covers, in session id order."""

    def __init__(
        self,
        db: Engine,
        lease_clock: Clock | None = None,
        *,
        owner: str | None = None,
        reading: Callable[[], AbstractContextManager[Connection]] | None = None,
        held: Callable[[], Collection[str]] | None = None,
    ) -> None:
        """``owner``: this worker, whose own leases count as free (a worker
        restarted with its id takes its sessions back at once, as the lease
        keeper lets it);
        ``reading``: the connection to poll on (the session store's
        ``reading``: on SQLite the connection the steps write on, whose cache
        their commits leave valid); None: one from the pool each time.
        ``held()``: the sessions this engine holds, for :meth:`quiet` (None,
        or not SQLite: no poll is ever quiet)."""
        self._owner = owner
        self._reading = reading if reading is not None else db.connect
        #: Of the sessions the last poll found, those with an unprocessed
        #: reply (this worker's own sessions among them: a reply another
        #: worker or process wrote, which this one has not read).
        self.replied: frozenset[str] = frozenset()
        #: Of the sessions the last poll found, those found only because
        #: notifications committed to them are not all marked delivered.
        self.behind: frozenset[str] = frozenset()
        # As the lease keeper: the database's clock on PostgreSQL unless a
        # clock other than a DatabaseClock is given (tests), the machine's otherwise.
        self._lease_clock = lease_clock or RealClock()
        database_clock = on_database_clock(db, lease_clock)
        #: The DatabaseClock each poll measures (None: nothing to measure).
        self._measuring: DatabaseClock | None = (
            lease_clock if database_clock and isinstance(lease_clock, DatabaseClock) else None
        )
        sqlite = db.dialect.name == "sqlite"
        self._query = _due_query(database_clock, sqlite)
        self._held = held if sqlite else None
        # The earliest wake-up the last poll found among the sessions not
        # held here (None: none has one); nothing known before a poll.
        self._known = False
        self._earliest: datetime | None = None
        # Commits of this engine, and of the others of this process to the
        # same file, when the last poll was made.
        path = db.url.database if sqlite else None
        self._file = os.path.realpath(path) if path not in (None, "", ":memory:") else None
        self._own = 0
        self._others_seen = 0
        if self._held is not None and self._file is not None:
            event.listen(db, "commit", self._committed)
        # On SQLite the query goes to the driver's cursor, compiled once: a
        # simulated clock polls at almost every step, and SQLAlchemy's
        # per-execute work cost several times SQLite's.
        polled = _with_earliest(self._query) if self._held is not None else self._query
        self._prepared = Prepared(polled, db.dialect) if sqlite else None
        self._last: tuple[Connection, Driver] | None = None
        # On PostgreSQL the database's clock comes with the answer, in the
        # same statement (one row: now(), the due ids and why each was found,
        # as arrays; none is NULL), not in a round trip of its own.
        due = self._query.subquery()
        self._measured: Select[datetime, Sequence[Any], Sequence[Any]] | None = (
            select(
                func.now(),
                func.array_agg(due.c.session_id),
                func.array_agg(due.c.why),
            ).select_from(due)
            if self._measuring is not None
            else None
        )

    def _driver(self, connection: Connection) -> Driver:
        """The driver of ``connection``, made again only for another one
        (``reading`` gives the same kept connection poll after poll)."""
        last = self._last
        if last is None or last[0] is not connection:
            last = self._last = (connection, Driver(connection))
        return last[1]

    def _committed(self, *_args: object) -> None:
        assert self._file is not None
        _COMMITS[self._file] += 1
        self._own += 1

    def _others(self) -> int:
        """Commits to this file by the other engines of this process."""
        return 0 if self._file is None else _COMMITS[self._file] - self._own

    def quiet(self, now: datetime) -> bool:
        """Whether a poll at ``now`` would find nothing: no session this
        engine did not hold at the last poll has a wake-up (or a reply) by
        ``now``, and no other engine of this process has committed since.
        Sessions it let go since are the caller's to count."""
        if not self._known or self._others() != self._others_seen:
            return False
        return self._earliest is None or self._earliest > now

    def poll(self, now: datetime) -> list[str]:
        params = {"now": now, "lease_now": self._lease_clock.now(), "owner": self._owner}
        database_clock = self._measuring
        asked = database_clock.machine_now() if database_clock is not None else None
        held = self._held
        if held is not None:
            params["held"] = json.dumps(list(held()))
            self._others_seen = self._others()
        found: list[tuple[str, int]]
        with self._reading() as connection:
            if self._prepared is not None:
                sql, values = self._prepared.sql, self._prepared.row(params)
                rows = self._driver(connection).fetch(sql, values)
                if held is None:
                    found = [(row[0], row[1]) for row in rows]
                else:
                    found = [(row[0], row[1]) for row in rows if row[0] is not None]
                    earliest = next((row[2] for row in rows if row[0] is None), None)
                    self._earliest = (
                        None
                        if earliest is None
                        else datetime.fromisoformat(earliest).replace(tzinfo=UTC)
                    )
                    self._known = True
            elif self._measured is not None and database_clock is not None:
                database_now, ids, flags = connection.execute(self._measured, params).one()
                database_clock.measured(database_now, asked)
                found = list(zip(ids or (), flags or (), strict=True))
            else:
                found = [(row[0], row[1]) for row in connection.execute(self._query, params)]
        self.replied = frozenset(sid for sid, why in found if why == _REPLIED)
        self.behind = frozenset(sid for sid, why in found if why == _BEHIND) - self.replied
        return sorted({sid for sid, _ in found})
