"""When the sessions this engine holds are due.

The engine keeps the wake-up time of every session it holds in memory, so a
step finds due work without asking the database. A session rescheduled or
dropped leaves its old heap entry behind; each entry carries the session's
generation at push time and an entry whose generation is no longer the
session's is skipped when it reaches the top (lazy deletion, O(log n) per
change). Sessions nobody holds (never claimed, or whose holder died) are
found by a :class:`DbPoller`, which the stepper runs on a wake-up or every
``poll_seconds``, never once per step.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime
from typing import Protocol

__all__ = ["DbPoller", "DueQueue"]


class DbPoller(Protocol):
    """Finds sessions that no live lease of another worker covers (unleased,
    expired, or this worker's own) and that have something due, an
    unprocessed reply, or notifications committed but not marked delivered."""

    @property
    def replied(self) -> Collection[str]:
        """Of the sessions the last :meth:`poll` found, those with an
        unprocessed reply."""

    @property
    def behind(self) -> Collection[str]:
        """Of the sessions the last :meth:`poll` found, those found only for
        notifications not marked delivered (not due, no reply)."""

    def poll(self, now: datetime) -> Sequence[str]: ...


class DueQueue:
    """A heap of ``(wake, session_id, generation)`` with lazy deletion.

    ``schedule`` sets (or moves) a session's wake-up; ``drop`` forgets it;
    ``pop_due(now)`` returns the sessions due by ``now`` in (wake, id) order
    and removes them, so each is handed out once per schedule."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str, int]] = []
        self._gen: dict[str, int] = {}  # session id -> generation of its live entry
        self._wake: dict[str, datetime] = {}  # session id -> live wake-up
        self._counter = 0

    def schedule(self, session_id: str, wake: datetime) -> None:
        """Wake ``session_id`` at ``wake`` (replacing any earlier schedule)."""
        self._counter += 1
        self._gen[session_id] = self._counter
        self._wake[session_id] = wake
        heapq.heappush(self._heap, (wake, session_id, self._counter))
        self._compact()

    def drop(self, session_id: str) -> None:
        """Forget ``session_id`` (its heap entry goes when it surfaces)."""
        self._gen.pop(session_id, None)
        self._wake.pop(session_id, None)

    def wake_of(self, session_id: str) -> datetime | None:
        return self._wake.get(session_id)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._wake

    def __len__(self) -> int:
        return len(self._wake)

    @property
    def heap_size(self) -> int:
        """Entries in the heap, stale ones included (what compaction bounds)."""
        return len(self._heap)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._wake))

    def next_wake(self) -> datetime | None:
        """The earliest live wake-up, or None when nothing is scheduled."""
        self._skip_stale()
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: datetime) -> list[str]:
        """Remove and return the sessions whose wake-up is at or before ``now``,
        earliest first (ties by session id)."""
        due: list[str] = []
        while True:
            self._skip_stale()
            if not self._heap or self._heap[0][0] > now:
                return due
            _, session_id, _ = heapq.heappop(self._heap)
            del self._gen[session_id]
            del self._wake[session_id]
            due.append(session_id)

    def _live(self, entry: tuple[datetime, str, int]) -> bool:
        return self._gen.get(entry[1]) == entry[2]

    def _skip_stale(self) -> None:
        heap, gen = self._heap, self._gen
        # ``_live`` written out: asked at every step and every look at the queue.
        while heap and gen.get(heap[0][1]) != heap[0][2]:
            heapq.heappop(heap)

    def _compact(self) -> None:
        # Rescheduling a session again and again would grow the heap with
        # stale entries that never surface; rebuild once they dominate.
        if len(self._heap) > 64 and len(self._heap) > 4 * len(self._gen):
            self._heap = [e for e in self._heap if self._live(e)]
            heapq.heapify(self._heap)
