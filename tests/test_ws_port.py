"""WorkingSetAdapter (fenix_core.core.ws_port): P1's WorkingSet as the
WorkingSetPort StepContext runs on. On random working sets and call
sequences (test_context's generators) the views, answers and refusals equal
FakeContext's, the oracle; changes reach the working set through its
setters (dirty tracking) and notifications become outbox rows."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from test_context import CALLS, NAMES, T0, VMS, apply, views, working_sets

from fenix_core import SessionRequest
from fenix_core.contract import (
    ComponentState,
    ContractError,
    DisableHost,
    HostView,
    InstanceView,
    Move,
    ProjectView,
)
from fenix_core.core.context import StepContext
from fenix_core.core.indexes import LOG_KEEP
from fenix_core.core.pipeline import PipelineState
from fenix_core.core.working_set import (
    ComponentRec,
    HostRec,
    InstanceRec,
    ProjectRec,
    SessionRec,
    WorkingSet,
    state_body,
)
from fenix_core.core.ws_port import WorkingSetAdapter, op_of
from fenix_core.placement_rules import PlacementRule
from fenix_core.states import HostState, InstanceAction, InstanceState, SessionState
from fenix_core.testing.contract import FakeContext
from fenix_core.workflows.constrained import ConstrainedState
from fenix_core.workflows.rolling import RollingState

LIVE = InstanceAction.LIVE_MIGRATE


def working_set(
    hosts: list[HostView],
    instances: list[InstanceView],
    projects: list[ProjectView],
    *,
    request: SessionRequest | None = None,
    rules: tuple[PlacementRule, ...] = (),
) -> WorkingSet:
    req = request if request is not None else SessionRequest()
    session = SessionRec(
        "s-1", "rolling", req.to_dict(), T0, SessionState.MAINTENANCE.value, "", None, None, 0,
        None, T0, None, 0, 0, None, "me", 1, None, 0, 0,
    )  # fmt: skip
    data: dict[str, Any] = {"allowed_actions": ["LIVE_MIGRATE", "MIGRATE"]}
    if rules:
        data["cloud_constraints"] = {"placement": [r.to_dict() for r in rules]}
    return WorkingSet(
        session,
        hosts=[
            HostRec(
                h.name,
                h.type,
                h.vcpus,
                h.state.value,
                h.position,
                0,
                h.enabled,
                False,
                0,
                h.started_at,
                h.finished_at,
                h.reason,
            )
            for h in hosts
        ],
        instances=[
            InstanceRec(
                i.instance_id,
                i.project_id,
                i.instance_id,
                i.host,
                i.vcpus,
                i.live_migratable,
                i.state.value,
                i.action,
                None,
                0,
                0,
                None,
                None,
                None,
                None,
                None,
            )
            for i in instances
        ],
        projects=[
            ProjectRec(p.project_id, p.managed, p.state, p.awaiting is not None, None, None, False)
            for p in projects
        ],
        components=[ComponentRec("session", 1, data)],
    )


def moves_once(calls: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """One Move per instance: a real session has one move of an instance in
    flight at a time, and FakeContext counts every Move it ever recorded for
    an instance that is IN_ACTION again (an earlier one's target included)."""
    seen: set[str] = set()
    kept = []
    for call in calls:
        if call[0] in ("move", "watch"):
            if call[1] in seen:
                continue
            seen.add(call[1])
        kept.append(call)
    return kept


@settings(max_examples=80, deadline=None)
@given(working_sets(), st.lists(CALLS, max_size=25))
def test_answers_refusals_and_views_equal_fake_context(
    data: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    oracle = FakeContext(now=T0, **data)
    ws = working_set(data["hosts"], data["instances"], data["projects"])
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    assert views(ctx) == views(oracle)
    for call in moves_once(calls):
        # Collections held across the call: each lists the hosts it was made with.
        held = [ctx.hosts.in_state(s, type=t) for s in HostState for t in (None, "gpu")]
        names = [[h.name for h in hosts] for hosts in held]
        outcomes = []
        for subject in (oracle, ctx):
            try:
                outcomes.append(("ok", apply(subject, call)))
            except ContractError as exc:
                outcomes.append(("refused", exc.subject))
        assert outcomes[0] == outcomes[1], call
        assert views(ctx) == views(oracle), call
        assert [[h.name for h in hosts] for hosts in held] == names, call


def test_changes_go_through_the_setters_and_notices_become_outbox_rows() -> None:
    hosts = [HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(2)]
    instances = [InstanceView("vm-a", "p1", "cmp-0", 2, InstanceState.PENDING)]
    ws = working_set(hosts, instances, [ProjectView("p1", True, None, None)])
    adapter = WorkingSetAdapter(ws, service="svc", admin_project_id="admin", now=T0)
    ctx = StepContext(adapter, T0)
    ctx.ask("MAINTENANCE", {"p1": ["vm-a"]})
    assert ctx.admit("cmp-0").admitted
    ctx.submit(DisableHost("cmp-0"))
    ctx.set_host_state("cmp-0", HostState.DRAINING)
    ref = ctx.submit(Move("vm-a", LIVE, target="cmp-1"))
    ctx.notify_host("cmp-0", "IN_MAINTENANCE")
    ctx.transition(SessionState.PREPARE_MAINTENANCE)
    assert ctx.capacity.free("cmp-1") == 6  # the move's room is taken from its start
    adapter.flush()
    dirty = ws.dirty_keys()
    assert dirty["hosts"] == {"cmp-0"}
    assert dirty["instances"] == {"vm-a"}
    assert dirty["projects"] == {"p1"}
    assert dirty["session"] == {"s-1"}
    assert dirty["new_ops"] == {"s-1:1", "s-1:2"}
    assert "pipeline" in dirty["components"]
    # Starting operations writes no component: not the session's facts (the
    # cloud's groups, fleet-sized), nor a counter row (the count is derived
    # from the stored keys at load).
    assert "ops" not in dirty["components"]
    assert "session" not in dirty["components"]
    assert ws.ops[ref.key].params == {
        "action": "LIVE_MIGRATE",
        "target": "cmp-1",
        "source": "cmp-0",
        "refused": [],
    }
    assert op_of(ws.ops[ref.key]) == Move("vm-a", LIVE, target="cmp-1")
    assert ws.ops[ref.key].deadline is not None  # the request's migration timeout
    write = ws.take_write(
        attrs.evolve(_fence(ws)), next_wake=None, lease_expires=datetime(2030, 1, 1, tzinfo=UTC)
    )
    signals = [(o.seq, o.signal, o.payload["state"]) for o in write.outbox]
    assert signals == [
        (1, "maintenance_planned", "MAINTENANCE"),
        (2, "maintenance_host", "IN_MAINTENANCE"),
        (3, "maintenance_session", "PREPARE_MAINTENANCE"),
    ]
    assert all(o.payload["service"] == "svc" for o in write.outbox)
    assert write.outbox[1].payload["project_id"] == "admin"
    # Components handed out are re-read from the working set at the next step.
    adapter.forget_components()
    assert StepContext(adapter, T0).pipeline.state.in_maintenance == 1


def _fence(ws: WorkingSet) -> Any:
    from fenix_core.core.ports import Fence

    return Fence("s-1", "me", 1, ws.version)


def test_targets_follow_the_cloud_placement_rules() -> None:
    """An anti-affinity group: a member never goes where another member is
    (nor where one is moving to); the same answer as FakeContext's."""
    hosts = [HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(4)]
    instances = [
        InstanceView("db-0", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("db-1", "p1", "cmp-1", 2, InstanceState.PENDING),
        InstanceView("db-2", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("web", "p1", "cmp-3", 4, InstanceState.PENDING),
    ]
    rules = (PlacementRule("g", "anti-affinity", ("db-0", "db-1", "db-2")),)
    projects = [ProjectView("p1", True, None, None)]
    ws = working_set(hosts, instances, projects, rules=rules)
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    oracle = FakeContext(now=T0, hosts=hosts, instances=instances, projects=projects, rules=rules)
    for subject in (ctx, oracle):
        subject.admit("cmp-0")
        subject.submit(Move("db-2", LIVE, target="cmp-2"))
    for vm in ("db-0", "db-1", "web"):
        assert list(ctx.capacity.targets(vm)) == list(oracle.capacity.targets(vm)), vm
        assert ctx.capacity.limits(vm) == oracle.capacity.limits(vm), vm
    assert ctx.capacity.limits("db-0").avoid == {"cmp-0", "cmp-1", "cmp-2"}
    with pytest.raises(ContractError, match="vm-x"):
        ctx.capacity.limits("vm-x")
    assert list(ctx.capacity.targets("db-0")) == ["cmp-3"]  # db-1 on cmp-1, db-2 to cmp-2
    assert list(ctx.capacity.targets("web")) == ["cmp-1", "cmp-2", "cmp-0"]


def test_soft_rules_order_targets_as_fake_context_does() -> None:
    """A soft-affinity group's host comes first (a negative penalty), a
    soft-anti-affinity group's host last, the rest by most free room: the
    engine's order is FakeContext's (the engine once put every penalised
    host last, the preferred ones too)."""
    hosts = [HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(4)]
    instances = [
        InstanceView("a-0", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("a-1", "p1", "cmp-1", 6, InstanceState.PENDING),
        InstanceView("b-0", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("b-1", "p1", "cmp-3", 2, InstanceState.PENDING),
    ]
    rules = (
        PlacementRule("near", "soft-affinity", ("a-0", "a-1")),
        PlacementRule("apart", "soft-anti-affinity", ("a-0", "b-1")),
    )
    projects = [ProjectView("p1", True, None, None)]
    ws = working_set(hosts, instances, projects, rules=rules)
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    oracle = FakeContext(now=T0, hosts=hosts, instances=instances, projects=projects, rules=rules)
    assert list(oracle.capacity.targets("a-0")) == ["cmp-1", "cmp-2", "cmp-3"]
    for vm in ("a-0", "a-1", "b-0", "b-1"):
        assert list(ctx.capacity.targets(vm)) == list(oracle.capacity.targets(vm)), vm


def test_session_info_carries_the_stored_allowed_actions() -> None:
    ws = working_set([], [], [])
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    assert ctx.session.allowed_actions == ("LIVE_MIGRATE", "MIGRATE")


@attrs.define(slots=True)
class Counter(ComponentState):
    component = "counter"
    n: int = 0


def test_component_state_round_trips_through_the_working_set() -> None:
    ws = working_set([], [], [])
    adapter = WorkingSetAdapter(ws, now=T0)
    adapter.component(Counter).n = 3
    adapter.flush()
    assert ws.components["counter"].body == {"n": 3}
    adapter.forget_components()
    assert adapter.component(Counter).n == 3
    adapter.flush()  # unchanged: nothing more to write
    assert ws.dirty_keys()["components"] == {"counter"}


def test_a_component_kept_across_steps_is_read_again_once_its_record_changed() -> None:
    """The object handed out is kept for the next step only while the
    working set holds the body it flushed: a record changed by anything
    else (an admin's write, a reload) is read afresh."""
    ws = working_set([], [], [])
    adapter = WorkingSetAdapter(ws, now=T0)
    first = adapter.component(Counter)
    first.n = 1
    adapter.flush()
    adapter.forget_components()
    assert adapter.component(Counter) is first  # unchanged since the flush
    first.n = 2  # a change after the flush still reaches the record
    adapter.flush()
    assert ws.components["counter"].body == {"n": 2}
    adapter.forget_components()
    ws.set_component("counter", 1, {"n": 7})
    again = adapter.component(Counter)
    assert again is not first
    assert again.n == 7
    # Handed out but not flushed (a step that broke off): not kept.
    adapter.forget_components()
    assert adapter.component(Counter) is not again


def test_a_component_is_one_object_within_a_step_and_a_kept_one_never_overwrites() -> None:
    """Within a step every ask gives the same object (new or stored), so
    changes made through one reach the flush; an object kept from an
    earlier step and not asked for again writes nothing over a record that
    something else changed meanwhile."""
    ws = working_set([], [], [])
    adapter = WorkingSetAdapter(ws, now=T0)
    adapter.component(Counter).n = 1  # no record yet
    adapter.component(Counter).n += 1
    adapter.flush()
    assert ws.components["counter"].body == {"n": 2}
    adapter.forget_components()
    adapter.component(Counter).n += 1  # kept, and the record is as flushed
    adapter.component(Counter).n += 1
    adapter.flush()
    assert ws.components["counter"].body == {"n": 4}
    adapter.forget_components()
    ws.set_component("counter", 1, {"n": 9})  # an admin's write, say
    adapter.flush()  # a step that did not ask for it
    assert ws.components["counter"].body == {"n": 9}
    adapter.forget_components()
    assert adapter.component(Counter).n == 9


@attrs.define(slots=True)
class _Nested(ComponentState):
    component = "nested"

    @attrs.define
    class Inner:
        x: int = 0

    inner: Inner = attrs.field(factory=Inner)
    tags: frozenset[str] = frozenset({"a"})
    by: dict[str, list[int]] = attrs.field(factory=lambda: {"k": [1, 2]})


@pytest.mark.parametrize(
    "state",
    [
        pytest.param(s, id=type(s).__name__)
        for s in (
            RollingState(waiting_move="vm-1", refused=("a", "b"), stage=2),
            PipelineState(
                recent_starts=["t1"], open_domains={"zone": {"z1": 2}}, durations_sum=1.5
            ),
            ConstrainedState(),
            _Nested(),
        )
    ],
)
def test_a_component_body_is_what_to_json_gives_and_shares_nothing(
    state: ComponentState,
) -> None:
    body = state_body(state)
    expected = state.to_json()
    assert body == expected
    assert {k: type(v) for k, v in body.items()} == {k: type(v) for k, v in expected.items()}
    for name, value in body.items():  # a later change of the state must not reach it
        if isinstance(value, list | dict | set):
            assert value is not getattr(state, name)


def test_most_free_is_the_room_of_the_enabled_hosts_of_a_class_as_fake_context_says() -> None:
    """``capacity.most_free``: the enabled hosts of a placement class with
    known capacity and their free vCPUs (a move counted on its target from
    its start), most free first, then by name; the same as FakeContext's."""
    hosts = [
        HostView("cmp-0", "compute", HostState.PENDING, 8, True, 0),
        HostView("cmp-1", "compute", HostState.PENDING, 8, True, 1),
        HostView("cmp-2", "compute", HostState.PENDING, 8, False, 2),  # disabled
        HostView("cmp-3", "compute", HostState.PENDING, 0, True, 3),  # capacity unknown
        HostView("cmp-4", "compute", HostState.PENDING, 8, True, 4),
        HostView("ctl-0", "controller", HostState.PENDING, 16, True, 5),
    ]
    instances = [
        InstanceView("a", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("b", "p1", "cmp-0", 4, InstanceState.PENDING),
        InstanceView("c", "p1", "cmp-1", 2, InstanceState.PENDING),
        InstanceView("gone", "p1", "cmp-4", 8, InstanceState.GONE),
    ]
    projects = [ProjectView("p1", True, None, None)]
    ws = working_set(hosts, instances, projects)
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    oracle = FakeContext(now=T0, hosts=hosts, instances=instances, projects=projects)
    expected = [("cmp-4", 8), ("cmp-1", 6), ("cmp-0", 2)]
    for subject in (ctx, oracle):
        assert list(subject.capacity.most_free("compute")) == expected
        assert list(subject.capacity.most_free("controller")) == [("ctl-0", 16)]
        assert list(subject.capacity.most_free("gpu")) == []
        subject.admit("cmp-1")
        subject.submit(Move("c", LIVE, target="cmp-4"))  # room taken on cmp-4 from the start
        assert list(subject.capacity.most_free("compute")) == [
            ("cmp-1", 6),
            ("cmp-4", 6),
            ("cmp-0", 2),
        ]


def test_room_sums_the_free_vcpus_of_hosts_in_states_among_the_most_free_as_fake_context_says() -> (
    None
):
    """``capacity.room``: of the first ``first`` hosts of ``most_free``
    (those in ``exclude`` passed over), the free vCPUs of the ones in
    ``states``; a cut inside a bucket counts by name; the same as
    FakeContext's, and as it changes with a host's state, enabled flag and
    a move."""
    hosts = [
        HostView("cmp-0", "compute", HostState.MAINTAINED, 8, True, 0),
        HostView("cmp-1", "compute", HostState.PENDING, 8, True, 1),
        HostView("cmp-2", "compute", HostState.MAINTAINED, 8, True, 2),
        HostView("cmp-3", "compute", HostState.MAINTAINED, 8, False, 3),  # disabled
        HostView("cmp-4", "compute", HostState.PENDING, 8, True, 4),
        HostView("cmp-5", "compute", HostState.MAINTAINED, 8, True, 5),
        HostView("ctl-0", "controller", HostState.MAINTAINED, 16, True, 6),
    ]
    instances = [
        InstanceView("a", "p1", "cmp-4", 2, InstanceState.PENDING),
        InstanceView("b", "p1", "cmp-5", 6, InstanceState.PENDING),
        InstanceView("c", "p1", "cmp-1", 1, InstanceState.PENDING),
    ]
    projects = [ProjectView("p1", True, None, None)]
    ws = working_set(hosts, instances, projects)
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    oracle = FakeContext(now=T0, hosts=hosts, instances=instances, projects=projects)
    stays = frozenset({HostState.MAINTAINED})
    # most_free: cmp-0 8, cmp-2 8, cmp-1 7, cmp-4 6, cmp-5 2 (cmp-3 disabled)
    cases = [
        ((1, stays, ()), 8),
        ((2, stays, ()), 16),
        ((2, stays, ("cmp-0",)), 8),  # cmp-2, cmp-1
        ((4, stays, ()), 16),
        ((5, stays, ()), 18),
        ((9, stays, ("cmp-2", "cmp-3")), 10),
        ((3, frozenset({HostState.PENDING}), ("cmp-0",)), 13),
        ((0, stays, ()), 0),
    ]
    # With ``least``: only the hosts with that many free take a position
    # (cmp-5, 2 free, is passed over for 3).
    at_least = [
        ((5, stays, (), 3), 16),
        ((4, stays, ("cmp-0",), 7), 8),  # cmp-2, cmp-1
        ((2, frozenset({HostState.PENDING}), ("cmp-0",), 7), 7),  # cmp-2, cmp-1
        ((9, stays, (), 9), 0),
    ]
    for subject in (ctx, oracle):
        for (first, states, exclude), expected in cases:
            found = subject.capacity.room("compute", first, states, exclude=exclude)
            assert found == expected, (subject, first, states, exclude)
        for (first, states, exclude, least), expected in at_least:
            found = subject.capacity.room("compute", first, states, exclude=exclude, least=least)
            assert found == expected, (subject, first, states, exclude, least)
        assert subject.capacity.room("controller", 1, stays) == 16
        assert subject.capacity.room("gpu", 5, stays) == 0
    ws.set_host_state("cmp-1", HostState.MAINTAINED)
    ctx.admit("cmp-4")
    ctx.submit(Move("a", LIVE, target="cmp-2"))  # cmp-2: 6 free from the start of the move
    ws.update_host("cmp-0", enabled=False)
    # most_free now: cmp-1 7, cmp-2 6, cmp-4 6 (its instance leaves at the end), cmp-5 2
    assert ctx.capacity.room("compute", 2, stays) == 13
    assert ctx.capacity.room("compute", 3, stays, exclude=("cmp-1",)) == 8
    assert ctx.capacity.room("compute", 9, frozenset({HostState.PENDING})) == 6


#: Changes a step may make to the pipeline's state, in place included (the
#: flush compares field by field with the body it wrote last).
_PIPELINE_CHANGES = st.one_of(
    st.tuples(st.just("paused"), st.booleans()),
    st.tuples(st.just("in_maintenance"), st.integers(0, 3)),
    st.tuples(st.just("durations_sum"), st.sampled_from([0.0, 1.5, 2.0])),
    st.tuples(st.just("waiting_cause"), st.sampled_from([None, "window", "pacing"])),
    st.tuples(st.just("append_start"), st.sampled_from(["t1", "t2"])),
    st.tuples(st.just("domain"), st.sampled_from(["z1", "z2"])),
    st.tuples(st.just("flush"), st.none()),
    st.tuples(st.just("next_step"), st.none()),
)


@settings(max_examples=80, deadline=None)
@given(st.lists(_PIPELINE_CHANGES, max_size=30))
def test_every_flush_leaves_the_body_to_json_gives_and_dirties_only_a_change(
    changes: list[tuple[str, Any]],
) -> None:
    """A flush that finds the state as it last wrote it writes nothing (and
    dirties nothing); any change, one made in place in a list or a nested
    dict included, reaches the record."""
    ws = working_set([], [], [])
    adapter = WorkingSetAdapter(ws, now=T0)
    state = adapter.component(PipelineState)
    stored: dict[str, Any] | None = None  # the record's body (None: no record)
    dirty = False  # the record changed since the last write

    def flush() -> None:
        nonlocal stored, dirty
        adapter.flush()
        body = ws.components["pipeline"].body
        assert body == state.to_json()
        dirty = dirty or body != stored
        stored = state.to_json()
        assert ("pipeline" in ws.dirty_keys()["components"]) == dirty

    for what, value in changes:
        if what == "flush":
            flush()
        elif what == "next_step":  # the step's write, then a new step
            flush()
            ws.take_write(_fence(ws), next_wake=None, lease_expires=T0)
            dirty = False
            adapter.forget_components()
            state = adapter.component(PipelineState)
        elif what == "append_start":
            state.recent_starts.append(value)
        elif what == "domain":
            zone = state.open_domains.setdefault("zone", {})
            zone[value] = zone.get(value, 0) + 1
        else:
            setattr(state, what, value)
    flush()


def _changing(ctx: Any) -> list[tuple[int, Any]]:
    """The change numbers of the hosts, instances and capacity views, each
    with what it answers for: the hosts' states; the instances' states and
    hosts; each host's free vCPUs and enabled flag."""
    hosts = list(ctx.hosts)
    return [
        (ctx.hosts.changes(), [(h.name, h.state) for h in hosts]),
        (
            ctx.instances.changes(),
            sorted(
                (i.instance_id, i.state, i.host)
                for s in InstanceState
                for i in ctx.instances.in_state(s)
            ),
        ),
        (ctx.capacity.changes(), [(ctx.capacity.free(h.name), h.enabled) for h in hosts]),
    ]


_ONE_HOST = {
    "hosts": [
        HostView(name, "compute", HostState.PENDING, 8, True, n) for n, name in enumerate(NAMES)
    ],
    "instances": [InstanceView(vm, "p1", "cmp-0", 1, InstanceState.PENDING) for vm in VMS],
    "projects": [ProjectView("p1", True, None, None), ProjectView("p2", True, None, None)],
}


@pytest.mark.no_cover
@settings(max_examples=80, deadline=None)
@given(working_sets(), st.lists(CALLS, max_size=25))
@example(_ONE_HOST, [("istate", "vm-0", InstanceState.GONE)])
@example(
    _ONE_HOST,
    [("admit", "cmp-0"), ("move", "vm-1", "cmp-2"), ("hstate", "cmp-1", HostState.DRAINING)],
)
def test_the_change_numbers_change_with_the_views_they_answer_for(
    data: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    """``hosts``/``instances``/``capacity.changes()``: after any call, a
    number equal to the one before means what it answers for is as it was
    (the working set's and FakeContext's); a working set of the same
    session loaded again (stepped by another process, or a broken step
    dropped) answers numbers none of the first one's answered."""
    oracle = FakeContext(now=T0, **data)
    ws = working_set(data["hosts"], data["instances"], data["projects"])
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    answered: set[int] = set()
    for subject in (oracle, ctx):
        before = _changing(subject)
        for call in moves_once(calls):
            with contextlib.suppress(ContractError):  # refused: nothing changed
                apply(subject, call)
            after = _changing(subject)
            for (number, seen), (number_before, seen_before) in zip(after, before, strict=True):
                if number == number_before:
                    assert seen == seen_before, call
            before = after
            if subject is ctx:
                answered.update(number for number, _seen in after)
    again = working_set(data["hosts"], data["instances"], data["projects"])
    fresh = StepContext(WorkingSetAdapter(again, now=T0), T0)
    assert answered.isdisjoint(number for number, _seen in _changing(fresh))


def _instance_views(ctx: Any) -> dict[str, InstanceView | None]:
    return {vm: ctx.instances.get(vm) for vm in VMS}


def _walk_the_change_log(
    log: Any,
    stands: Callable[[Any], dict[str, Any]],
    subject: Any,
    calls: Iterable[tuple[Any, ...]],
    apply_call: Callable[[tuple[Any, ...]], None],
    exact: bool,
) -> tuple[Any, Any]:
    """Make ``calls`` on ``subject``; after each, ``log.changed_since`` the
    mark before it names every name whose ``stands`` differ (exactly those
    when ``exact``), and so does the first mark at the end. Returns the
    first mark and the last."""
    first, at_first = log.change_mark(), stands(subject)
    mark, before = first, at_first
    for call in calls:
        with contextlib.suppress(ContractError):  # refused: nothing changed
            apply_call(call)
        after = stands(subject)
        differ = {name for name in after if after[name] != before[name]}
        named = log.changed_since(mark)
        assert named is not None
        assert differ <= set(named), call
        if exact:
            assert set(named) == differ
        mark, before = log.change_mark(), after
    since_first = log.changed_since(first)
    assert since_first is not None
    assert {name for name in before if at_first[name] != before[name]} <= set(since_first)
    assert log.changed_since(mark) == set()
    return first, mark


@settings(max_examples=80, deadline=None)
@given(working_sets(), st.lists(CALLS, max_size=25))
@example(_ONE_HOST, [("ask", "p1", "vm-0"), ("istate", "vm-0", InstanceState.ACTION_CHOSEN)])
def test_the_instances_changed_since_a_mark_are_those_whose_views_differ(
    data: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    """``instances.changed_since(mark)``: every instance whose view differs
    from the one at ``mark`` is named, after each call and since the first
    mark (the working set's and FakeContext's; FakeContext names exactly
    those); a mark read in a working set of the same session loaded again
    is unknown there (None)."""
    oracle = FakeContext(now=T0, **data)
    ws = working_set(data["hosts"], data["instances"], data["projects"])
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    for subject in (oracle, ctx):
        first, mark = _walk_the_change_log(
            subject.instances, _instance_views, subject, moves_once(calls),
            lambda call, subject=subject: apply(subject, call), exact=subject is oracle,
        )  # fmt: skip
    again = working_set(data["hosts"], data["instances"], data["projects"])
    fresh = StepContext(WorkingSetAdapter(again, now=T0), T0)
    assert fresh.instances.change_mark() != mark
    assert fresh.instances.changed_since(mark) is None
    oracle.reloaded()
    assert oracle.instances.changed_since(first) is None


def test_the_engine_s_changes_and_added_instances_are_in_the_change_log() -> None:
    """The engine's own part of a move's end (place, vanish, end_move), a
    plan, a relocation the cloud reported and an instance the cloud listed
    for the first time are named by ``changed_since``; the others are not;
    a mark older than the log keeps is unknown (None)."""
    ws = working_set(_ONE_HOST["hosts"], _ONE_HOST["instances"], _ONE_HOST["projects"])
    adapter = WorkingSetAdapter(ws, now=T0)
    ctx = StepContext(adapter, T0)
    mark = ctx.instances.change_mark()
    assert ctx.instances.changed_since(mark) == set()
    adapter.place("vm-0", "cmp-1")
    adapter.vanish("vm-1")
    adapter.end_move("vm-2")
    assert ctx.instances.changed_since(mark) == {"vm-0", "vm-1", "vm-2"}
    mark = ctx.instances.change_mark()
    adapter.set_instance_plan("vm-3", 1, None, None)
    ws.set_target("vm-4", None)
    ws.place("vm-4", "cmp-2")
    adapter.forget_view("vm-4")  # as the listings' relocation does
    ws.add_instance(
        InstanceRec(
            "vm-new", "p1", "vm-new", "cmp-0", 1, True, InstanceState.PENDING.value,
            None, None, 0, 0, None, None, None, None, None,
        )
    )  # fmt: skip
    assert ctx.instances.changed_since(mark) == {"vm-3", "vm-4", "vm-new"}
    old = ctx.instances.change_mark()
    for n in range(40_000):
        adapter.set_instance_plan("vm-5", n, None, None)
        if n % 1000 == 0:
            adapter.begin(T0)  # the log is cut down between steps
    assert ctx.instances.changed_since(old) is None
    assert ctx.instances.changed_since(ctx.instances.change_mark()) == set()


#: The engine's and the cloud's part (a move's end, a host enabled or
#: disabled, one another session switched, an instance gone, a host listed
#: with its facts), and a new mark taken in the middle.
_CAPACITY_CALLS = st.one_of(
    CALLS,
    st.tuples(st.just("placed"), st.sampled_from(VMS), st.sampled_from(NAMES)),
    st.tuples(st.just("enabled"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("follow"), st.sampled_from(NAMES), st.booleans()),
    st.tuples(st.just("vanish"), st.sampled_from(VMS)),
    st.tuples(st.just("listed"), st.sampled_from(NAMES), st.integers(0, 16), st.booleans()),
)


def _apply_capacity_call(subject: Any, adapter: WorkingSetAdapter, call: tuple[Any, ...]) -> None:
    """``call`` on ``subject`` (a FakeContext, or the StepContext over
    ``adapter``): the engine's part through FakeContext's driver methods or
    the adapter's."""
    name, *args = call
    fake = isinstance(subject, FakeContext)
    if name == "placed":
        subject.placed(*args) if fake else adapter.place(*args)
    elif name in ("enabled", "follow"):
        if fake:
            subject.host_enabled(*args)
        elif name == "enabled":
            adapter.set_host_enabled(*args, by_session=True)
        else:
            adapter.follow_enabled(*args)
    elif name == "vanish":
        subject.vanished(*args) if fake else adapter.vanish(*args)
    elif name == "listed":
        subject.listed(*args) if fake else adapter.set_host_facts(*args)
    else:
        apply(subject, call)


def _capacity_stands(ctx: Any) -> dict[str, tuple[Any, ...]]:
    """Per host, what ``capacity.changed_since`` answers for."""
    found = {}
    for name in NAMES:
        view = ctx.hosts.get(name)
        found[name] = (ctx.capacity.free(name), view.enabled, view.state, view.type, view.vcpus)
    return found


@settings(max_examples=80, deadline=None)
@given(working_sets(), st.lists(_CAPACITY_CALLS, max_size=25))
@example(
    _ONE_HOST,
    [("admit", "cmp-0"), ("move", "vm-1", "cmp-2"), ("placed", "vm-1", "cmp-2")],
)
@example(_ONE_HOST, [("listed", "cmp-3", 0, False), ("follow", "cmp-1", False)])
def test_the_hosts_whose_capacity_changed_since_a_mark_are_named(
    data: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    """``capacity.changed_since(mark)``: every host whose free vCPUs, enabled
    flag, state, type or vCPUs differ from those at ``mark`` is named, after
    each call (the workflow's, the engine's: moves in flight and their ends,
    listings) and since the first mark (the working set's and FakeContext's;
    FakeContext names exactly those); a mark of a working set loaded again
    (another process, a broken step dropped) or of another context is
    unknown (None)."""
    oracle = FakeContext(now=T0, **data)
    ws = working_set(data["hosts"], data["instances"], data["projects"])
    adapter = WorkingSetAdapter(ws, now=T0)
    ctx = StepContext(adapter, T0)
    for subject in (oracle, ctx):
        first, mark = _walk_the_change_log(
            subject.capacity, _capacity_stands, subject, moves_once(calls),
            lambda call, subject=subject: _apply_capacity_call(subject, adapter, call),
            exact=subject is oracle,
        )  # fmt: skip
    other = FakeContext(now=T0, **data)
    assert other.capacity.changed_since(other.capacity.change_mark()) == set()
    assert other.capacity.changed_since(mark) is None  # the working set's mark
    assert oracle.capacity.changed_since(mark) is None
    again = working_set(data["hosts"], data["instances"], data["projects"])
    fresh = StepContext(WorkingSetAdapter(again, now=T0), T0)
    assert fresh.capacity.change_mark() != mark
    assert fresh.capacity.changed_since(mark) is None
    ws.reset_to(again)  # a broken step dropped: the stored session's indexes
    assert ctx.capacity.changed_since(mark) is None
    oracle.reloaded()
    assert oracle.capacity.changed_since(first) is None


def test_a_capacity_mark_older_than_the_log_keeps_is_unknown() -> None:
    """The capacity log is cut down at a mark once it holds twice what it
    keeps: a mark older than the entries kept answers None, a recent one the
    hosts changed since."""
    ws = working_set(_ONE_HOST["hosts"], _ONE_HOST["instances"], _ONE_HOST["projects"])
    ctx = StepContext(WorkingSetAdapter(ws, now=T0), T0)
    old = ctx.capacity.change_mark()
    for n in range(3 * LOG_KEEP):
        ws.capacity.adjust("cmp-1", used=1 if n % 2 else -1)
        if n % 1000 == 0:
            ctx.capacity.change_mark()
    recent = ctx.capacity.change_mark()
    assert ctx.capacity.changed_since(old) is None
    assert ctx.capacity.changed_since(recent) == set()
    ws.capacity.adjust("cmp-2", reserved=2)
    assert ctx.capacity.changed_since(recent) == {"cmp-2"}
