"""Which instances of a pending or draining host the constrained workflow
counts as the host's members: one rule (neither moving, gone, nor out of the
session's scope) for a host's load, for the groups each pending host is named
under (the weights the hosts opened ahead are ranked by) and for the draining
hosts' instances kept between decisions."""

from __future__ import annotations

from datetime import UTC, datetime

from fenix_core.contract import HostView, InstanceView
from fenix_core.states import HostState, InstanceState
from fenix_core.testing.contract import FakeContext
from fenix_core.workflows import constrained

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_a_hosts_moving_or_out_of_scope_instances_are_not_its_members() -> None:
    """cmp-1 pending holds vm-a PENDING, vm-b moving (IN_ACTION, counted
    where it lands) and vm-c OUT_OF_SCOPE (never moved): its load and the
    groups it is named under for the idle weights it feeds both have pA
    only. Before, the load kept pC and the groups kept pB, so a host's kept
    score and the one worked out from its load could differ. A draining
    host's out-of-scope instance is not one still to leave either."""
    ctx = FakeContext(
        now=NOW,
        hosts=[
            HostView("cmp-0", "compute", HostState.DRAINING, 8, False, 0),
            HostView("cmp-1", "compute", HostState.PENDING, 8, True, 1),
        ],
        instances=[
            InstanceView("vm-a", "pA", "cmp-1", 1, InstanceState.PENDING),
            InstanceView("vm-b", "pB", "cmp-1", 1, InstanceState.IN_ACTION),
            InstanceView("vm-c", "pC", "cmp-1", 1, InstanceState.OUT_OF_SCOPE),
            InstanceView("vm-d", "pD", "cmp-0", 1, InstanceState.OUT_OF_SCOPE),
            InstanceView("vm-e", "pE", "cmp-0", 1, InstanceState.PENDING),
        ],
        workflow="constrained",
    )
    wf = constrained.ConstrainedWorkflow()
    counts = wf._counts_of(ctx)
    step = constrained.reads._Step(wf, ctx, counts)
    pending = ctx.hosts.get("cmp-1")
    assert pending is not None
    load = step.pending(pending).load
    named = {g for g, hosts in counts.pending_hosts_of.items() if "cmp-1" in hosts}
    assert load.groups == named == {"project:pA"}
    assert [m.instance_id for m in load.members] == ["vm-a"]
    assert counts.pending_floor == [(1, "cmp-1")]  # the load's vcpus, its lower bound
    draining = ctx.hosts.get("cmp-0")
    assert draining is not None
    kept = step.draining()
    assert list(kept.on["cmp-0"]) == ["vm-e"]
    assert [m.instance_id for m in step.draining_load(draining, kept).members] == ["vm-e"]
    assert [m.instance_id for m in step.members_on("cmp-0")] == ["vm-e"]


def test_a_pending_hosts_out_of_scope_instance_takes_no_room_when_it_opens() -> None:
    """cmp-1 holds vm-a (1 vCPU) and an out-of-scope 8-vCPU instance that the
    session never moves; cmp-0, maintained, has 4 vCPUs of room. cmp-1 opens
    since its one member fits there. Before, its load counted the
    out-of-scope instance (9 vCPUs in 4) and the host was never opened."""
    ctx = FakeContext(
        now=NOW,
        hosts=[
            HostView("cmp-0", "compute", HostState.MAINTAINED, 4, True, 0),
            HostView("cmp-1", "compute", HostState.PENDING, 12, True, 1),
        ],
        instances=[
            InstanceView("vm-a", "pA", "cmp-1", 1, InstanceState.PENDING),
            InstanceView("vm-x", "pX", "cmp-1", 8, InstanceState.OUT_OF_SCOPE),
        ],
        workflow="constrained",
    )
    wf = constrained.ConstrainedWorkflow()
    cst = ctx.state_of(constrained.ConstrainedState)
    step = constrained.reads._Step(wf, ctx, wf._counts_of(ctx))
    assert constrained.opening._open(ctx, step, cst) == (True, False)
    opened = ctx.hosts.get("cmp-1")
    assert opened is not None
    assert opened.state == HostState.DRAINING
