"""The contract's per-host stage, per-instance plan and constraints (what the
constrained workflow keeps on records instead of lists in its state): the
same answers from FakeContext and from StepContext over the working set."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from test_context import T0
from test_ws_port import working_set

from fenix_core import SessionRequest
from fenix_core.constraints import ConstraintSet, GroupConstraints
from fenix_core.contract import ContractError, HostView, InstanceView, Move, ProjectView
from fenix_core.contract.context import SessionContext
from fenix_core.core.context import StepContext
from fenix_core.core.ws_port import WorkingSetAdapter
from fenix_core.states import HostState, InstanceAction, InstanceState
from fenix_core.testing.contract import FakeContext

HOSTS = [
    HostView("c1", "compute", HostState.PENDING, 8, True, 0),
    HostView("c2", "compute", HostState.PENDING, 8, True, 1),
]
INSTANCES = [InstanceView("vm", "p", "c1", 2, InstanceState.PENDING)]
PROJECTS = [ProjectView("p", True, None, None)]
REQUEST = SessionRequest(default_group_constraints={"max_impacted_members": 3})


def fake() -> SessionContext:
    return FakeContext(now=T0, request=REQUEST, hosts=HOSTS, instances=INSTANCES, projects=PROJECTS)


def step() -> SessionContext:
    ws = working_set(HOSTS, INSTANCES, PROJECTS, request=REQUEST)
    return StepContext(WorkingSetAdapter(ws, now=T0), T0)


CONTEXTS: list[Callable[[], SessionContext]] = [fake, step]


@pytest.mark.parametrize("make", CONTEXTS)
def test_a_host_stage_and_an_instance_plan_show_in_the_views(
    make: Callable[[], SessionContext],
) -> None:
    ctx = make()
    assert ctx.hosts.get("c1").stage == 0  # type: ignore[union-attr]
    ctx.set_host_stage("c1", 5 | 1 << 16)
    assert ctx.hosts.get("c1").stage == 5 | 1 << 16  # type: ignore[union-attr]
    later = T0 + timedelta(seconds=90)
    ctx.set_instance_plan("vm", wave=2, not_before=later, impacted_until=None)
    view = ctx.instances.get("vm")
    assert view is not None
    assert (view.wave, view.not_before, view.impacted_until, view.moves) == (2, later, None, 0)


@pytest.mark.parametrize("make", CONTEXTS)
def test_unknown_hosts_and_instances_are_refused_by_name(
    make: Callable[[], SessionContext],
) -> None:
    ctx = make()
    with pytest.raises(ContractError, match="'nope'"):
        ctx.set_host_stage("nope", 1)
    with pytest.raises(ContractError, match="'ghost'"):
        ctx.set_instance_plan("ghost", wave=None, not_before=None, impacted_until=None)


@pytest.mark.parametrize("make", CONTEXTS)
def test_a_move_shows_its_target_while_it_runs(make: Callable[[], SessionContext]) -> None:
    ctx = make()
    assert ctx.admit("c1").admitted
    ctx.submit(Move("vm", InstanceAction.LIVE_MIGRATE, "c2"))
    view = ctx.instances.get("vm")
    assert view is not None
    assert (view.state, view.target) == (InstanceState.IN_ACTION, "c2")


@pytest.mark.parametrize("make", CONTEXTS)
def test_constraints_give_implicit_groups_the_request_default(
    make: Callable[[], SessionContext],
) -> None:
    ctx = make()
    assert ctx.constraints.group_of("vm", "p").max_impacted_members == 3


def test_the_adapter_puts_api_constraints_over_the_default_and_counts_moves() -> None:
    ws = working_set(HOSTS, INSTANCES, PROJECTS, request=REQUEST)
    adapter = WorkingSetAdapter(ws, now=T0)
    first = adapter.constraints
    assert adapter.constraints is first  # built once
    adapter.api_constraints = ConstraintSet.of(
        [GroupConstraints("g", "p", max_impacted_members=2)],
        [],
    )
    assert adapter.constraints.group("g", "p").max_impacted_members == 2
    adapter.place("vm", "c2")
    view = adapter.instance_view("vm")
    assert view is not None
    assert (view.host, view.moves, view.target) == ("c2", 1, None)


def test_fake_context_counts_a_move_when_the_engine_places_the_instance() -> None:
    ctx = FakeContext(now=T0, hosts=HOSTS, instances=INSTANCES, projects=PROJECTS)
    ctx.placed("vm", "c2")
    ctx.placed("vm", "c2")  # the same host: not a move
    assert ctx.instances.get("vm").moves == 1  # type: ignore[union-attr]
