"""Approve, then execute, on Engine (fenix_core.engine): the plan
made by the engine's previewer at creation, a waiting session that is never
stepped and touches nothing, the approval that starts it, and the re-plan
when the cloud, the constraints or the managers changed (Replanned), with
the same plan records and refusals as today's Engine (tests/test_approval.py),
through the code both engines share (fenix_core.approval_service)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from fenix_core import Engine, constraint_store
from fenix_core.clock import SimClock
from fenix_core.constraints import GroupConstraints, InstanceConstraints
from fenix_core.errors import Conflict, InvalidInput, NotFound, Replanned
from fenix_core.testing import SimulatedCloud, TimedAction
from fenix_core.workflows.rolling import RollingWorkflow

WRITES = ("disable_host", "enable_host", "migration_started")
APPROVAL = {"approval": "required", "actions": [{"plugin": "upgrade", "type": "host"}]}


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    """Four computes, one 2-vCPU instance of project p1 on each but the last."""
    made = SimulatedCloud(clock=clock)
    for i in range(4):
        made.add_host(f"cmp-{i}", vcpus=8)
    for i in range(3):
        made.add_instance(f"vm-{i}", "p1", f"cmp-{i}", vcpus=2)
    return made


@pytest.fixture
def make(tmp_path: Path, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def build(**kwargs: Any) -> Engine:
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=clock,
            plugins=[cloud, TimedAction("upgrade", seconds=300)],
            workflows={"rolling": RollingWorkflow},
            **kwargs,
        )
        made.append(engine)
        return engine

    yield build
    for engine in made:
        engine.close()


@pytest.fixture
def engine(make: Callable[..., Engine]) -> Engine:
    return make()


def writes(cloud: SimulatedCloud) -> list[tuple[str, str | None]]:
    return [(e.kind, e.host) for e in cloud.events if e.kind in WRITES]


def test_a_waiting_session_shows_its_plan_and_is_never_stepped(
    engine: Engine, cloud: SimulatedCloud, clock: SimClock
) -> None:
    sid = engine.create_session(APPROVAL)
    view = engine.get_session(sid)
    assert view.state == "AWAITING_APPROVAL"
    plan = engine.get_plan(sid)
    assert plan.approved_at is None
    assert plan.changes == ()
    assert plan.plan["state"] == "MAINTENANCE_DONE"
    assert sorted(plan.plan["hosts"]) == ["cmp-0", "cmp-1", "cmp-2", "cmp-3"]
    assert engine.run_until_idle() == 0
    assert engine.next_wake() is None
    end = clock.now() + timedelta(days=3)
    while clock.now() < end:
        assert engine.run_until_idle() == 0
        clock.wait(clock.now() + timedelta(hours=6), threading.Event())
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    assert {h.state for h in engine.get_session(sid).hosts} == {"PENDING"}
    assert writes(cloud) == []


def test_approved_unchanged_it_runs(engine: Engine, cloud: SimulatedCloud) -> None:
    sid = engine.create_session(APPROVAL)
    reviewed = engine.get_plan(sid).plan_id
    assert engine.approve_session(sid, reviewed).state == "MAINTENANCE"
    approved = engine.get_plan(sid)
    assert (approved.plan_id, approved.approved_at) == (reviewed, engine.clock.now())
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert {h.state for h in done.hosts} == {"MAINTAINED"}
    assert writes(cloud)  # it did run
    with pytest.raises(Conflict, match=r"does not await approval \(it is MAINTENANCE_DONE\)"):
        engine.approve_session(sid)
    assert engine.get_plan(sid).plan_id == reviewed


def _remove_host(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.remove_host("cmp-3")


def _add_host(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.add_host("cmp-9", vcpus=8)


def _move_instance(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.relocate("vm-0", "cmp-3")


def _new_instance(engine: Engine, cloud: SimulatedCloud) -> None:
    cloud.add_instance("vm-new", "p2", "cmp-1", vcpus=1)


def _store(
    engine: Engine, group: GroupConstraints, instance: InstanceConstraints | None = None
) -> None:
    """Constraints as the API stores them (Engine has no constraint API yet)."""
    with Session(engine.database) as orm, orm.begin():
        constraint_store.write(
            orm,
            engine.clock.now(),
            group=group,
            instance=instance,
            acting=None,
            cloud_owner=constraint_store.UNKNOWN,
        )


def _group(most: int) -> GroupConstraints:
    return GroupConstraints(
        group_id="g", project_id="p1", max_impacted_members=most, recovery_time=60
    )


def _change_group(engine: Engine, cloud: SimulatedCloud) -> None:
    _store(engine, _group(1))


def _subscribe(engine: Engine, cloud: SimulatedCloud) -> None:
    engine.subscribe("p1")


CHANGES: dict[str, tuple[Callable[[Engine, SimulatedCloud], None], str]] = {
    "host removed": (_remove_host, "hosts gone from the cloud: cmp-3"),
    "host added": (_add_host, "hosts joined the scope: cmp-9"),
    "instance moved": (_move_instance, "instances moved: vm-0 cmp-0 -> cmp-3"),
    "instance created": (_new_instance, "instances new: vm-new"),
    "constraint changed": (_change_group, "group constraints changed"),
    "manager subscribed": (_subscribe, "projects now with a manager: p1"),
}


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_change_between_create_and_approve_replans_and_keeps_waiting(
    engine: Engine, cloud: SimulatedCloud, change: str
) -> None:
    for vm in ("vm-0", "vm-1"):  # vm-0 and vm-1 in group g of p1, two at a time
        _store(
            engine, _group(2), InstanceConstraints(instance_id=vm, project_id="p1", group_id="g")
        )
    sid = engine.create_session({**APPROVAL, "reply_policy": "default"})
    first = engine.get_plan(sid)
    mutate, said = CHANGES[change]
    mutate(engine, cloud)
    with pytest.raises(Replanned) as info:
        engine.approve_session(sid, first.plan_id)
    replanned = info.value
    assert replanned.session_id == sid
    assert any(said in line for line in replanned.changes), replanned.changes
    assert str(replanned).startswith(f"re-planned, approve again (plan {replanned.plan_id}): ")
    assert engine.get_session(sid).state == "AWAITING_APPROVAL"
    stored = engine.get_plan(sid)
    assert stored.plan_id == replanned.plan_id != first.plan_id
    assert stored.changes == replanned.changes
    assert writes(cloud) == []
    with pytest.raises(Conflict, match=f"plan {first.plan_id} is not the session's plan"):
        engine.approve_session(sid, first.plan_id)
    assert engine.approve_session(sid, replanned.plan_id).state == "MAINTENANCE"
    if change != "manager subscribed":  # nobody answers for p1 there
        assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_the_new_plan_and_rows_are_made_over_the_cloud_as_it_is_now(
    engine: Engine, cloud: SimulatedCloud
) -> None:
    sid = engine.create_session({**APPROVAL, "hosts": ["cmp-1", "cmp-3"]})
    cloud.remove_host("cmp-3")
    cloud.add_host("cmp-7", vcpus=8)
    cloud.relocate("vm-0", "cmp-7")
    with pytest.raises(Replanned, match="hosts gone from the cloud: cmp-3"):
        engine.approve_session(sid)
    view = engine.get_session(sid)
    assert view.host("cmp-3").state == "REMOVED"
    assert view.host("cmp-1").state == "PENDING"
    assert "cmp-7" not in {h.name for h in view.hosts}  # a target now, not maintained
    assert engine.get_plan(sid).plan["hosts"] == ["cmp-1"]
    engine.approve_session(sid)
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert done.host("cmp-1").state == "MAINTAINED"
    # Every named host gone: nothing to re-plan over.
    other = engine.create_session({**APPROVAL, "hosts": ["cmp-2"]})
    cloud.remove_host("cmp-2")
    with pytest.raises(Conflict, match="lists none of the session's hosts"):
        engine.approve_session(other)
    assert engine.get_session(other).state == "AWAITING_APPROVAL"


def test_approval_checks_that_no_running_session_holds_its_hosts(
    engine: Engine, cloud: SimulatedCloud
) -> None:
    waiting = engine.create_session({**APPROVAL, "hosts": ["cmp-0", "cmp-1"]})
    running = engine.create_session({"hosts": ["cmp-1", "cmp-2"]})
    with pytest.raises(Conflict, match=f"host cmp-1 is already in running session {running}"):
        engine.approve_session(waiting)
    assert engine.get_session(waiting).state == "AWAITING_APPROVAL"
    assert engine.get_plan(waiting).approved_at is None  # nothing written
    assert engine.run_until_done(running).state == "MAINTENANCE_DONE"
    with pytest.raises(Replanned, match="instances moved: vm-1 cmp-1 -> "):
        engine.approve_session(waiting)
    assert engine.approve_session(waiting).state == "MAINTENANCE"
    assert engine.run_until_done(waiting).state == "MAINTENANCE_DONE"


def test_refusals_name_what_is_wrong(engine: Engine) -> None:
    plain = engine.create_session({"actions": APPROVAL["actions"]})
    with pytest.raises(NotFound):
        engine.get_plan(plain)
    with pytest.raises(Conflict, match=r"does not await approval \(it is MAINTENANCE\)"):
        engine.approve_session(plain)
    with pytest.raises(NotFound):
        engine.approve_session("no-such-session")
    with pytest.raises(InvalidInput) as info:
        engine.approve_session(plain, "")
    assert info.value.field == "plan_id"


def test_an_engine_may_bring_its_own_previewer(
    make: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []

    def previewer(request: Any, *, scope: Any, **_: Any) -> dict[str, Any]:
        seen.append(list(scope))
        return {"mine": True}

    own = make(previewer=previewer)
    sid = own.create_session(APPROVAL)
    assert own.get_plan(sid).plan == {"mine": True}
    assert seen == [["cmp-0", "cmp-1", "cmp-2", "cmp-3"]]
    monkeypatch.setattr(Engine, "default_previewer", None)
    bare = make()
    other = bare.create_session({**APPROVAL, "hosts": ["cmp-3"]})
    assert "no previewer" in bare.get_plan(other).plan["unavailable"]


def test_the_default_group_rules_are_explicit_in_the_stored_request(
    make: Callable[..., Engine],
) -> None:
    engine = make(default_group_constraints={"recovery_time": 60})
    sid = engine.create_session(
        {**APPROVAL, "default_group_constraints": {"max_impacted_members": 2}}
    )
    ws_request = engine.get_plan(sid)  # the plan was made over the same request
    assert ws_request.plan["state"] == "MAINTENANCE_DONE"
    from sqlalchemy import select

    from fenix_core.store.schema import SessionRow

    with engine.database.connect() as db:
        request = db.scalar(select(SessionRow.request).where(SessionRow.id == sid))
    assert request["default_group_constraints"] == {
        "max_impacted_members": 2,
        "recovery_time": 60,
        "anti_affinity_group": False,
        "max_instances_per_host": 0,
    }
