"""When the cloud's placement rules leave an instance no host, the v2
rolling workflow fails saying so, as today's does
(tests/openstack/test_openstack_server_groups.py, docs/user-guide.md's
error table): an anti-affinity group that fills every host with room, an
affinity group the cloud never splits (its project must move it)."""

from __future__ import annotations

from contract_driver import Driver
from test_rolling_v2 import fleet

from fenix_core.contract import EnableHost
from fenix_core.placement_rules import PlacementRule
from fenix_core.states import SessionState
from fenix_core.workflows import RollingWorkflow


def test_no_host_outside_the_anti_affinity_group_fails_naming_the_group() -> None:
    # Two computes, one member on each: emptying either needs the other.
    ctx = fleet(
        {"c0": 4, "c1": 4},
        {"a": ("pa", "c0", 2), "b": ("pa", "c1", 2)},
        managed={"pa": False},
        rules=(PlacementRule("sg-pair", "anti-affinity", ("a", "b"), name="db"),),
    )
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == (
        "cannot empty any host: instance a on c0 cannot go anywhere: every host with room "
        "for it holds members of its anti-affinity server group sg-pair (db), which the "
        "cloud enforces; no project has an application manager to scale in"
    )
    assert driver.moves == []  # nothing was asked that the cloud would refuse


def test_a_member_of_an_affinity_group_is_left_to_its_manager() -> None:
    ctx = fleet(
        {"c0": 8, "c1": 8},
        {"a": ("pa", "c0", 2), "b": ("pa", "c0", 2)},
        rules=(PlacementRule("sg-together", "affinity", ("a", "b")),),
    )
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == (
        "instance a is a member of affinity server group sg-together with b on c0: the "
        "cloud moves no member of an affinity group away from the others, so the engine "
        "cannot move it; its project has to move the group itself (answer OWN_ACTION) or "
        "remove the affinity group"
    )
    assert driver.moves == []
    assert EnableHost("c0") in [op for _, op in ctx.submitted]  # back in service
