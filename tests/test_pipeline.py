"""The shared per-host pipeline (fenix_core.core.pipeline): pause, windows,
pacing, gates and settle per host over a constant-size PipelineState, with
hypothesis over window sets and caps across simulated days."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.controls import Controls, estimate_end, window_occurrences
from fenix_core.core.pipeline import GateCheck, HostPipeline, PipelineState

PARIS = ZoneInfo("Europe/Paris")
NIGHTLY = {"windows": [{"start": "22:00", "end": "04:00"}], "timezone": "Europe/Paris"}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=PARIS).astimezone(UTC)


def pipeline(controls: object = None) -> HostPipeline:
    return HostPipeline(Controls.from_dict(controls), PipelineState())


# --------------------------------------------------------------------------- windows


def test_a_host_waits_outside_the_window_until_it_opens() -> None:
    p = pipeline(NIGHTLY)
    answer, gate = p.admit("cmp-0", at("2026-03-03T12:00"))
    assert (answer.admitted, answer.until, gate) == (False, at("2026-03-03T22:00"), None)
    assert "outside the maintenance windows" in (answer.reason or "")
    assert p.next_check() == at("2026-03-03T22:00")
    assert p.state.in_maintenance == 0
    assert p.admit("cmp-0", at("2026-03-03T22:00"))[0].admitted
    assert p.next_check() is None
    assert p.state.in_maintenance == 1


def test_a_host_that_does_not_fit_the_open_window_waits_for_the_next() -> None:
    p = HostPipeline(Controls.from_dict({**NIGHTLY, "host_seconds": 7200}), PipelineState())
    late, _ = p.admit("cmp-0", at("2026-03-03T02:30"))
    assert (late.admitted, late.until) == (False, at("2026-03-03T22:00"))
    assert "window ends before" in (late.reason or "")


def test_measured_durations_replace_the_declared_estimate() -> None:
    p = HostPipeline(Controls.from_dict({**NIGHTLY, "host_seconds": 600}), PipelineState())
    t = at("2026-03-02T22:00")
    assert p.admit("a", t)[0].admitted
    p.finished("a", t + timedelta(hours=3), started_at=t)  # took 3 h, not 10 min
    # 02:00: 2 h left in the window, the longest host took 3 h
    answer, _ = p.admit("b", at("2026-03-03T02:00"))
    assert (answer.admitted, answer.until) == (False, at("2026-03-03T22:00"))


def test_no_window_long_enough_is_said_plainly() -> None:
    p = HostPipeline(Controls.from_dict({**NIGHTLY, "host_seconds": 8 * 3600}), PipelineState())
    answer, _ = p.admit("a", at("2026-03-02T23:00"))
    assert (answer.admitted, answer.until) == (False, None)
    assert "long enough" in (answer.reason or "")


# --------------------------------------------------------------------------- pacing


def test_hosts_in_maintenance_cap_waits_for_a_host_to_finish() -> None:
    p = pipeline({"max_hosts_in_maintenance": 2})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert p.admit("a", t)[0].admitted
    assert p.admit("b", t)[0].admitted
    full, _ = p.admit("c", t)
    assert (full.admitted, full.until) == (False, None)
    assert "at most 2 at once" in (full.reason or "")
    p.finished("a", t + timedelta(minutes=5), started_at=t)
    assert p.admit("c", t + timedelta(minutes=5))[0].admitted


def test_settle_delay_counts_from_the_last_finish() -> None:
    p = pipeline({"settle_seconds": 300})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert p.admit("a", t)[0].admitted
    p.finished("a", t + timedelta(seconds=100), started_at=t)
    answer, _ = p.admit("b", t + timedelta(seconds=200))
    assert answer.until == t + timedelta(seconds=400)
    assert "settling" in (answer.reason or "")
    assert p.admit("b", t + timedelta(seconds=400))[0].admitted


def test_rate_caps_keep_only_the_starts_they_look_at() -> None:
    p = pipeline({"max_hosts_per_hour": 2, "max_hosts_per_day": 3})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(10):
        answer, _ = p.admit(f"h{n}", t)
        if not answer.admitted:
            assert answer.until is not None
            t = answer.until
            assert p.admit(f"h{n}", t)[0].admitted
        p.finished(f"h{n}", t, started_at=t)
    assert len(p.state.recent_starts) == 3
    assert p.state.started == p.state.finished == 10


def test_removed_and_skipped_hosts_free_their_place_without_a_duration() -> None:
    # issue 17: a host removed from the cloud mid-session counts as finished work
    p = pipeline({"max_hosts_in_maintenance": 1})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    assert p.admit("a", t)[0].admitted
    assert not p.admit("b", t)[0].admitted
    p.released("a")
    assert p.state.durations_count == 0
    assert p.state.finished == 1
    assert p.admit("b", t)[0].admitted


# --------------------------------------------------------------------------- pause, gates


def test_pause_holds_every_host_until_resumed() -> None:
    p = pipeline()
    t = datetime(2026, 1, 1, tzinfo=UTC)
    p.pause("change freeze")
    answer, _ = p.admit("a", t)
    assert (answer.admitted, answer.reason) == (False, "paused: change freeze")
    assert p.next_check() is None
    p.resume()
    assert p.admit("a", t)[0].admitted


def test_gates_run_one_after_another_before_a_host_starts() -> None:
    p = pipeline({"gates": [{"name": "instances_back"}, {"name": "http", "url": "http://x"}]})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    answer, gate = p.admit("a", t)
    assert not answer.admitted
    assert isinstance(gate, GateCheck)
    assert (gate.host, gate.spec.name) == ("a", "instances_back")
    assert p.admit("a", t) == (answer, None)  # running: not started twice
    p.gate_ended("a", passed=False)
    answer, again = p.admit("a", t)
    assert again is not None
    assert again.spec.name == "instances_back"
    p.gate_ended("a", passed=True)
    answer, second = p.admit("a", t)
    assert second is not None
    assert second.spec.name == "http"
    assert second.params(["vm-1"])["gate"] == "http"
    p.gate_ended("a", passed=True)
    assert p.admit("a", t) == (answer.__class__("a", True), None)
    # the next host starts its gates from the first
    _, first = p.admit("b", t)
    assert first is not None
    assert first.spec.name == "instances_back"


def test_a_gate_saying_stop_pauses_the_session() -> None:
    p = pipeline({"gates": [{"name": "instances_back"}]})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    p.admit("a", t)
    p.gate_ended("a", passed=False, stop="gate instances_back said stop")
    assert p.state.paused
    assert p.admit("a", t)[0].reason == "paused: gate instances_back said stop"


def test_the_state_round_trips_and_stays_small() -> None:
    p = pipeline({"max_hosts_per_hour": 3, "settle_seconds": 10})
    t = datetime(2026, 1, 1, tzinfo=UTC)
    for n in range(300):
        answer, _ = p.admit(f"h{n}", t)
        t = answer.until or t
        if answer.admitted:
            p.finished(f"h{n}", t + timedelta(minutes=1), started_at=t)
            t += timedelta(minutes=1)
    body = p.state.to_json()
    assert PipelineState.from_json(body, PipelineState.schema_version) == p.state
    assert len(json.dumps(body)) < 1000


# --------------------------------------------------------------------------- simulated days

START = datetime(2026, 3, 2, tzinfo=UTC)
_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@st.composite
def fleets(draw: st.DrawFn) -> tuple[Controls, list[int]]:
    windows = []
    for _ in range(draw(st.integers(1, 3))):
        start = draw(st.integers(0, 23 * 60 + 59))
        length = draw(st.integers(120, 10 * 60))
        end = (start + length) % (24 * 60)
        windows.append(
            {
                "days": draw(st.lists(st.sampled_from(_DAYS), min_size=1, unique=True)),
                "start": f"{start // 60:02d}:{start % 60:02d}",
                "end": f"{end // 60:02d}:{end % 60:02d}",
            }
        )
    blackout = draw(st.lists(st.dates(date(2026, 3, 1), date(2026, 3, 12)), max_size=3))
    controls = Controls.from_dict(
        {
            "windows": windows,
            "timezone": draw(st.sampled_from(["UTC", "Europe/Paris", "America/New_York"])),
            "blackout_dates": [d.isoformat() for d in blackout],
            "max_hosts_in_maintenance": draw(st.none() | st.integers(1, 4)),
            "max_hosts_per_hour": draw(st.none() | st.integers(1, 5)),
            "max_hosts_per_day": draw(st.none() | st.integers(2, 12)),
            "settle_seconds": draw(st.sampled_from([0, 60, 900])),
            "host_seconds": 55 * 60,
        }
    )
    # no host is longer than declared, nor than the shortest window (2 h, 1 h on a DST night)
    durations = draw(st.lists(st.integers(60, 55 * 60), min_size=1, max_size=14))
    return controls, durations


@settings(max_examples=60, deadline=None)
@given(fleets())
def test_over_simulated_days_windows_and_caps_hold_and_every_host_starts(
    fleet: tuple[Controls, list[int]],
) -> None:
    controls, durations = fleet
    p = HostPipeline(controls, PipelineState())
    pending = list(range(len(durations)))
    running: dict[int, tuple[datetime, datetime]] = {}  # host -> (start, end)
    starts: list[tuple[datetime, datetime]] = []  # (start, start + estimate) of every host
    t = START
    horizon = START + timedelta(days=60)
    while (pending or running) and t < horizon:
        for host, (began, ends) in sorted(running.items()):
            if ends <= t:
                p.finished(f"h{host}", ends, started_at=began)
                del running[host]
        for host in list(pending):
            expected = timedelta(seconds=p.history().estimate_seconds or 0)
            answer, gate = p.admit(f"h{host}", t)
            assert gate is None
            if not answer.admitted:
                break  # one host at the head of the line: the rest wait too
            pending.remove(host)
            running[host] = (t, t + timedelta(seconds=durations[host]))
            starts.append((t, t + expected))
            cap = controls.max_hosts_in_maintenance
            assert cap is None or len(running) <= cap, "more hosts at once than the cap"
            assert p.state.in_maintenance == len(running)
        wakes = [end for _, end in running.values()]
        if (check := p.next_check()) is not None:
            wakes.append(check)
        if not wakes:
            break
        t = max(t + timedelta(seconds=1), min(wakes))
    assert not pending, "a host was never admitted though windows recur"
    assert not running
    for began, ends in starts:
        inside = [
            (o, c) for o, c in window_occurrences(controls, began, ends) if o <= began and ends <= c
        ]
        assert inside, f"a host admitted outside a window it fits ({began} - {ends})"
    times = sorted(b for b, _ in starts)
    for s in times:
        if controls.max_hosts_per_hour:
            in_hour = sum(1 for x in times if s <= x < s + timedelta(hours=1))
            assert in_hour <= controls.max_hosts_per_hour
        if controls.max_hosts_per_day:
            assert sum(1 for x in times if s <= x < s + timedelta(days=1)) <= (
                controls.max_hosts_per_day
            )


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(60, 4 * 3600), min_size=1, max_size=8),
    st.integers(0, 12),
    st.sampled_from([{}, NIGHTLY, {"max_hosts_in_maintenance": 2, "settle_seconds": 300}]),
)
def test_the_estimate_from_the_constant_state_equals_the_one_from_every_duration(
    durations: list[int], pending: int, controls: dict[str, object]
) -> None:
    p = pipeline(controls)
    t = at("2026-03-02T23:00")
    for n, seconds in enumerate(durations):  # hosts measured one after another
        p.state.in_maintenance += 1
        p.finished(f"h{n}", t + timedelta(seconds=seconds), started_at=t)
    now = t + timedelta(seconds=max(durations))
    history = p.history()
    expected = estimate_end(
        now,
        p.controls,
        history,
        durations=[float(d) for d in durations],
        in_progress=[],
        pending=pending,
    )
    got = p.estimate_end(now, in_progress=[], pending=pending)
    if expected is None or got is None:
        assert got == expected
    else:  # the mean is a float sum either way: equal to the microsecond
        assert abs((got - expected).total_seconds()) < 1e-3
