"""StepContext (fenix_core.core.context): the engine's SessionContext over a
working set. Each ContractError rule, the host pipeline applied through
admit/submit (windows, pause, gates, issue 17's retired and removed hosts),
and, on random working sets and call sequences, the same answers, refusals
and views as FakeContext (the oracle)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fake_working_set import FakeWorkingSet
from hypothesis import given, settings
from hypothesis import strategies as st

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import (
    ComponentState,
    ContractError,
    DisableHost,
    EnableHost,
    HostUp,
    HostView,
    InstanceView,
    Move,
    OpKind,
    ProjectView,
    RunAction,
    Watch,
)
from fenix_core.core.context import PIPELINE_TIMER, StepContext
from fenix_core.core.pipeline import PipelineState
from fenix_core.states import HostState, InstanceAction, InstanceState, SessionState
from fenix_core.testing.contract import FakeContext

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday, noon UTC
LIVE = InstanceAction.LIVE_MIGRATE
UPGRADE = ActionSpec("upgrade", "host")
NIGHTLY = {"windows": [{"start": "22:00", "end": "04:00"}]}


def fleet(controls: object = None) -> FakeContext:
    hosts = [HostView(f"cmp-{n}", "compute", HostState.PENDING, 8, True, n) for n in range(3)]
    instances = [
        InstanceView("vm-a", "p1", "cmp-0", 2, InstanceState.PENDING),
        InstanceView("vm-b", "p2", "cmp-0", 4, InstanceState.ACTION_CHOSEN),
        InstanceView("vm-c", "p1", "cmp-1", 2, InstanceState.DONE),
    ]
    projects = [ProjectView("p1", True, None, None), ProjectView("p2", False, None, None)]
    request = SessionRequest.from_dict({"hosts": [h.name for h in hosts], "controls": controls})
    return FakeContext(now=T0, request=request, hosts=hosts, instances=instances, projects=projects)


def step(controls: object = None, now: datetime = T0) -> tuple[StepContext, FakeWorkingSet]:
    ws = FakeWorkingSet(fleet(controls))
    return StepContext(ws, now), ws


def again(ws: FakeWorkingSet, now: datetime) -> StepContext:
    """The next step of the same session (state carried by the working set)."""
    return StepContext(ws, now)


def snapshot(ws: FakeWorkingSet) -> Any:
    fake = ws.fake
    return (
        sorted(fake._hosts.items()),
        sorted(fake._instances.items()),
        sorted(fake._projects.items()),
        list(ws.ops),
        dict(fake.timers),
        list(fake.transitions),
        list(fake.asked),
    )


# --------------------------------------------------------------------------- the rules


def test_host_work_needs_an_admission() -> None:
    ctx, ws = step()
    for op in (DisableHost("cmp-0"), RunAction(UPGRADE, "host", "cmp-0"), Move("vm-a", LIVE)):
        with pytest.raises(ContractError) as info:
            ctx.submit(op)
        assert info.value.subject == "host 'cmp-0'"
        assert type(op).__name__ in info.value.rule
        assert "admit" in info.value.rule
    assert ws.ops == []
    assert ctx.admit("cmp-0").admitted
    assert ctx.submit(DisableHost("cmp-0")).kind is OpKind.DISABLE_HOST
    ctx.submit(RunAction(UPGRADE, "host", "cmp-0"))
    ctx.submit(RunAction(UPGRADE, "pre"))  # not on a host: no admission
    ctx.submit(EnableHost("cmp-2"))  # putting a host back: no admission
    ctx.submit(HostUp("cmp-2"))
    assert [k for _, k, _, _ in ws.ops] == [
        OpKind.DISABLE_HOST,
        OpKind.ACTION,
        OpKind.ACTION,
        OpKind.ENABLE_HOST,
        OpKind.HOST_UP,
    ]
    assert [key for key, *_ in ws.ops] == [f"s-1:{n}" for n in range(1, 6)]


def test_move_without_a_prior_action_chosen_works() -> None:
    ctx, ws = step()
    ctx.admit("cmp-0")
    ref = ctx.submit(Move("vm-a", LIVE))  # from PENDING
    assert ref.kind is OpKind.MOVE
    assert ctx.instances.get("vm-a").state is InstanceState.IN_ACTION  # type: ignore[union-attr]
    ctx.submit(Move("vm-b", LIVE, target="cmp-2"))  # from ACTION_CHOSEN too
    with pytest.raises(ContractError) as info:
        ctx.submit(Move("vm-a", LIVE, target="cmp-2"))
    assert (info.value.subject, "IN_ACTION" in info.value.rule) == ("instance 'vm-a'", True)
    assert len(ws.ops) == 2


def test_an_instance_that_does_not_have_to_move_is_refused_by_state() -> None:
    ctx, ws = step()
    ctx.admit("cmp-1")
    with pytest.raises(ContractError, match="cannot start Watch from state DONE"):
        ctx.submit(Watch("vm-c"))
    assert ws.ops == []


@pytest.mark.parametrize(
    ("call", "subject"),
    [
        (lambda c: c.submit(Move("vm-zz", LIVE)), "instance 'vm-zz'"),
        (lambda c: c.submit(Move("vm-a", LIVE, target="cmp-9")), "host 'cmp-9'"),
        (lambda c: c.submit(Move("vm-a", LIVE, target="cmp-0")), "instance 'vm-a'"),  # its host
        (lambda c: c.submit(DisableHost("cmp-9")), "host 'cmp-9'"),
        (lambda c: c.submit(RunAction(UPGRADE, "host", "cmp-9")), "host 'cmp-9'"),
        (lambda c: c.submit(EnableHost("cmp-9")), "host 'cmp-9'"),
        (lambda c: c.admit("cmp-9"), "host 'cmp-9'"),
        (lambda c: c.host_done("cmp-2"), "host 'cmp-2'"),  # never admitted
        (lambda c: c.skip_host("cmp-9", "x"), "host 'cmp-9'"),
        (lambda c: c.notify_host("cmp-9", "X"), "host 'cmp-9'"),
        (lambda c: c.set_host_state("cmp-0", HostState.MAINTAINED), "host 'cmp-0'"),
        (lambda c: c.set_instance_state("vm-c", InstanceState.IN_ACTION), "instance 'vm-c'"),
        (lambda c: c.ask("PREPARE_MAINTENANCE", {"p2": ["vm-a"]}), "instance 'vm-a'"),
        (lambda c: c.ask("PREPARE_MAINTENANCE", {"p1": ["vm-a"], "p9": []}), "project 'p9'"),
        (lambda c: c.stop_awaiting("p9"), "project 'p9'"),
        (lambda c: c.transition(SessionState.MAINTENANCE_DONE), "session 's-1'"),
        (lambda c: c.set_timer(PIPELINE_TIMER, T0), f"timer {PIPELINE_TIMER!r}"),
        (lambda c: c.cancel_timer(PIPELINE_TIMER), f"timer {PIPELINE_TIMER!r}"),
        (lambda c: c.state_of(PipelineState), "PipelineState"),
    ],
)
def test_each_refusal_names_its_subject_and_records_nothing(call: Any, subject: str) -> None:
    ctx, ws = step()
    ctx.admit("cmp-0")
    before = snapshot(ws)
    with pytest.raises(ContractError) as info:
        call(ctx)
    assert info.value.subject == subject
    assert snapshot(ws) == before


def test_session_transitions_follow_the_lifecycle() -> None:
    ctx, ws = step()
    ctx.transition(SessionState.PREPARE_MAINTENANCE)
    ctx.transition(SessionState.START_MAINTENANCE)
    ctx.fail("broken")
    assert ws.fake.transitions[-1] == (SessionState.MAINTENANCE_FAILED, "broken")
    assert not ctx.admit("cmp-0").admitted  # a final session starts nothing


def test_component_state_is_the_workflow_own_and_persists() -> None:
    import attrs

    @attrs.define(slots=True)
    class Counter(ComponentState):
        component = "counter"
        n: int = 0

    ctx, ws = step()
    ctx.state_of(Counter).n += 1
    assert again(ws, T0).state_of(Counter).n == 1
    assert "counter" in ws.dirty


# --------------------------------------------------------------------------- the pipeline


def test_a_closed_window_keeps_host_work_off_until_it_opens() -> None:
    ctx, ws = step(NIGHTLY)
    answer = ctx.admit("cmp-0")
    opens = datetime(2026, 3, 2, 22, 0, tzinfo=UTC)
    assert (answer.admitted, answer.until) == (False, opens)
    with pytest.raises(ContractError, match="admitted by the pipeline"):
        ctx.submit(DisableHost("cmp-0"))
    assert ws.fake.timers[PIPELINE_TIMER][0] == opens  # the session wakes when it opens
    assert [s for s, _ in ws.emitted] == ["maintenance_session"]
    ctx.admit("cmp-1")  # the same wait: announced once
    assert len(ws.emitted) == 1
    later = again(ws, opens)
    assert later.admit("cmp-0").admitted
    later.submit(DisableHost("cmp-0"))
    assert PIPELINE_TIMER not in ws.fake.timers
    assert ws.fake._hosts["cmp-0"].started_at == opens


def test_a_host_in_flight_stays_admitted_when_the_window_closes() -> None:
    ctx, ws = step(NIGHTLY, datetime(2026, 3, 2, 23, 0, tzinfo=UTC))
    assert ctx.admit("cmp-0").admitted
    morning = again(ws, datetime(2026, 3, 3, 5, 0, tzinfo=UTC))
    assert morning.admit("cmp-0").admitted  # its work goes on
    morning.submit(Move("vm-a", LIVE))
    assert not morning.admit("cmp-1").admitted


@pytest.mark.parametrize(
    ("state", "started", "finished", "expected"),
    [
        (HostState.DRAINING, True, False, True),
        (HostState.PENDING, False, False, False),
        (HostState.MAINTAINED, True, True, False),
        (HostState.SKIPPED, True, False, False),
        (HostState.REMOVED, True, False, False),
    ],
)
def test_a_host_is_in_flight_from_its_admission_until_its_work_ends(
    state: HostState, started: bool, finished: bool, expected: bool
) -> None:
    """``HostView.in_flight``, what the context answers alike for: started,
    not finished, neither skipped nor removed (their times aside)."""
    at = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    view = HostView(
        "cmp-0", "compute", state, 8, True, 0,
        started_at=at if started else None, finished_at=at if finished else None,
    )  # fmt: skip
    assert view.in_flight is expected


def test_every_host_in_flight_gets_the_same_answer_as_its_view_says() -> None:
    """What a workflow may ask once per step for all its hosts in flight
    (the constrained pump does): each host whose view shows it started and
    not finished is admitted, the window closed or not, and none is while
    paused; a host not in flight gets the pipeline's own answer."""
    ctx, ws = step(NIGHTLY, datetime(2026, 3, 2, 23, 0, tzinfo=UTC))
    assert ctx.admit("cmp-0").admitted
    assert ctx.admit("cmp-1").admitted
    morning = again(ws, datetime(2026, 3, 3, 5, 0, tzinfo=UTC))
    in_flight = [h.name for h in morning.hosts if h.in_flight]
    assert in_flight == ["cmp-0", "cmp-1"]
    assert [morning.admit(h).admitted for h in in_flight] == [True, True]
    assert not morning.admit("cmp-2").admitted  # the window is closed
    morning.pause("change freeze")
    assert [morning.admit(h).admitted for h in in_flight] == [False, False]


def test_hosts_in_maintenance_cap_counts_retired_and_removed_hosts_as_finished() -> None:
    ctx, ws = step({"max_hosts_in_maintenance": 1})
    assert ctx.admit("cmp-0").admitted
    assert not ctx.admit("cmp-1").admitted
    ctx.set_host_state("cmp-0", HostState.IN_MAINTENANCE)
    later = again(ws, T0 + timedelta(hours=1))
    later.set_host_state("cmp-0", HostState.DECOMMISSIONED)  # issue 17: finished work
    assert ws.fake._hosts["cmp-0"].finished_at == T0 + timedelta(hours=1)
    assert later.pipeline.state.durations_count == 1
    assert later.admit("cmp-1").admitted
    later.set_host_state("cmp-1", HostState.REMOVED)  # gone from the cloud mid-session
    assert later.pipeline.state.durations_count == 1  # not a maintenance duration
    assert later.admit("cmp-2").admitted


def test_host_done_frees_the_place_and_skip_host_too() -> None:
    ctx, ws = step({"max_hosts_in_maintenance": 1})
    ctx.admit("cmp-0")
    ctx.host_done("cmp-0")
    ctx.host_done("cmp-0")  # once is enough; again changes nothing
    assert ctx.pipeline.state.in_maintenance == 0
    assert ctx.admit("cmp-1").admitted
    with pytest.raises(ContractError):
        ctx.submit(DisableHost("cmp-0"))  # its work is over
    ctx.skip_host("cmp-1", "stuck")
    assert ws.fake._hosts["cmp-1"].state is HostState.SKIPPED
    assert ctx.admit("cmp-2").admitted


def test_pause_holds_every_host_and_resume_lets_them_go() -> None:
    ctx, ws = step()
    ctx.pause("change freeze")
    answer = ctx.admit("cmp-0")
    assert (answer.admitted, answer.reason) == (False, "paused: change freeze")
    ctx.resume()
    assert ctx.admit("cmp-0").admitted
    assert [p["reason"] for _, p in ws.emitted] == ["paused: change freeze", "resumed"]


def test_while_paused_a_host_in_maintenance_goes_on_but_no_new_move_starts() -> None:
    ctx, ws = step()
    assert ctx.admit("cmp-0").admitted
    ctx.submit(DisableHost("cmp-0"))
    ctx.pause("change freeze")
    answer = ctx.admit("cmp-0")
    assert (answer.admitted, answer.reason) == (False, "paused: change freeze")
    ctx.submit(RunAction(UPGRADE, "host", "cmp-0"))  # its maintenance goes on
    before = snapshot(ws)
    with pytest.raises(ContractError, match="paused") as info:
        ctx.submit(Move("vm-a", LIVE))
    assert info.value.subject == "instance 'vm-a'"
    assert snapshot(ws) == before
    ctx.resume()
    assert ctx.admit("cmp-0").admitted
    ctx.submit(Move("vm-a", LIVE))


def test_gates_run_as_operations_before_the_host_starts() -> None:
    ctx, ws = step({"gates": [{"name": "instances_back", "soak_seconds": 60}]})
    ws.moved["cmp-0"] = ["vm-x"]
    assert not ctx.admit("cmp-0").admitted  # the first host too: nothing moved yet
    assert [(k, p["last_host"], p["moved_instances"]) for _, k, _, p in ws.ops] == [
        (OpKind.GATE, None, [])
    ]
    ctx.gate_ended("cmp-0", passed=True)
    assert ctx.admit("cmp-0").admitted
    ctx.host_done("cmp-0")
    ws.ops.clear()
    assert not ctx.admit("cmp-1").admitted
    assert not ctx.admit("cmp-1").admitted  # not started twice
    [(_key, kind, op, params)] = ws.ops
    assert (kind, op) == (OpKind.GATE, None)
    assert params == {
        "gate": "instances_back",
        "params": {"soak_seconds": 60},
        "host": "cmp-1",
        "last_host": "cmp-0",
        "moved_instances": ["vm-x"],
    }
    assert ws.timeouts == {ws.ops[0][0]: 3600.0}  # controls.gate_timeout
    ctx.gate_ended("cmp-1", passed=True)
    assert ctx.admit("cmp-1").admitted


# --------------------------------------------------------------------------- against FakeContext

NAMES = [f"cmp-{n}" for n in range(4)]
VMS = [f"vm-{n}" for n in range(6)]
TYPES = ("compute", "gpu")


@st.composite
def working_sets(draw: st.DrawFn) -> dict[str, Any]:
    hosts = [
        HostView(
            name,
            draw(st.sampled_from(TYPES)),
            HostState.PENDING,
            draw(st.integers(2, 16)),
            draw(st.booleans()),
            n,
        )
        for n, name in enumerate(NAMES)
    ]
    instances = [
        InstanceView(
            vm,
            draw(st.sampled_from(["p1", "p2"])),
            draw(st.sampled_from(NAMES)),
            draw(st.integers(1, 4)),
            draw(st.sampled_from(InstanceState)),
        )
        for vm in VMS
    ]
    projects = [ProjectView("p1", True, None, None), ProjectView("p2", True, None, None)]
    return {"hosts": hosts, "instances": instances, "projects": projects}


HOST = st.sampled_from([*NAMES, "cmp-9"])
VM = st.sampled_from([*VMS, "vm-zz"])
CALLS = st.one_of(
    st.tuples(st.just("admit"), HOST),
    st.tuples(st.just("disable"), HOST),
    st.tuples(st.just("run"), HOST),
    st.tuples(st.just("enable"), HOST),
    st.tuples(st.just("move"), VM, st.none() | HOST),
    st.tuples(st.just("watch"), VM),
    st.tuples(st.just("istate"), VM, st.sampled_from(InstanceState)),
    st.tuples(
        st.just("hstate"),
        HOST,
        st.sampled_from(
            [HostState.DRAINING, HostState.DRAINED, HostState.IN_MAINTENANCE, HostState.PENDING]
        ),
    ),
    st.tuples(st.just("ask"), st.sampled_from(["p1", "p2", "p9"]), VM),
    st.tuples(st.just("stop"), st.sampled_from(["p1", "p2", "p9"])),
)


def apply(ctx: Any, call: tuple[Any, ...]) -> Any:
    name, *args = call
    if name == "admit":
        return ctx.admit(args[0]).admitted
    if name == "disable":
        return ctx.submit(DisableHost(args[0])).kind
    if name == "run":
        return ctx.submit(RunAction(UPGRADE, "host", args[0])).kind
    if name == "enable":
        return ctx.submit(EnableHost(args[0])).kind
    if name == "move":
        return ctx.submit(Move(args[0], LIVE, target=args[1])).kind
    if name == "watch":
        return ctx.submit(Watch(args[0])).kind
    if name == "istate":
        return ctx.set_instance_state(args[0], args[1])
    if name == "hstate":
        return ctx.set_host_state(args[0], args[1])
    if name == "stop":
        return ctx.stop_awaiting(args[0], state="DEFAULT_PREPARE_MAINTENANCE")
    return ctx.ask("PREPARE_MAINTENANCE", {args[0]: [args[1]]})


def views(ctx: Any) -> Any:
    hosts = [(h.name, h.state, h.enabled) for h in ctx.hosts]
    return (
        hosts,
        [[h.name for h in ctx.hosts.in_state(s)] for s in HostState],
        [[h.name for h in ctx.hosts.without_instances(s)] for s in HostState],
        [h.name for h in ctx.hosts.without_instances(HostState.PENDING, HostState.DRAINED)],
        [h.name for h in ctx.hosts.in_state(HostState.PENDING, HostState.MAINTAINED)],
        len(ctx.hosts.in_state(HostState.PENDING, type="compute")),
        [[h.name for h in ctx.hosts.in_state(s, type=t)] for s in HostState for t in TYPES],
        [h.name for h in ctx.hosts.in_state(HostState.PENDING, HostState.DRAINED, type="gpu")],
        [sorted(i.instance_id for i in ctx.instances.on(h)) for h in NAMES],
        [sorted((i.instance_id, i.state) for i in ctx.instances.of(p)) for p in ("p1", "p2")],
        [[i.instance_id for i in ctx.instances.of_on("p1", h)] for h in NAMES],
        [sorted(i.instance_id for i in ctx.instances.in_state(s)) for s in InstanceState],
        [ctx.capacity.free(h) for h in NAMES],
        [list(ctx.capacity.targets(vm)) for vm in VMS],
        sorted(p.project_id for p in ctx.projects.awaiting()),
        sorted((p.project_id, p.state) for p in ctx.projects.managed()),
        ctx.projects.awaiting_count("PREPARE_MAINTENANCE"),
        sorted(p.project_id for p in ctx.projects.managed()),
    )


@pytest.mark.no_cover
@settings(max_examples=80, deadline=None)
@given(working_sets(), st.lists(CALLS, max_size=25))
def test_answers_refusals_and_views_equal_fake_context(
    data: dict[str, Any], calls: list[tuple[Any, ...]]
) -> None:
    oracle = FakeContext(now=T0, **data)
    ws = FakeWorkingSet(FakeContext(now=T0, **data))
    ctx = StepContext(ws, T0)
    assert views(ctx) == views(oracle)
    for call in calls:
        outcomes = []
        for subject in (oracle, ctx):
            try:
                outcomes.append(("ok", apply(subject, call)))
            except ContractError as exc:
                outcomes.append(("refused", exc.subject))
        assert outcomes[0] == outcomes[1], call
        assert views(ctx) == views(oracle), call
