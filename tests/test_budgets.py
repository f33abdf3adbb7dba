"""Disruption budgets: caps in percent of the session's hosts, topology caps
(zones, aggregates, racks), and the explicit rules of unconstrained projects;
pure admission first, then whole sessions on the SimulatedCloud with the
rolling and constrained workflows (hypothesis: caps never exceeded, on both
engines, in tests/test_core_budgets.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_lifecycle_controls import drive, most_at_once, spans

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.budgets import Percent, TopologyCap, describe_cap, resolve_cap, topology_refusal
from fenix_core.clock import SimClock
from fenix_core.controls import Controls, PacingHistory, admit
from fenix_core.errors import InvalidInput
from fenix_core.testing import SimulatedCloud, TimedAction

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)


# --------------------------------------------------------------------------- parsing


def test_percent_caps_round_trip_through_the_request() -> None:
    data = {
        "max_hosts_in_maintenance": "10%",
        "max_hosts_per_hour": "12.5%",
        "max_hosts_per_day": 40,
        "max_topology_in_maintenance": [{"key": "zone", "max": 1}, {"key": "rack", "max": 2}],
    }
    request = SessionRequest.from_dict({"controls": data})
    controls = request.controls
    assert controls.max_hosts_in_maintenance == Percent(10)
    assert controls.max_hosts_per_hour == Percent(12.5)
    assert controls.max_hosts_per_day == 40
    assert controls.max_topology_in_maintenance == (TopologyCap("zone", 1), TopologyCap("rack", 2))
    assert request.to_dict()["controls"]["max_hosts_in_maintenance"] == "10%"
    assert SessionRequest.from_dict(request.to_dict()) == request


@pytest.mark.parametrize(
    ("controls", "field"),
    [
        ({"max_hosts_in_maintenance": "0%"}, "controls.max_hosts_in_maintenance"),
        ({"max_hosts_in_maintenance": "101%"}, "controls.max_hosts_in_maintenance"),
        ({"max_hosts_in_maintenance": "ten%"}, "controls.max_hosts_in_maintenance"),
        ({"max_hosts_per_hour": "5"}, "controls.max_hosts_per_hour"),
        (
            {"max_topology_in_maintenance": [{"key": "zone", "max": 0}]},
            "controls.max_topology_in_maintenance[0].max",
        ),
        (
            {"max_topology_in_maintenance": [{"max": 1}]},
            "controls.max_topology_in_maintenance[0].key",
        ),
        (
            {"max_topology_in_maintenance": [{"key": "zone", "max": 1, "min": 0}]},
            "controls.max_topology_in_maintenance[0].min",
        ),
        (
            {"max_topology_in_maintenance": [{"key": "zone", "max": 1}, {"key": "zone", "max": 2}]},
            "controls.max_topology_in_maintenance[1].key",
        ),
    ],
)
def test_bad_budgets_name_the_field(controls: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SessionRequest.from_dict({"controls": controls})
    assert info.value.field == field


# --------------------------------------------------------------------------- rounding


@pytest.mark.parametrize(
    ("share", "hosts", "allowed"),
    [
        (10, 25, 2),  # 2.5 rounds down, as maxUnavailable does
        (10, 5, 1),  # 0.5 would be 0: a session is never stalled by its percentage
        (33, 3, 1),  # 0.99 -> 1
        (50, 9, 4),
        (100, 7, 7),
        (20, 10, 2),  # exact, no float error pushes it to 1
        (30, 10, 3),
    ],
)
def test_a_percent_rounds_down_and_never_below_one(share: float, hosts: int, allowed: int) -> None:
    assert resolve_cap(Percent(share), hosts) == allowed


@given(st.floats(0.01, 100), st.integers(0, 5000))
def test_percent_rounding_property(share: float, hosts: int) -> None:
    allowed = resolve_cap(Percent(share), hosts)
    assert allowed >= 1
    assert allowed <= max(1, hosts)
    exact = hosts * share / 100
    assert allowed == max(1, int(exact + 1e-9))


def test_a_percent_cap_admits_by_the_session_size_and_says_how() -> None:
    controls = Controls.from_dict({"max_hosts_in_maintenance": "10%"})
    assert admit(NOW, controls, PacingHistory(in_maintenance=1, hosts=25)).ok
    full = admit(NOW, controls, PacingHistory(in_maintenance=2, hosts=25))
    assert (full.ok, full.wait_until) == (False, None)
    assert full.reason == (
        "2 host(s) in maintenance, at most 2 (10% of 25 host(s), rounded down) at once"
    )
    small = admit(NOW, controls, PacingHistory(in_maintenance=1, hosts=5))
    assert small.reason is not None
    assert "at least 1" in small.reason
    assert admit(NOW, controls, PacingHistory(in_maintenance=0, hosts=5)).ok
    assert describe_cap(3, 25) == "3"


def test_a_percent_rate_cap_counts_starts_per_hour() -> None:
    controls = Controls.from_dict({"max_hosts_per_hour": "20%"})
    started = (NOW - timedelta(minutes=50), NOW - timedelta(minutes=10))
    answer = admit(NOW, controls, PacingHistory(started=started, hosts=10))
    assert answer.wait_until == NOW + timedelta(minutes=10)
    assert answer.reason is not None
    assert "20% of 10" in answer.reason


# --------------------------------------------------------------------------- topology


ZONE1 = (TopologyCap("zone", 1),)


def test_a_host_in_an_open_zone_is_admitted_and_a_new_zone_is_not() -> None:
    busy = [{"zone": "az1"}]
    assert topology_refusal(ZONE1, {"zone": "az1"}, busy) is None
    refusal = topology_refusal(ZONE1, {"zone": "az2"}, busy)
    assert refusal == (
        "zone az2 would be one zone too many: at most 1 in maintenance at once (open: az1)"
    )
    assert topology_refusal(ZONE1, {"zone": "az2"}, []) is None
    two = (TopologyCap("zone", 2),)
    assert topology_refusal(two, {"zone": "az2"}, busy) is None
    assert topology_refusal(two, {"zone": "az3"}, [*busy, {"zone": "az2"}]) is not None


def test_hosts_without_the_label_are_not_limited_and_do_not_count() -> None:
    assert topology_refusal(ZONE1, {}, [{"zone": "az1"}]) is None
    assert topology_refusal(ZONE1, {"zone": "az2"}, [{}, {"rack": "r1"}]) is None


def test_a_host_in_several_aggregates_opens_all_of_them() -> None:
    caps = (TopologyCap("aggregate", 2),)
    both = {"aggregate": ("gpu", "ssd")}
    assert topology_refusal(caps, both, []) is None
    assert topology_refusal(caps, {"aggregate": "ssd"}, [both]) is None
    assert topology_refusal(caps, {"aggregate": "hdd"}, [both]) is not None
    assert topology_refusal(caps, both, [{"aggregate": "hdd"}]) is not None


def test_every_topology_cap_applies() -> None:
    caps = (TopologyCap("zone", 2), TopologyCap("rack", 1))
    busy = [{"zone": "az1", "rack": "r1"}]
    assert topology_refusal(caps, {"zone": "az2", "rack": "r1"}, busy) is None
    refusal = topology_refusal(caps, {"zone": "az2", "rack": "r2"}, busy)
    assert refusal is not None
    assert refusal.startswith("rack r2")


def test_admission_refuses_a_new_zone_until_an_event() -> None:
    controls = Controls.from_dict({"max_topology_in_maintenance": [{"key": "zone", "max": 1}]})
    history = PacingHistory(in_maintenance=1, hosts=6, busy_labels=({"zone": "az1"},))
    assert admit(NOW, controls, history, {"zone": "az1"}).ok
    answer = admit(NOW, controls, history, {"zone": "az2"})
    assert (answer.ok, answer.wait_until) == (False, None)


# --------------------------------------------------------------------------- sessions


def _cloud(hosts: int, zones: int, sizes: list[int]) -> SimulatedCloud:
    cloud = SimulatedCloud()
    for i in range(hosts):
        cloud.add_host(f"cmp-{i}", vcpus=8, labels={"zone": f"az{i % zones}", "rack": f"r{i // 2}"})
        for j in range(sizes[i % len(sizes)]):
            cloud.add_instance(f"vm-{i}-{j}", f"p{(i + j) % 3}", f"cmp-{i}", vcpus=1)
    return cloud


def _engine(cloud: SimulatedCloud, clock: SimClock, **options: object) -> Engine:
    return Engine(
        clock=clock,
        plugins=[cloud, TimedAction("upgrade", 900)],
        load_entry_points=False,
        **options,  # type: ignore[arg-type]
    )


def _most_domains_at_once(
    intervals: dict[str, tuple[datetime, datetime]], domain: dict[str, str]
) -> int:
    """The most distinct domains with a host in work at any instant."""
    edges = sorted({t for span in intervals.values() for t in span})
    top = 0
    for t in edges:
        open_at = {domain[h] for h, (a, b) in intervals.items() if a <= t < b}
        top = max(top, len(open_at))
    return top


def test_a_constrained_session_keeps_one_zone_at_a_time_and_batches_within_it() -> None:
    clock = SimClock()
    cloud = _cloud(9, 3, [1])
    engine = _engine(cloud, clock)
    try:
        sid = engine.create_session(
            SessionRequest(
                workflow="constrained",
                actions=[ActionSpec("upgrade", "host")],
                controls={"max_topology_in_maintenance": [{"key": "zone", "max": 1}]},
            )
        )
        view, _ = drive(engine, clock, sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        worked = spans(cloud, view)
        zone = {f"cmp-{i}": f"az{i % 3}" for i in range(9)}
        assert _most_domains_at_once(worked, zone) == 1
        assert most_at_once(list(worked.values())) >= 2  # a zone's hosts went together
    finally:
        engine.close()


def test_a_host_that_could_never_fit_its_topology_cap_is_refused_at_creation() -> None:
    cloud = SimulatedCloud()
    cloud.add_host("cmp-0", labels={"aggregate": ["gpu", "ssd"]})
    cloud.add_host("cmp-1", labels={"aggregate": "gpu"})
    engine = _engine(cloud, SimClock())
    try:
        with pytest.raises(InvalidInput) as info:
            engine.create_session(
                SessionRequest(
                    controls={"max_topology_in_maintenance": [{"key": "aggregate", "max": 1}]}
                )
            )
        assert info.value.field == "controls.max_topology_in_maintenance[0].max"
        assert "cmp-0" in info.value.reason
        assert engine.list_sessions() == []
    finally:
        engine.close()


# The property that caps hold at every instant, on both engines:
# tests/test_core_budgets.py.


# --------------------------------------------------------------------------- unconstrained projects


def _two_on_one(clock: SimClock) -> SimulatedCloud:
    cloud = SimulatedCloud(migration_seconds=300, live_migration_seconds=300)
    cloud.add_host("cmp-0", vcpus=8)
    cloud.add_host("cmp-1", vcpus=8)
    for i in range(4):
        cloud.add_instance(f"vm-{i}", "web", "cmp-0", vcpus=1)
    return cloud


def _most_moves_at_once(cloud: SimulatedCloud) -> int:
    now = top = 0
    for event in cloud.events:
        if event.kind == "migration_started":
            now += 1
        elif event.kind in ("migration_done", "migration_failed"):
            now -= 1
        top = max(top, now)
    return top


def test_the_default_for_unconstrained_projects_is_explicit_in_the_stored_request() -> None:
    clock = SimClock()
    cloud = _two_on_one(clock)
    engine = _engine(cloud, clock)
    try:
        sid = engine.create_session(SessionRequest(hosts=["cmp-0"], workflow="constrained"))
        rules = engine.get_session(sid).request["default_group_constraints"]
        assert rules == {
            "max_impacted_members": 1,
            "recovery_time": 0,
            "anti_affinity_group": False,
            "max_instances_per_host": 0,
        }
        view, _ = drive(engine, clock, sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        assert _most_moves_at_once(cloud) == 1
    finally:
        engine.close()


def test_a_request_may_let_unconstrained_projects_move_more_at_once() -> None:
    clock = SimClock()
    cloud = _two_on_one(clock)
    engine = _engine(cloud, clock, default_group_constraints={"recovery_time": 60})
    try:
        sid = engine.create_session(
            SessionRequest(
                hosts=["cmp-0"],
                workflow="constrained",
                default_group_constraints={"max_impacted_members": 2},
            )
        )
        rules = engine.get_session(sid).request["default_group_constraints"]
        # The request's value over the engine's, the rest the built-in default.
        assert rules["max_impacted_members"] == 2
        assert rules["recovery_time"] == 60
        view, _ = drive(engine, clock, sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        assert _most_moves_at_once(cloud) == 2
    finally:
        engine.close()


@pytest.mark.parametrize(
    ("rules", "field"),
    [
        ({"max_impacted_members": 0}, "default_group_constraints.max_impacted_members"),
        ({"recovery_time": -1}, "default_group_constraints.recovery_time"),
        ({"group_id": "x"}, "default_group_constraints.group_id"),
        ({"max_impacted_members": "2"}, "default_group_constraints.max_impacted_members"),
    ],
)
def test_bad_default_group_constraints_name_the_field(rules: object, field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SessionRequest.from_dict({"default_group_constraints": rules})
    assert info.value.field == field


# --------------------------------------------------------------------------- scenario files


def test_scenario_host_labels_reach_the_simulated_cloud_and_its_topology_caps() -> None:
    from fenix_core.sim.scenario import load_scenario
    from fenix_core.sim.simulation import plan

    scenario = load_scenario(
        """
name: zones
hosts:
  - {name: cmp-0, labels: {zone: az0}}
  - {name: cmp-1, labels: {zone: az1}}
  - {name: cmp-2, labels: {zone: az2}}
  - {name: cmp-3, labels: {zone: az0}}
  - {name: cmp-4, labels: {zone: az1}}
  - {name: cmp-5, labels: {zone: az2}}
instances:
  - {id: "vm-{i}", count: 6, project: shop, hosts: [cmp-0, cmp-1, cmp-2, cmp-3, cmp-4, cmp-5]}
actions:
  - {plugin: upgrade, type: host, seconds: 600}
session:
  workflow: constrained
  default_group_constraints: {max_impacted_members: 3}
  controls: {max_topology_in_maintenance: [{key: zone, max: 2}]}
"""
    )
    result = plan(scenario)
    assert result.result.view.state == "MAINTENANCE_DONE"
    assert result.to_dict()["default_group_constraints"]["max_impacted_members"] == 3
    hosts = result.result.view.hosts
    for host in hosts:
        assert host.started_at is not None
        assert host.finished_at is not None
        zones = {
            other.name[-1]
            for other in hosts
            if other.started_at <= host.started_at < other.finished_at  # type: ignore[operator]
        }
        assert len({int(z) % 3 for z in zones}) <= 2
    assert (
        max(
            sum(1 for o in hosts if o.started_at <= h.started_at < o.finished_at)  # type: ignore[operator]
            for h in hosts
        )
        >= 3
    )  # two zones' hosts together


def test_the_openapi_and_scenario_schemas_describe_the_new_fields() -> None:
    import json

    from test_schema import rest_body_fields

    from fenix_core.sim.scenario_schema import scenario_json_schema

    assert "max_topology_in_maintenance" in rest_body_fields("ControlsSchema")
    assert {"cron", "rrule", "duration", "max_hosts_in_maintenance"} <= rest_body_fields(
        "WindowSchema"
    )
    assert "default_group_constraints" in rest_body_fields("SessionRequestSchema")
    text = json.dumps(scenario_json_schema())
    for name in ("max_topology_in_maintenance", "rrule", "default_group_constraints", "labels"):
        assert name in text
    assert r"^\\d+(\\.\\d+)?%$" in text  # a cap may be a percent
