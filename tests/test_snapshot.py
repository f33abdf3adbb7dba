"""A cloud's inventory and constraints as a scenario (fenix_core.sim.snapshot)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core.constraints import (
    CloudConstraints,
    ConstraintSet,
    GroupConstraints,
    InstanceConstraints,
)
from fenix_core.kube_scheduling import ClusterScheduling, PodInputs, Requests
from fenix_core.model import Host, Instance, OperationStatus
from fenix_core.sim.scenario import load_scenario
from fenix_core.sim.simulation import Simulation
from fenix_core.sim.snapshot import CloudSnapshot, read_cloud, scenario_data, scenario_from_cloud
from fenix_core.testing import SimulatedCloud

PROPERTY = settings(max_examples=60, deadline=None, derandomize=True)


def _snapshot(constraints: CloudConstraints | None = None) -> CloudSnapshot:
    hosts = (
        Host(
            "cmp-0",
            vcpus=16,
            details={"availability_zone": "az1"},
            labels={"zone": "az1", "aggregate": ("gpu", "ssd")},
        ),
        Host("cmp-1", vcpus=16, enabled=False),
        Host("ctl-0", type="controller", vcpus=0),
        Host("cmp-2", vcpus=16),
    )
    instances = (
        Instance("vm-a", "web", "cmp-0", vcpus=2),
        Instance("vm-b", "web", "cmp-2", vcpus=2),
        Instance("vm-c", "db", "cmp-0", vcpus=4, live_migratable=False),
        Instance("vm-d", "db", "cmp-2", vcpus=4),
    )
    return CloudSnapshot(hosts, instances, constraints or CloudConstraints())


def test_hosts_and_instances_keep_what_the_cloud_listed() -> None:
    scenario = scenario_from_cloud(_snapshot(), name="prod", start=datetime(2026, 5, 1, tzinfo=UTC))
    assert scenario.name == "prod"
    assert scenario.start == datetime(2026, 5, 1, tzinfo=UTC)
    assert [(h.name, h.type, h.vcpus, h.enabled) for h in scenario.hosts] == [
        ("cmp-0", "compute", 16, True),
        ("cmp-1", "compute", 16, False),
        ("ctl-0", "controller", 0, True),
        ("cmp-2", "compute", 16, True),
    ]
    # The topology labels the driver gave the host (OpenStack: zone and
    # aggregates), which the session's topology caps name.
    assert scenario.host("cmp-0").labels == {"zone": "az1", "aggregate": ("gpu", "ssd")}
    assert scenario.host("cmp-2").labels == {}
    assert [(i.id, i.project, i.host, i.vcpus, i.live_migratable) for i in scenario.instances] == [
        ("vm-a", "web", "cmp-0", 2, True),
        ("vm-b", "web", "cmp-2", 2, True),
        ("vm-c", "db", "cmp-0", 4, False),
        ("vm-d", "db", "cmp-2", 4, True),
    ]
    assert all(i.group is None for i in scenario.instances)
    assert [a.plugin for a in scenario.actions] == ["maintenance"]
    assert [a.plugin for a in scenario.session.request.actions] == ["maintenance"]


def test_a_disabled_host_is_never_a_target_in_the_plan() -> None:
    scenario = scenario_from_cloud(_snapshot())
    with Simulation(scenario) as sim:
        assert sim.run().view.state == "MAINTENANCE_DONE"
        events = sim.cloud.events
    assert {e.kind for e in events} >= {"migration_done"}
    assert all(e.host != "cmp-1" for e in events if e.kind == "migration_done")


def test_cloud_groups_and_stored_constraints_resolve_as_the_engine_does() -> None:
    cloud = CloudConstraints(
        groups=(
            GroupConstraints("sg-db", "db", anti_affinity_group=True, max_instances_per_host=1),
            GroupConstraints("sg-web", "web", max_impacted_members=1),
        ),
        members={"vm-c": "sg-db", "vm-d": "sg-db", "vm-a": "sg-web", "vm-b": "sg-web"},
    )
    # The web project replaced the cloud's sg-web with its own rules and moved
    # vm-b into a group of its own, with an instance constraint.
    stored_groups = [
        GroupConstraints("sg-web", "web", max_impacted_members=2, recovery_time=60),
        GroupConstraints("solo", "web", max_impacted_members=1),
    ]
    stored_instances = [
        InstanceConstraints("vm-b", "web", group_id="solo", lead_time=30),
        # another project's row for vm-a: ignored, as the engine ignores it
        InstanceConstraints("vm-a", "db", group_id="sg-db"),
    ]
    snapshot = _snapshot(cloud)
    scenario = scenario_from_cloud(snapshot, stored_groups, stored_instances)
    by_id = {i.id: i for i in scenario.instances}
    groups = {g.group_id: g for g in scenario.groups}
    assert {i: by_id[i].group for i in by_id} == {
        "vm-a": "sg-web",
        "vm-b": "solo",
        "vm-c": "sg-db",
        "vm-d": "sg-db",
    }
    assert groups["sg-web"].max_impacted_members == 2
    assert groups["sg-web"].recovery_time == 60
    assert groups["sg-db"].anti_affinity_group
    assert by_id["vm-b"].constraints is not None
    assert by_id["vm-b"].constraints.lead_time == 30
    assert by_id["vm-a"].constraints is None
    _assert_same_rules(snapshot, scenario, stored_groups, stored_instances)


def test_a_group_id_of_two_projects_and_a_group_across_projects_get_their_own_ids() -> None:
    cloud = CloudConstraints(
        groups=(GroupConstraints("pdb:shop/web", "web", max_impacted_members=2),),
        # the budget selects pods of both projects
        members={"vm-a": "pdb:shop/web", "vm-c": "pdb:shop/web"},
    )
    stored = [
        GroupConstraints("tier", "web"),
        GroupConstraints("tier", "db", max_impacted_members=3),
    ]
    instances = [
        InstanceConstraints("vm-b", "web", "tier"),
        InstanceConstraints("vm-d", "db", "tier"),
    ]
    snapshot = _snapshot(cloud)
    scenario = scenario_from_cloud(snapshot, stored, instances)
    by_id = {i.id: i.group for i in scenario.instances}
    assert by_id == {
        "vm-a": "pdb:shop/web",
        "vm-b": "tier",
        "vm-c": "pdb:shop/web@db",
        "vm-d": "tier@db",
    }
    groups = {g.group_id: g for g in scenario.groups}
    assert groups["pdb:shop/web@db"].max_impacted_members == 2
    assert groups["pdb:shop/web@db"].project_id == "db"
    assert groups["tier@db"].max_impacted_members == 3
    _assert_same_rules(snapshot, scenario, stored, instances)


def test_instances_on_controllers_are_kept_and_drained_first() -> None:
    """A Kubernetes control-plane node's pods: the scenario holds them, and
    the plan drains that controller first, to another controller (the
    instance's placement class), as a real session does."""
    snapshot = _snapshot()
    hosts = (*snapshot.hosts, Host("ctl-1", type="controller", vcpus=4))
    snapshot = CloudSnapshot(
        hosts, (*snapshot.instances, Instance("ops/dns-x", "ops", "ctl-0")), snapshot.constraints
    )
    snapshot = attrs.evolve(
        snapshot, hosts=tuple(attrs.evolve(h, vcpus=4) if h.name == "ctl-0" else h for h in hosts)
    )
    scenario = scenario_from_cloud(snapshot, session={"hosts": ["ctl-0", "cmp-0", "cmp-2"]})
    assert [(i.id, i.host) for i in scenario.instances if i.project == "ops"] == [
        ("ops/dns-x", "ctl-0")
    ]
    with Simulation(scenario) as sim:
        result = sim.run()
        moves = [e for e in sim.cloud.events if e.kind == "migration_done"]
    assert result.view.state == "MAINTENANCE_DONE", result.view.reason
    started = sorted(
        (h.maintenance_start, h.name) for h in result.timeline.hosts if h.maintenance_start
    )
    assert started[0][1] == "ctl-0"
    assert [e.host for e in moves if e.instance_id == "ops/dns-x"] == ["ctl-1"]


def test_session_actions_and_migration_times_are_passed_through() -> None:
    data = scenario_data(
        _snapshot(),
        session={"workflow": "constrained", "max_parallel_hosts": 2},
        actions=[{"plugin": "upgrade", "seconds": 120}],
        migration_seconds=45,
        live_migration_seconds=15,
    )
    scenario = load_scenario(yaml.safe_dump(data))
    assert scenario.session.request.workflow == "constrained"
    assert scenario.session.request.max_parallel_hosts == 2
    assert [(a.plugin, a.seconds) for a in scenario.actions] == [("upgrade", 120.0)]
    assert (scenario.migration_seconds, scenario.live_migration_seconds) == (45.0, 15.0)


class _ReadOnlyDriver:
    """A ConstraintSource driver that fails on anything but a read hook."""

    name = "read-only"

    def __init__(self, cloud: SimulatedCloud) -> None:
        self.cloud = cloud
        self.calls: list[str] = []

    def list_hosts(self) -> Sequence[Host]:
        self.calls.append("list_hosts")
        return self.cloud.list_hosts()

    def list_instances(self, hosts: Sequence[str] | None = None) -> Sequence[Instance]:
        self.calls.append("list_instances")
        return [*self.cloud.list_instances(hosts), Instance("lost", "p", "gone-host")]

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        self.calls.append("cloud_constraints")
        ids = sorted(i.instance_id for i in instances)
        return CloudConstraints(
            groups=(GroupConstraints("g", "p", max_impacted_members=1),),
            members=dict.fromkeys(ids, "g"),
        )

    def scheduling_inputs(self, instances: Sequence[Instance]) -> ClusterScheduling:
        self.calls.append("scheduling_inputs")
        return ClusterScheduling({}, {i.instance_id: PodInputs(Requests(250)) for i in instances})

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"read_cloud called {name}")

    def poll_move(self, handle: str) -> OperationStatus:  # pragma: no cover - never called
        raise AssertionError("poll_move")


def test_read_cloud_uses_the_read_hooks_only() -> None:
    cloud = SimulatedCloud()
    cloud.add_host("h0", vcpus=4)
    cloud.add_host("h1", vcpus=4)
    cloud.add_instance("i0", "p", "h0")
    driver = _ReadOnlyDriver(cloud)
    snapshot = read_cloud(driver)  # type: ignore[arg-type]
    assert driver.calls == [
        "list_hosts",
        "list_instances",
        "cloud_constraints",
        "scheduling_inputs",
    ]
    assert [h.name for h in snapshot.hosts] == ["h0", "h1"]
    # the instance on a host the cloud did not list is left out
    assert [i.instance_id for i in snapshot.instances] == ["i0"]
    assert snapshot.constraints.members == {"i0": "g"}
    assert snapshot.scheduling is not None
    assert list(snapshot.scheduling.pods) == ["i0"]


def test_read_cloud_of_a_driver_without_constraints() -> None:
    cloud = SimulatedCloud()
    cloud.add_host("h0")
    cloud.add_instance("i0", "p", "h0", vcpus=2)
    snapshot = read_cloud(cloud)
    assert snapshot.constraints == CloudConstraints()
    assert snapshot.instances[0].vcpus == 2


# --------------------------------------------------------------------------- properties


def _assert_same_rules(
    snapshot: CloudSnapshot,
    scenario: Any,
    stored_groups: Sequence[GroupConstraints],
    stored_instances: Sequence[InstanceConstraints],
) -> None:
    """Every instance gets, in the scenario, the rules the engine would apply."""
    engine_view = ConstraintSet.of(stored_groups, stored_instances, cloud=snapshot.constraints)
    scenario_view = ConstraintSet.of(
        scenario.groups,
        [
            i.constraints
            or InstanceConstraints(instance_id=i.id, project_id=i.project, group_id=i.group)
            for i in scenario.instances
            if i.constraints is not None or i.group is not None
        ],
    )
    rules = (
        "max_impacted_members",
        "recovery_time",
        "anti_affinity_group",
        "max_instances_per_host",
    )
    for inst in snapshot.instances:
        want = engine_view.group_of(inst.instance_id, inst.project_id)
        got = scenario_view.group_of(inst.instance_id, inst.project_id)
        assert [getattr(got, r) for r in rules] == [getattr(want, r) for r in rules], inst
        assert got.project_id == inst.project_id


_PROJECTS = st.sampled_from(["p1", "p2", "p3"])
_GROUP_IDS = st.sampled_from(["g1", "g2", "g3"])


@st.composite
def _clouds(
    draw: st.DrawFn,
) -> tuple[CloudSnapshot, list[GroupConstraints], list[InstanceConstraints]]:
    n_hosts = draw(st.integers(1, 5))
    hosts = tuple(
        Host(f"h{i}", vcpus=draw(st.integers(0, 32)), enabled=draw(st.booleans()))
        for i in range(n_hosts)
    )
    instances = tuple(
        Instance(
            f"i{k}",
            draw(_PROJECTS),
            f"h{draw(st.integers(0, n_hosts - 1))}",
            vcpus=draw(st.integers(0, 8)),
            live_migratable=draw(st.booleans()),
        )
        for k in range(draw(st.integers(0, 10)))
    )

    def group(group_id: str) -> GroupConstraints:
        return GroupConstraints(
            group_id,
            draw(_PROJECTS),
            max_impacted_members=draw(st.integers(1, 3)),
            recovery_time=draw(st.sampled_from([0, 30])),
            anti_affinity_group=draw(st.booleans()),
        )

    cloud_groups = [group(f"sg-{n}") for n in range(draw(st.integers(0, 2)))]
    members = {
        i.instance_id: draw(st.sampled_from([g.group_id for g in cloud_groups]))
        for i in instances
        if cloud_groups and draw(st.booleans())
    }
    stored_groups = list(
        {
            (g.project_id, g.group_id): g
            for g in (group(draw(_GROUP_IDS)) for _ in range(draw(st.integers(0, 4))))
        }.values()
    )
    stored_instances = [
        InstanceConstraints(
            i.instance_id,
            draw(st.sampled_from([i.project_id, "p1"])),
            group_id=draw(st.one_of(st.none(), _GROUP_IDS, st.sampled_from(["sg-0", "sg-1"]))),
            lead_time=draw(st.sampled_from([0, 60])),
        )
        for i in instances
        if draw(st.booleans())
    ]
    return (
        CloudSnapshot(hosts, instances, CloudConstraints(tuple(cloud_groups), members)),
        stored_groups,
        stored_instances,
    )


@pytest.mark.no_cover
@PROPERTY
@given(_clouds())
def test_every_snapshot_makes_a_valid_scenario_with_the_engines_rules(
    case: tuple[CloudSnapshot, list[GroupConstraints], list[InstanceConstraints]],
) -> None:
    snapshot, stored_groups, stored_instances = case
    scenario = scenario_from_cloud(snapshot, stored_groups, stored_instances)
    _assert_same_rules(snapshot, scenario, stored_groups, stored_instances)
    # what fenix export writes loads back into the same scenario
    text = yaml.safe_dump(scenario_data(snapshot, stored_groups, stored_instances))
    assert load_scenario(text) == scenario


def test_a_group_named_like_a_renamed_one_keeps_ids_apart() -> None:
    stored = [
        GroupConstraints("tier", "web"),
        GroupConstraints("tier@db", "db", max_impacted_members=2),
        GroupConstraints("tier", "db", max_impacted_members=3),
    ]
    instances = [
        InstanceConstraints("vm-a", "web", "tier"),
        InstanceConstraints("vm-c", "db", "tier@db"),
        InstanceConstraints("vm-d", "db", "tier"),
    ]
    snapshot = _snapshot()
    scenario = scenario_from_cloud(snapshot, stored, instances)
    ids = [i.group for i in scenario.instances]
    assert len({g for g in ids if g}) == 3
    _assert_same_rules(snapshot, scenario, stored, instances)
