"""SimulatedCloud on a SimClock: inventory, timed migrations, capacity, fault
injection, the event log and the file-backed state."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fenix_core.clock import SimClock
from fenix_core.errors import CloudError, InvalidInput
from fenix_core.hookspecs import CloudDriver
from fenix_core.model import Host, Instance, OperationStatus
from fenix_core.testing import CloudEvent, SimulatedCloud, violations

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> SimClock:
    return SimClock(start=T0)


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    """Two 8-vcpu computes and a controller; vm-1 (2 vcpus, p1) and vm-2 (3, p2) on c0."""
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=20, clock=clock)
    cloud.add_host("c0", vcpus=8)
    cloud.add_host("c1", vcpus=8)
    cloud.add_host("ctl", type="controller", vcpus=4)
    cloud.add_instance("vm-1", project_id="p1", host="c0", vcpus=2)
    cloud.add_instance("vm-2", project_id="p2", host="c0", vcpus=3, live_migratable=False)
    return cloud


def kinds(cloud: SimulatedCloud) -> list[str]:
    return [e.kind for e in cloud.events]


# --------------------------------------------------------------------------- building


def test_is_a_cloud_driver(cloud: SimulatedCloud) -> None:
    assert isinstance(cloud, CloudDriver)
    assert cloud.allowed_actions() == ["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"migration_seconds": -1}, "migration_seconds"),
        ({"migration_seconds": "30"}, "migration_seconds"),
        ({"live_migration_seconds": True}, "live_migration_seconds"),
        ({"live_migration_seconds": None}, "live_migration_seconds"),
    ],
)
def test_constructor_validation(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as info:
        SimulatedCloud(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_add_host_validation(cloud: SimulatedCloud) -> None:
    with pytest.raises(InvalidInput) as info:
        cloud.add_host("x", type="storage")
    assert info.value.field == "type"
    with pytest.raises(InvalidInput) as info:
        cloud.add_host("c0")
    assert info.value.field == "name"
    assert [h.name for h in cloud.list_hosts()] == ["c0", "c1", "ctl"]


def test_add_instance_validation(cloud: SimulatedCloud) -> None:
    with pytest.raises(InvalidInput) as info:
        cloud.add_instance("vm-9", project_id="p1", host="nowhere")
    assert info.value.field == "host"
    with pytest.raises(InvalidInput) as info:
        cloud.add_instance("vm-1", project_id="p1", host="c1")
    assert info.value.field == "instance_id"
    assert cloud.host_of("vm-1") == "c0"  # the failed call changed nothing
    with pytest.raises(InvalidInput) as info:
        cloud.remove_instance("vm-9")
    assert info.value.field == "instance_id"


def test_list_hosts_and_instances(cloud: SimulatedCloud) -> None:
    cloud.add_instance("vm-0", project_id="p1", host="c1", vcpus=1, name="web-0")
    assert cloud.list_hosts() == [
        Host("c0", "compute", 8, True),
        Host("c1", "compute", 8, True),
        Host("ctl", "controller", 4, True),
    ]
    assert [i.instance_id for i in cloud.list_instances()] == ["vm-0", "vm-1", "vm-2"]
    assert cloud.list_instances(hosts=["c1"]) == [Instance("vm-0", "p1", "c1", 1, "web-0", True)]
    assert cloud.list_instances(hosts=["c0"]) == [
        Instance("vm-1", "p1", "c0", 2, "vm-1", True),
        Instance("vm-2", "p2", "c0", 3, "vm-2", False),
    ]
    assert cloud.list_instances(hosts=["ctl"]) == []
    assert cloud.list_instances(hosts=[]) == []
    assert cloud.instances_on("c0") == ["vm-1", "vm-2"]
    assert cloud.host_of("vm-0") == cloud.locate("vm-0") == "c1"
    assert cloud.host_of("missing") is None
    assert cloud.free_vcpus("c0") == 3
    assert cloud.free_vcpus("c1") == 7


def test_disable_enable_host(cloud: SimulatedCloud, clock: SimClock) -> None:
    cloud.disable_host("c1", "maintenance")
    assert not cloud.is_enabled("c1")
    assert [h.enabled for h in cloud.list_hosts()] == [True, False, True]
    clock.advance(60)
    cloud.enable_host("c1")
    assert cloud.is_enabled("c1")
    assert cloud.events[-2:] == [
        CloudEvent(T0, "disable_host", "c1", None, "maintenance"),
        CloudEvent(at(60), "enable_host", "c1", None, None),
    ]
    with pytest.raises(CloudError) as info:
        cloud.disable_host("c9", "x")
    assert info.value.host == "c9"


# --------------------------------------------------------------------------- migrations


@pytest.mark.parametrize(("action", "seconds"), [("LIVE_MIGRATE", 20.0), ("MIGRATE", 30.0)])
def test_move_timing(cloud: SimulatedCloud, clock: SimClock, action: str, seconds: float) -> None:
    handle = cloud.start_move("vm-1", action, "c1", key="k1")
    assert cloud.poll_move(handle) == OperationStatus.running(
        retry_after=seconds, detail=f"{action} c0 -> c1 running"
    )
    clock.advance(seconds - 5)
    status = cloud.poll_move(handle)
    assert (status.state, status.retry_after) == ("running", 5.0)
    assert cloud.host_of("vm-1") == "c0"  # still on its source while it runs
    clock.advance(5)  # exactly the end
    status = cloud.poll_move(handle)
    assert (status.state, status.host, status.gone) == ("done", "c1", False)
    assert cloud.host_of("vm-1") == "c1"
    assert cloud.instances_on("c0") == ["vm-2"]
    clock.advance(100)
    assert cloud.poll_move(handle).state == "done"  # stays done


def test_move_completes_at_its_end_time_even_when_polled_late(
    cloud: SimulatedCloud, clock: SimClock
) -> None:
    handle = cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="k1")
    clock.advance(3600)
    assert cloud.poll_move(handle).host == "c1"
    done = [e for e in cloud.events if e.kind == "migration_done"]
    assert done == [CloudEvent(at(20), "migration_done", "c1", "vm-1", "c0")]


def test_move_without_target_picks_an_enabled_compute(
    cloud: SimulatedCloud, clock: SimClock
) -> None:
    cloud.add_host("c2", vcpus=16)
    cloud.add_host("c3", vcpus=32, enabled=False)
    handle = cloud.start_move("vm-1", "MIGRATE", None, key="k")
    clock.advance(30)
    assert cloud.poll_move(handle).host == "c2"  # most free vcpus, not disabled c3 or ctl


def test_capacity_refusal_counts_migrations_in_flight(
    cloud: SimulatedCloud, clock: SimClock
) -> None:
    cloud.add_host("small", vcpus=4)
    cloud.start_move("vm-1", "LIVE_MIGRATE", "small", key="k1")  # 2 of 4 now promised
    assert cloud.free_vcpus("small") == 2
    with pytest.raises(CloudError) as info:
        cloud.start_move("vm-2", "MIGRATE", "small", key="k2")  # needs 3
    assert (info.value.host, info.value.instance_id) == ("small", "vm-2")
    assert cloud.host_of("vm-2") == "c0"
    assert kinds(cloud).count("migration_started") == 1
    clock.advance(20)
    assert cloud.free_vcpus("small") == 2  # arrived: still 2 used
    with pytest.raises(CloudError):
        cloud.start_move("vm-2", "MIGRATE", "small", key="k3")


def test_capacity_counts_instances_already_there(cloud: SimulatedCloud) -> None:
    cloud.add_host("small", vcpus=4)
    cloud.add_instance("vm-3", project_id="p3", host="small", vcpus=2)
    with pytest.raises(CloudError):
        cloud.start_move("vm-2", "MIGRATE", "small", key="k")
    cloud.start_move("vm-1", "MIGRATE", "small", key="k2")  # 2 + 2 <= 4 fits exactly


def test_disabled_target_refused(cloud: SimulatedCloud) -> None:
    cloud.disable_host("c1", "maintenance")
    with pytest.raises(CloudError) as info:
        cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="k")
    assert info.value.host == "c1"
    assert "migration_started" not in kinds(cloud)


@pytest.mark.parametrize(
    ("instance_id", "action", "target"),
    [
        ("vm-9", "MIGRATE", "c1"),  # unknown instance
        ("vm-1", "OWN_ACTION", "c1"),  # not something the cloud does
        ("vm-2", "LIVE_MIGRATE", "c1"),  # not live-migratable
        ("vm-1", "MIGRATE", "c0"),  # onto its own host
        ("vm-1", "MIGRATE", "c9"),  # unknown host
    ],
)
def test_start_move_refusals(
    cloud: SimulatedCloud, instance_id: str, action: str, target: str
) -> None:
    with pytest.raises(CloudError):
        cloud.start_move(instance_id, action, target, key="k")
    assert "migration_started" not in kinds(cloud)


def test_no_second_migration_of_a_moving_instance(cloud: SimulatedCloud) -> None:
    cloud.add_host("c2", vcpus=8)
    cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="k1")
    with pytest.raises(CloudError):
        cloud.start_move("vm-1", "LIVE_MIGRATE", "c2", key="k2")


def test_start_move_is_idempotent_per_key(cloud: SimulatedCloud, clock: SimClock) -> None:
    handle = cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="attempt-1")
    clock.advance(5)
    assert cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="attempt-1") == handle
    assert kinds(cloud).count("migration_started") == 1
    assert cloud.free_vcpus("c1") == 6  # reserved once, not twice
    clock.advance(15)
    # Asked again after it finished: still the same migration, nothing new.
    assert cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="attempt-1") == handle
    assert kinds(cloud).count("migration_started") == 1
    assert cloud.host_of("vm-1") == "c1"


def test_poll_unknown_handle_fails(cloud: SimulatedCloud) -> None:
    assert cloud.poll_move("migration-99").state == "failed"


def test_fail_next_migration(cloud: SimulatedCloud, clock: SimClock) -> None:
    cloud.fail_next_migration("vm-1", error="no valid host")
    cloud.fail_next_migration("vm-1", error="timeout")
    first = cloud.start_move("vm-1", "LIVE_MIGRATE", "c1", key="a1")
    assert cloud.poll_move(first).state == "running"  # the failure shows at the end
    clock.advance(20)
    assert cloud.poll_move(first) == OperationStatus.failed("no valid host")
    assert cloud.host_of("vm-1") == "c0"
    assert cloud.free_vcpus("c1") == 8  # the reservation is released

    second = cloud.start_move("vm-1", "MIGRATE", "c1", key="a2")
    clock.advance(30)
    assert cloud.poll_move(second) == OperationStatus.failed("timeout")
    assert cloud.host_of("vm-1") == "c0"

    third = cloud.start_move("vm-1", "MIGRATE", "c1", key="a3")
    clock.advance(30)
    assert cloud.poll_move(third).state == "done"
    assert cloud.host_of("vm-1") == "c1"

    failed = [e for e in cloud.events if e.kind == "migration_failed"]
    assert failed == [
        CloudEvent(at(20), "migration_failed", "c0", "vm-1", "no valid host"),
        CloudEvent(at(50), "migration_failed", "c0", "vm-1", "timeout"),
    ]


def test_failure_is_not_consumed_by_a_refused_move(cloud: SimulatedCloud, clock: SimClock) -> None:
    cloud.fail_next_migration("vm-1")
    with pytest.raises(CloudError):
        cloud.start_move("vm-1", "MIGRATE", "c0", key="refused")
    handle = cloud.start_move("vm-1", "MIGRATE", "c1", key="real")
    clock.advance(30)
    assert cloud.poll_move(handle).state == "failed"


def test_fail_next_migration_only_affects_that_instance(
    cloud: SimulatedCloud, clock: SimClock
) -> None:
    cloud.fail_next_migration("vm-2")
    handle = cloud.start_move("vm-1", "MIGRATE", "c1", key="k")
    clock.advance(30)
    assert cloud.poll_move(handle).state == "done"


def test_remove_instance_during_migration(cloud: SimulatedCloud, clock: SimClock) -> None:
    handle = cloud.start_move("vm-1", "MIGRATE", "c1", key="k")
    clock.advance(10)
    cloud.remove_instance("vm-1")
    assert cloud.free_vcpus("c1") == 8  # no longer expected there
    clock.advance(20)
    status = cloud.poll_move(handle)
    assert status.gone
    assert status.state != "failed"
    assert cloud.host_of("vm-1") is None
    assert cloud.instances_on("c1") == []
    assert "migration_done" not in kinds(cloud)
    assert CloudEvent(at(10), "instance_removed", "c0", "vm-1", None) in cloud.events


def test_host_stays_down(cloud: SimulatedCloud, clock: SimClock) -> None:
    cloud.host_stays_down("c1")
    assert cloud.host_is_up("c1")  # only once taken into maintenance
    cloud.disable_host("c0", "maintenance")
    cloud.disable_host("c1", "maintenance")
    assert cloud.host_is_up("c0")
    assert not cloud.host_is_up("c1")
    clock.advance(600)
    cloud.enable_host("c1")
    assert not cloud.host_is_up("c1")  # never comes back
    assert cloud.host_is_up("ctl")
    with pytest.raises(InvalidInput):
        cloud.host_stays_down("c9")
    with pytest.raises(CloudError):
        cloud.host_is_up("c9")


def test_relocate(cloud: SimulatedCloud, clock: SimClock) -> None:
    cloud.add_host("c2", vcpus=4)
    clock.advance(7)
    assert cloud.relocate("vm-1", "c2") == "c2"
    assert cloud.host_of("vm-1") == "c2"
    assert cloud.events[-1] == CloudEvent(at(7), "instance_relocated", "c2", "vm-1", "c0")
    # Without a host: the enabled compute with the most free vcpus (not ctl, not itself).
    assert cloud.relocate("vm-1") == "c1"
    cloud.disable_host("c1", "x")
    assert cloud.relocate("vm-2") == "c2"
    with pytest.raises(CloudError):
        cloud.relocate("vm-1", "c9")
    with pytest.raises(InvalidInput):
        cloud.relocate("vm-9", "c1")


def test_relocate_without_room(clock: SimClock) -> None:
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("c0", vcpus=2)
    cloud.add_host("c1", vcpus=1)
    cloud.add_instance("vm", project_id="p", host="c0", vcpus=2)
    with pytest.raises(CloudError) as info:
        cloud.relocate("vm")
    assert info.value.instance_id == "vm"
    assert cloud.host_of("vm") == "c0"


# --------------------------------------------------------------------------- event log


def test_events_in_time_order_with_kinds_and_fields(clock: SimClock) -> None:
    cloud = SimulatedCloud(migration_seconds=30, live_migration_seconds=20, clock=clock)
    cloud.add_host("c0", vcpus=8)
    cloud.add_host("c1", vcpus=8)
    cloud.add_instance("a", project_id="p1", host="c0", vcpus=1)
    cloud.add_instance("b", project_id="p2", host="c0", vcpus=1)
    cloud.disable_host("c0", "maintenance")
    cloud.fail_next_migration("b", error="boom")
    cloud.start_move("a", "MIGRATE", "c1", key="ka")  # ends at 30
    cloud.start_move("b", "LIVE_MIGRATE", "c1", key="kb")  # fails at 20
    clock.advance(5)
    cloud.add_instance("c", project_id="p1", host="c1")
    clock.advance(95)  # both migrations ended meanwhile, nobody looked
    cloud.remove_instance("c")
    cloud.enable_host("c0")

    assert cloud.events == [
        CloudEvent(at(0), "host_added", "c0", None, "enabled"),
        CloudEvent(at(0), "host_added", "c1", None, "enabled"),
        CloudEvent(at(0), "instance_added", "c0", "a", "p1"),
        CloudEvent(at(0), "instance_added", "c0", "b", "p2"),
        CloudEvent(at(0), "disable_host", "c0", None, "maintenance"),
        CloudEvent(at(0), "migration_started", "c0", "a", "c1"),
        CloudEvent(at(0), "migration_started", "c0", "b", "c1"),
        CloudEvent(at(5), "instance_added", "c1", "c", "p1"),
        CloudEvent(at(20), "migration_failed", "c0", "b", "boom"),
        CloudEvent(at(30), "migration_done", "c1", "a", "c0"),
        CloudEvent(at(100), "instance_removed", "c1", "c", None),
        CloudEvent(at(100), "enable_host", "c0", None, None),
    ]
    times = [e.time for e in cloud.events]
    assert times == sorted(times)
    assert all(t.utcoffset() == timedelta(0) for t in times)


def test_events_is_a_copy(cloud: SimulatedCloud) -> None:
    before = len(cloud.events)
    cloud.events.clear()
    assert len(cloud.events) == before > 0


def test_setup_without_a_clock_is_not_recorded() -> None:
    cloud = SimulatedCloud()  # no clock=, no engine yet
    cloud.add_host("c0", vcpus=8)
    cloud.add_instance("vm-1", project_id="p1", host="c0")
    cloud.add_instance("vm-2", project_id="p1", host="c0")
    cloud.remove_instance("vm-2")
    assert cloud.events == []
    assert cloud.instances_on("c0") == ["vm-1"]

    clock = SimClock(start=T0)
    assert cloud.fenix_cloud_driver(clock=clock) is cloud  # what the engine does
    clock.advance(3)
    cloud.add_instance("vm-3", project_id="p2", host="c0")
    assert cloud.events == [CloudEvent(at(3), "instance_added", "c0", "vm-3", "p2")]


def test_setup_with_a_clock_is_recorded(clock: SimClock) -> None:
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("c0")
    cloud.add_instance("vm-1", project_id="p1", host="c0")
    assert cloud.events == [
        CloudEvent(T0, "host_added", "c0", None, "enabled"),
        CloudEvent(T0, "instance_added", "c0", "vm-1", "p1"),
    ]


def test_violations_sees_a_host_created_disabled(clock: SimClock) -> None:
    cloud = SimulatedCloud(clock=clock)
    cloud.add_host("c0")
    cloud.add_host("c1", enabled=False)
    cloud.add_instance("vm-1", project_id="p1", host="c0")
    cloud.relocate("vm-1", "c1")
    assert violations(cloud) == ["2026-01-01T00:00:00+00:00: vm-1 arrived on disabled host c1"]


def test_engine_attaches_its_clock(
    fenix_cloud: SimulatedCloud, fenix_clock: SimClock, fenix_engine_factory: Callable[..., object]
) -> None:
    fenix_cloud.add_host("c0", vcpus=8)
    fenix_cloud.add_instance("before", project_id="p1", host="c0")
    fenix_engine_factory()
    fenix_clock.advance(42)
    fenix_cloud.add_instance("after", project_id="p1", host="c0")
    events = fenix_cloud.events
    assert [e.instance_id for e in events if e.kind == "instance_added"] == ["after"]
    assert events[-1].time == fenix_clock.now()


# --------------------------------------------------------------------------- state_path


def test_state_file_is_shared(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    clock = SimClock(start=T0)
    first = SimulatedCloud(
        migration_seconds=30, live_migration_seconds=20, state_path=path, clock=clock
    )
    first.add_host("c0", vcpus=8)
    first.add_host("c1", vcpus=8)
    first.add_host("ctl", type="controller", vcpus=2)
    first.add_instance("vm-1", project_id="p1", host="c0", vcpus=2, name="web")
    first.add_instance("vm-2", project_id="p2", host="c0", vcpus=1, live_migratable=False)
    first.disable_host("c0", "maintenance")
    first.fail_next_migration("vm-2", error="later")
    live = first.start_move("vm-1", "LIVE_MIGRATE", "c1", key="k1")  # ends at 20
    clock.advance(5)

    # Another process (after a crash) with its own clock at the same time.
    clock2 = SimClock(start=at(5))
    second = SimulatedCloud(state_path=path, clock=clock2)
    assert second.list_hosts() == first.list_hosts()
    assert second.list_instances() == first.list_instances()
    assert second.events == first.events
    assert second.free_vcpus("c1") == 6  # the migration in flight still counts
    assert second.poll_move(live) == OperationStatus.running(
        retry_after=15.0, detail="LIVE_MIGRATE c0 -> c1 running"
    )
    assert second.start_move("vm-1", "LIVE_MIGRATE", "c1", key="k1") == live  # idempotent

    clock2.advance(15)
    assert second.poll_move(live) == OperationStatus.done("c1")
    assert second.host_of("vm-1") == "c1"
    assert second.events[-1] == CloudEvent(at(20), "migration_done", "c1", "vm-1", "c0")

    # Fault injection survives too.
    cold = second.start_move("vm-2", "MIGRATE", "c1", key="k2")
    clock2.advance(60)
    assert second.poll_move(cold) == OperationStatus.failed("later")
    assert second.host_is_up("c1")

    # And a third one sees what the second did.
    third = SimulatedCloud(state_path=path, clock=clock2)
    assert third.host_of("vm-1") == "c1"
    assert third.events == second.events
    assert [e.kind for e in third.events].count("migration_failed") == 1


def test_state_file_keeps_a_host_that_stays_down(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    first = SimulatedCloud(state_path=path, clock=SimClock(start=T0))
    first.add_host("c0")
    first.host_stays_down("c0")
    first.disable_host("c0", "maintenance")
    second = SimulatedCloud(state_path=path, clock=SimClock(start=T0))
    second.enable_host("c0")
    assert not second.host_is_up("c0")


def test_state_file_setup_before_clock_then_reload(tmp_path: Path) -> None:
    path = tmp_path / "cloud.json"
    setup = SimulatedCloud(state_path=path)  # no clock: setup is not an event
    setup.add_host("c0")
    setup.add_instance("vm-1", project_id="p1", host="c0")
    assert path.exists()
    reloaded = SimulatedCloud(state_path=path, clock=SimClock(start=T0))
    assert reloaded.events == []
    assert reloaded.instances_on("c0") == ["vm-1"]
    reloaded.add_instance("vm-2", project_id="p1", host="c0")
    assert [e.kind for e in reloaded.events] == ["instance_added"]


def test_reloaded_cloud_records_from_the_engine_with_its_baseline(tmp_path: Path) -> None:
    """What ``fenix-api --simulated-cloud`` serves: a cloud built in one
    process, loaded again in another, then attached to an engine."""
    path = tmp_path / "cloud.json"
    setup = SimulatedCloud(state_path=path)
    setup.add_host("c0", vcpus=8)
    setup.add_host("c1", vcpus=8)
    setup.add_instance("vm-1", project_id="p1", host="c0")
    served = SimulatedCloud(state_path=path)  # no clock, no engine yet
    served.add_instance("vm-2", project_id="p1", host="c1")  # still setup
    assert served.events == []
    clock = SimClock(start=T0)
    served.fenix_cloud_driver(clock=clock)  # the engine attaches
    assert served.baseline == {"vm-1": "c0", "vm-2": "c1"}
    served.disable_host("c0", "maintenance")
    served.host_is_up("c0")  # the host's maintenance is over, vm-1 still on it
    assert violations(served) == [f"{T0.isoformat()}: c0 went through its maintenance holding vm-1"]
    # A third process resuming on the file keeps that baseline and the events.
    resumed = SimulatedCloud(state_path=path, clock=clock)
    assert resumed.baseline == served.baseline
    assert violations(resumed) == violations(served)
