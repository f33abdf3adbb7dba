"""Every workflow disables a host before the first move off it, so that
nothing new lands on a host being emptied; it enables it again only after its
maintenance, and only if the session disabled it."""

from __future__ import annotations

import pytest
from conftest import fill

from fenix_core import ActionSpec, SessionRequest
from fenix_core.testing import SimulatedCloud, TimedAction, violations

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 2)],
    "cmp-1": [("vm-a2", "pa", 2), ("vm-c1", "pc", 1)],
    "cmp-2": [("vm-b2", "pb", 3)],
    "cmp-3": [],
}


def first_times(cloud: SimulatedCloud, kind: str) -> dict[str, object]:
    seen: dict[str, object] = {}
    for event in cloud.events:
        if event.kind == kind and event.host is not None:
            seen.setdefault(event.host, event.time)
    return seen


def assert_disabled_before_moves(cloud: SimulatedCloud) -> None:
    disabled = first_times(cloud, "disable_host")
    moves_off = first_times(cloud, "migration_started")  # host: the source
    assert moves_off, "the run moved nothing"
    for host, when in moves_off.items():
        assert host in disabled, f"{host} was drained without being disabled"
        assert disabled[host] <= when, f"{host} was disabled after its first move off"
        later = [e for e in cloud.events if e.host == host and e.kind == "disable_host"]
        assert len(later) == 1  # disabled once, not again at maintenance


@pytest.mark.parametrize(
    "request_",
    [
        SessionRequest(actions=[ActionSpec("upgrade", "host")]),
        SessionRequest(workflow="constrained", actions=[ActionSpec("upgrade", "host")]),
        SessionRequest(
            workflow="decommission", hosts=["cmp-0"], actions=[ActionSpec("upgrade", "host")]
        ),
        SessionRequest(decommission_hosts=["cmp-1"], actions=[ActionSpec("upgrade", "host")]),
    ],
    ids=["rolling", "constrained", "decommission", "lifecycle"],
)
def test_every_workflow_disables_a_host_before_the_first_move_off_it(
    fenix_cloud, fenix_engine_factory, request_
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory(TimedAction("upgrade", 60))

    view = engine.run_until_done(engine.create_session(request_))

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert_disabled_before_moves(fenix_cloud)
    assert violations(fenix_cloud) == []
    retired = set(request_.decommission_hosts) | (
        set(request_.hosts) if request_.workflow == "decommission" else set()
    )
    for host in LAYOUT:
        assert fenix_cloud.is_enabled(host) == (host not in retired)


def test_a_host_disabled_before_the_session_is_drained_and_stays_disabled(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    fenix_cloud.disable_host("cmp-0", "an admin's")
    engine = fenix_engine_factory(TimedAction("upgrade", 60))

    view = engine.run_until_done(
        engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    )

    assert view.state == "MAINTENANCE_DONE", view.reason
    assert not fenix_cloud.is_enabled("cmp-0")
    assert [e.kind for e in fenix_cloud.events if e.host == "cmp-0"].count("enable_host") == 0
    assert fenix_cloud.instances_on("cmp-0") == []


def test_violations_flags_a_host_maintained_with_instances_not_a_disable_before_draining(
    fenix_cloud,
):
    fill(fenix_cloud, {"c0": [("vm-1", "p", 1)], "c1": []})
    fenix_cloud.fenix_cloud_driver(fenix_cloud.clock)  # an engine attaches: recording starts
    fenix_cloud.disable_host("c0", "draining")
    assert violations(fenix_cloud) == []  # disabled with vm-1 still to leave: fine
    assert fenix_cloud.host_is_up("c0")  # its maintenance is over, vm-1 still there
    found = violations(fenix_cloud)
    assert len(found) == 1
    assert found[0].endswith("c0 went through its maintenance holding vm-1")
