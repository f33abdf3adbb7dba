"""SimClock (jumping simulated time) and RealClock (waiting for real, briefly)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from fenix_core.clock import Clock, RealClock, SimClock, as_utc

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# --------------------------------------------------------------------------- as_utc


def test_as_utc() -> None:
    naive = datetime(2026, 3, 1, 12, 0)
    assert as_utc(naive) == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert as_utc(naive).tzinfo is UTC
    east = datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    converted = as_utc(east)
    assert converted == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert converted.utcoffset() == timedelta(0)
    assert converted.hour == 12


# --------------------------------------------------------------------------- SimClock


def test_simclock_start_and_default() -> None:
    assert SimClock().now() == datetime(2026, 1, 1, tzinfo=UTC)
    assert SimClock().now().tzinfo is not None
    clock = SimClock(start=datetime(2030, 6, 1, 8, 0))  # naive = UTC
    assert clock.now() == datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    assert clock.now().utcoffset() == timedelta(0)
    shifted = SimClock(start=datetime(2030, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.now() == datetime(2030, 6, 1, 8, 0, tzinfo=UTC)
    assert shifted.now().utcoffset() == timedelta(0)
    assert isinstance(clock, Clock)


def test_simclock_advance_and_advance_to() -> None:
    clock = SimClock(start=T0)
    clock.advance(90)
    assert clock.now() == at(90)
    clock.advance(0.5)
    assert clock.now() == at(90.5)
    clock.advance_to(at(3600))
    assert clock.now() == at(3600)
    clock.advance_to(datetime(2026, 1, 1, 2, 0))  # naive = UTC
    assert clock.now() == at(7200)
    clock.advance_to(at(10))  # never goes back
    assert clock.now() == at(7200)


def test_simclock_time_does_not_move_by_itself() -> None:
    clock = SimClock(start=T0)
    first = clock.now()
    time.sleep(0.01)
    assert clock.now() == first


def test_callbacks_run_in_time_order_when_time_passes() -> None:
    clock = SimClock(start=T0)
    seen: list[tuple[str, datetime]] = []

    def record(name: str) -> Callable[[], None]:
        return lambda: seen.append((name, clock.now()))

    clock.call_at(at(30), record("c"))
    clock.call_later(10, record("a"))
    clock.call_at(at(20), record("b"))
    clock.call_at(at(100), record("late"))
    assert clock.next_callback_at() == at(10)
    assert seen == []  # nothing runs before time passes

    clock.advance(50)
    # Each callback sees the time it was scheduled for.
    assert seen == [("a", at(10)), ("b", at(20)), ("c", at(30))]
    assert clock.now() == at(50)
    assert clock.next_callback_at() == at(100)

    clock.advance_to(at(100))  # due exactly now: runs
    assert seen[-1] == ("late", at(100))
    assert clock.next_callback_at() is None


def test_equal_times_run_fifo() -> None:
    clock = SimClock(start=T0)
    seen: list[int] = []
    for i in range(10):
        clock.call_at(at(5), functools.partial(seen.append, i))
    clock.advance(5)
    assert seen == list(range(10))


def test_callbacks_scheduled_by_callbacks() -> None:
    clock = SimClock(start=T0)
    seen: list[tuple[str, datetime]] = []

    def first() -> None:
        seen.append(("first", clock.now()))
        clock.call_later(5, lambda: seen.append(("second", clock.now())))
        clock.call_later(500, lambda: seen.append(("third", clock.now())))

    clock.call_at(at(10), first)
    clock.advance(60)
    assert seen == [("first", at(10)), ("second", at(15))]
    assert clock.next_callback_at() == at(510)


def test_call_at_in_the_past_runs_on_next_advance_without_going_back() -> None:
    clock = SimClock(start=T0)
    clock.advance(100)
    seen: list[datetime] = []
    clock.call_at(at(50), lambda: seen.append(clock.now()))
    clock.call_at(datetime(2026, 1, 1, 0, 0, 40), lambda: seen.append(clock.now()))  # naive
    clock.advance(0)
    assert seen == [at(100), at(100)]
    assert clock.now() == at(100)


def test_wait_jumps_to_until_when_no_callback() -> None:
    clock = SimClock(start=T0)
    wake = threading.Event()
    assert clock.wait(at(300), wake) is True
    assert clock.now() == at(300)


def test_wait_stops_at_the_next_callback() -> None:
    clock = SimClock(start=T0)
    wake = threading.Event()
    ran: list[datetime] = []

    def reply() -> None:
        ran.append(clock.now())
        wake.set()

    clock.call_at(at(40), reply)
    assert clock.wait(at(300), wake) is True
    assert clock.now() == at(40)
    assert ran == [at(40)]
    # The callback's wake-up is consumed by the wait that it ended.
    assert not wake.is_set()


def test_wait_stops_at_until_before_a_later_callback() -> None:
    clock = SimClock(start=T0)
    ran: list[datetime] = []
    clock.call_at(at(500), lambda: ran.append(clock.now()))
    assert clock.wait(at(60), threading.Event()) is True
    assert clock.now() == at(60)
    assert ran == []


def test_wait_without_deadline_runs_to_the_next_callback() -> None:
    clock = SimClock(start=T0)
    ran: list[datetime] = []
    clock.call_later(25, lambda: ran.append(clock.now()))
    assert clock.wait(None, threading.Event()) is True
    assert clock.now() == at(25)
    assert ran == [at(25)]


def test_wait_with_nothing_to_wait_for() -> None:
    clock = SimClock(start=T0)
    assert clock.wait(None, threading.Event()) is False
    assert clock.now() == T0


def test_wait_returns_immediately_when_woken() -> None:
    clock = SimClock(start=T0)
    ran: list[datetime] = []
    clock.call_at(at(10), lambda: ran.append(clock.now()))
    wake = threading.Event()
    wake.set()
    assert clock.wait(at(300), wake) is True
    assert clock.now() == T0
    assert ran == []
    assert not wake.is_set()  # consumed


class _CountedEvent(threading.Event):
    cleared = 0

    def clear(self) -> None:
        self.cleared += 1
        super().clear()


def test_wait_clears_the_wake_up_only_when_it_was_set() -> None:
    """A jump that nothing woke leaves the event alone (clearing takes its
    lock: a loop stepping a simulation waits once a step); one set by a
    callback during the jump is consumed."""
    clock = SimClock(start=T0)
    wake = _CountedEvent()
    assert clock.wait(at(10), wake) is True
    assert (clock.now(), wake.cleared) == (at(10), 0)
    clock.call_at(at(20), wake.set)
    assert clock.wait(at(30), wake) is True
    assert clock.now() == at(20)  # stopped at the callback
    assert not wake.is_set()
    assert wake.cleared == 1


def test_wait_until_in_the_past_does_not_go_back() -> None:
    clock = SimClock(start=T0)
    clock.advance(100)
    assert clock.wait(at(10), threading.Event()) is True
    assert clock.now() == at(100)


# --------------------------------------------------------------------------- RealClock


def test_realclock_now_is_aware_utc() -> None:
    before = datetime.now(UTC)
    now = RealClock().now()
    assert now.utcoffset() == timedelta(0)
    assert before <= now <= datetime.now(UTC)


def test_realclock_wait_returns_when_woken_from_another_thread() -> None:
    clock = RealClock()
    wake = threading.Event()
    setter = threading.Timer(0.02, wake.set)
    started = time.monotonic()
    setter.start()
    try:
        assert clock.wait(clock.now() + timedelta(seconds=30), wake) is True
    finally:
        setter.cancel()
    assert time.monotonic() - started < 10  # woken, not timed out
    assert not wake.is_set()


def test_realclock_wait_until_deadline() -> None:
    clock = RealClock()
    started = time.monotonic()
    assert clock.wait(clock.now() + timedelta(seconds=0.02), threading.Event()) is True
    assert time.monotonic() - started >= 0.015
    # A deadline in the past does not block.
    assert clock.wait(clock.now() - timedelta(seconds=60), threading.Event()) is True


def test_realclock_call_at_runs_the_callback() -> None:
    clock = RealClock()
    done = threading.Event()
    seen: list[datetime] = []

    def callback() -> None:
        seen.append(clock.now())
        done.set()

    when = clock.now() + timedelta(seconds=0.01)
    clock.call_at(when, callback)
    assert done.wait(10)
    assert seen[0] >= when - timedelta(milliseconds=5)


@pytest.mark.parametrize("offset", [timedelta(hours=-3), timedelta(seconds=-1)])
def test_realclock_call_at_past_time_runs_soon(offset: timedelta) -> None:
    clock = RealClock()
    done = threading.Event()
    clock.call_at((datetime.now(UTC) + offset).replace(tzinfo=None), done.set)  # naive = UTC
    assert done.wait(10)
