"""The rolling workflow on the contract (fenix_core.workflows), driven on a
FakeContext by tests/contract_driver.py: today's rolling behaviour
(tests/test_rolling.py, docs/protocol.md) is the spec."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from contract_driver import Driver, LoggingContext, start_time
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import HostView, InstanceView, Move, ProjectView, Watch
from fenix_core.placement_rules import PlacementRule
from fenix_core.states import HostState, InstanceAction, InstanceState, SessionState
from fenix_core.workflows import RollingState, RollingWorkflow

DRAINING = ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")


def fleet(
    hosts: Mapping[str, int],
    instances: Mapping[str, tuple[str, str, int]],
    *,
    managed: Mapping[str, bool] | None = None,
    types: Mapping[str, str] | None = None,
    request: SessionRequest | None = None,
    rules: tuple[PlacementRule, ...] = (),
    closed: Mapping[str, str] | None = None,
) -> LoggingContext:
    """hosts: name -> vcpus; instances: id -> (project, host, vcpus)."""
    projects = sorted({p for p, _, _ in instances.values()})
    return LoggingContext(
        now=start_time(),
        request=request or SessionRequest(hosts=tuple(hosts)),
        hosts=[
            HostView(name, (types or {}).get(name, "compute"), HostState.PENDING, vcpus, True, n)
            for n, (name, vcpus) in enumerate(hosts.items())
        ],
        instances=[
            InstanceView(i, p, h, v, InstanceState.PENDING) for i, (p, h, v) in instances.items()
        ],
        projects=[ProjectView(p, (managed or {}).get(p, True), None, None) for p in projects],
        rules=rules,
        closed=closed,
    )


def run(ctx: LoggingContext, **kwargs: object) -> Driver:
    driver = Driver(ctx, RollingWorkflow(), **kwargs)  # type: ignore[arg-type]
    driver.run()
    return driver


def maintained(ctx: LoggingContext) -> list[str]:
    return sorted(h.name for h in ctx.hosts.in_state(HostState.MAINTAINED))


def test_the_fenix_sequence_of_notifications_per_project() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1), "b": ("p2", "c2", 1)})
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert maintained(ctx) == ["c1", "c2"]
    # a had nowhere to stay before c1 was maintained: it moves twice.
    p1 = [s for p, s in ctx.log if p == "p1"]
    assert p1 == [
        "MAINTENANCE",
        "PREPARE_MAINTENANCE",
        "INSTANCE_ACTION_DONE",
        "ADMIN_ACTION_DONE",
        "PLANNED_MAINTENANCE",
        "INSTANCE_ACTION_DONE",
        "ADMIN_ACTION_DONE",
        "MAINTENANCE_COMPLETE",
    ]
    # p2's host is emptied after one host is maintained: PLANNED, not PREPARE.
    p2 = [s for p, s in ctx.log if p == "p2"]
    assert p2 == [
        "MAINTENANCE",
        "PLANNED_MAINTENANCE",
        "INSTANCE_ACTION_DONE",
        "ADMIN_ACTION_DONE",
        "MAINTENANCE_COMPLETE",
    ]
    # Each host: IN_MAINTENANCE, then MAINTENANCE_COMPLETE, one host after the other.
    hosts = [(h, s) for h, s in ctx.log if h in ("c1", "c2")]
    assert [s for _, s in hosts] == ["IN_MAINTENANCE", "MAINTENANCE_COMPLETE"] * 2
    assert ctx.done == {"c1", "c2"}


def test_the_host_is_disabled_before_the_first_move_off_it() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)})
    driver = run(ctx)
    ops = [type(op).__name__ + ":" + str(getattr(op, "host", "")) for _, op in ctx.submitted]
    assert ops.index("DisableHost:c1") < ops.index("Move:")
    # The drained host's pipeline does not disable it twice; it is enabled again.
    assert ops.count("DisableHost:c1") == 1
    assert "EnableHost:c1" in ops
    assert driver.moves == [("a", "c2", frozenset())]


def test_a_host_disabled_by_someone_else_is_left_disabled() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {})
    ctx.host_enabled("c2", False)
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    kinds = [(type(op).__name__, getattr(op, "host", None)) for _, op in ctx.submitted]
    assert ("DisableHost", "c2") not in kinds
    assert ("EnableHost", "c2") not in kinds


def test_an_empty_host_goes_first_and_instances_prefer_a_maintained_host() -> None:
    ctx = fleet(
        {"c1": 8, "c2": 8, "c3": 8},
        {"a": ("p1", "c1", 2), "b": ("p1", "c2", 1)},
    )
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    # c3 (empty) is maintained first; every instance then moves once, onto it
    # or onto another maintained host.
    first = [h for h, s in ctx.log if s == "IN_MAINTENANCE"]
    assert first[0] == "c3"
    assert sorted(i for i, _, _ in driver.moves) == ["a", "b"]  # once each
    assert {t for _, t, _ in driver.moves} <= {"c3", "c1", "c2"}
    assert not ctx.instances.in_state(InstanceState.PENDING)


def test_own_action_is_watched_and_the_manager_moves_it() -> None:
    def own(project: str, state: str, ids: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        if state.endswith("_MAINTENANCE") and state != "MAINTENANCE_COMPLETE":
            return f"ACK_{state}", dict.fromkeys(ids, "OWN_ACTION")
        return f"ACK_{state}", {}

    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1), "b": ("p1", "c1", 1)})
    driver = run(ctx, answer=own)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    watched = [op.instance_id for _, op in ctx.submitted if isinstance(op, Watch)]
    assert sorted(watched) == ["a", "b"]
    assert driver.moves == []  # the engine migrated nothing itself


def test_nack_fails_the_session_under_the_fail_policy() -> None:
    def nack(project: str, state: str, ids: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        return (f"NACK_{state}" if state in DRAINING else f"ACK_{state}"), {}

    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)})
    run(ctx, answer=nack)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert ctx.session.reason == "project p1 answered NACK_PLANNED_MAINTENANCE"
    assert not any(isinstance(op, Move) for _, op in ctx.submitted)


def test_nack_under_the_default_policy_moves_by_default() -> None:
    def nack(project: str, state: str, ids: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        return (f"NACK_{state}" if state in DRAINING else f"ACK_{state}"), {}

    request = SessionRequest(hosts=("c1", "c2"), reply_policy="default")
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)}, request=request)
    driver = run(ctx, answer=nack)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert driver.moves == [("a", "c2", frozenset())]
    move = next(op for _, op in ctx.submitted if isinstance(op, Move))
    assert move.action == InstanceAction.LIVE_MIGRATE


def test_unmanaged_projects_fail_the_session_under_project_policy_fail() -> None:
    request = SessionRequest(hosts=("c1", "c2"), project_policy="fail")
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)}, managed={"p1": False}, request=request)
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "p1" in (ctx.session.reason or "")


def test_a_refused_target_is_never_asked_for_again_and_another_is_tried() -> None:
    ctx = fleet({"c1": 4, "c2": 4, "c3": 4}, {"a": ("p1", "c1", 1), "x": ("p2", "c2", 3)})
    # c2 and c3 are both targets for a; the cloud refuses the first one chosen.
    driver = Driver(ctx, RollingWorkflow(), refuse=frozenset({("a", "c3")}))
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    tried = [(t, r) for i, t, r in driver.moves if i == "a"]
    assert tried[0] == ("c3", frozenset())
    assert tried[1] == ("c2", frozenset({"c3"}))  # not c3 again: another target
    # A refused target is never asked for again in that move (a later drain
    # is a new move: c3 may be asked again, and is refused again).
    assert all(t not in r for t, r in tried)
    assert [t for t, _ in tried[:2]].count("c3") == 1


def test_every_target_refused_falls_back_to_the_scheduler_then_fails() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)})
    refuse = frozenset({("a", "c2"), ("a", None)})
    driver = Driver(ctx, RollingWorkflow(), refuse=refuse)
    driver.run()
    # A round: each host, then the scheduler; the room may come back, so a
    # new round starts after a back-off, up to max_migration_retries more.
    retries = SessionRequest(hosts=("c1", "c2")).max_migration_retries
    one_round = [("c2", frozenset()), (None, frozenset({"c2"}))]
    assert [(t, r) for _, t, r in driver.moves] == one_round * (retries + 1)
    assert ctx.now > start_time()  # the rounds waited for their timers
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    reason = ctx.session.reason or ""
    assert "refused every host for instance a" in reason
    assert f"({retries + 1} round(s)" in reason


def test_a_failed_migration_is_retried_after_a_back_off_then_fails() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)})
    driver = Driver(ctx, RollingWorkflow(), fail_moves={"a": 1})
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert [i for i, _, _ in driver.moves] == ["a", "a"]
    assert ctx.now > start_time()  # the retry waited for its timer

    retries = SessionRequest(hosts=("c1", "c2")).max_migration_retries
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)})
    driver = Driver(ctx, RollingWorkflow(), fail_moves={"a": retries + 1})
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert f"failed after {retries + 1} attempt(s)" in (ctx.session.reason or "")


def test_scale_in_when_nothing_fits_after_listing_the_hosts_again() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 3), "b": ("p1", "c2", 3)})
    driver = Driver(ctx, RollingWorkflow(), scale_in={"p1": ["b"]})
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    kinds = [type(op).__name__ for _, op in ctx.submitted]
    # Hosts listed again before SCALE_IN is asked; instances listed after it.
    assert kinds.index("ListHosts") < kinds.index("Inventory")
    p1 = [s for p, s in ctx.log if p == "p1"]
    assert p1[:2] == ["MAINTENANCE", "SCALE_IN"]
    assert ctx.state_of(RollingState).scale_in_rounds == 0  # reset once a host drained


def test_scale_in_that_frees_nothing_fails() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 3), "b": ("p1", "c2", 3)})
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert (ctx.session.reason or "").startswith("SCALE_IN freed no capacity")


def test_no_room_and_no_manager_fails_without_scale_in() -> None:
    ctx = fleet(
        {"c1": 4, "c2": 4}, {"a": ("p1", "c1", 3), "b": ("p1", "c2", 3)}, managed={"p1": False}
    )
    run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_FAILED
    assert "no project has an application manager" in (ctx.session.reason or "")
    assert ("p1", "SCALE_IN") not in ctx.log


def test_control_plane_hosts_with_instances_are_drained_one_at_a_time() -> None:
    ctx = fleet(
        {"k1": 4, "k2": 4, "c1": 4},
        {"a": ("p1", "k1", 1), "b": ("p1", "k2", 1)},
        types={"k1": "controller", "k2": "controller"},
    )
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    # Instances of controllers stay among controllers (their placement class).
    assert {t for _, t, _ in driver.moves} <= {"k1", "k2"}
    assert maintained(ctx) == ["c1", "k1", "k2"]


def test_host_actions_run_in_order_after_in_maintenance() -> None:
    request = SessionRequest(
        hosts=("c1", "c2"),
        actions=(ActionSpec("pre-x", "pre"), ActionSpec("h", "host"), ActionSpec("c", "compute")),
    )
    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1)}, request=request)
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    assert driver.host_actions == ["c2", "c2", "c1", "c1"] or driver.host_actions == [
        "c1",
        "c1",
        "c2",
        "c2",
    ]
    first = ctx.submitted[0][1]
    assert type(first).__name__ == "RunAction"  # the pre action before any host work


def test_a_closed_window_holds_the_host_until_it_opens() -> None:
    ctx = fleet({"c1": 4, "c2": 4}, {}, closed={"c1": "window closed", "c2": "window closed"})
    driver = Driver(ctx, RollingWorkflow(), openings=("c2", "c1"))
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    # Serial: the first host in order waits for its window (the driver checks
    # that nothing touched a host while it was closed), the other comes after.
    assert [h for h, s in ctx.log if s == "IN_MAINTENANCE"] == ["c1", "c2"]


def test_anti_affinity_is_kept_by_targets() -> None:
    rule = PlacementRule("g1", "anti-affinity", ("a", "b"))
    ctx = fleet(
        {"c1": 4, "c2": 4, "c3": 4}, {"a": ("p1", "c1", 1), "b": ("p1", "c2", 1)}, rules=(rule,)
    )
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE
    # a never lands on b's host, nor b on a's.
    for host in ctx.hosts:
        on = {i.instance_id for i in ctx.instances.on(host.name)}
        assert on != {"a", "b"}
    assert driver.moves


Fleet = tuple[dict[str, int], dict[str, tuple[str, str, int]], dict[str, bool]]


@st.composite
def fleets(
    draw: st.DrawFn,
) -> tuple[dict[str, int], dict[str, tuple[str, str, int]], dict[str, bool]]:
    n = draw(st.integers(2, 7))
    hosts = {f"c{k}": draw(st.sampled_from([4, 8, 12])) for k in range(n)}
    instances: dict[str, tuple[str, str, int]] = {}
    for name, vcpus in hosts.items():
        free = vcpus
        for k in range(draw(st.integers(0, 4))):
            size = draw(st.integers(1, 3))
            if size <= free:
                free -= size
                instances[f"{name}-i{k}"] = (draw(st.sampled_from(["p1", "p2", "p3"])), name, size)
    managed = {p: draw(st.booleans()) for p in ("p1", "p2", "p3")}
    return hosts, instances, managed


@pytest.mark.no_cover
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleets(), st.data())
def test_random_fleets_end_with_every_host_maintained_once(
    drawn: Fleet,
    data: st.DataObject,
) -> None:
    hosts, instances, managed = drawn
    closed = {h: "window" for h in hosts if data.draw(st.booleans(), label=f"closed {h}")}
    ctx = fleet(hosts, instances, managed=managed, closed=closed)
    driver = Driver(ctx, RollingWorkflow(), openings=sorted(closed))
    driver.run()  # the driver checks each submitted op: cordoned, announced, empty, window open
    assert ctx.session.state in (SessionState.MAINTENANCE_DONE, SessionState.MAINTENANCE_FAILED)
    if ctx.session.state == SessionState.MAINTENANCE_FAILED:
        # Only for want of room (the fleets may be too full to empty a host).
        reason = ctx.session.reason or ""
        assert "SCALE_IN" in reason or "no project has an application manager" in reason, reason
        return
    assert maintained(ctx) == sorted(hosts)
    announced = [h for h, s in ctx.log if s == "IN_MAINTENANCE"]
    assert sorted(announced) == sorted(hosts)  # each host once
    assert all(i.host in hosts for i in ctx.instances.in_state(InstanceState.DONE))
    assert not ctx.instances.in_state(InstanceState.PENDING)
    assert ctx.done == set(hosts)


def test_unknown_policy_names_stay_refused_by_the_request() -> None:
    with pytest.raises(Exception, match="reply_policy"):
        SessionRequest(hosts=("c1",), reply_policy="maybe")  # type: ignore[arg-type]


def test_a_host_the_check_finds_room_for_is_drained_to_the_end() -> None:
    hosts = {"c0": 4, "c1": 8, "c2": 4, "c3": 12}
    instances = {
        "c1-i0": ("p1", "c1", 1),
        "c1-i1": ("p1", "c1", 2),
        "c2-i0": ("p1", "c2", 1),
        "c2-i1": ("p1", "c2", 1),
        "c3-i0": ("p1", "c3", 2),
        "c3-i1": ("p1", "c3", 2),
        "c3-i2": ("p1", "c3", 3),
        "c3-i3": ("p1", "c3", 3),
    }
    ctx = fleet(hosts, instances, managed={"p1": False})
    Driver(ctx, RollingWorkflow()).run()
    # Either every host is maintained, or the session fails before the host
    # it cannot empty (for want of room, naming SCALE_IN or the managers).
    if ctx.session.state == SessionState.MAINTENANCE_FAILED:
        assert "no project has an application manager" in (ctx.session.reason or "")
    else:
        assert maintained(ctx) == sorted(hosts)


def test_the_check_counts_where_the_drain_sends_an_anti_affine_member() -> None:
    # a and b (anti-affine, both on c1 at the start) cannot both go to c2:
    # the cloud counts a there once it moved. The check places them as the
    # drain does, with a counted on c2, so c1 waits until c3 is maintained
    # (room for b there) instead of opening and failing half-way.
    rule = PlacementRule("g1", "anti-affinity", ("a", "b"))
    ctx = fleet(
        {"c1": 8, "c2": 8, "c3": 4},
        {"a": ("p1", "c1", 2), "b": ("p1", "c1", 2), "x": ("p1", "c3", 3)},
        managed={"p1": False},
        rules=(rule,),
    )
    driver = run(ctx)
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert [h for h, s in ctx.log if s == "IN_MAINTENANCE"] == ["c2", "c3", "c1"]
    assert {m[0]: m[1] for m in driver.moves if m[0] in ("a", "b")} == {"a": "c2", "b": "c3"}


# c1 holds a 4-vCPU and a 1-vCPU instance of two projects; c2 (10) and c3
# (9) have 4 and 3 free.
BIG_AND_SMALL_ON_C1: tuple[dict[str, int], dict[str, tuple[str, str, int]]] = (
    {"c1": 8, "c2": 10, "c3": 9},
    {
        "big": ("p1", "c1", 4),
        "small": ("p2", "c1", 1),
        "x": ("p3", "c2", 6),
        "y": ("p3", "c3", 6),
    },
)


def test_a_small_instance_answered_first_leaves_the_room_a_larger_waiting_one_needs() -> None:
    # c1 is drained first (least loaded). Its big instance's project answers
    # late: the small one moves first, and goes where the drain's placement
    # (big first, on the most free c2) leaves it room, c3, not to c2.
    ctx = fleet(*BIG_AND_SMALL_ON_C1)
    driver = run(ctx, delays={"p1": 100.0})
    assert driver.moves[:2] == [("small", "c3", frozenset()), ("big", "c2", frozenset())]


def test_the_first_instance_in_move_order_takes_its_best_target() -> None:
    # Both answered at once: the big one moves first, to the most free host.
    ctx = fleet(*BIG_AND_SMALL_ON_C1)
    driver = run(ctx)
    assert driver.moves[:2] == [("big", "c2", frozenset()), ("small", "c3", frozenset())]


def _placement_by_full_search(
    ctx: LoggingContext, instances: list[InstanceView]
) -> list[tuple[str, str | None]]:
    """The drain's placement (RollingWorkflow._placements without soft or
    hard rules) with every target read: where the instance stays first,
    then by room left once the earlier instances' room is taken, then name."""
    stays = {HostState.MAINTAINED, HostState.ADDED, HostState.OUT_OF_SCOPE}
    taken: dict[str, int] = {}
    out: list[tuple[str, str | None]] = []
    for inst in sorted(instances, key=lambda i: (-i.vcpus, i.instance_id)):
        best: tuple[bool, int, str] | None = None  # (stays, room left, name)
        for name in ctx.capacity.targets(inst.instance_id):
            room = ctx.capacity.free(name) - taken.get(name, 0)
            view = ctx.hosts.get(name)
            here = (view is not None and view.state in stays, room, name)
            if room >= inst.vcpus and (
                best is None
                or here[0] > best[0]
                or (here[0] == best[0] and (-here[1], here[2]) < (-best[1], best[2]))
            ):
                best = here
        target = None if best is None else best[2]
        out.append((inst.instance_id, target))
        if target is not None:
            taken[target] = taken.get(target, 0) + inst.vcpus
    return out


def host_layouts(
    largest: int, instances: int, hosts: int
) -> st.SearchStrategy[list[tuple[HostState, int, list[int]]]]:
    """Hosts as (state, vcpus, its instances' vcpus): ``largest`` the most
    vcpus of an instance, at most ``instances`` on a host, 2 to ``hosts``."""
    return st.lists(
        st.tuples(
            st.sampled_from([HostState.PENDING, HostState.MAINTAINED, HostState.ADDED]),
            st.integers(2, 12),
            st.lists(st.integers(1, largest), max_size=instances),
        ),
        min_size=2,
        max_size=hosts,
    )


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host_layouts(largest=3, instances=4, hosts=9))
def test_the_drains_placement_is_the_one_a_search_of_every_target_finds(
    layout: list[tuple[HostState, int, list[int]]],
) -> None:
    # The target search stops early (a host where the instance stays was
    # found, and no later host can have more room): it must place every
    # instance where reading every target would.
    hosts = [
        HostView(f"h{n}", "compute", state, vcpus, True, n)
        for n, (state, vcpus, _) in enumerate(layout)
    ]
    instances = [
        InstanceView(f"i{n}-{k}", "p1", f"h{n}", size, InstanceState.PENDING)
        for n, (_, _, sizes) in enumerate(layout)
        for k, size in enumerate(sizes)
    ]
    ctx = LoggingContext(
        now=start_time(),
        request=SessionRequest(hosts=tuple(h.name for h in hosts)),
        hosts=hosts,
        instances=instances,
        projects=[ProjectView("p1", True, None, None)],
    )
    workflow = RollingWorkflow()
    for host in hosts:
        on = list(ctx.instances.on(host.name))
        found = [(i.instance_id, t) for i, t in workflow._placements(ctx, on)]
        assert found == _placement_by_full_search(ctx, on)


def _layout_context(layout: list[tuple[HostState, int, list[int]]]) -> LoggingContext:
    hosts = [
        HostView(f"h{n}", "compute", state, vcpus, True, n)
        for n, (state, vcpus, _) in enumerate(layout)
    ]
    return LoggingContext(
        now=start_time(),
        request=SessionRequest(hosts=tuple(h.name for h in hosts)),
        hosts=hosts,
        instances=[
            InstanceView(f"i{n}-{k}", "p1", f"h{n}", size, InstanceState.PENDING)
            for n, (_, _, sizes) in enumerate(layout)
            for k, size in enumerate(sizes)
        ],
        projects=[ProjectView("p1", True, None, None)],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(host_layouts(largest=4, instances=5, hosts=7))
def test_the_drains_check_answers_as_placing_every_instance(
    layout: list[tuple[HostState, int, list[int]]],
) -> None:
    # The check (_all_placed) answers without placing the instances when one
    # host has room for all of them: it must answer what placing them one by
    # one answers, also with one of them counted on a target first (the
    # check of a small instance moving ahead of larger ones).
    ctx = _layout_context(layout)
    workflow = RollingWorkflow()
    for host in ctx.hosts:
        on = list(ctx.instances.on(host.name))
        placed = all(t is not None for _, t in workflow._placements(ctx, on))
        assert workflow._all_placed(ctx, on) == placed
        for first in on:
            rest = [i for i in on if i is not first]
            for target in ctx.capacity.targets(first.instance_id):
                pair = (first, target)
                placed = all(t is not None for _, t in workflow._placements(ctx, rest, first=pair))
                assert workflow._all_placed(ctx, rest, pair) == placed


@pytest.mark.parametrize(("room", "searches"), [(8, 0), (7, 0), (6, 3)])
def test_the_drains_check_places_nothing_when_one_host_holds_them_all(
    monkeypatch: pytest.MonkeyPatch, room: int, searches: int
) -> None:
    # h0 is maintained and empty. With room for everything on h1 (7 vCPUs),
    # the check reads no target; with one vCPU less, it places them (h2 has
    # room for the 2-vCPU ones): the same answer, found one by one.
    ctx = _layout_context(
        [
            (HostState.MAINTAINED, room, []),
            (HostState.PENDING, 8, [3, 2, 2]),
            (HostState.PENDING, 8, [2]),
        ]
    )
    searched: list[str] = []
    targets = type(ctx.capacity).targets

    def counted(self: object, instance_id: str, **kwargs: object) -> object:
        searched.append(instance_id)
        return targets(self, instance_id, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(type(ctx.capacity), "targets", counted)
    on = list(ctx.instances.on("h1"))
    assert RollingWorkflow()._all_placed(ctx, on)
    assert len(searched) == searches


def test_a_small_instance_moving_first_leaves_room_for_the_larger_ones() -> None:
    # c2 holds 2, 3 and 1 vCPU instances, and c0-i1 (2) once c0 is drained:
    # 8 vCPUs where c0 and c1 (maintained, 4 free each) fit them as 3+1 and
    # 2+2. p2 has no manager, so its 1-vCPU c2-i2 moves first. On c0 (where
    # the check counted it) it left the 3-vCPU one taking c1, the emptiest,
    # and one 2-vCPU instance nowhere: the session failed with room to spare.
    hosts = {"c0": 8, "c1": 4, "c2": 8, "c3": 4, "c4": 4}
    instances = {
        "c0-i0": ("p1", "c0", 1),
        "c0-i1": ("p1", "c0", 2),
        "c1-i0": ("p1", "c1", 1),
        "c1-i1": ("p1", "c1", 1),
        "c1-i2": ("p1", "c1", 1),
        "c2-i0": ("p1", "c2", 2),
        "c2-i1": ("p1", "c2", 3),
        "c2-i2": ("p2", "c2", 1),
        "c3-i0": ("p1", "c3", 1),
        "c3-i1": ("p1", "c3", 2),
        "c4-i0": ("p1", "c4", 1),
        "c4-i1": ("p1", "c4", 2),
    }
    ctx = fleet(hosts, instances, managed={"p1": True, "p2": False})
    Driver(ctx, RollingWorkflow()).run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert maintained(ctx) == sorted(hosts)
