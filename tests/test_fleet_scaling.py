"""What a session does once per host or once per instance costs about the
same at any fleet size: 10x the fleet costs about 10x, not 100x (issue 18's
10,000-host run). Each test times one piece of work at two sizes, 10x apart,
and fails on growth of 30x or more (a loop over the fleet per host measures
about 100x)."""

from __future__ import annotations

import sys
from collections.abc import Callable

import pytest
from scaling import growth
from test_context import T0
from test_ws_port import working_set

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import HostView, InstanceView, ProjectView
from fenix_core.core.context import StepContext
from fenix_core.core.factory import CloudRead, SessionFactory
from fenix_core.core.indexes import HostIndex, Loan
from fenix_core.core.working_set import WorkingSet
from fenix_core.core.ws_port import WorkingSetAdapter
from fenix_core.model import Host
from fenix_core.states import HostState, InstanceState

LINEAR = 30.0  # for 10x the size: linear measures ~10x, quadratic ~100x


def test_a_session_s_initial_rows_cost_linear_time_in_its_hosts() -> None:
    # Each host outside the scope was looked up in the union of the scope
    # and the added hosts, built again for each host.
    request = SessionRequest(
        workflow="rolling", actions=[ActionSpec(plugin="upgrade", type="host")]
    )

    def rows_of(hosts: int) -> Callable[[], object]:
        listed = tuple(Host(f"compute-{n:05d}", vcpus=24) for n in range(hosts))
        read = CloudRead(
            hosts=listed,
            instances=(),
            allowed=("LIVE_MIGRATE",),
            found=None,
            scope=tuple(h.name for h in listed),
            gone=(),
            host_guard=False,
        )
        return lambda: SessionFactory.records(request, read, subscribed=(), session_id="s", now=T0)

    assert growth(rows_of, 400, 4_000) < LINEAR


def _fleet(hosts: int) -> tuple[StepContext, WorkingSet]:
    """A session of ``hosts`` 24-vCPU computes pending, 20 one-vCPU instances
    on each (every host has 4 vCPUs free: one capacity level holds them all)."""
    views = [
        HostView(f"compute-{n:05d}", "compute", HostState.PENDING, 24, True, n)
        for n in range(hosts)
    ]
    instances = [
        InstanceView(f"vm-{n:05d}-{i:02d}", "p", f"compute-{n:05d}", 1, InstanceState.PENDING)
        for n in range(hosts)
        for i in range(20)
    ]
    ws = working_set(views, instances, [ProjectView("p", True, None, None)])
    return StepContext(WorkingSetAdapter(ws, now=T0), T0), ws


@pytest.mark.no_cover
@pytest.mark.slow
def test_a_decision_s_first_target_and_pending_hosts_cost_the_same_at_any_fleet_size() -> None:
    # The best target of a move and the pending hosts in order are read a few
    # times per move: each look copied a list of most of the fleet (the hosts
    # with the same free vCPUs; the pending ones), so a run cost O(hosts) per
    # move. The lists are lent to the reader now, copied only if they change.
    def looks(hosts: int) -> Callable[[], object]:
        ctx, _ = _fleet(hosts)

        def work() -> None:
            for _ in range(200):
                next(ctx.capacity.targets("vm-00000-00"))
                bool(ctx.hosts.in_state(HostState.PENDING))

        return work

    assert growth(looks, 500, 5_000) < 3.0  # a copy per look: about 10x


@pytest.mark.no_cover
@pytest.mark.slow
def test_finding_the_empty_pending_hosts_costs_the_same_at_any_fleet_size() -> None:
    # Asked at each decision (is a host ready for maintenance?): the pending
    # hosts were copied and every busy host taken out of the copy.
    def looks(hosts: int) -> Callable[[], object]:
        ctx, _ = _fleet(hosts)

        def work() -> None:
            for _ in range(200):
                assert not ctx.hosts.without_instances(HostState.PENDING)

        return work

    assert growth(looks, 500, 5_000) < 3.0  # a look at every busy host: about 10x


@pytest.mark.no_cover
@pytest.mark.slow
def test_counting_the_hosts_of_a_state_and_type_costs_the_same_at_any_fleet_size() -> None:
    # Each rolling decision counts the computes pending and asks whether one
    # is maintained: each answer intersected the state's hosts with the
    # type's, two sets of up to the fleet's size.
    def looks(hosts: int) -> Callable[[], object]:
        ctx, ws = _fleet(hosts)
        ws.set_host_state("compute-00000", HostState.MAINTAINED.value)

        def work() -> None:
            for _ in range(200):
                len(ctx.hosts.in_state(HostState.PENDING, type="compute"))
                bool(ctx.hosts.in_state(HostState.MAINTAINED, type="compute"))

        return work

    assert growth(looks, 500, 5_000) < 3.0  # an intersection per look: about 10x


def test_a_list_whose_reader_is_gone_changes_in_place_and_a_held_one_is_copied() -> None:
    # A decision reads the pending hosts and drops them; the next host to
    # leave the state copied the whole list all the same (a copy of most of
    # the fleet per host maintained).
    index = HostIndex()
    for n in range(4):
        index.add(f"h{n}", "PENDING", "compute" if n % 2 else "edge", n)
    reader = Loan()
    lent = index.ordered_names("PENDING", None, reader)
    of_type = index.ordered_names("PENDING", "compute", reader)
    assert (list(lent), list(of_type)) == (["h0", "h1", "h2", "h3"], ["h1", "h3"])
    del reader
    index.restate("h1", "PENDING", "MAINTAINED")
    assert index.ordered["PENDING"] is lent
    assert index.ordered_of_type[("PENDING", "compute")] is of_type
    assert (list(lent), list(of_type)) == (["h0", "h2", "h3"], ["h3"])

    # Held: the reader keeps its list, the index changes a copy.
    first, second = Loan(), Loan()
    held = index.ordered_names("PENDING", None, first)
    # A second reader while the first is alive: both must keep it.
    assert index.ordered_names("PENDING", None, second) is held
    del second
    index.restate("h0", "PENDING", "MAINTAINED")
    assert list(held) == ["h0", "h2", "h3"]
    assert index.ordered["PENDING"] == ["h2", "h3"]
    assert first is not None


def test_a_host_s_change_of_state_makes_as_many_python_calls_at_any_fleet_size() -> None:
    # The host index's lists are kept sorted by bisection: its sort key was a
    # Python method, called at each comparison (about log2 of the fleet of
    # them, four bisections a change).
    def calls(hosts: int) -> int:
        index = HostIndex()
        for n in range(hosts):
            index.add(f"h{n:05d}", "PENDING", "compute", n)
        made: list[str] = []

        def count(frame: object, event: str, arg: object) -> None:
            if event == "call":
                made.append(event)

        sys.setprofile(count)
        try:
            index.restate(f"h{hosts // 3:05d}", "PENDING", "MAINTAINED")
        finally:
            sys.setprofile(None)
        return len(made)

    assert calls(8) == calls(8_000)


def test_a_capacity_level_whose_reader_is_gone_changes_in_place() -> None:
    # A target search reads the level of the most free hosts (most of the
    # fleet at the start) and is dropped once it has its target; the move
    # then takes room on that target and copied the whole level.
    ctx, ws = _fleet(4)
    level = ws.capacity.level("compute", 4, Loan())  # its reader gone at once
    assert next(ctx.capacity.targets("vm-00000-00")) == "compute-00001"
    assert ws.capacity.ordered["compute"][4] is level
    ws.capacity.adjust("compute-00001", used=1)
    assert ws.capacity.ordered["compute"][4] is level  # changed in place, no copy
    assert list(level) == ["compute-00000", "compute-00002", "compute-00003"]
    # A search still alive keeps the level it reached; the index changes a copy.
    targets = ctx.capacity.targets("vm-00000-00")
    assert next(targets) == "compute-00002"
    ws.capacity.adjust("compute-00003", used=1)
    assert next(targets) == "compute-00003"  # the level as it was reached
    assert ws.capacity.ordered["compute"][4] == ["compute-00000", "compute-00002"]
    assert list(level) == ["compute-00000", "compute-00002", "compute-00003"]


def test_a_lent_list_keeps_what_it_held_when_the_capacity_or_the_hosts_change() -> None:
    ctx, ws = _fleet(3)
    targets = ctx.capacity.targets("vm-00000-00")
    pending = ctx.hosts.in_state(HostState.PENDING)
    assert next(targets) == "compute-00001"
    ws.set_host_state("compute-00002", HostState.MAINTAINED.value)
    ws.capacity.adjust("compute-00002", used=1)
    ws.capacity.adjust("compute-00001", used=1)
    # Taken when the level was reached, as a copy was: compute-00002 with it.
    assert list(targets) == ["compute-00002"]
    # Taken when the collection was made: the host maintained since with them.
    assert [h.name for h in pending] == ["compute-00000", "compute-00001", "compute-00002"]
    assert [h.name for h in ctx.hosts.in_state(HostState.PENDING)] == [
        "compute-00000",
        "compute-00001",
    ]
    assert [n for n, _ in ctx.capacity.most_free("compute")] == [
        "compute-00000",
        "compute-00001",
        "compute-00002",
    ]
