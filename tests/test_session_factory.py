"""The pure session factory (fenix_core.core.factory) builds exactly the rows
today's ``Engine.create_session`` writes, and refuses exactly what it refuses
with the same field and message, for requests over the whole feature range
(scopes, controls, add_hosts, decommissioning, workflows, cloud constraints)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from sqlalchemy import select

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.constraints import DEFAULT_GROUP, CloudConstraints, GroupConstraints
from fenix_core.core.factory import CloudSnapshot, SessionFactory
from fenix_core.core.ports import NewSession
from fenix_core.core.records import (
    HOST_COLUMNS,
    INSTANCE_COLUMNS,
    PROJECT_COLUMNS,
    SESSION_COLUMNS,
)
from fenix_core.errors import FenixError, InvalidInput
from fenix_core.model import Instance
from fenix_core.store.schema import (
    HostRow,
    InstanceRow,
    ProjectRow,
    SessionClockRow,
    SessionRow,
    SessionStateRow,
)
from fenix_core.testing import SimClock, SimulatedCloud, TimedAction

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)


class GroupedCloud(SimulatedCloud):
    """A cloud that reports a server group (a ConstraintSource)."""

    def cloud_constraints(self, instances: Sequence[Instance]) -> CloudConstraints:
        return CloudConstraints(
            groups=(GroupConstraints(group_id="g1", project_id="pa", anti_affinity_group=True),),
            members={"vm-a1": "g1", "vm-a2": "g1"},
        )


def build_cloud(grouped: bool) -> SimulatedCloud:
    cloud = GroupedCloud() if grouped else SimulatedCloud()
    for name, vcpus in (("cmp-0", 8), ("cmp-1", 8), ("cmp-2", 8), ("cmp-3", 16)):
        cloud.add_host(name, vcpus=vcpus)
    cloud.add_host("ctl-0", type="controller", vcpus=4)
    cloud.add_host("cmp-off", enabled=False)
    for iid, project, host, vcpus in (
        ("vm-a1", "pa", "cmp-0", 2),
        ("vm-b1", "pb", "cmp-0", 2),
        ("vm-a2", "pa", "cmp-1", 2),
        ("vm-c1", "pc", "cmp-2", 1),
        ("vm-ctl", "pz", "ctl-0", 1),
    ):
        cloud.add_instance(iid, project, host, vcpus, live_migratable=iid != "vm-c1")
    return cloud


@pytest.fixture
def world() -> Iterator[Any]:
    engines: list[Engine] = []

    def make(grouped: bool = False) -> Engine:
        engine = Engine(
            clock=SimClock(start=T0),
            plugins=[build_cloud(grouped), TimedAction("upgrade", 60), TimedAction("wipe", 10)],
            load_entry_points=False,
        )
        engine.subscribe("pa")
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.close()


def factory_of(engine: Engine) -> SessionFactory:
    plugins = engine.plugins
    return SessionFactory(plugins.workflows, plugins.actions, plugins.gates)


def snapshot(engine: Engine) -> CloudSnapshot:
    driver = engine.plugins.require_driver()
    instances = list(driver.list_instances(None))
    source = getattr(driver, "cloud_constraints", None)
    return CloudSnapshot(
        hosts=list(driver.list_hosts()),
        instances=instances,
        allowed_actions=list(driver.allowed_actions()),
        constraints=source(instances) if source is not None else None,
    )


def build(engine: Engine, request: Any, session_id: str) -> NewSession:
    cloud = snapshot(engine)
    return factory_of(engine).build(
        request,
        cloud,
        constraints=engine.constraints(cloud.constraints),
        subscribed=set(engine.subscriptions()),
        session_id=session_id,
        now=engine.clock.now(),
        default_group_constraints=engine.default_group_constraints,
    )


def stored(engine: Engine, session_id: str) -> dict[str, list[dict[str, Any]]]:
    def rows(model: Any, columns: Sequence[str], order: Any) -> list[dict[str, Any]]:
        found = orm.scalars(select(model).where(model.session_id == session_id).order_by(order))
        return [{c: getattr(r, c) for c in columns} for r in found]

    with engine.transaction() as orm:
        session = orm.get(SessionRow, session_id)
        clock = orm.get(SessionClockRow, session_id)
        component = orm.get(SessionStateRow, (session_id, "session"))
        assert session is not None
        assert clock is not None
        assert component is not None
        # The engine keeps the factory's session data as the "session"
        # component and its counters and wake-up in session_clock.
        row = {c: getattr(session, c) for c in SESSION_COLUMNS if c not in CORE_ELSEWHERE}
        row |= {c: getattr(clock, c) for c in ("seq", "version", "next_wake")}
        return {
            "session": [row | {"data": component.body}],
            "hosts": rows(HostRow, HOST_COLUMNS, HostRow.position),
            "instances": rows(InstanceRow, INSTANCE_COLUMNS, InstanceRow.instance_id),
            "projects": rows(ProjectRow, PROJECT_COLUMNS, ProjectRow.project_id),
        }


#: Columns of the sessions row whose facts the engine keeps elsewhere
#: (session_clock, the "session" component); there they stay at their defaults.
CORE_ELSEWHERE = frozenset({"data", "seq", "version", "next_wake"})


def built(new: NewSession) -> dict[str, list[dict[str, Any]]]:
    def rows(records: Sequence[tuple[Any, ...]], columns: Sequence[str]) -> list[dict[str, Any]]:
        return [dict(zip(columns, r, strict=True)) for r in records]

    return {
        "session": rows([new.session], SESSION_COLUMNS),
        "hosts": sorted(rows(new.hosts, HOST_COLUMNS), key=lambda r: r["position"]),
        "instances": sorted(rows(new.instances, INSTANCE_COLUMNS), key=lambda r: r["instance_id"]),
        "projects": rows(new.projects, PROJECT_COLUMNS),
    }


REQUESTS: list[tuple[str, dict[str, Any], bool]] = [
    ("every host", {}, False),
    ("named hosts", {"hosts": ["cmp-1", "cmp-0"]}, False),
    (
        "controls and actions",
        {
            "hosts": ["cmp-2"],
            "actions": [ActionSpec("upgrade", "host").to_dict()],
            "controls": {
                "windows": [{"start": "22:00", "end": "04:00"}],
                "timezone": "Europe/Paris",
                "max_hosts_per_hour": 2,
            },
            "maintenance_at": "2026-03-02T22:00:00+00:00",
        },
        False,
    ),
    ("a host to add", {"hosts": ["cmp-0"], "add_hosts": ["cmp-new"]}, False),
    ("decommission in rolling", {"decommission_hosts": ["cmp-2"]}, False),
    ("decommission workflow", {"workflow": "decommission", "hosts": ["cmp-3"]}, False),
    ("constrained with a server group", {"workflow": "constrained"}, True),
    ("rolling with a server group", {"hosts": ["cmp-0", "cmp-3"]}, True),
]


@pytest.mark.parametrize(("name", "request_", "grouped"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_the_factory_builds_what_create_session_writes(
    world: Any, name: str, request_: dict[str, Any], grouped: bool
) -> None:
    engine = world(grouped)
    expected_request = attrs.evolve(
        SessionRequest.coerce(request_), default_group_constraints=DEFAULT_GROUP
    )
    session_id = engine.create_session(request_)
    written = stored(engine, session_id)
    assert written["session"][0]["request"] == expected_request.to_dict()
    assert built(build(engine, request_, session_id)) == written


BAD: list[tuple[str, dict[str, Any]]] = [
    ("unknown workflow", {"workflow": "nope"}),
    ("unknown host", {"hosts": ["cmp-9"]}),
    ("unknown action", {"actions": [{"plugin": "nope", "type": "host"}]}),
    ("unknown gate", {"controls": {"gates": [{"name": "nope"}]}}),
    ("add a maintained host", {"hosts": ["cmp-0"], "add_hosts": ["cmp-0"]}),
    ("add a controller", {"add_hosts": ["ctl-0"]}),
    ("retire outside the scope", {"hosts": ["cmp-0"], "decommission_hosts": ["cmp-1"]}),
    (
        "retire every compute host",
        {"decommission_hosts": ["cmp-0", "cmp-1", "cmp-2", "cmp-3", "cmp-off"]},
    ),
    ("decommission without hosts", {"workflow": "decommission"}),
]


@pytest.mark.parametrize(("name", "request_"), BAD, ids=[b[0] for b in BAD])
def test_the_factory_refuses_what_create_session_refuses(
    world: Any, name: str, request_: dict[str, Any]
) -> None:
    engine = world()
    with pytest.raises(FenixError) as today:
        engine.create_session(request_)
    with pytest.raises(FenixError) as pure:
        build(engine, request_, "x")
    assert type(pure.value) is type(today.value)
    assert str(pure.value) == str(today.value)
    if isinstance(today.value, InvalidInput):
        assert isinstance(pure.value, InvalidInput)
        assert pure.value.field == today.value.field


def test_a_decommission_short_of_capacity_is_refused_like_today(world: Any) -> None:
    engine = world(grouped=True)  # vm-a1 and vm-a2 may not share a host
    request = {"decommission_hosts": ["cmp-0", "cmp-1", "cmp-2"]}
    with pytest.raises(InvalidInput) as today:
        engine.create_session(request)
    with pytest.raises(InvalidInput) as pure:
        build(engine, request, "x")
    assert (pure.value.field, pure.value.reason) == (today.value.field, today.value.reason)
