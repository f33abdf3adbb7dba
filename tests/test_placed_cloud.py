"""PlacedCloud: the simulated scheduler keeps server-group rules as Nova does,
and scenarios carry them in their ``placement`` section."""

from __future__ import annotations

from textwrap import dedent

import pytest

from fenix_core.errors import InvalidInput, TargetRefused
from fenix_core.model import Instance
from fenix_core.placement_rules import PlacementRule
from fenix_core.sim.scenario import load_scenario
from fenix_core.sim.simulation import Simulation
from fenix_core.testing import PlacedCloud, SimClock


def _cloud(*rules: PlacementRule) -> PlacedCloud:
    cloud = PlacedCloud(placement=rules, clock=SimClock())
    for name in ("h0", "h1", "h2", "h3"):
        cloud.add_host(name, vcpus=8)
    cloud.add_instance("a1", "p", "h0")
    cloud.add_instance("a2", "p", "h1")
    cloud.add_instance("a3", "p", "h2", vcpus=4)
    return cloud


ANTI = PlacementRule("sg", "anti-affinity", ["a1", "a2"])


def test_a_target_holding_an_anti_affine_member_is_refused() -> None:
    cloud = _cloud(ANTI)
    with pytest.raises(TargetRefused, match=r"no valid host: h1 breaks the anti-affinity .* of a1"):
        cloud.start_move("a1", "LIVE_MIGRATE", "h1", "k1")
    cloud.start_move("a1", "LIVE_MIGRATE", "h3", "k2")
    # a member on its way to h3 counts there already
    with pytest.raises(TargetRefused, match="h3 breaks"):
        cloud.start_move("a2", "LIVE_MIGRATE", "h3", "k3")


def test_max_per_host_allows_that_many_members() -> None:
    cloud = _cloud(PlacementRule("sg", "anti-affinity", ["a1", "a2", "a3"], max_per_host=2))
    cloud.start_move("a1", "MIGRATE", "h1", "k1")
    with pytest.raises(TargetRefused, match="h1 breaks"):
        cloud.start_move("a3", "MIGRATE", "h1", "k2")


def test_an_affinity_member_cannot_move_at_all() -> None:
    cloud = _cloud(PlacementRule("sg", "affinity", ["a1", "a4"]))
    cloud.add_instance("a4", "p", "h0")
    with pytest.raises(TargetRefused, match="affinity server group sg keeps it where it is"):
        cloud.start_move("a1", "MIGRATE", "h1", "k1")


def test_without_a_target_the_scheduler_picks_an_allowed_host() -> None:
    cloud = _cloud(PlacementRule("sg", "anti-affinity", ["a1", "a2", "a3"]))
    # h3 is the only host without a member
    handle = cloud.start_move("a1", "LIVE_MIGRATE", None, "k1")
    assert cloud.poll_move(handle).detail.endswith("h0 -> h3 running")
    with pytest.raises(TargetRefused, match="no valid host"):
        cloud.start_move("a2", "LIVE_MIGRATE", None, "k2")


def test_soft_rules_never_refuse_and_the_same_key_is_idempotent() -> None:
    cloud = _cloud(PlacementRule("sg", "soft-anti-affinity", ["a1", "a2"]))
    first = cloud.start_move("a1", "LIVE_MIGRATE", "h1", "k1")
    assert cloud.start_move("a1", "LIVE_MIGRATE", "h1", "k1") == first


def test_the_rules_are_reported_as_the_clouds_placement() -> None:
    other = PlacementRule("sg-2", "affinity", ["zz"])
    cloud = _cloud(ANTI, other)
    listed = [Instance("a1", "p", "h0")]
    assert cloud.cloud_constraints(listed).placement == (ANTI,)


SCENARIO = """
hosts:
  - {name: "cmp-{i}", count: 3, vcpus: 8}
instances:
  - {id: "vm-{i}", count: 3, project: p, host: "cmp-{i}", vcpus: 2}
placement:
  - {group_id: sg, policy: anti-affinity, members: [vm-0, vm-1, vm-2], max_per_host: 2}
actions:
  - {plugin: upgrade, seconds: 60}
"""


def test_a_scenarios_placement_is_kept_by_its_simulation() -> None:
    scenario = load_scenario(dedent(SCENARIO))
    assert scenario.placement == (
        PlacementRule("sg", "anti-affinity", ["vm-0", "vm-1", "vm-2"], max_per_host=2),
    )
    with Simulation(scenario) as sim:
        assert isinstance(sim.cloud, PlacedCloud)
        result = sim.run()
        assert result.view.state == "MAINTENANCE_DONE", result.view.reason
        for host in ("cmp-0", "cmp-1", "cmp-2"):
            assert len(sim.cloud.instances_on(host)) <= 2
    without = load_scenario(dedent(SCENARIO).split("placement:")[0] + "actions: []\n")
    with Simulation(without) as sim:
        assert not isinstance(sim.cloud, PlacedCloud)


@pytest.mark.parametrize(
    ("entry", "field", "message"),
    [
        (
            "{group_id: sg, policy: anti-affinity, members: [vm-0, vm-9]}",
            "placement[0].members[1]",
            "no instance 'vm-9'",
        ),
        ("{group_id: sg, policy: sideways, members: [vm-0]}", "placement[0].policy", ""),
        (
            "{group_id: sg, policy: affinity, members: [vm-0], max_per_host: 0}",
            "placement[0].max_per_host",
            "",
        ),
        (
            "{group_id: sg, policy: affinity, members: [vm-0], colour: red}",
            "placement[0].colour",
            "",
        ),
    ],
)
def test_bad_placement_entries_name_the_field(entry: str, field: str, message: str) -> None:
    text = dedent(SCENARIO).split("placement:")[0] + f"placement:\n  - {entry}\n"
    with pytest.raises(InvalidInput) as raised:
        load_scenario(text)
    fields = [e.field for e in raised.value.errors]
    assert field in fields, raised.value.errors
    assert message in str(raised.value)


def test_a_placement_group_defined_twice_is_refused() -> None:
    rule = "{group_id: sg, policy: affinity, members: [vm-0]}"
    text = dedent(SCENARIO).split("placement:")[0] + f"placement:\n  - {rule}\n  - {rule}\n"
    with pytest.raises(InvalidInput, match="defined twice") as raised:
        load_scenario(text)
    assert raised.value.errors[0].field == "placement[1].group_id"


def test_an_affinity_member_apart_may_only_join_the_others() -> None:
    cloud = _cloud(PlacementRule("sg", "affinity", ["a1", "a2"]))
    with pytest.raises(TargetRefused, match="h2 breaks the affinity server group sg of a1"):
        cloud.start_move("a1", "MIGRATE", "h2", "k1")
    cloud.start_move("a1", "MIGRATE", "h1", "k2")
