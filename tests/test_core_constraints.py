"""The constraint API on Engine (issue 18): the ConstraintService that
today's Engine delegates to as well, so both engines answer alike (the cases
of tests/test_constraints_api.py that concern the engine, run against
Engine), share one store (either sees the other's writes), and a change
reaches the sessions Engine runs at their next step."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest

from fenix_core import Engine
from fenix_core.clock import SimClock
from fenix_core.constraints import (
    CloudConstraints,
    GroupConstraints,
    InstanceConstraints,
    implicit_group_id,
)
from fenix_core.contract import SessionContext, Workflow
from fenix_core.errors import Conflict, Forbidden, InvalidInput, NotFound
from fenix_core.model import IgnoredConstraint
from fenix_core.testing import SimulatedCloud
from fenix_core.workflows.rolling import RollingWorkflow

GROUP: dict[str, Any] = {
    "group_id": "web",
    "project_id": "pa",
    "max_impacted_members": 2,
    "recovery_time": 30,
}


def group(group_id: str = "web", project_id: str = "pa", **fields: Any) -> dict[str, Any]:
    return {"group_id": group_id, "project_id": project_id, **fields}


def instance(
    instance_id: str = "a-1", project_id: str = "pa", group_id: str | None = None, **fields: Any
) -> dict[str, Any]:
    return {"instance_id": instance_id, "project_id": project_id, "group_id": group_id, **fields}


class Waits(Workflow):
    """Decides nothing for a day; counts how often it is asked to decide."""

    name: ClassVar[str] = "waits"
    advanced: ClassVar[list[int]] = []

    def start(self, ctx: SessionContext) -> None:
        ctx.set_timer("later", ctx.now + timedelta(days=1))

    def advance(self, ctx: SessionContext) -> None:
        type(self).advanced.append(len(ctx.hosts))


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    made = SimulatedCloud(clock=clock)
    made.add_host("cmp-0", vcpus=8)
    made.add_host("cmp-1", vcpus=8)
    made.add_instance("a-1", "pa", "cmp-0", vcpus=2)
    made.add_instance("b-1", "pb", "cmp-1", vcpus=2)
    return made


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fenix.db'}"


@pytest.fixture
def core(url: str, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Callable[..., Engine]]:
    made: list[Engine] = []

    def make(**kwargs: Any) -> Engine:
        engine = Engine(
            url,
            clock=clock,
            plugins=[cloud],
            workflows={"rolling": RollingWorkflow, "waits": Waits},
            **kwargs,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def test_both_engines_share_one_constraint_store(
    core: Callable[..., Engine], clock: SimClock, url: str
) -> None:
    engine = core()
    today = Engine(url, clock=clock, load_entry_points=False)
    try:
        # One store: what one engine writes, the other reads (its cache follows).
        assert engine.constraints().groups == {}
        today.set_group_constraints(GROUP)
        assert engine.get_group_constraints("web") == GroupConstraints.from_dict(GROUP)
        assert engine.constraints().group_of("x", "pa").max_impacted_members == 1
        engine.set_instance_constraints(instance("a-1", "pa", "web"))
        assert today.constraints().group_of("a-1", "pa").max_impacted_members == 2
        engine.delete_group_constraints("web", project_id="pa")
        assert today.constraints().group_id_of("a-1", "pa") == implicit_group_id("pa")
    finally:
        today.close()


def test_set_get_list_delete_per_project(core: Callable[..., Engine]) -> None:
    engine = core()
    assert engine.set_group_constraints(GROUP) == GroupConstraints.from_dict(GROUP)
    engine.set_group_constraints(group("web", "pb", max_impacted_members=5), project_id="pb")
    engine.set_instance_constraints(instance("a-1", "pa", "web", lead_time=9), project_id="pa")
    assert [(g.project_id, g.group_id) for g in engine.list_group_constraints()] == [
        ("pa", "web"),
        ("pb", "web"),
    ]
    assert [g.project_id for g in engine.list_group_constraints("pb")] == ["pb"]
    assert engine.get_group_constraints("web", project_id="pb").max_impacted_members == 5
    with pytest.raises(Conflict):
        engine.get_group_constraints("web")  # the admin: two projects hold "web"
    assert engine.get_instance_constraints("a-1").lead_time == 9
    assert engine.list_instance_constraints("pb") == []
    engine.delete_instance_constraints("a-1", project_id="pa")
    with pytest.raises(NotFound):
        engine.get_instance_constraints("a-1")
    engine.delete_group_constraints("web", project_id="pb")
    assert engine.get_group_constraints("web") == GroupConstraints.from_dict(GROUP)


def test_refusals_name_the_field_and_write_nothing(core: Callable[..., Engine]) -> None:
    engine = core()
    engine.set_group_constraints(GROUP)
    with pytest.raises(InvalidInput) as bad:
        engine.set_group_constraints(group(max_impacted_members=0))
    assert bad.value.field == "max_impacted_members"
    with pytest.raises(InvalidInput) as bad:
        engine.get_group_constraints("")
    assert bad.value.field == "group_id"
    with pytest.raises(InvalidInput) as bad:
        engine.list_group_constraints(project_id="")  # type: ignore[arg-type]
    assert bad.value.field == "project_id"
    with pytest.raises(Forbidden):
        engine.set_group_constraints(group("new", "pa"), project_id="pb")
    with pytest.raises(NotFound) as missing:
        engine.delete_group_constraints("web", project_id="pb")
    assert "pa" not in str(missing.value)
    with pytest.raises(InvalidInput) as bad:
        engine.set_instance_constraints(instance("a-1", "pa", "nope"))
    assert bad.value.field == "group_id"
    assert engine.list_group_constraints() == [GroupConstraints.from_dict(GROUP)]
    assert engine.list_instance_constraints() == []


def test_only_the_clouds_owner_sets_an_instances_constraints(
    core: Callable[..., Engine],
) -> None:
    engine = core()
    engine.create_session({"hosts": ["cmp-0"]})  # b-1 is recorded too, out of scope
    for acting in (None, "pb"):
        with pytest.raises(NotFound):
            engine.set_instance_constraints(instance("a-1", "pb"), project_id=acting)
    engine.set_instance_constraints(instance("a-1", "pa"), project_id="pa")
    engine.set_instance_constraints(instance("b-1", "pb"), project_id="pb")
    assert [i.instance_id for i in engine.list_instance_constraints()] == ["a-1", "b-1"]


def test_constraints_resolve_with_the_clouds_defaults_and_the_engines_default_group(
    core: Callable[..., Engine],
) -> None:
    engine = core(default_group_constraints={"max_impacted_members": 3})
    assert engine.constraints().group_of("a-1", "pa").max_impacted_members == 3
    cloud = CloudConstraints(
        groups=(GroupConstraints.from_dict(group("g", "pa", max_impacted_members=4)),),
        members={"a-1": "g"},
    )
    resolved = engine.constraints(cloud)
    assert resolved.group_of("a-1", "pa").max_impacted_members == 4
    engine.set_instance_constraints(instance("a-1", "pa", "web"), group=GROUP)
    assert engine.constraints(cloud).group_of("a-1", "pa").max_impacted_members == 2
    first = engine.constraints()
    assert engine.constraints() is first  # cached until a change


def test_ignored_constraints_are_reported_in_the_view(
    core: Callable[..., Engine], cloud: SimulatedCloud
) -> None:
    engine = core()
    # pb set a-1's constraints while it was pb's; the cloud then reused the id in pa.
    cloud.remove_instance("a-1")
    cloud.add_instance("a-1", "pb", "cmp-0", vcpus=2)
    engine.set_instance_constraints(instance("a-1", "pb"), project_id="pb")
    cloud.remove_instance("a-1")
    cloud.add_instance("a-1", "pa", "cmp-0", vcpus=2)
    sid = engine.create_session({"hosts": ["cmp-0"]})
    assert engine.get_session(sid).ignored_constraints == (
        IgnoredConstraint("instance", "a-1", "pb", "pa"),
    )


def test_a_running_session_decides_again_when_constraints_change(
    core: Callable[..., Engine],
) -> None:
    engine = core()
    Waits.advanced.clear()
    sid = engine.create_session({"hosts": ["cmp-0"], "workflow": "waits"})
    engine.run_until_idle()
    asked = len(Waits.advanced)
    assert asked >= 1
    engine.run_until_idle()
    assert len(Waits.advanced) == asked  # nothing happened: not asked again
    engine.set_group_constraints(GROUP)
    engine.run_until_idle()
    assert len(Waits.advanced) == asked + 1
    engine.delete_group_constraints("web")
    engine.run_until_idle()
    assert len(Waits.advanced) == asked + 2
    assert engine.get_session(sid).state == "MAINTENANCE"


def test_instance_constraints_object_round_trips(core: Callable[..., Engine]) -> None:
    engine = core()
    value = InstanceConstraints.from_dict(instance("a-1", "pa", lead_time=5))
    assert engine.set_instance_constraints(value) == value
    assert engine.get_instance_constraints("a-1", project_id="pa") == value
