"""Approve, then execute: a session created with ``approval: "required"`` plans
over its own snapshot of the cloud, waits holding no host and touching
nothing, and starts only when approved on a plan that still fits the cloud;
otherwise it is re-planned and shown again. The engines run on a database file."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from fenix_core import Engine, hookimpl
from fenix_core.approval import changes, facts, plan_id
from fenix_core.clock import SimClock
from fenix_core.constraints import ConstraintSet, GroupConstraints, InstanceConstraints
from fenix_core.errors import Conflict, InvalidInput, NotFound, Replanned
from fenix_core.hookspecs import GateContext, GateResult
from fenix_core.model import Host, Instance
from fenix_core.store.schema import SessionRow
from fenix_core.testing import SimulatedCloud, TimedAction

#: What the simulated cloud logs when something asks it to change.
WRITES = ("disable_host", "enable_host", "migration_started")
APPROVAL = {"approval": "required", "actions": [{"plugin": "upgrade", "type": "host"}]}


def build(cloud: SimulatedCloud, hosts: int = 4) -> None:
    """``hosts`` computes, one 2-vcpu instance of project p1 on each but the last."""
    for i in range(hosts):
        cloud.add_host(f"cmp-{i}", vcpus=8)
    for i in range(hosts - 1):
        cloud.add_instance(f"vm-{i}", "p1", f"cmp-{i}", vcpus=2)


@pytest.fixture
def make(
    fenix_cloud: SimulatedCloud, fenix_engine_factory: Any, tmp_path: Path
) -> Callable[..., Engine]:
    """make(*plugins, **options): an engine on the test's database file, over
    the cloud of :func:`build`."""
    build(fenix_cloud)

    def made(*plugins: object, **kwargs: Any) -> Engine:
        kwargs.setdefault("database_url", f"sqlite:///{tmp_path / 'fenix.db'}")
        engine: Engine = fenix_engine_factory(*plugins, **kwargs)
        return engine

    return made


@pytest.fixture
def engine(make: Callable[..., Engine]) -> Engine:
    return make(TimedAction("upgrade", seconds=300))


def writes(cloud: SimulatedCloud) -> list[tuple[str, str | None]]:
    return [(e.kind, e.host) for e in cloud.events if e.kind in WRITES]


def wait_days(engine: Engine, clock: SimClock, days: int) -> None:
    """Step the engine while ``days`` of simulated time pass."""
    end = clock.now() + timedelta(days=days)
    while clock.now() < end:
        engine.run_until_idle()
        clock.wait(min(end, clock.now() + timedelta(hours=6)), threading.Event())
    engine.run_until_idle()


def test_a_waiting_session_shows_its_plan_and_touches_nothing_for_days(
    engine: Engine, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    sid = engine.create_session(APPROVAL)
    view = engine.get_session(sid)
    assert view.state == "AWAITING_APPROVAL"
    assert view.approval is not None
    assert view.waiting == f"awaiting approval of plan {view.approval.plan_id}"
    assert view.approval.approved_at is None
    assert view.approval.changes == ()
    plan = view.approval.plan
    assert plan["state"] == "MAINTENANCE_DONE"
    assert sorted(plan["hosts"]) == ["cmp-0", "cmp-1", "cmp-2", "cmp-3"]
    assert plan["estimated_makespan_seconds"] > 0
    assert engine.get_plan(sid) == view.approval
    assert engine.run_until_idle() == 0
    assert engine.next_wake() is None
    end = fenix_clock.now() + timedelta(days=3)
    while fenix_clock.now() < end:  # never stepped: nothing to run, for days
        assert engine.run_until_idle() == 0
        fenix_clock.wait(fenix_clock.now() + timedelta(hours=6), threading.Event())
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    assert writes(fenix_cloud) == []
    assert [h.state for h in engine.get_session(sid).hosts] == ["PENDING"] * 4


def test_approved_unchanged_it_runs_the_plan(engine: Engine, fenix_cloud: SimulatedCloud) -> None:
    sid = engine.create_session(APPROVAL)
    reviewed = engine.get_plan(sid).plan_id
    view = engine.approve_session(sid, reviewed)
    assert view.state == "MAINTENANCE"
    assert view.waiting is None or "approval" not in view.waiting
    assert view.approval is not None
    assert view.approval.approved_at is not None
    approved = engine.get_plan(sid)
    assert (approved.plan_id, approved.approved_at) == (reviewed, engine.clock.now())
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert {h.state for h in done.hosts} == {"MAINTAINED"}
    assert writes(fenix_cloud)  # it did run
    # The plan's waves are the order the hosts were really maintained in.
    started = sorted(done.hosts, key=lambda h: (h.started_at, h.name))
    waves = [host for wave in view.approval.plan["waves"] for host in wave["hosts"]]
    assert [h.name for h in started] == waves
    with pytest.raises(Conflict, match=r"does not await approval \(it is MAINTENANCE_DONE\)"):
        engine.approve_session(sid)
    assert engine.get_plan(sid).plan_id == reviewed


def remove_host(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.remove_host("cmp-3")


def add_host(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.add_host("cmp-9", vcpus=8)


def move_instance(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.relocate("vm-0", "cmp-3")


def new_instance(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.add_instance("vm-new", "p2", "cmp-1", vcpus=1)


def change_group(engine: Engine, cloud: SimulatedCloud) -> None:
    engine.set_group_constraints(
        {"group_id": "g", "project_id": "p1", "max_impacted_members": 1, "recovery_time": 60}
    )


def subscribe(engine: Engine, cloud: SimulatedCloud) -> None:
    engine.subscribe("p1")


CHANGES: dict[str, tuple[Callable[[Engine, SimulatedCloud], None], str]] = {
    "host removed": (remove_host, "hosts gone from the cloud: cmp-3"),
    "host added": (add_host, "hosts joined the scope: cmp-9"),
    "instance moved": (move_instance, "instances moved: vm-0 cmp-0 -> cmp-3"),
    "instance created": (new_instance, "instances new: vm-new"),
    "constraint changed": (change_group, "group constraints changed"),
    "manager subscribed": (subscribe, "projects now with a manager: p1"),
}


@pytest.fixture
def grouped(engine: Engine) -> Engine:
    """vm-0 and vm-1 in group g of p1 (two at a time)."""
    engine.set_group_constraints(
        {"group_id": "g", "project_id": "p1", "max_impacted_members": 2, "recovery_time": 60}
    )
    for vm in ("vm-0", "vm-1"):
        engine.set_instance_constraints({"instance_id": vm, "project_id": "p1", "group_id": "g"})
    return engine


@pytest.mark.parametrize("workflow", ["rolling", "constrained"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_between_create_and_approve_replans_and_keeps_waiting(
    grouped: Engine, fenix_cloud: SimulatedCloud, change: str, workflow: str
) -> None:
    engine = grouped
    # reply_policy default: a subscribed manager that never answers is acted for.
    sid = engine.create_session({**APPROVAL, "workflow": workflow, "reply_policy": "default"})
    first = engine.get_plan(sid)
    mutate, said = CHANGES[change]
    mutate(engine, fenix_cloud)
    with pytest.raises(Replanned) as info:
        engine.approve_session(sid, first.plan_id)
    replanned = info.value
    assert replanned.session_id == sid
    assert any(said in line for line in replanned.changes), replanned.changes
    assert str(replanned).startswith(f"re-planned, approve again (plan {replanned.plan_id}): ")
    view = engine.get_session(sid)
    assert view.state == "AWAITING_APPROVAL"
    assert view.approval is not None
    assert view.approval.plan_id == replanned.plan_id != first.plan_id
    assert view.approval.changes == replanned.changes
    stored = engine.get_plan(sid)
    assert stored.plan_id == replanned.plan_id
    assert stored.changes == replanned.changes
    assert writes(fenix_cloud) == []
    # The plan the admin saw first is stale now.
    with pytest.raises(Conflict, match=f"plan {first.plan_id} is not the session's plan"):
        engine.approve_session(sid, first.plan_id)
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    # The new plan, approved as it is, runs.
    assert engine.approve_session(sid, replanned.plan_id).state == "MAINTENANCE"
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_the_new_plan_is_made_over_the_cloud_as_it_is_now(
    engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    sid = engine.create_session(APPROVAL)
    fenix_cloud.remove_host("cmp-3")
    fenix_cloud.add_host("cmp-7", vcpus=8)
    with pytest.raises(Replanned):
        engine.approve_session(sid)
    view = engine.get_session(sid)
    assert view.approval is not None
    assert sorted(view.approval.plan["hosts"]) == ["cmp-0", "cmp-1", "cmp-2", "cmp-7"]
    assert sorted(h.name for h in view.hosts) == ["cmp-0", "cmp-1", "cmp-2", "cmp-7"]
    engine.approve_session(sid, view.approval.plan_id)
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert {h.name: h.state for h in done.hosts} == dict.fromkeys(
        ["cmp-0", "cmp-1", "cmp-2", "cmp-7"], "MAINTAINED"
    )


def test_a_named_host_gone_is_dropped_from_the_plan_and_shown_removed(
    engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    sid = engine.create_session({**APPROVAL, "hosts": ["cmp-1", "cmp-3"]})
    fenix_cloud.remove_host("cmp-3")
    fenix_cloud.add_host("cmp-7", vcpus=8)
    fenix_cloud.relocate("vm-0", "cmp-7")
    with pytest.raises(Replanned, match="hosts gone from the cloud: cmp-3"):
        engine.approve_session(sid)
    view = engine.get_session(sid)
    assert view.host("cmp-3").state == "REMOVED"
    assert view.host("cmp-3").reason == "gone from the cloud before the session was approved"
    assert view.host("cmp-1").state == "PENDING"
    assert "cmp-7" not in {h.name for h in view.hosts}  # a target now, not maintained
    assert view.approval is not None
    assert view.approval.plan["hosts"] == ["cmp-1"]
    engine.approve_session(sid)
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert done.host("cmp-1").state == "MAINTAINED"
    # Every named host gone: nothing to re-plan over.
    other = engine.create_session({**APPROVAL, "hosts": ["cmp-2"]})
    fenix_cloud.remove_host("cmp-2")
    with pytest.raises(Conflict, match="lists none of the session's hosts"):
        engine.approve_session(other)
    assert engine.get_session(other).state == "AWAITING_APPROVAL"


def test_a_waiting_session_holds_no_host_and_approval_checks_them_again(
    engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    waiting = engine.create_session({**APPROVAL, "hosts": ["cmp-0", "cmp-1"]})
    running = engine.create_session({"hosts": ["cmp-1", "cmp-2"]})
    with pytest.raises(Conflict, match=f"host cmp-1 is already in running session {running}"):
        engine.approve_session(waiting)
    assert engine.get_session(waiting).state == "AWAITING_APPROVAL"
    assert engine.get_plan(waiting).approved_at is None  # nothing written
    assert engine.run_until_done(running).state == "MAINTENANCE_DONE"
    # The other session moved instances: the plan is made again over where they are.
    with pytest.raises(Replanned, match="instances moved: vm-1 cmp-1 -> "):
        engine.approve_session(waiting)
    assert engine.approve_session(waiting).state == "MAINTENANCE"
    assert engine.run_until_done(waiting).state == "MAINTENANCE_DONE"


def test_cancel_while_waiting_writes_nothing_to_the_cloud(
    engine: Engine, fenix_cloud: SimulatedCloud
) -> None:
    sid = engine.create_session(APPROVAL)
    view = engine.cancel(sid, "not this week")
    assert view.state == "MAINTENANCE_CANCELLED"
    assert view.reason == "not this week"
    engine.run_until_idle()
    assert writes(fenix_cloud) == []
    with pytest.raises(Conflict, match="does not await approval"):
        engine.approve_session(sid)


def test_the_start_may_move_while_waiting(engine: Engine, fenix_clock: SimClock) -> None:
    sid = engine.create_session(APPROVAL)
    later = fenix_clock.now() + timedelta(days=2)
    view = engine.update_session(sid, maintenance_at=later)
    assert view.maintenance_at == later
    engine.run_until_idle()
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    assert engine.next_wake() is None


def test_a_waiting_session_survives_a_restart(
    tmp_path: Path, fenix_cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    build(fenix_cloud)
    url = f"sqlite:///{tmp_path / 'fenix.db'}"

    def start() -> Engine:
        return Engine(
            url,
            clock=fenix_clock,
            plugins=[fenix_cloud, TimedAction("upgrade", seconds=300)],
            load_entry_points=False,
        )

    with start() as first:
        sid = first.create_session(APPROVAL)
        plan = first.get_plan(sid)
    with start() as second:
        wait_days(second, fenix_clock, 1)
        assert second.get_session(sid).state == "AWAITING_APPROVAL"
        assert second.get_plan(sid) == plan
        assert writes(fenix_cloud) == []
        second.approve_session(sid, plan.plan_id)
    with start() as third:  # approved, then restarted before its first step
        assert third.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_bad_approval_requests_are_refused_naming_the_field(engine: Engine) -> None:
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"approval": "maybe"})
    assert info.value.field == "approval"
    waiting = engine.create_session({**APPROVAL, "hosts": ["cmp-3"]})
    sid = engine.create_session({})
    with pytest.raises(Conflict, match=r"does not await approval \(it is MAINTENANCE\)"):
        engine.approve_session(sid)
    with pytest.raises(NotFound):
        engine.get_plan(sid)
    with pytest.raises(NotFound):
        engine.approve_session("no-such-session")
    for plan in (42, ""):
        with pytest.raises(InvalidInput) as bad:
            engine.approve_session(waiting, plan)  # type: ignore[arg-type]
        assert bad.value.field == "plan_id"
    assert engine.get_session(waiting).state == "AWAITING_APPROVAL"


class SiteGate:
    """A gate only this engine has (the preview's simulation does not)."""

    name = "site-gate"

    @hookimpl
    def fenix_gates(self) -> list[SiteGate]:
        return [self]

    def check(self, context: GateContext) -> GateResult:
        return GateResult.ok()


def test_an_unsimulated_request_still_waits_with_the_reason(make: Callable[..., Engine]) -> None:
    engine = make(SiteGate())
    sid = engine.create_session(
        {"approval": "required", "controls": {"gates": [{"name": "site-gate"}]}}
    )
    plan = engine.get_plan(sid).plan
    assert "site-gate" in plan["unavailable"]
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    engine.approve_session(sid)
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


# ---------------------------------------------------------------- the facts, pure

hosts_st = st.lists(
    st.tuples(st.sampled_from([4, 8, 16]), st.booleans()), min_size=1, max_size=6
).map(lambda specs: [Host(f"h{i}", "compute", v, e) for i, (v, e) in enumerate(specs)])


@st.composite
def clouds(draw: st.DrawFn) -> tuple[list[Host], list[Instance]]:
    hosts = draw(hosts_st)
    count = draw(st.integers(0, 8))
    instances = [
        Instance(
            f"vm{i}",
            draw(st.sampled_from(["pa", "pb"])),
            draw(st.sampled_from([h.name for h in hosts])),
            draw(st.integers(1, 4)),
        )
        for i in range(count)
    ]
    return hosts, instances


def _facts(
    hosts: list[Host], instances: list[Instance], groups: list[GroupConstraints] | None = None
) -> dict[str, Any]:
    members = [
        InstanceConstraints(instance_id=i.instance_id, project_id=i.project_id, group_id="g")
        for i in instances
        if i.project_id == "pa"
    ]
    return facts(
        scope=[h.name for h in hosts],
        hosts=hosts,
        instances=instances,
        constraints=ConstraintSet.of(groups or [], members),
        managed=["pb"],
    )


@settings(max_examples=150, deadline=None)
@given(cloud=clouds(), data=st.data())
def test_any_change_of_the_facts_is_named_and_changes_the_plan_id(
    cloud: tuple[list[Host], list[Instance]], data: st.DataObject
) -> None:
    hosts, instances = cloud
    group = GroupConstraints(group_id="g", project_id="pa", max_impacted_members=1)
    before = _facts(hosts, instances, [group])
    assert changes(before, _facts(hosts, instances, [group])) == []
    kind = data.draw(st.sampled_from(["capacity", "enabled", "move", "drop", "group", "host"]))
    if kind == "capacity":
        hosts = [Host(h.name, h.type, h.vcpus * 2, h.enabled) for h in hosts]
    elif kind == "enabled":
        hosts = [Host(h.name, h.type, h.vcpus, not h.enabled) for h in hosts]
    elif kind == "move" and instances and len(hosts) > 1:
        first = instances[0]
        other = next(h.name for h in hosts if h.name != first.host)
        instances = [
            Instance(first.instance_id, first.project_id, other, first.vcpus),
            *instances[1:],
        ]
    elif kind == "drop" and instances:
        instances = instances[1:]
    elif kind == "group":
        group = GroupConstraints(group_id="g", project_id="pa", max_impacted_members=2)
    else:
        hosts = [*hosts, Host("extra", "compute", 8, True)]
    after = _facts(hosts, instances, [group])
    said = changes(before, after)
    request = {"hosts": []}
    if after == before:
        assert said == []
        assert plan_id(after, request) == plan_id(before, request)
    else:
        assert said, (before, after)
        assert plan_id(after, request) != plan_id(before, request)


def test_an_engine_may_bring_its_own_previewer(
    make: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[tuple[str, ...]] = []

    def previewer(request: Any, *, scope: Any, **_: Any) -> dict[str, Any]:
        asked.append(tuple(scope))
        return {"waves": [{"index": 0, "hosts": list(scope), "start": 0.0, "end": 60.0}]}

    own = make(previewer=previewer)
    sid = own.create_session({"approval": "required", "hosts": ["cmp-0", "cmp-1"]})
    assert own.get_plan(sid).plan["waves"][0]["hosts"] == ["cmp-0", "cmp-1"]
    assert asked == [("cmp-0", "cmp-1")]
    # No hosts named: the previewer is asked over every host of the cloud.
    whole = own.create_session({"approval": "required"})
    assert own.get_plan(whole).plan["waves"][0]["hosts"] == ["cmp-0", "cmp-1", "cmp-2", "cmp-3"]
    assert asked[-1] == ("cmp-0", "cmp-1", "cmp-2", "cmp-3")
    # The package sets the default; without any, the plan says there is none.
    monkeypatch.setattr(Engine, "default_previewer", None)
    bare = make()
    other = bare.create_session({"approval": "required", "hosts": ["cmp-2"]})
    assert "no previewer" in bare.get_plan(other).plan["unavailable"]


def test_the_default_group_rules_are_explicit_in_the_stored_request(
    make: Callable[..., Engine],
) -> None:
    engine = make(
        TimedAction("upgrade", seconds=300), default_group_constraints={"recovery_time": 60}
    )
    sid = engine.create_session(
        {**APPROVAL, "default_group_constraints": {"max_impacted_members": 2}}
    )
    assert engine.get_plan(sid).plan["state"] == "MAINTENANCE_DONE"  # made over that request
    with engine.database.connect() as db:
        request = db.scalar(select(SessionRow.request).where(SessionRow.id == sid))
    assert request["default_group_constraints"] == {
        "max_impacted_members": 2,
        "recovery_time": 60,
        "anti_affinity_group": False,
        "max_instances_per_host": 0,
    }
