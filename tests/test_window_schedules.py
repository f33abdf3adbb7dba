"""Windows from cron expressions and RFC 5545 recurrence rules, each with its
own budget: parsing, the daylight-saving days of Europe/Paris and
America/New_York, and weeks of simulated admissions (hypothesis) checked
against an independent expansion of the same rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from dateutil.rrule import rrulestr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_lifecycle_controls import drive, spans

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.budgets import Percent, resolve_cap
from fenix_core.clock import SimClock
from fenix_core.controls import (
    Controls,
    PacingHistory,
    Window,
    admit,
    next_window_start,
    window_occurrences,
)
from fenix_core.errors import InvalidInput
from fenix_core.recurrence import RRULE_ANCHOR
from fenix_core.testing import SimulatedCloud, TimedAction

PARIS, NEW_YORK = ZoneInfo("Europe/Paris"), ZoneInfo("America/New_York")
SECOND_SUNDAY = {
    "timezone": "Europe/Paris",
    "windows": [
        {
            "rrule": "FREQ=MONTHLY;BYDAY=2SU;BYHOUR=1;BYMINUTE=0",
            "duration": "4h",
            "max_hosts_in_maintenance": "20%",
        }
    ],
}


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spans_of(controls: dict[str, Any], start: str, days: int) -> list[tuple[datetime, datetime]]:
    begin = utc(start)
    return list(window_occurrences(Controls.from_dict(controls), begin, begin + timedelta(days)))


# --------------------------------------------------------------------------- parsing


def test_second_sunday_of_the_month_0100_to_0500_at_20_percent() -> None:
    controls = Controls.from_dict(SECOND_SUNDAY)
    assert controls.windows[0].max_hosts_in_maintenance == Percent(20)
    got = spans_of(SECOND_SUNDAY, "2026-01-01T00:00", 120)
    local = [(a.astimezone(PARIS), b.astimezone(PARIS)) for a, b in got]
    assert [a.date() for a, _ in local] == [
        date(2026, 1, 11),
        date(2026, 2, 8),
        date(2026, 3, 8),
        date(2026, 4, 12),
    ]
    assert all((a.time(), b.time()) == (time(1), time(5)) for a, b in local)
    again = Controls.from_dict(controls.to_dict())
    assert again == controls


def test_the_same_window_as_a_cron_expression() -> None:
    cron = {"timezone": "Europe/Paris", "windows": [{"cron": "0 1 * * sun#2", "end": "05:00"}]}
    assert spans_of(cron, "2026-01-01T00:00", 120) == spans_of(
        SECOND_SUNDAY, "2026-01-01T00:00", 120
    )


def test_cron_day_of_month_and_weekday_together_mean_either() -> None:
    # As cron has it: days 8-14 OR Sundays (the second Sunday needs sun#2).
    either = {"windows": [{"cron": "0 1 8-14 * sun", "duration": 3600}]}
    days = {a.date() for a, _ in spans_of(either, "2026-02-01T00:00", 28)}
    assert date(2026, 2, 1) in days  # a Sunday, not in 8-14
    assert date(2026, 2, 10) in days  # a Tuesday in 8-14


def test_an_rrule_with_its_own_dtstart_and_interval() -> None:
    every_other_saturday = {
        "windows": [
            {"rrule": "DTSTART:20260103T220000\nRRULE:FREQ=WEEKLY;INTERVAL=2", "duration": "PT6H"}
        ]
    }
    got = spans_of(every_other_saturday, "2026-05-01T00:00", 40)
    assert [a for a, _ in got] == [
        utc("2026-05-09T22:00"),
        utc("2026-05-23T22:00"),
        utc("2026-06-06T22:00"),
    ]
    assert all(b - a == timedelta(hours=6) for a, b in got)


@pytest.mark.parametrize(
    ("window", "field"),
    [
        ({"cron": "0 1 * *", "duration": 60}, "controls.windows[0].cron"),
        ({"cron": "0 1 * * * 0", "duration": 60}, "controls.windows[0].cron"),
        ({"cron": "61 1 * * *", "duration": 60}, "controls.windows[0].cron"),
        ({"cron": "0 1 * * *"}, "controls.windows[0].duration"),
        ({"cron": "0 1 * * *", "duration": 60, "end": "05:00"}, "controls.windows[0].duration"),
        ({"cron": "0 1 * * *", "rrule": "FREQ=DAILY", "duration": 60}, "controls.windows[0].rrule"),
        ({"cron": "0 1 * * *", "start": "01:00", "duration": 60}, "controls.windows[0].start"),
        ({"cron": "0 1 * * *", "duration": "four hours"}, "controls.windows[0].duration"),
        ({"cron": "0 1 * * *", "duration": 0}, "controls.windows[0].duration"),
        ({"rrule": "FREQ=MINUTELY", "duration": 60}, "controls.windows[0].rrule"),
        ({"rrule": "BYDAY=2SU", "duration": 60}, "controls.windows[0].rrule"),
        ({"rrule": "FREQ=MONTHLY;BYDAY=XX", "duration": 60}, "controls.windows[0].rrule"),
        (
            {
                "rrule": "DTSTART;TZID=Europe/Paris:20260101T010000\nRRULE:FREQ=DAILY",
                "duration": 60,
            },
            "controls.windows[0].rrule",
        ),
        ({"start": "01:00", "end": "02:00", "duration": 60}, "controls.windows[0].duration"),
        (
            {"start": "01:00", "end": "02:00", "max_hosts_in_maintenance": "0%"},
            "controls.windows[0].max_hosts_in_maintenance",
        ),
    ],
)
def test_bad_scheduled_windows_name_the_field(window: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SessionRequest.from_dict({"controls": {"windows": [window]}})
    assert info.value.field == field


# --------------------------------------------------------------------------- daylight saving


def test_a_0230_window_on_the_spring_forward_day_starts_after_the_gap_paris() -> None:
    # 2026-03-29: Paris skips 02:00-03:00. RFC 5545: a time in the gap takes
    # the offset before it, so 02:30 CET is 03:30 CEST (01:30 UTC).
    daily = {"timezone": "Europe/Paris", "windows": [{"cron": "30 2 * * *", "duration": "1h"}]}
    got = spans_of(daily, "2026-03-28T00:00", 3)
    assert got == [
        (utc("2026-03-28T01:30"), utc("2026-03-28T02:30")),
        (utc("2026-03-29T01:30"), utc("2026-03-29T02:30")),
        (utc("2026-03-30T00:30"), utc("2026-03-30T01:30")),
    ]
    assert got[1][0].astimezone(PARIS).time() == time(3, 30)


def test_a_0230_window_on_the_spring_forward_day_starts_after_the_gap_new_york() -> None:
    daily = {
        "timezone": "America/New_York",
        "windows": [{"rrule": "FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "end": "04:00"}],
    }
    got = spans_of(daily, "2026-03-07T00:00", 3)
    assert got == [
        (utc("2026-03-07T07:30"), utc("2026-03-07T09:00")),  # EST: 1.5 h
        (utc("2026-03-08T07:30"), utc("2026-03-08T08:00")),  # 03:30 EDT to 04:00 EDT
        (utc("2026-03-09T06:30"), utc("2026-03-09T08:00")),  # EDT: 1.5 h
    ]


@pytest.mark.parametrize(
    ("zone", "day", "opens", "closes_at_end", "closes_after_4h"),
    [
        # New York falls back at 02:00 EDT to 01:00 EST: 01:00 happens twice, the
        # window opens at the first (EDT); 05:00 is EST: five hours of wall time.
        (
            "America/New_York",
            "2026-11-01",
            "2026-11-01T05:00",
            "2026-11-01T10:00",
            "2026-11-01T09:00",
        ),
        # Paris falls back at 03:00 CEST to 02:00 CET.
        ("Europe/Paris", "2026-10-25", "2026-10-24T23:00", "2026-10-25T04:00", "2026-10-25T03:00"),
    ],
)
def test_a_0100_to_0500_window_on_the_fall_back_day(
    zone: str, day: str, opens: str, closes_at_end: str, closes_after_4h: str
) -> None:
    wall = {"timezone": zone, "windows": [{"rrule": "FREQ=DAILY;BYHOUR=1", "end": "05:00"}]}
    elapsed = {"timezone": zone, "windows": [{"rrule": "FREQ=DAILY;BYHOUR=1", "duration": "4h"}]}
    start = utc(f"{day}T00:00") - timedelta(hours=6)
    (first, *_) = [s for s in spans_of(wall, start.isoformat()[:16], 1) if s[1] > utc(opens)]
    assert first == (utc(opens), utc(closes_at_end))
    assert first[1] - first[0] == timedelta(hours=5)
    (second, *_) = [s for s in spans_of(elapsed, start.isoformat()[:16], 1) if s[1] > utc(opens)]
    assert second == (utc(opens), utc(closes_after_4h))


def test_a_window_budget_waits_for_an_event_and_a_window_with_room_for_a_timer() -> None:
    controls = Controls.from_dict(
        {
            "windows": [
                {"cron": "0 1 * * *", "duration": "2h", "max_hosts_in_maintenance": 1},
                {"cron": "0 2 * * sun", "duration": "2h", "max_hosts_in_maintenance": 3},
            ]
        }
    )
    saturday = utc("2026-03-07T01:30")
    full = admit(saturday, controls, PacingHistory(in_maintenance=1, hosts=10))
    assert not full.ok
    # Sunday's 02:00 window has room for a second host: a timer, not only an event.
    assert full.wait_until == utc("2026-03-08T02:00")
    assert full.reason is not None
    assert "at most 1 at once in this window" in full.reason
    sunday = utc("2026-03-08T02:30")
    assert admit(sunday, controls, PacingHistory(in_maintenance=2, hosts=10)).ok
    assert not admit(sunday, controls, PacingHistory(in_maintenance=3, hosts=10)).ok
    assert next_window_start(saturday, controls) == saturday


# --------------------------------------------------------------------------- long spans


def _oracle(
    window: Window, zone: ZoneInfo, start: datetime, end: datetime
) -> list[tuple[datetime, datetime]]:
    """The window's occurrences, expanded from scratch with the libraries
    (no anchor shifting, no merging), for checking admissions."""
    first = start.astimezone(zone).replace(tzinfo=None) - timedelta(days=2)
    last = end.astimezone(zone).replace(tzinfo=None) + timedelta(days=1)
    if window.cron is not None:
        it = croniter(window.cron, first)
        walls = []
        while (fire := it.get_next(datetime)) < last:
            walls.append(fire)
    elif window.rrule is not None:
        walls = list(rrulestr(window.rrule, dtstart=RRULE_ANCHOR).between(first, last, inc=True))
    else:
        walls = [
            datetime.combine(first.date() + timedelta(days=n), window.start)
            for n in range((last - first).days + 1)
            if (first.date() + timedelta(days=n)).weekday() in window.days
        ]
    out = []
    for wall in walls:
        opens = wall.replace(tzinfo=zone).astimezone(UTC)
        if window.duration is not None:
            closes = opens + timedelta(seconds=window.duration)
        else:
            assert window.end is not None
            close_wall = datetime.combine(wall.date(), window.end)
            if close_wall <= wall:
                close_wall += timedelta(days=1)
            closes = close_wall.replace(tzinfo=zone).astimezone(UTC)
        out.append((opens, closes))
    return out


def _covered(at: datetime, until: datetime, spans: list[tuple[datetime, datetime]]) -> bool:
    """Whether [at, until] lies in a chain of overlapping spans."""
    reach = at
    for opens, closes in sorted(spans):
        if opens <= reach < closes or (opens <= reach and closes >= until):
            reach = max(reach, closes)
        if reach >= until:
            return True
    return reach >= until


@st.composite
def scheduled_windows(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["cron", "rrule", "weekly"]))
    hour = draw(st.sampled_from([0, 1, 2, 3, 22, 23]))  # around the DST changes
    minute = draw(st.sampled_from([0, 30]))
    budget = draw(st.sampled_from([None, 1, 2, "20%", "50%"]))
    window: dict[str, Any]
    if kind == "cron":
        days = draw(st.sampled_from(["*", "sun", "sat,sun", "mon-fri", "sun#2"]))
        window = {"cron": f"{minute} {hour} * * {days}"}
    elif kind == "rrule":
        byday = draw(st.sampled_from(["", ";BYDAY=SU", ";BYDAY=2SU,-1SA", ";BYDAY=MO,WE,FR"]))
        freq = "MONTHLY" if "2SU" in byday else draw(st.sampled_from(["DAILY", "WEEKLY"]))
        window = {"rrule": f"FREQ={freq};BYHOUR={hour};BYMINUTE={minute}{byday}"}
    else:
        end = (hour + draw(st.integers(1, 6))) % 24
        return {
            "start": f"{hour:02d}:{minute:02d}",
            "end": f"{end:02d}:00",
            "max_hosts_in_maintenance": budget,
        }
    if draw(st.booleans()):
        window["duration"] = draw(st.sampled_from(["1h", "2h30m", "PT4H", 5400]))
    else:
        window["end"] = f"{(hour + draw(st.integers(1, 6))) % 24:02d}:00"
    window["max_hosts_in_maintenance"] = budget
    return window


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    windows=st.lists(scheduled_windows(), min_size=1, max_size=3),
    zone=st.sampled_from(["Europe/Paris", "America/New_York"]),
    start=st.sampled_from(
        ["2026-03-01T12:00", "2026-03-25T00:00", "2026-10-20T00:00", "2026-10-28T18:00"]
    ),
    hosts=st.integers(2, 60),
    minutes=st.sampled_from([20, 45, 90]),
    cap=st.sampled_from([None, 2, "25%"]),
)
def test_weeks_of_admissions_stay_in_their_windows_and_budgets(
    windows: list[dict[str, Any]], zone: str, start: str, hosts: int, minutes: int, cap: Any
) -> None:
    controls = Controls.from_dict(
        {"timezone": zone, "windows": windows, "max_hosts_in_maintenance": cap}
    )
    begin, end = utc(start), utc(start) + timedelta(weeks=5)
    length = timedelta(minutes=minutes)
    oracle = {
        w: _oracle(w, controls.zone, begin, end + timedelta(days=1)) for w in controls.windows
    }
    t, running, started = begin, [], []
    admitted: list[tuple[datetime, int]] = []
    while t < end and len(admitted) < hosts:
        running = [f for f in running if f > t]
        history = PacingHistory(
            started=tuple(started),
            in_maintenance=len(running),
            estimate_seconds=length.total_seconds(),
            hosts=hosts,
        )
        answer = admit(t, controls, history)
        if answer.ok:
            admitted.append((t, len(running) + 1))
            started.append(t)
            running.append(t + length)
            continue
        wakes = [w for w in (answer.wait_until, *running) if w is not None and w > t]
        if not wakes:
            break
        t = min(wakes)
    if not admitted:  # no window long enough for a host, or none before the span ends
        assert "long enough" in (answer.reason or "") or (
            answer.wait_until is not None and answer.wait_until >= end
        ), answer
    assert t >= end or len(admitted) == hosts or answer.wait_until is None
    for at, count in admitted:
        if cap is not None:
            assert count <= resolve_cap(cap if isinstance(cap, int) else Percent(25), hosts)
        # Some window (with others of the same budget) holds the whole host, and
        # its budget had room for it.
        fits = []
        for w in controls.windows:
            same = [
                s
                for v, spans in oracle.items()
                if v.max_hosts_in_maintenance == w.max_hosts_in_maintenance
                for s in spans
            ]
            if _covered(at, at + length, same):
                fits.append(w.max_hosts_in_maintenance)
        assert fits, f"a host admitted at {at} outside its windows"
        assert any(b is None or count <= resolve_cap(b, hosts) for b in fits), (at, count, fits)


# --------------------------------------------------------------------------- sessions


def test_a_session_in_second_sunday_windows_keeps_their_budget_across_months() -> None:
    clock = SimClock(start=datetime(2026, 2, 20, tzinfo=UTC))
    cloud = SimulatedCloud()
    for i in range(10):
        cloud.add_host(f"cmp-{i}", vcpus=8)
        cloud.add_instance(f"vm-{i}", f"p{i % 5}", f"cmp-{i}", vcpus=2)
    engine = Engine(
        clock=clock,
        plugins=[cloud, TimedAction("upgrade", 3000)],
        load_entry_points=False,
    )
    try:
        sid = engine.create_session(
            SessionRequest(
                workflow="constrained",
                actions=[ActionSpec("upgrade", "host")],
                controls={**SECOND_SUNDAY, "host_seconds": 3600},
            )
        )
        view, _ = drive(engine, clock, sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        worked = spans(cloud, view)
        windows = spans_of(SECOND_SUNDAY, "2026-02-20T00:00", 200)
        for host, (first, _end) in worked.items():
            inside = [w for w in windows if w[0] <= first < w[1]]
            assert inside, f"{host} started at {first}, outside the second-Sunday windows"
            window = inside[0]
            at_once = sum(1 for a, b in worked.values() if window[0] <= a <= first < b)
            assert at_once <= 2  # 20% of 10 hosts
        # Three hosts a window at most (2 at once, an hour each in four), so several months.
        months = {worked[h][0].month for h in worked}
        assert len(months) >= 2
    finally:
        engine.close()


@settings(max_examples=60, deadline=None)
@given(
    rule=st.sampled_from(
        [
            "FREQ=HOURLY;INTERVAL=7",
            "FREQ=DAILY;INTERVAL=3;BYHOUR=1",
            "FREQ=WEEKLY;INTERVAL=2",
            "FREQ=MONTHLY;INTERVAL=5;BYDAY=2SU",
            "FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU;BYHOUR=2",
            "FREQ=MONTHLY;BYMONTHDAY=31",
            "DTSTART:20251231T220000\nRRULE:FREQ=MONTHLY",
            "DTSTART:20240115T013000\nRRULE:FREQ=WEEKLY;INTERVAL=3;COUNT=40",
            "FREQ=DAILY;UNTIL=20260601T000000",
        ]
    ),
    start=st.datetimes(datetime(2024, 1, 1), datetime(2028, 1, 1)),
    days=st.integers(1, 120),
)
def test_rrule_expansion_by_month_matches_the_plain_expansion(
    rule: str, start: datetime, days: int
) -> None:
    # The expansion starts each month near it (whole periods after DTSTART),
    # which must not change a single occurrence.
    from fenix_core.recurrence import check_rrule, rrule_starts

    text = check_rrule(rule, "rrule")
    end = start + timedelta(days=days)
    plain = rrulestr(text, dtstart=RRULE_ANCHOR).between(start, end, inc=True)
    assert rrule_starts(text, start, end) == [t for t in plain if t < end]
