"""FakeContext (fenix_core.testing.contract) enforces the workflow contract's
rules: host work needs an admission from the pipeline, Move puts the
instance IN_ACTION itself, and anything unknown is refused before anything
is recorded. A property test drives random call sequences and checks the
rules hold after each, refused calls changing nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fenix_core import ActionSpec
from fenix_core.contract import (
    ContractError,
    DisableHost,
    EnableHost,
    HostAdmission,
    HostView,
    InstanceView,
    Move,
    OpKind,
    ProjectView,
    RunAction,
    Watch,
)
from fenix_core.placement_rules import PlacementRule
from fenix_core.states import HostState, InstanceAction, InstanceState, SessionState
from fenix_core.testing.contract import MOVABLE, FakeContext

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIVE = InstanceAction.LIVE_MIGRATE
UPGRADE = ActionSpec("upgrade", "host")


def fleet(closed: dict[str, str] | None = None) -> FakeContext:
    hosts = [HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(3)]
    instances = [
        InstanceView("vm-a", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("vm-b", "p2", "cmp-0", 4, InstanceState.PENDING),
        InstanceView("vm-c", "p1", "cmp-1", 2, InstanceState.DONE),
    ]
    projects = [ProjectView("p1", True, None, None), ProjectView("p2", False, None, None)]
    return FakeContext(now=T0, hosts=hosts, instances=instances, projects=projects, closed=closed)


def snapshot(ctx: FakeContext) -> Any:
    everyone = (ctx.instances.get(n) for n in ("vm-a", "vm-b", "vm-c"))
    return (
        [(h.name, h.state) for h in ctx.hosts],
        [(i.instance_id, i.host, i.state) for i in everyone if i is not None],
        list(ctx.submitted),
        sorted(ctx.admitted),
    )


def test_host_work_needs_an_admission() -> None:
    ctx = fleet()
    for op in (DisableHost("cmp-0"), RunAction(UPGRADE, "host", "cmp-0"), Move("vm-a", LIVE)):
        with pytest.raises(ContractError) as info:
            ctx.submit(op)
        assert info.value.subject == "host 'cmp-0'"
        assert type(op).__name__ in info.value.rule
        assert "admit" in info.value.rule
    assert ctx.submitted == []
    assert ctx.instances.get("vm-a").state is InstanceState.PENDING  # type: ignore[union-attr]
    assert ctx.admit("cmp-0").admitted
    ref = ctx.submit(DisableHost("cmp-0"))
    assert ref.kind is OpKind.DISABLE_HOST
    ctx.submit(RunAction(UPGRADE, "host", "cmp-0"))
    # Work that is not on a host, and putting a host back, need no admission.
    ctx.submit(RunAction(UPGRADE, "pre"))
    ctx.submit(EnableHost("cmp-2"))
    assert [op for _, op in ctx.submitted][-1] == EnableHost("cmp-2")


def test_a_closed_host_is_not_admitted_and_gets_no_work() -> None:
    ctx = fleet(closed={"cmp-0": "outside the maintenance window"})
    answer = ctx.admit("cmp-0")
    assert not answer.admitted
    assert answer.reason == "outside the maintenance window"
    with pytest.raises(ContractError):
        ctx.submit(DisableHost("cmp-0"))
    assert ctx.submitted == []


def test_move_puts_the_instance_in_action_itself_and_only_once() -> None:
    ctx = fleet()
    ctx.admit("cmp-0")
    ref = ctx.submit(Move("vm-a", LIVE))  # straight from PENDING: no ACTION_CHOSEN first
    assert ref.kind is OpKind.MOVE
    assert ctx.instances.get("vm-a").state is InstanceState.IN_ACTION  # type: ignore[union-attr]
    with pytest.raises(ContractError) as info:
        ctx.submit(Move("vm-a", LIVE, target="cmp-2"))
    assert info.value.subject == "instance 'vm-a'"
    assert "IN_ACTION" in info.value.rule
    assert len(ctx.submitted) == 1


def test_an_instance_that_does_not_have_to_move_is_refused_by_state() -> None:
    ctx = fleet()
    ctx.admit("cmp-1")
    with pytest.raises(ContractError, match="from state DONE"):
        ctx.submit(Watch("vm-c"))
    assert ctx.instances.get("vm-c").state is InstanceState.DONE  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("op", "subject"),
    [
        (Move("vm-zz", LIVE), "instance 'vm-zz'"),
        (Move("vm-a", LIVE, target="cmp-9"), "host 'cmp-9'"),
        (DisableHost("cmp-9"), "host 'cmp-9'"),
        (RunAction(UPGRADE, "host", "cmp-9"), "host 'cmp-9'"),
        (EnableHost("cmp-9"), "host 'cmp-9'"),
    ],
)
def test_unknown_names_are_refused_before_anything_is_recorded(op: Any, subject: str) -> None:
    ctx = fleet()
    ctx.admit("cmp-0")
    before = snapshot(ctx)
    with pytest.raises(ContractError) as info:
        ctx.submit(op)
    assert info.value.subject == subject
    assert snapshot(ctx) == before


def test_views_answer_by_state_host_and_project() -> None:
    ctx = fleet()
    assert [h.name for h in ctx.hosts.in_state(HostState.PENDING)] == ["cmp-0", "cmp-1", "cmp-2"]
    assert [i.instance_id for i in ctx.instances.on("cmp-0")] == ["vm-a", "vm-b"]
    assert [i.instance_id for i in ctx.instances.of("p1")] == ["vm-a", "vm-c"]
    assert [i.instance_id for i in ctx.instances.of_on("p1", "cmp-0")] == ["vm-a"]
    assert ctx.capacity.free("cmp-0") == 2
    assert list(ctx.capacity.targets("vm-b")) == ["cmp-2", "cmp-1"]  # most free first
    assert list(ctx.capacity.targets("vm-b", exclude={"cmp-2"})) == ["cmp-1"]
    ctx.ask("PREPARE_MAINTENANCE", {"p1": ["vm-a"]})
    assert ctx.projects.awaiting_count("PREPARE_MAINTENANCE") == 1
    assert ctx.projects.awaiting_count() == 1
    with pytest.raises(ContractError, match="belongs to 'p1', not to 'p2'"):
        ctx.ask("PREPARE_MAINTENANCE", {"p2": ["vm-a"]})
    with pytest.raises(ContractError, match="cannot go from PENDING to MAINTAINED"):
        ctx.set_host_state("cmp-0", HostState.MAINTAINED)


def test_targets_keep_the_placement_rules_with_moves_in_flight() -> None:
    rules = [PlacementRule("db", "anti-affinity", ("vm-a", "vm-c"))]
    ctx = FakeContext(
        now=T0,
        hosts=[HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(4)]
        + [HostView("ctl-0", "controller", HostState.PENDING, 64, True, 9)],
        instances=[
            InstanceView("vm-a", "p1", "cmp-0", 2, InstanceState.PENDING),
            InstanceView("vm-b", "p1", "cmp-0", 2, InstanceState.PENDING),
            InstanceView("vm-c", "p1", "cmp-1", 2, InstanceState.PENDING),
        ],
        rules=rules,
    )
    # vm-c's host is forbidden to vm-a; the controller is another placement class.
    assert list(ctx.capacity.targets("vm-a")) == ["cmp-2", "cmp-3"]
    ctx.admit("cmp-1")
    ctx.submit(Move("vm-c", LIVE, target="cmp-2"))
    # While vm-c travels to cmp-2 the cloud counts it there (and on cmp-1).
    assert list(ctx.capacity.targets("vm-a")) == ["cmp-3"]
    # and its room on cmp-2 is taken from the start of the move.
    assert ctx.capacity.free("cmp-2") == 6
    assert list(ctx.capacity.targets("vm-b")) == ["cmp-3", "cmp-1", "cmp-2"]


HOSTS = st.sampled_from(["cmp-0", "cmp-1", "cmp-2", "cmp-9"])
INSTANCES = st.sampled_from(["vm-a", "vm-b", "vm-c", "vm-zz"])
CALLS = st.one_of(
    st.tuples(st.just("admit"), HOSTS),
    st.tuples(st.just("disable"), HOSTS),
    st.tuples(st.just("run"), HOSTS),
    st.tuples(st.just("move"), INSTANCES, st.none() | HOSTS),
    st.tuples(st.just("state"), INSTANCES, st.sampled_from(InstanceState)),
)


@given(calls=st.lists(CALLS, max_size=30), closed=st.sets(HOSTS, max_size=2))
def test_random_calls_never_break_a_rule(calls: list[tuple[Any, ...]], closed: set[str]) -> None:
    ctx = fleet(closed=dict.fromkeys(closed, "window closed"))
    for call in calls:
        before = snapshot(ctx)
        states = {
            i.instance_id: i.state
            for i in (ctx.instances.get(n) for n in ("vm-a", "vm-b", "vm-c"))
            if i is not None
        }
        hosts = {
            i.instance_id: i.host
            for i in (ctx.instances.get(n) for n in ("vm-a", "vm-b", "vm-c"))
            if i is not None
        }
        admitted = set(ctx.admitted)
        try:
            if call[0] == "admit":
                ctx.admit(call[1])
            elif call[0] == "disable":
                ctx.submit(DisableHost(call[1]))
            elif call[0] == "run":
                ctx.submit(RunAction(UPGRADE, "host", call[1]))
            elif call[0] == "move":
                ctx.submit(Move(call[1], LIVE, target=call[2]))
            else:
                ctx.set_instance_state(call[1], call[2])
        except ContractError:
            assert snapshot(ctx) == before, call
            continue
        if call[0] in ("disable", "run"):
            assert call[1] in admitted
        if call[0] == "move":
            assert hosts[call[1]] in admitted
            assert states[call[1]] in MOVABLE
            assert ctx.instances.get(call[1]).state is InstanceState.IN_ACTION  # type: ignore[union-attr]
        assert not (ctx.admitted & closed)


def test_notify_project_checks_names_and_records_without_awaiting() -> None:
    from fenix_core.contract import ContractError as _CE

    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[HostView("h1", "compute", HostState.PENDING, 8, True, 0)],
        instances=[InstanceView("i1", "p1", "h1", 1, InstanceState.PENDING)],
        projects=[ProjectView("p1", True, None, None), ProjectView("p2", True, None, None)],
    )
    with pytest.raises(_CE, match="belongs to 'p1'"):
        ctx.notify_project("p2", "ADMIN_ACTION_DONE", ["i1"])
    with pytest.raises(_CE, match="not a project"):
        ctx.notify_project("p9", "ADMIN_ACTION_DONE", [])
    ctx.notify_project("p1", "ADMIN_ACTION_DONE", ["i1"])
    assert ctx.told == [("p1", "ADMIN_ACTION_DONE", ("i1",))]
    assert ctx.projects.awaiting_count() == 0


def test_set_instance_state_records_the_chosen_action() -> None:
    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[HostView("h1", "compute", HostState.PENDING, 8, True, 0)],
        instances=[InstanceView("i1", "p1", "h1", 1, InstanceState.PENDING)],
    )
    ctx.set_instance_state("i1", InstanceState.ACTION_CHOSEN, action="MIGRATE")
    view = ctx.instances.get("i1")
    assert view is not None
    assert view.action == "MIGRATE"
    ctx.set_instance_state("i1", InstanceState.PENDING)
    view = ctx.instances.get("i1")
    assert view is not None
    assert view.action == "MIGRATE"


def test_a_gone_instance_takes_no_room_and_counts_for_no_rule() -> None:
    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[
            HostView("h1", "compute", HostState.PENDING, 4, True, 0),
            HostView("h2", "compute", HostState.PENDING, 4, True, 1),
        ],
        instances=[
            InstanceView("a", "p1", "h1", 3, InstanceState.PENDING),
            InstanceView("b", "p1", "h2", 3, InstanceState.GONE),
        ],
        rules=[PlacementRule("g", "anti-affinity", ("a", "b"))],
    )
    assert ctx.capacity.free("h2") == 4
    assert list(ctx.capacity.targets("a")) == ["h2"]


def test_stop_awaiting_ends_the_wait_and_sets_the_state_it_is_given() -> None:
    from fenix_core.contract import ContractError as _CE

    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[HostView("h1", "compute", HostState.PENDING, 8, True, 0)],
        instances=[InstanceView("i1", "p1", "h1", 1, InstanceState.PENDING)],
        projects=[ProjectView("p1", True, None, None), ProjectView("p2", True, None, None)],
    )
    ctx.ask("MAINTENANCE", {"p1": ["i1"], "p2": []})
    assert ctx.projects.awaiting_count("MAINTENANCE") == 2
    ctx.stop_awaiting("p1", state="DEFAULT_MAINTENANCE")
    ctx.stop_awaiting("p2")
    assert ctx.projects.awaiting_count() == 0
    assert ctx.projects.get("p1").state == "DEFAULT_MAINTENANCE"  # type: ignore[union-attr]
    assert ctx.projects.get("p2").state == "MAINTENANCE"  # type: ignore[union-attr]
    ctx.stop_awaiting("p2")  # awaits nothing, no state given: left as it is
    assert ctx.projects.get("p2").state == "MAINTENANCE"  # type: ignore[union-attr]
    # Awaits nothing (the engine took its NACK before on_reply), a state
    # given: the workflow acts for it by default and says so.
    ctx.stop_awaiting("p1", state="DEFAULT_PREPARE_MAINTENANCE")
    assert ctx.projects.get("p1").state == "DEFAULT_PREPARE_MAINTENANCE"  # type: ignore[union-attr]
    assert ctx.projects.awaiting_count() == 0
    with pytest.raises(_CE, match="not a project"):
        ctx.stop_awaiting("p9")


def test_paused_admits_no_host_and_refuses_a_new_move_as_the_engine_does() -> None:
    from fenix_core.contract import ContractError as _CE

    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[
            HostView("h1", "compute", HostState.PENDING, 8, True, 0),
            HostView("h2", "compute", HostState.PENDING, 8, True, 1),
        ],
        instances=[InstanceView("i1", "p1", "h1", 1, InstanceState.PENDING)],
    )
    assert ctx.admit("h1").admitted
    ctx.paused = "by the admin"
    assert ctx.admit("h1") == HostAdmission("h1", False, "paused: by the admin")
    assert not ctx.admit("h2").admitted
    with pytest.raises(_CE, match="paused"):
        ctx.submit(Move("i1", InstanceAction.LIVE_MIGRATE))
    assert ctx.instances.get("i1").state is InstanceState.PENDING  # type: ignore[union-attr]
    ctx.submit(RunAction(ActionSpec("upgrade", "host"), "host:h1", "h1"))  # under way: goes on
    ctx.paused = None
    ctx.submit(Move("i1", InstanceAction.LIVE_MIGRATE))


def test_the_session_says_which_instance_actions_the_cloud_allows() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert FakeContext(now=now).session.allowed_actions == ()  # not known: every action
    ctx = FakeContext(now=now, allowed_actions=["EVICTION", "OWN_ACTION"])
    assert ctx.session.allowed_actions == ("EVICTION", "OWN_ACTION")
    ctx.transition(SessionState.PLANNED_MAINTENANCE)
    assert ctx.session.allowed_actions == ("EVICTION", "OWN_ACTION")  # kept across changes


def test_limits_are_what_targets_apply_and_name_an_affinity_that_cannot_move() -> None:
    ctx = FakeContext(
        now=datetime(2026, 1, 1, tzinfo=UTC),
        hosts=[HostView(f"h{k}", "compute", HostState.PENDING, 8, True, k) for k in range(3)],
        instances=[
            InstanceView("a", "p1", "h0", 1, InstanceState.PENDING),
            InstanceView("b", "p1", "h0", 1, InstanceState.PENDING),
            InstanceView("c", "p1", "h1", 1, InstanceState.PENDING),
            InstanceView("d", "p1", "h2", 1, InstanceState.PENDING),
        ],
        rules=[
            PlacementRule("g1", "affinity", ("a", "b")),
            PlacementRule("g2", "anti-affinity", ("c", "d")),
        ],
    )
    stuck = ctx.capacity.limits("a")
    assert stuck.stuck is not None
    assert stuck.stuck.group_id == "g1"
    assert list(ctx.capacity.targets("a")) == []
    apart = ctx.capacity.limits("c")
    assert apart.stuck is None
    assert not apart.allows("h2")
    assert list(ctx.capacity.targets("c")) == ["h0"]
    with pytest.raises(ContractError, match="not an instance"):
        ctx.capacity.limits("zz")
