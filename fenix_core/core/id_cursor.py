"""Following a table's new rows by their increasing id when writers commit
out of id order.

On PostgreSQL a row's id is drawn from a sequence at its INSERT and the row
becomes visible at its transaction's commit, so two workers writing at once
can commit ids 7 and 8 in the order 8, 7. A reader that keeps only the
highest id it has read (``id > last``) reads 8 and never 7. An
:class:`IdCursor` also keeps the ids below its mark that it has not seen
(*holes*) and asks for them again at each read, until a hole is filled or is
older than ``hold_seconds``: an id whose transaction rolled back, or that a
sequence skipped, is never filled. On SQLite writers commit one at a time,
so holes are rare (deleted rows) and cost a read of an empty ``IN`` list.

Pure bookkeeping: the caller builds the query from :attr:`IdCursor.last`
and :meth:`IdCursor.holes` and reports what it read or wrote with
:meth:`IdCursor.saw`; times are seconds of a monotonic clock.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

__all__ = ["IdCursor"]


class IdCursor:
    """The highest id read, and the unseen ids below it still waited for."""

    def __init__(self, *, hold_seconds: float = 600.0, limit: int = 10_000) -> None:
        """``hold_seconds``: how long an unseen id is asked for (longer than
        any transaction that writes the table); ``limit``: the most unseen
        ids kept (the oldest go first)."""
        self.hold_seconds = hold_seconds
        self.limit = limit
        #: Every id up to it was read, written here, or is a hole.
        self.last = 0
        self._holes: dict[int, float] = {}  # id -> when it was first missed

    def holes(self) -> list[int]:
        """The ids below :attr:`last` not seen yet, to ask for again."""
        return sorted(self._holes)

    def start(self, top: int, present: Collection[int], window: int, now: float) -> None:
        """A first read of the table: its highest id is ``top`` and
        ``present`` the ids among the ``window`` ids up to it; the others of
        those may still be in transactions under way."""
        self.last = top
        low = max(0, top - window)
        self._holes = {i: now for i in range(low + 1, top + 1) if i not in present}
        self._trim()

    def saw(self, ids: Iterable[int], now: float) -> None:
        """Rows with ``ids`` were read, or written by this process and
        committed: the ids between :attr:`last` and the highest of them that
        were not among them become holes."""
        seen = set(ids)
        for found in seen:
            self._holes.pop(found, None)
        top = max(seen, default=self.last)
        if top > self.last:
            for missed in range(max(self.last + 1, top - self.limit), top):
                if missed not in seen:
                    self._holes[missed] = now
            self.last = top
        self.expire(now)

    def expire(self, now: float) -> None:
        """Stop asking for the holes older than ``hold_seconds``."""
        if self._holes:
            oldest = now - self.hold_seconds
            self._holes = {i: at for i, at in self._holes.items() if at > oldest}
            self._trim()

    def _trim(self) -> None:
        if len(self._holes) > self.limit:
            kept = sorted(self._holes)[-self.limit :]
            self._holes = {i: self._holes[i] for i in kept}
