"""Clocks: where the engine reads the time and how it waits for the next event.

The engine never sleeps on its own. It asks its clock to wait until the next
persisted timer or operation poll is due, or until a reply wakes it up.

* :class:`RealClock` waits for real.
* :class:`SimClock` jumps: waiting means moving the simulated time forward to
  the next due event, so a session of many simulated hours runs in milliseconds.
  Test actors (scripted managers) schedule their delayed replies on it with
  :meth:`~fenix_core.clock.SimClock.call_at`, and the jump stops at those too.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "RealClock", "SimClock", "as_utc"]


def as_utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """What the engine needs from a clock."""

    def now(self) -> datetime:
        """The current time, an aware UTC datetime."""

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        """Wait until ``until`` (``None``: no deadline) or until ``wake`` is set.

        Return ``False`` when there is nothing to wait for: no deadline, and
        nothing that could set ``wake`` (a simulated clock with no scheduled
        callback). The caller then knows that waiting would never end.
        """

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        """Run ``callback`` at ``when`` (used by test actors, not by the engine)."""


class RealClock:
    """Wall-clock time; waiting blocks the calling thread."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        timeout = None if until is None else max(0.0, (until - self.now()).total_seconds())
        wake.wait(timeout)
        wake.clear()
        return True

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        delay = max(0.0, (as_utc(when) - self.now()).total_seconds())
        timer = threading.Timer(delay, callback)
        timer.daemon = True
        timer.start()


class SimClock:
    """Simulated time that only moves when asked to.

    ``SimClock(start=datetime(2026, 1, 1, tzinfo=UTC))``; ``now()`` is aware UTC.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = as_utc(start) if start is not None else datetime(2026, 1, 1, tzinfo=UTC)
        self._queue: list[tuple[datetime, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, running callbacks that fall due."""
        self.advance_to(self._now + timedelta(seconds=seconds))

    def advance_to(self, when: datetime) -> None:
        """Move time forward to ``when``, running due callbacks in time order."""
        target = as_utc(when)
        while True:
            callback = self._pop_due(target)
            if callback is None:
                break
            callback()
        if target > self._now:
            self._now = target

    def next_callback_at(self) -> datetime | None:
        """When the earliest scheduled callback is due, if any."""
        with self._lock:
            return self._queue[0][0] if self._queue else None

    def wait(self, until: datetime | None, wake: threading.Event) -> bool:
        if wake.is_set():
            wake.clear()
            return True
        pending = self.next_callback_at()
        if until is None or (pending is not None and pending < until):
            until = pending
        if until is None:
            return False
        self.advance_to(max(self._now, until))
        if wake.is_set():  # (a callback woke it; clearing takes the event's lock)
            wake.clear()
        return True

    def call_at(self, when: datetime, callback: Callable[[], None]) -> None:
        """Run ``callback`` when simulated time reaches ``when``."""
        with self._lock:
            heapq.heappush(self._queue, (as_utc(when), next(self._seq), callback))

    def call_later(self, seconds: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` ``seconds`` after now."""
        self.call_at(self._now + timedelta(seconds=seconds), callback)

    def _pop_due(self, target: datetime) -> Callable[[], None] | None:
        with self._lock:
            if not self._queue or self._queue[0][0] > target:
                return None
            when, _, callback = heapq.heappop(self._queue)
        if when > self._now:
            self._now = when
        return callback
