"""The pure logic of operational controls: parsing, windows, pacing, estimates
and back-off (fenix_core.controls), with hypothesis for the window and pacing rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core import SessionRequest
from fenix_core.controls import (
    Controls,
    PacingHistory,
    admit,
    estimate_end,
    jittered_backoff,
    next_window_start,
    window_occurrences,
)
from fenix_core.errors import InvalidInput

PARIS = ZoneInfo("Europe/Paris")
NIGHTLY = {"windows": [{"start": "22:00", "end": "04:00"}], "timezone": "Europe/Paris"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).astimezone(UTC)


# --------------------------------------------------------------------------- parsing


def test_request_round_trips_its_controls() -> None:
    data = {
        "windows": [{"days": ["mon", "Friday"], "start": "22:30", "end": "05:00"}],
        "timezone": "America/New_York",
        "blackout_dates": ["2026-12-24", "2026-12-25"],
        "max_hosts_in_maintenance": 2,
        "max_hosts_per_hour": 3,
        "max_hosts_per_day": 10,
        "settle_seconds": 120,
        "host_seconds": 1800,
        "gates": [{"name": "http", "url": "http://x/health", "expect_status": 204}],
        "gate_timeout": 600,
        "escalation": {"migration": "wait_and_notify", "action": "skip_host", "gate": "fail"},
    }
    request = SessionRequest.from_dict({"hosts": ["a"], "controls": data})
    controls = request.controls
    assert controls.windows[0].days == (0, 4)
    assert controls.windows[0].start == time(22, 30)
    assert controls.blackout_dates == (date(2026, 12, 24), date(2026, 12, 25))
    assert controls.gates[0].params == {"url": "http://x/health", "expect_status": 204}
    assert controls.policy("action") == "skip_host"
    assert controls.policy("host_up") is None
    assert SessionRequest.from_dict(request.to_dict()) == request
    assert SessionRequest.from_dict({"hosts": ["a"]}).controls == Controls()


@pytest.mark.parametrize(
    ("controls", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "controls.timezone"),
        ({"windows": [{"start": "22:00"}]}, "controls.windows[0].end"),
        ({"windows": [{"start": "25:00", "end": "01:00"}]}, "controls.windows[0].start"),
        (
            {"windows": [{"days": ["funday"], "start": "1:00", "end": "2:00"}]},
            "controls.windows[0].days[0]",
        ),
        ({"windows": [{"days": [], "start": "01:00", "end": "02:00"}]}, "controls.windows[0].days"),
        ({"blackout_dates": ["24/12/2026"]}, "controls.blackout_dates[0]"),
        ({"max_hosts_per_day": 0}, "controls.max_hosts_per_day"),
        ({"max_hosts_in_maintenance": True}, "controls.max_hosts_in_maintenance"),
        ({"settle_seconds": -1}, "controls.settle_seconds"),
        ({"host_seconds": 0}, "controls.host_seconds"),
        ({"escalation": {"migration": "panic"}}, "controls.escalation.migration"),
        ({"escalation": {"coffee": "fail"}}, "controls.escalation.coffee"),
        ({"gates": [{"url": "http://x"}]}, "controls.gates[0].name"),
        ({"window": []}, "controls.window"),
        ("nightly", "controls"),
    ],
)
def test_bad_controls_name_the_field(controls: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SessionRequest.from_dict({"controls": controls})
    assert info.value.field == field


# --------------------------------------------------------------------------- windows


def test_a_nightly_window_runs_past_midnight_in_its_time_zone() -> None:
    controls = Controls.from_dict(NIGHTLY)
    start = at("2026-03-02T12:00")
    got = list(window_occurrences(controls, start, start + timedelta(days=2)))
    assert got[:2] == [
        (at("2026-03-02T22:00"), at("2026-03-03T04:00")),
        (at("2026-03-03T22:00"), at("2026-03-04T04:00")),
    ]


def test_blackout_dates_and_weekdays_cancel_windows() -> None:
    controls = Controls.from_dict(
        {
            **NIGHTLY,
            "blackout_dates": ["2026-03-03"],
            "windows": [{"days": ["mon", "tue", "wed"], "start": "22:00", "end": "04:00"}],
        }
    )
    # Monday 2026-03-02 opens; Tuesday is a blackout; Wednesday opens; Thu-Sun do not.
    start = at("2026-03-02T23:00")
    assert next_window_start(start, controls) == start
    assert next_window_start(at("2026-03-03T05:00"), controls) == at("2026-03-04T22:00")
    assert next_window_start(at("2026-03-05T05:00"), controls) == at("2026-03-09T22:00")


def test_a_host_that_does_not_fit_waits_for_the_next_window() -> None:
    controls = Controls.from_dict(NIGHTLY)
    history = PacingHistory(estimate_seconds=2 * 3600)
    assert admit(at("2026-03-02T23:00"), controls, history).ok
    late = admit(at("2026-03-03T02:30"), controls, history)
    assert not late.ok
    assert late.wait_until == at("2026-03-03T22:00")
    assert "window" in (late.reason or "")
    outside = admit(at("2026-03-03T12:00"), controls, history)
    assert (outside.ok, outside.wait_until) == (False, at("2026-03-03T22:00"))
    assert "outside the maintenance windows" in (outside.reason or "")


def test_no_window_long_enough_is_said_plainly() -> None:
    controls = Controls.from_dict(NIGHTLY)
    # (the longest night is 7 h: the one when the clocks go back in October)
    answer = admit(at("2026-03-02T23:00"), controls, PacingHistory(estimate_seconds=8 * 3600))
    assert not answer.ok
    assert answer.wait_until is None
    assert "long enough" in (answer.reason or "")


def test_dst_change_shortens_the_night_window() -> None:
    # Europe/Paris springs forward on 2026-03-29 at 02:00: that night's
    # 22:00-04:00 window lasts 5 hours, not 6.
    controls = Controls.from_dict(NIGHTLY)
    (opens, closes), *_ = window_occurrences(
        controls, at("2026-03-28T12:00"), at("2026-03-29T12:00")
    )
    assert closes - opens == timedelta(hours=5)


# --------------------------------------------------------------------------- pacing


def test_hosts_in_maintenance_cap_waits_for_an_event() -> None:
    controls = Controls(max_hosts_in_maintenance=2)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert admit(now, controls, PacingHistory(in_maintenance=1)).ok
    full = admit(now, controls, PacingHistory(in_maintenance=2))
    assert (full.ok, full.wait_until) == (False, None)
    assert "at most 2 at once" in (full.reason or "")


def test_settle_delay_counts_from_the_last_finish() -> None:
    controls = Controls(settle_seconds=300)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    answer = admit(now, controls, PacingHistory(last_finished=now - timedelta(seconds=100)))
    assert answer.wait_until == now + timedelta(seconds=200)
    assert "settling" in (answer.reason or "")


START = datetime(2026, 3, 2, tzinfo=UTC)
offsets = st.integers(min_value=0, max_value=14 * 24 * 3600)


@st.composite
def window_controls(draw: st.DrawFn) -> Controls:
    windows = []
    for _ in range(draw(st.integers(1, 3))):
        days = draw(
            st.lists(
                st.sampled_from(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]),
                min_size=1,
                unique=True,
            )
        )
        start = draw(st.integers(0, 23 * 60 + 59))
        length = draw(st.integers(30, 12 * 60))
        end = (start + length) % (24 * 60)
        windows.append(
            {
                "days": days,
                "start": f"{start // 60:02d}:{start % 60:02d}",
                "end": f"{end // 60:02d}:{end % 60:02d}",
            }
        )
    blackout = draw(st.lists(st.dates(date(2026, 3, 1), date(2026, 3, 20)), max_size=4))
    zone = draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]))
    return Controls.from_dict(
        {"windows": windows, "timezone": zone, "blackout_dates": [d.isoformat() for d in blackout]}
    )


@settings(max_examples=80, deadline=None)
@given(window_controls(), offsets, st.integers(0, 6 * 3600))
def test_admitted_hosts_fit_in_one_window_and_waits_are_exact(
    controls: Controls, offset: int, estimate: int
) -> None:
    now = START + timedelta(seconds=offset)
    history = PacingHistory(estimate_seconds=float(estimate))
    answer = admit(now, controls, history)
    if answer.ok:
        inside = [
            (o, c)
            for o, c in window_occurrences(controls, now, now + timedelta(seconds=1))
            if o <= now
        ]
        assert inside, "admitted outside every window"
        opens, closes = inside[0]
        assert now + timedelta(seconds=estimate) <= closes
        local = opens.astimezone(controls.zone)
        assert (
            local.date() not in controls.blackout_dates
        )  # opened on a day that is not blacked out
        return
    if answer.wait_until is None:
        assert all(
            (c - o).total_seconds() < estimate
            for o, c in window_occurrences(controls, now, now + timedelta(days=400))
        )
        return
    assert answer.wait_until > now
    assert admit(answer.wait_until, controls, history).ok
    # nothing in between would have been admitted
    for fraction in (0.25, 0.5, 0.999):
        between = now + (answer.wait_until - now) * fraction
        assert not admit(between, controls, history).ok


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 4),
    st.integers(1, 8),
    st.lists(st.integers(60, 4 * 3600), min_size=5, max_size=25),
)
def test_greedy_starts_never_exceed_the_rate_caps(
    per_hour: int, per_day: int, gaps: list[int]
) -> None:
    controls = Controls(max_hosts_per_hour=per_hour, max_hosts_per_day=per_day)
    started: list[datetime] = []
    t = START
    for gap in gaps:  # a host asks every `gap` seconds and starts when admitted
        answer = admit(t, controls, PacingHistory(started=tuple(started)))
        if not answer.ok:
            assert answer.wait_until is not None
            t = answer.wait_until
            assert admit(t, controls, PacingHistory(started=tuple(started))).ok
        started.append(t)
        t += timedelta(seconds=gap)
    for s in started:
        assert sum(1 for x in started if s <= x < s + timedelta(hours=1)) <= per_hour
        assert sum(1 for x in started if s <= x < s + timedelta(days=1)) <= per_day


# --------------------------------------------------------------------------- estimates, back-off


def test_estimate_plays_the_rest_through_the_windows() -> None:
    controls = Controls.from_dict(NIGHTLY)
    now = at("2026-03-02T23:00")
    # 5 hosts of 2 h each left, none in progress: 23-01 and 01-03 the first night
    # (03-05 would overrun 04:00), then 22-00, 00-02 and 02-04 the second.
    end = estimate_end(
        now, controls, PacingHistory(), durations=[7200.0], in_progress=[], pending=5
    )
    assert end == at("2026-03-04T04:00")


def test_estimate_for_a_serial_session_without_controls_is_the_sum() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    end = estimate_end(
        now,
        Controls(settle_seconds=60),
        PacingHistory(),
        durations=[600.0, 800.0],
        in_progress=[now - timedelta(seconds=100)],
        pending=3,
    )
    # in flight: 700 - 100 = 600 s left; then 3 x (60 s settle + 700 s)
    assert end == now + timedelta(seconds=600 + 3 * 760)


def test_estimate_is_unknown_without_any_duration() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert (
        estimate_end(now, Controls(), PacingHistory(), durations=[], in_progress=[], pending=2)
        is None
    )


@given(st.integers(1, 12), st.text(max_size=20))
def test_backoff_is_jittered_within_bounds_and_reproducible(attempt: int, seed: str) -> None:
    wait = jittered_backoff(attempt, base=30.0, cap=600.0, seed=seed)
    ceiling = min(600.0, 30.0 * 2 ** (attempt - 1))
    assert ceiling / 2 <= wait <= ceiling
    assert wait == jittered_backoff(attempt, base=30.0, cap=600.0, seed=seed)


def test_backoff_spreads_retries_of_different_instances() -> None:
    waits = {jittered_backoff(3, base=30.0, cap=600.0, seed=f"s:vm-{i}") for i in range(20)}
    assert len(waits) == 20
