"""Test seams of an engine: what a concurrency test must hold or see of an
engine that its public API does not offer.

The :class:`~fenix_core.engine.Engine` offers them; tests never read an
engine's private attributes
(``tests/test_private_seams.py`` checks). What every test may use anyway is
public: ``engine.database`` (the SQLAlchemy engine, to read stored rows and
to count statements) and ``engine.held_sessions()``.

:func:`stored_clock` reads what a crash or lease test checks of a session's
lease and counters where the engine keeps them (the ``session_clock`` row
every step's fenced UPDATE writes), so such tests never name that layout.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Protocol

import attrs
from sqlalchemy import select
from sqlalchemy.engine import Engine as SAEngine

from ..clock import as_utc
from ..errors import NotFound
from ..store.schema import SessionClockRow

__all__ = [
    "StoredClock",
    "leases_on_database_clock",
    "queued_replies",
    "step_in_progress",
    "stored_clock",
]


@attrs.frozen
class StoredClock:
    """A session's lease and counters as committed.

    ``owner`` / ``token`` / ``expires``: the lease (``token`` grows by one
    each time another worker takes the session; ``owner`` is None once
    released); ``version``: committed steps; ``seq``: the last notification
    numbered; ``delivered_seq``: every notification up to it was delivered."""

    owner: str | None
    token: int
    expires: datetime | None
    version: int
    seq: int
    delivered_seq: int


def stored_clock(database: SAEngine, session_id: str) -> StoredClock:
    """The committed lease and counters of ``session_id`` in ``database``
    (an engine's :attr:`database`, or one opened on its URL); NotFound for
    an unknown session."""
    c = SessionClockRow
    with database.connect() as db:
        row = db.execute(
            select(
                c.lease_owner, c.lease_token, c.lease_expires, c.version, c.seq, c.delivered_seq
            ).where(c.session_id == session_id)
        ).one_or_none()
    if row is None:
        raise NotFound("session", session_id, session_id=session_id)
    owner, token, expires, version, seq, delivered = row
    return StoredClock(
        owner=owner,
        token=int(token),
        expires=None if expires is None else as_utc(expires),
        version=int(version),
        seq=int(seq),
        delivered_seq=int(delivered),
    )


class _Queue(Protocol):
    @property
    def queued(self) -> int: ...


class _Engine(Protocol):
    # What the engine keeps under these names; a seam is the one place
    # outside the engine that may rely on them.
    _lock: AbstractContextManager[object]
    _replies: _Queue


@contextmanager
def step_in_progress(engine: _Engine) -> Iterator[None]:
    """Hold what a step holds for as long as the ``with`` block lasts: calls
    from other threads (``reply``, controls, another ``step``) wait as they
    would behind a long step. The engine's own thread may still call it (the
    lock is reentrant, as it is for a signal receiver inside a step)."""
    with engine._lock:
        yield


def queued_replies(engine: _Engine) -> int:
    """How many ``reply()`` calls wait for the next group commit (each
    returns once its reply is durable)."""
    return engine._replies.queued


def leases_on_database_clock(engine: object) -> bool:
    """Whether ``engine`` decides lease expiry on its database's clock (so
    that a worker whose own clock is off never takes a live lease); True
    when the engine does not say otherwise."""
    keeper = getattr(engine, "_leases", None)
    return bool(getattr(keeper, "_database_clock", True))
