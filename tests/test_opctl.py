"""Operational controls end to end on simulated time: windows, rate caps,
health gates, stuck-work escalation and the ETA. Pause, resume, cancel and a
plug-in gate that says stop are the Engine API's (tests/test_engine_api.py)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import Recorder, drive

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.controls import Controls, window_occurrences
from fenix_core.errors import InvalidInput
from fenix_core.model import SessionView
from fenix_core.testing import SimulatedCloud, TimedAction, migrations_per_instance
from fenix_core.testing.http_server import LoopbackServer

FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED")


def cluster(cloud: SimulatedCloud, loaded: int, *, spare: int = 1, vcpus: int = 2) -> list[str]:
    """``loaded`` computes with one instance each plus ``spare`` empty ones."""
    names = []
    for i in range(loaded):
        cloud.add_host(f"cmp-{i}", vcpus=8)
        cloud.add_instance(f"vm-{i}", "p1", f"cmp-{i}", vcpus=vcpus)
        names.append(f"cmp-{i}")
    for i in range(spare):
        cloud.add_host(f"spare-{i}", vcpus=8)
        names.append(f"spare-{i}")
    return names


def first_touch(cloud: SimulatedCloud) -> dict[str, datetime]:
    """When work on each host began: its first migration off it, or its disable."""
    seen: dict[str, datetime] = {}
    for e in cloud.events:
        if e.kind in ("migration_started", "disable_host") and e.host not in seen:
            seen[str(e.host)] = e.time
    return seen


def host_spans(cloud: SimulatedCloud, view: SessionView) -> dict[str, tuple[datetime, datetime]]:
    touched = first_touch(cloud)
    spans = {}
    for host in view.hosts:
        assert host.finished_at is not None, host
        begin = touched.get(host.name, host.started_at)
        assert begin is not None
        spans[host.name] = (begin, host.finished_at)
    return spans


def events(cloud: SimulatedCloud, kind: str, after: datetime | None = None) -> list[Any]:
    return [e for e in cloud.events if e.kind == kind and (after is None or e.time > after)]


# --------------------------------------------------------------------------- windows and pacing


def test_session_over_three_nightly_windows_never_starts_what_cannot_finish(
    fenix_cloud, fenix_clock, fenix_engine_factory, recorder_factory
):
    fenix_clock.advance_to(datetime(2026, 3, 2, 12, tzinfo=UTC))  # a Monday, noon
    hosts = cluster(fenix_cloud, 5)
    engine = fenix_engine_factory(TimedAction("upgrade", seconds=7200))
    recorder: Recorder = recorder_factory(engine)
    controls = {
        "windows": [{"start": "22:00", "end": "04:00"}],
        "timezone": "Europe/Paris",
        "host_seconds": 7300,
    }
    sid = engine.create_session(
        SessionRequest(hosts=hosts, actions=[ActionSpec("upgrade", "host")], controls=controls)
    )
    waiting = drive(engine, fenix_clock, sid, lambda v: v.waiting is not None)
    assert "outside the maintenance windows" in str(waiting.waiting)
    assert any(
        "outside the maintenance windows" in str(p.get("reason"))
        for p in recorder.of("maintenance_session")
    )
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    nights = list(
        window_occurrences(
            Controls.from_dict(controls), datetime(2026, 3, 2, tzinfo=UTC), fenix_clock.now()
        )
    )
    used = set()
    for host, (begin, end) in host_spans(fenix_cloud, view).items():
        inside = [n for n in nights if n[0] <= begin and end <= n[1]]
        assert inside, f"{host} ran {begin} - {end}, outside any one window"
        used.add(inside[0])
    assert len(used) == 3
    # and nothing at all happened on the cloud outside the windows
    for e in fenix_cloud.events:
        if e.kind != "host_added":
            assert any(o <= e.time <= c for o, c in nights), e


def test_per_day_rate_cap(fenix_cloud, fenix_clock, fenix_engine_factory):
    hosts = cluster(fenix_cloud, 4)
    engine = fenix_engine_factory(TimedAction("upgrade", seconds=600))
    sid = engine.create_session(
        SessionRequest(
            hosts=hosts,
            actions=[ActionSpec("upgrade", "host")],
            controls={"max_hosts_per_day": 2},
        )
    )
    reasons: set[str] = set()
    view = drive(engine, fenix_clock, sid, on_step=lambda v: reasons.add(str(v.waiting)))
    assert view.state == "MAINTENANCE_DONE"
    starts = sorted(host_spans(fenix_cloud, view)[h][0] for h in hosts)
    for s in starts:
        assert sum(1 for x in starts if s <= x < s + timedelta(days=1)) <= 2
    assert starts[-1] - starts[0] >= timedelta(days=2)  # 5 hosts, 2 a day: a third day
    assert any("at most 2 host(s) started per day" in r for r in reasons)


# --------------------------------------------------------------------------- gates


def test_instances_back_gate_holds_the_next_host_until_they_are_ready(
    fenix_clock, fenix_engine_factory
):
    cloud = SimulatedCloud(live_migration_seconds=20, ready_seconds=900, clock=fenix_clock)
    hosts = cluster(cloud, 3)
    engine = Engine(
        clock=fenix_clock,
        plugins=[cloud, TimedAction("upgrade", seconds=300)],
        load_entry_points=False,
    )
    sid = engine.create_session(
        SessionRequest(
            hosts=hosts,
            actions=[ActionSpec("upgrade", "host")],
            controls={"gates": [{"name": "instances_back", "soak_seconds": 300}]},
        )
    )
    held = drive(engine, fenix_clock, sid, lambda v: "not ready yet" in str(v.waiting))
    assert "gate instances_back" in str(held.waiting)
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    spans = host_spans(cloud, view)
    order = sorted(spans, key=lambda h: spans[h][1])
    ready_at = {
        e.instance_id: e.time + timedelta(seconds=900) for e in events(cloud, "migration_done")
    }
    checked = 0
    for previous, host in itertools.pairwise(order):
        moved = [e.instance_id for e in events(cloud, "migration_done") if e.detail == previous]
        if moved:
            back = max(ready_at[i] for i in moved)
            assert spans[host][0] >= back + timedelta(seconds=300)
            checked += 1
    assert checked >= 2
    engine.close()


class FlakyHealth:
    """A WSGI app: 503 for the first ``bad`` requests, then 200 {"status": "ok"}."""

    def __init__(self, bad: int) -> None:
        self.bad = bad
        self.requests = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.requests += 1
        if self.requests <= self.bad:
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps({"status": "degraded"}).encode()]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"status": "ok", "checks": [{"db": True}]}).encode()]


def test_http_gate_waits_for_the_health_endpoint(fenix_cloud, fenix_clock, fenix_engine_factory):
    pytest.importorskip("httpx")
    hosts = cluster(fenix_cloud, 1)
    engine = fenix_engine_factory(TimedAction("upgrade", seconds=60))
    app = FlakyHealth(bad=3)
    with LoopbackServer(app) as server:
        gate = {
            "name": "http",
            "url": f"{server.url}/health",
            "json_field": "status",
            "json_value": "ok",
            "retry_after": 60,
        }
        sid = engine.create_session(SessionRequest(hosts=hosts, controls={"gates": [gate]}))
        held = drive(engine, fenix_clock, sid, lambda v: "503" in str(v.waiting))
        assert "answered 503, expected 200" in str(held.waiting)
        view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    assert app.requests >= 4 + 1  # 3 refusals, then one ok per host


def test_gates_are_checked_at_create_time(fenix_cloud, fenix_engine_factory):
    cluster(fenix_cloud, 1)
    engine = fenix_engine_factory()
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"controls": {"gates": [{"name": "nope"}]}})
    assert info.value.field == "controls.gates[0].name"
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"controls": {"gates": [{"name": "http", "url": "ftp://x"}]}})
    assert info.value.field == "controls.gates[0].url"
    assert engine.list_sessions() == []


# --------------------------------------------------------------------------- stuck work


def stuck_run(
    fenix_cloud: SimulatedCloud,
    fenix_engine_factory: Callable[..., Engine],
    escalation: dict[str, str],
    **request: Any,
) -> tuple[Engine, str]:
    hosts = cluster(fenix_cloud, 3)
    fenix_cloud.stall_next_migration("vm-1", 1500)
    engine = fenix_engine_factory()
    sid = engine.create_session(
        SessionRequest(
            hosts=hosts,
            timeouts={"migration": 600},
            controls={"escalation": escalation},
            **request,
        )
    )
    return engine, sid


def test_stuck_migration_wait_and_notify(
    fenix_cloud, fenix_clock, fenix_engine_factory, recorder_factory
):
    engine, sid = stuck_run(fenix_cloud, fenix_engine_factory, {"migration": "wait_and_notify"})
    recorder = recorder_factory(engine)
    stuck = drive(engine, fenix_clock, sid, lambda v: bool(v.stuck))
    (entry,) = stuck.stuck
    assert (entry.kind, entry.instance_id, entry.host, entry.policy) == (
        "migration",
        "vm-1",
        "cmp-1",
        "wait_and_notify",
    )
    assert "timed out after 600 s" in entry.detail
    assert "LIVE_MIGRATE cmp-1 ->" in entry.detail  # the cloud's last word on it
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    assert view.stuck == ()
    notices = [
        p["reason"]
        for p in recorder.of("maintenance_session")
        if "migration of vm-1 off cmp-1 is stuck" in str(p.get("reason"))
    ]
    assert len(notices) == 2  # at 600 s and 1200 s; done at 1500 s
    assert migrations_per_instance(fenix_cloud)["vm-1"] == 1


def test_stuck_migration_fail(fenix_cloud, fenix_clock, fenix_engine_factory):
    engine, sid = stuck_run(fenix_cloud, fenix_engine_factory, {"migration": "fail"})
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "migration of vm-1 off cmp-1 is stuck" in str(view.reason)
    assert [s.policy for s in view.stuck] == ["fail"]
    started = [e for e in events(fenix_cloud, "migration_started") if e.instance_id == "vm-1"]
    assert len(started) == 1  # failed at once, no retry
    assert all(fenix_cloud.is_enabled(h.name) for h in view.hosts)


def test_stuck_migration_skips_the_host(fenix_cloud, fenix_clock, fenix_engine_factory):
    engine, sid = stuck_run(fenix_cloud, fenix_engine_factory, {"migration": "skip_host"})
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    states = {h.name: h.state for h in view.hosts}
    assert states.pop("cmp-1") == "SKIPPED"
    assert set(states.values()) == {"MAINTAINED"}
    assert "skipped: migration of vm-1 off cmp-1 is stuck" in str(view.host("cmp-1").reason)
    assert view.progress is not None
    assert view.progress.hosts_skipped == 1


def test_host_that_stays_down_is_skipped_and_left_disabled(
    fenix_cloud, fenix_clock, fenix_engine_factory
):
    hosts = cluster(fenix_cloud, 3)
    fenix_cloud.host_stays_down("cmp-2")
    engine = fenix_engine_factory()
    sid = engine.create_session(
        SessionRequest(
            hosts=hosts,
            timeouts={"host_up": 900},
            controls={"escalation": {"host_up": "skip_host"}},
        )
    )
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_DONE"
    assert view.host("cmp-2").state == "SKIPPED"
    assert not fenix_cloud.is_enabled("cmp-2")
    assert all(fenix_cloud.is_enabled(h) for h in hosts if h != "cmp-2")


# --------------------------------------------------------------------------- progress and ETA


def test_eta_is_within_20_percent_from_the_first_third_on(
    fenix_cloud, fenix_clock, fenix_engine_factory
):
    hosts = cluster(fenix_cloud, 11)
    engine = fenix_engine_factory(TimedAction("upgrade", seconds=900))
    sid = engine.create_session(
        SessionRequest(
            hosts=hosts,
            actions=[ActionSpec("upgrade", "host")],
            controls={"settle_seconds": 300},
        )
    )
    started = fenix_clock.now()
    samples: dict[int, tuple[datetime, datetime | None]] = {}

    def sample(view: SessionView) -> None:
        progress = view.progress
        assert progress is not None
        total = progress.hosts_done + progress.hosts_in_progress + progress.hosts_waiting
        assert total == len(hosts)
        samples.setdefault(progress.hosts_done, (fenix_clock.now(), progress.estimated_end))

    view = drive(engine, fenix_clock, sid, on_step=sample)
    assert view.state == "MAINTENANCE_DONE"
    assert view.progress is not None
    assert set(view.progress.durations) == set(hosts)
    end = fenix_clock.now()
    checked = 0
    for done, (when, predicted) in samples.items():
        if done < len(hosts) / 3 or done == len(hosts):
            continue
        assert predicted is not None
        remaining = (end - when).total_seconds()
        error = abs((predicted - end).total_seconds())
        assert error <= 0.2 * remaining, (done, predicted, end)
        checked += 1
    assert checked >= 6
    assert end - started > timedelta(hours=3)
