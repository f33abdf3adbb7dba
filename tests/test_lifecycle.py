"""Host lifecycle on the simulated cloud: hosts that appear and disappear,
decommission sessions, and upgrades that start by filling a spare host. The
host inventory: what ``Inventory`` / ``ListHosts`` / ``Locate`` find is applied
to the records before the workflow hears of it, HOST_ADDED / HOST_REMOVED are
announced once each (``refresh_inventory()`` too), and the inventory cache's
own promise: a session follows only the hosts that changed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Recorder, fill
from core_records import StoredSession

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import Clock
from fenix_core.core.inventory import InventoryCache
from fenix_core.errors import InvalidInput
from fenix_core.hookspecs import Action, ActionContext, hookimpl
from fenix_core.model import Host, OperationStatus
from fenix_core.store.database import migrate, open_database
from fenix_core.testing import (
    ScriptedManager,
    SimClock,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
    violations,
)
from fenix_core.workflows.decommission import DecommissionWorkflow
from fenix_core.workflows.rolling import RollingWorkflow

WORKFLOWS = {"rolling": RollingWorkflow, "decommission": DecommissionWorkflow}
Factory = Callable[..., Engine]


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    """An empty cloud on the test's ``clock``."""
    return SimulatedCloud(clock=clock)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fenix.db'}"


@pytest.fixture
def core(url: str, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Factory]:
    """make(*plugins, **options): an engine on ``cloud`` and a database file."""
    made: list[Engine] = []

    def make(*plugins: object, **kwargs: Any) -> Engine:
        engine = Engine(url, clock=clock, plugins=[cloud, *plugins], workflows=WORKFLOWS, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def managers(engine: Engine, cloud: SimulatedCloud, *projects: str, **kw: Any) -> list[Any]:
    return [ScriptedManager(engine, p, cloud=cloud, **kw) for p in projects]  # type: ignore[arg-type]


def host_changes(recorder: Recorder) -> list[tuple[str, str]]:
    return [
        (p["host"], p["state"])
        for p in recorder.of("maintenance_host")
        if p["state"] in ("HOST_ADDED", "HOST_REMOVED")
    ]


def targets(cloud: SimulatedCloud) -> list[str]:
    return [e.detail or "" for e in cloud.events if e.kind == "migration_started"]


class AddsHost:
    """A ``pre`` action that brings new hardware into the cloud."""

    def __init__(self, cloud: SimulatedCloud, host: str, vcpus: int) -> None:
        self.name = "rack"
        self.cloud, self.host, self.vcpus = cloud, host, vcpus

    @hookimpl
    def fenix_actions(self, clock: Clock) -> Sequence[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        self.cloud.add_host(self.host, vcpus=self.vcpus)
        return OperationStatus.done()

    def poll(self, context: ActionContext) -> OperationStatus:
        return OperationStatus.done()


# --------------------------------------------------------------------------- inventory


def test_refresh_inventory_announces_each_change_once(tmp_path: Path) -> None:
    clock = SimClock()
    cloud = SimulatedCloud()
    fill(cloud, {"cmp-0": [], "cmp-1": [("vm-1", "p", 2)], "cmp-2": []})
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    engine = Engine(url, clock=clock, plugins=[cloud], load_entry_points=False)
    recorder = Recorder(engine)
    try:
        assert engine.refresh_inventory() == []  # the baseline: nothing is new
        cloud.add_host("cmp-9", vcpus=16)
        cloud.remove_host("cmp-1")
        changes = engine.refresh_inventory()
        assert [(c.host, c.state, c.session_id) for c in changes] == [
            ("cmp-9", "HOST_ADDED", None),
            ("cmp-1", "HOST_REMOVED", None),
        ]
        assert host_changes(recorder) == [("cmp-9", "HOST_ADDED"), ("cmp-1", "HOST_REMOVED")]
        payload = recorder.of("maintenance_host")[0]
        assert payload == {
            "service": "fenix",
            "session_id": None,
            "host": "cmp-9",
            "state": "HOST_ADDED",
            "project_id": None,
            "seq": changes[0].seq,
        }
        assert changes[1].seq > changes[0].seq
        assert engine.refresh_inventory() == []
        engine.run_until_idle()
        assert len(recorder.of("maintenance_host")) == 2
    finally:
        recorder.close()
        engine.close()
    # The inventory is stored: another engine on the database has nothing new to say.
    again = Engine(url, clock=clock, plugins=[cloud], load_entry_points=False)
    recorder = Recorder(again)
    try:
        again.run_until_idle()
        assert again.refresh_inventory() == []
        cloud.add_host("cmp-1", vcpus=8)  # the same name, back again
        assert [(c.host, c.state) for c in again.refresh_inventory()] == [("cmp-1", "HOST_ADDED")]
        assert host_changes(recorder) == [("cmp-1", "HOST_ADDED")]
    finally:
        recorder.close()
        again.close()


def test_a_change_left_undelivered_is_announced_by_the_next_engine(
    cloud: SimulatedCloud, core: Factory
) -> None:
    fill(cloud, {"cmp-0": [], "cmp-1": []})
    engine = core()
    engine.refresh_inventory()
    cloud.add_host("cmp-9")

    def die(sender: Any, payload: dict[str, Any]) -> None:
        raise KeyboardInterrupt  # the process is killed while announcing

    from fenix_core.signals import maintenance_host

    maintenance_host.connect(die, sender=engine)
    with pytest.raises(KeyboardInterrupt):
        engine.refresh_inventory()
    maintenance_host.disconnect(die, sender=engine)
    again = core()
    recorder = Recorder(again)  # type: ignore[arg-type]
    again.step()
    assert host_changes(recorder) == [("cmp-9", "HOST_ADDED")]
    again.step()
    assert host_changes(recorder) == [("cmp-9", "HOST_ADDED")]  # once
    recorder.close()


# --------------------------------------------------------------------------- the cache


def test_the_cache_logs_changes_by_generation_and_reads_other_workers(url: str) -> None:
    db = open_database(url)
    migrate(db)
    now = datetime(2026, 1, 1, tzinfo=UTC)
    mine, theirs = InventoryCache(db), InventoryCache(db)
    fleet = [Host(f"cmp-{i}", "compute", 8, True) for i in range(50)]
    assert mine.sync(fleet, now=now, session_id=None) == []  # the baseline
    seen = mine.generation
    assert mine.changed_since(seen) == set()
    changes = mine.sync(
        [*fleet[1:], Host("cmp-new", "compute", 16, True)], now=now, session_id="s-1"
    )
    assert [(c.host, c.state, c.session_id) for c in changes] == [
        ("cmp-new", "HOST_ADDED", "s-1"),
        ("cmp-0", "HOST_REMOVED", "s-1"),
    ]
    assert changes[1].id > changes[0].id
    # Only what changed is to be followed, not the fleet.
    assert mine.changed_since(seen) == {"cmp-new", "cmp-0"}
    assert mine.changed_since(mine.generation) == set()
    # Another worker's cache reads the table once, then only the changes.
    assert theirs.get("cmp-0").status == "removed"  # type: ignore[union-attr]
    before = theirs.generation
    mine.sync([*fleet, Host("cmp-new", "compute", 16, True)], now=now, session_id=None)
    assert theirs.changed_since(before) == set()  # not read yet
    assert theirs.poll() == ["cmp-0"]
    assert theirs.changed_since(before) == {"cmp-0"}
    assert theirs.get("cmp-0").status == "present"  # type: ignore[union-attr]
    assert [c.host for c in mine.undelivered()] == ["cmp-new", "cmp-0", "cmp-0"]
    db.dispose()


# --------------------------------------------------------------------------- hosts that come


def test_host_added_during_a_session_is_announced_once_and_used_as_a_target(
    fenix_cloud, fenix_clock, fenix_engine_factory, recorder_factory
):
    # Two full hosts: without a third one, someone would have to scale in.
    fill(fenix_cloud, {"cmp-0": [("vm-a1", "pa", 4)], "cmp-1": [("vm-a2", "pa", 4)]}, vcpus=4)
    engine = fenix_engine_factory(TimedAction("upgrade", 300))
    recorder = recorder_factory(engine)
    manager = ScriptedManager(engine, "pa", cloud=fenix_cloud, delay=120)
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    fenix_clock.call_later(60, lambda: fenix_cloud.add_host("cmp-9", vcpus=4))
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert "SCALE_IN" not in recorder.session_states()
    assert host_changes(recorder) == [("cmp-9", "HOST_ADDED")]
    added = next(p for p in recorder.of("maintenance_host") if p["state"] == "HOST_ADDED")
    assert added["session_id"] == sid
    host = view.host("cmp-9")
    assert (host.state, host.reason) == ("ADDED", "appeared in the cloud during the session")
    # The new host took the first host's instance; the maintained one took the second's.
    assert targets(fenix_cloud) == ["cmp-9", "cmp-0"]
    assert [h.name for h in view.hosts if h.state == "MAINTAINED"] == ["cmp-0", "cmp-1"]
    assert engine.refresh_inventory() == []
    assert violations(fenix_cloud) == []


def test_what_runs_on_a_host_that_appeared_is_listed(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2)], "cmp-1": []})
    engine = core(TimedAction("upgrade", 300))
    (manager,) = managers(engine, cloud, "pa", delay=120)
    sid = engine.create_session(
        SessionRequest(hosts=["cmp-0"], actions=[ActionSpec("upgrade", "host")])
    )

    def rack() -> None:
        cloud.add_host("cmp-9", vcpus=4)
        cloud.add_instance("vm-x", "px", "cmp-9", vcpus=3)

    clock.call_later(60, rack)
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert StoredSession(engine, sid).hosts["cmp-9"] == "ADDED"
    # Its instance is known (capacity counts it), outside the session's work.
    assert StoredSession(engine, sid).instances["vm-x"] == ("cmp-9", "OUT_OF_SCOPE")
    assert "px" not in view.projects
    assert targets(cloud) == ["cmp-1"]  # cmp-9 has 1 vcpu left: not a target for 2
    assert violations(cloud) == []


@pytest.mark.parametrize("spare", ["none", "disabled", "listed_late", "pre_action"])
def test_a_spare_host_spares_the_projects_a_scale_in(
    spare, fenix_cloud, fenix_clock, fenix_engine_factory, recorder_factory
):
    layout = {
        "cmp-0": [("vm-a1", "pa", 4)],
        "cmp-1": [("vm-a2", "pa", 4)],
        "cmp-2": [("vm-b1", "pb", 2), ("vm-b2", "pb", 2)],
    }
    fill(fenix_cloud, layout, vcpus=4)  # every host is full
    plugins: list[object] = [TimedAction("upgrade", 300)]
    actions = [ActionSpec("upgrade", "host")]
    add_hosts: list[str] = []
    if spare == "disabled":  # racked and registered, not in service yet
        fenix_cloud.add_host("cmp-new", vcpus=4, enabled=False)
        add_hosts = ["cmp-new"]
    elif spare == "listed_late":  # racked while the session runs
        fenix_clock.call_later(10, lambda: fenix_cloud.add_host("cmp-new", vcpus=4))
        add_hosts = ["cmp-new"]
    elif spare == "pre_action":  # the session's own pre action racks it
        plugins.append(AddsHost(fenix_cloud, "cmp-new", 4))
        actions.append(ActionSpec("rack", "pre"))
        add_hosts = ["cmp-new"]
    engine = fenix_engine_factory(*plugins)
    recorder = recorder_factory(engine)
    managers = [
        ScriptedManager(engine, "pa", cloud=fenix_cloud, scale_in=1),
        ScriptedManager(engine, "pb", cloud=fenix_cloud),
    ]
    sid = engine.create_session(SessionRequest(actions=actions, add_hosts=add_hosts))
    view = engine.run_until_done(sid)
    for manager in managers:
        manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    if spare == "none":
        assert "SCALE_IN" in recorder.session_states()
        assert "SCALE_IN" in managers[0].states
        assert host_changes(recorder) == []
        return
    assert "SCALE_IN" not in recorder.session_states()
    assert all("SCALE_IN" not in m.states for m in managers)
    # Announced once, by the session that brought it into service.
    assert host_changes(recorder) == [("cmp-new", "HOST_ADDED")]
    added = next(p for p in recorder.of("maintenance_host") if p["state"] == "HOST_ADDED")
    assert added["session_id"] == sid
    assert view.host("cmp-new").state == "ADDED"
    assert targets(fenix_cloud)[0] == "cmp-new"  # the upgrade starts by filling it
    assert fenix_cloud.is_enabled("cmp-new")
    assert set(migrations_per_instance(fenix_cloud)) == {"vm-a1", "vm-a2", "vm-b1", "vm-b2"}
    assert engine.refresh_inventory() == []  # the inventory has it already
    assert violations(fenix_cloud) == []


def test_a_named_host_that_never_appears_fails_the_session_cleanly(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, {"cmp-0": [("vm-1", "p", 2)], "cmp-1": []})
    engine = fenix_engine_factory()
    sid = engine.create_session(SessionRequest(add_hosts=["cmp-new"], timeouts={"host_added": 120}))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason is not None
    assert view.reason.startswith("hosts named in add_hosts did not appear: timed out after")
    assert "cmp-new" in view.reason
    assert view.host("cmp-new").state == "ADDING"
    assert [e.kind for e in fenix_cloud.events if "able_host" in e.kind] == []


def test_add_hosts_is_validated(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, {"cmp-0": [], "cmp-1": []})
    fenix_cloud.add_host("ctl-0", type="controller")
    engine = fenix_engine_factory()
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"hosts": ["cmp-0"], "add_hosts": ["cmp-0"]})
    assert info.value.field == "add_hosts"
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"add_hosts": ["ctl-0"]})
    assert info.value.field == "add_hosts"
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"add_hosts": ["cmp-9", "cmp-9"]})
    assert info.value.field == "add_hosts[1]"
    assert engine.list_sessions() == []


# --------------------------------------------------------------------------- hosts that go


@pytest.mark.parametrize("evacuate", [True, False])
def test_hosts_removed_during_a_session_do_not_fail_it(
    evacuate, fenix_cloud, fenix_clock, fenix_engine_factory, recorder_factory
):
    layout = {
        "cmp-0": [("vm-a1", "pa", 2)],
        "cmp-1": [("vm-a2", "pa", 2)],
        "cmp-2": [("vm-b1", "pb", 2)],
        "cmp-3": [],
        "cmp-4": [],
    }
    fill(fenix_cloud, layout)
    engine = fenix_engine_factory(TimedAction("upgrade", 600))
    recorder = recorder_factory(engine)
    managers = [ScriptedManager(engine, p, cloud=fenix_cloud) for p in ("pa", "pb")]
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))

    def lose_hosts() -> None:  # while cmp-3, the first empty host, is maintained
        fenix_cloud.remove_host("cmp-2", evacuate_to="cmp-1" if evacuate else None)
        fenix_cloud.remove_host("cmp-4")  # empty, waiting for its turn

    fenix_clock.call_later(300, lose_hosts)
    view = engine.run_until_done(sid)
    for manager in managers:
        manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.percent_done == 100
    states = {h.name: h.state for h in view.hosts}
    assert states == {
        "cmp-0": "MAINTAINED",
        "cmp-1": "MAINTAINED",
        "cmp-2": "REMOVED",
        "cmp-3": "MAINTAINED",
        "cmp-4": "REMOVED",
    }
    for name in ("cmp-2", "cmp-4"):
        reason = view.host(name).reason or ""
        assert reason.startswith("removed from the cloud (noticed "), reason
    assert sorted(host_changes(recorder)) == [("cmp-2", "HOST_REMOVED"), ("cmp-4", "HOST_REMOVED")]
    # No work was done on the lost hosts after they went.
    assert [(h, s) for _, h, s in recorder.host_log() if h in ("cmp-2", "cmp-4")] == [
        ("cmp-2", "HOST_REMOVED"),
        ("cmp-4", "HOST_REMOVED"),
    ]
    worked = {"disable_host", "enable_host", "host_up_checked"}
    assert not [e for e in fenix_cloud.events if e.kind in worked and e.host in ("cmp-2", "cmp-4")]
    b1 = engine.project_view(sid, "pb").instances[0]
    if evacuate:  # the cloud re-created it on cmp-1: followed, and moved with cmp-1
        assert b1.state == "DONE"
        assert b1.host == fenix_cloud.host_of("vm-b1") != "cmp-1"
    else:
        assert b1.state == "GONE"
        assert engine.project_view(sid, "pb").instance_ids == ()
    assert violations(fenix_cloud) == []


@pytest.mark.parametrize(
    ("lost", "evacuate"), [("source", True), ("source", False), ("target", False)]
)
def test_a_host_disappears_mid_migration(lost, evacuate, fenix_clock, recorder_factory):
    cloud = SimulatedCloud(live_migration_seconds=600)
    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2), ("vm-a2", "pa", 2)], "cmp-1": [], "cmp-2": []})
    engine = Engine(clock=fenix_clock, plugins=[cloud, TimedAction("upgrade", 100)])
    recorder = recorder_factory(engine)
    manager = ScriptedManager(engine, "pa", cloud=cloud)
    # No retries: a move lost with its host must not count as a failed attempt.
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0", "cmp-1"],
            actions=[ActionSpec("upgrade", "host")],
            max_migration_retries=0,
        )
    )
    seen: dict[str, Any] = {}
    gone = "cmp-0" if lost == "source" else "cmp-1"

    def pull_the_plug() -> None:
        seen["moves"] = [
            (e.instance_id, e.detail) for e in cloud.events if e.kind == "migration_started"
        ]
        cloud.remove_host(gone, evacuate_to="cmp-2" if evacuate else None)

    fenix_clock.call_later(400, pull_the_plug)
    try:
        view = engine.run_until_done(sid)
        pa = engine.project_view(sid, "pa")
    finally:
        manager.close()
        engine.close()
    assert seen["moves"] == [("vm-a1", "cmp-1")]  # the plug was pulled during the first move
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.host(gone).state == "REMOVED"
    assert host_changes(recorder) == [(gone, "HOST_REMOVED")]
    assert manager.errors == []
    where = {i.instance_id: (i.host, i.state) for i in pa.instances}
    if lost == "target":  # both moved to the host that is left
        assert view.host("cmp-0").state == "MAINTAINED"
        assert where == {"vm-a1": ("cmp-2", "DONE"), "vm-a2": ("cmp-2", "DONE")}
    elif evacuate:  # followed to where the cloud re-created them
        assert view.host("cmp-1").state == "MAINTAINED"
        assert where == {"vm-a1": ("cmp-2", "DONE"), "vm-a2": ("cmp-2", "DONE")}
    else:  # lost with their host
        assert cloud.host_of("vm-a1") is None
        assert {i: s for i, (_, s) in where.items()} == {"vm-a1": "GONE", "vm-a2": "GONE"}
    assert violations(cloud) == []


def test_a_held_session_follows_a_refresh_at_once(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    """refresh_inventory() outside any session: a session that holds the
    host in its scope marks it REMOVED at its next step (not when it next
    touches the host), and only the hosts that changed are looked at."""
    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2)], "cmp-1": [], "cmp-2": []})
    engine = core(TimedAction("upgrade", 3600))
    (manager,) = managers(engine, cloud, "pa")
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    clock.call_later(600, lambda: cloud.remove_host("cmp-2"))
    removed: list[datetime] = []

    def refresh() -> None:
        engine.refresh_inventory()
        removed.append(clock.now())

    clock.call_later(900, refresh)
    engine.run_until_idle()
    while not removed:
        wake = engine.next_wake()
        assert wake is not None
        clock.wait(wake, threading.Event())
        engine.run_until_idle()
    engine.run_until_idle()
    view = engine.get_session(sid)
    assert StoredSession(engine, sid).hosts["cmp-2"] == "REMOVED"
    assert (
        StoredSession(engine, sid).reasons["cmp-2"]
        == f"removed from the cloud (noticed {removed[0].isoformat()})"
    )
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert (
        StoredSession(engine, sid).hosts["cmp-0"],
        StoredSession(engine, sid).hosts["cmp-1"],
    ) == ("MAINTAINED", "MAINTAINED")


# --------------------------------------------------------------------------- decommission


DECOMMISSION_LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 2)],
    "cmp-1": [("vm-a2", "pa", 2)],
    "cmp-2": [("vm-a3", "pa", 2)],
    "cmp-3": [],
}


def test_decommission_of_two_hosts(fenix_cloud, fenix_engine_factory, recorder_factory):
    fill(fenix_cloud, DECOMMISSION_LAYOUT)
    wipe, report = TimedAction("wipe", 300), TimedAction("report", 30)
    engine = fenix_engine_factory(wipe, report)
    recorder = recorder_factory(engine)
    managers = [ScriptedManager(engine, p, cloud=fenix_cloud) for p in ("pa", "pb")]
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0", "cmp-1"],
            workflow="decommission",
            actions=[ActionSpec("wipe", "host"), ActionSpec("report", "post")],
            metadata={"reason": "end of life"},
        )
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.percent_done == 100
    assert [(h.name, h.state) for h in view.hosts] == [
        ("cmp-0", "DECOMMISSIONED"),
        ("cmp-1", "DECOMMISSIONED"),
    ]
    for host in ("cmp-0", "cmp-1"):
        assert fenix_cloud.instances_on(host) == []
        assert not fenix_cloud.is_enabled(host)
        assert [s for _, h, s in recorder.host_log() if h == host] == [
            "IN_MAINTENANCE",
            "HOST_REMOVED",
        ]
    assert wipe.hosts == ["cmp-0", "cmp-1"] or wipe.hosts == ["cmp-1", "cmp-0"]
    assert report.hosts == [None]  # post actions ran
    # Every instance moved once, never onto a retired host.
    assert dict(migrations_per_instance(fenix_cloud)) == {"vm-a1": 1, "vm-b1": 1, "vm-a2": 1}
    assert set(targets(fenix_cloud)) <= {"cmp-2", "cmp-3"}
    asked = [
        p
        for m in managers
        for p in m.received
        if p["state"] in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE")
    ]
    assert asked
    assert all(p["metadata"] == {"reason": "end of life", "host_returns": False} for p in asked)
    assert all(m.errors == [] for m in managers)
    assert violations(fenix_cloud) == []
    # Still listed by the cloud (disabled): not announced again, not a target again.
    assert engine.refresh_inventory() == []
    later = engine.create_session(SessionRequest(hosts=["cmp-2"]))
    assert engine.run_until_done(later).state == "MAINTENANCE_DONE"
    assert fenix_cloud.instances_on("cmp-0") == fenix_cloud.instances_on("cmp-1") == []
    assert len(host_changes(recorder)) == 2
    removed = [p for p in recorder.of("maintenance_host") if p["state"] == "HOST_REMOVED"]
    assert {p["session_id"] for p in removed} == {sid}
    for manager in managers:
        manager.close()


def test_decommission_hosts_in_a_rolling_session(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, DECOMMISSION_LAYOUT)
    engine = fenix_engine_factory()
    sid = engine.create_session(SessionRequest(decommission_hosts=["cmp-2"]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert {h.name: h.state for h in view.hosts} == {
        "cmp-0": "MAINTAINED",
        "cmp-1": "MAINTAINED",
        "cmp-2": "DECOMMISSIONED",
        "cmp-3": "MAINTAINED",
    }
    assert fenix_cloud.instances_on("cmp-2") == []
    assert not fenix_cloud.is_enabled("cmp-2")
    assert "cmp-2" not in targets(fenix_cloud)
    assert violations(fenix_cloud) == []


def test_a_decommission_without_room_for_the_instances_is_refused(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, {"cmp-0": [("vm-1", "p", 4)], "cmp-1": [("vm-2", "p", 3)]}, vcpus=4)
    engine = fenix_engine_factory()
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"hosts": ["cmp-0"], "workflow": "decommission"})
    assert info.value.field == "hosts"
    assert "leaves 4 vcpus on the other compute hosts for 7 vcpus of instances" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"decommission_hosts": ["cmp-1"]})
    assert info.value.field == "decommission_hosts"
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"hosts": ["cmp-0"], "decommission_hosts": ["cmp-1"]})
    assert "not among the hosts: cmp-1" in str(info.value)
    with pytest.raises(InvalidInput) as info:
        engine.create_session({"workflow": "decommission"})
    assert info.value.field == "hosts"
    assert engine.list_sessions() == []
    # With a spare host that is not in the cloud yet, the check waits for it:
    # when it turns out too small, the session fails before touching any host.
    sid = engine.create_session(
        {"hosts": ["cmp-0"], "workflow": "decommission", "add_hosts": ["cmp-9"]}
    )
    engine.run_until_idle()
    fenix_cloud.add_host("cmp-9", vcpus=2)
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "retiring cmp-0 leaves 6 vcpus on the other compute hosts for 7 vcpus of instances"
    )
    assert fenix_cloud.host_of("vm-1") == "cmp-0"
    assert fenix_cloud.is_enabled("cmp-0")


# --------------------------------------------------------------------------- cloud constraints


def test_a_listing_brings_the_cloud_rules_of_new_instances(clock: SimClock, url: str) -> None:
    """A server group created after the session started, with a member that
    arrives on a host about to be maintained: the host's listing brings the
    rule into the session, so the move keeps it the first time (the cloud
    refuses nothing), as today's engine merges listed cloud constraints."""
    import sqlalchemy as sa

    from fenix_core.placement_rules import PlacementRule
    from fenix_core.testing.placed_cloud import PlacedCloud

    cloud = PlacedCloud(clock=clock)
    fill(cloud, {"cmp-0": [], "cmp-1": [("y-1", "pa", 1)], "cmp-2": [("z-1", "pz", 4)]})
    engine = Engine(
        url, clock=clock, plugins=[cloud, TimedAction("upgrade", 60)], workflows=WORKFLOWS
    )
    (manager,) = managers(engine, cloud, "pa")

    def arrive() -> None:  # the project scales out, in a new anti-affinity group
        cloud.placement = (PlacementRule("g-new", "anti-affinity", ("x-1", "y-1")),)
        cloud.add_instance("x-1", "pa", "cmp-0", vcpus=1)

    sid = engine.create_session(
        SessionRequest(hosts=["cmp-0"], actions=[ActionSpec("upgrade", "host")])
    )
    arrive()
    try:
        view = engine.run_until_done(sid)
    finally:
        manager.close()
        engine.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert cloud.host_of("x-1") == "cmp-2"  # cmp-1 has more room, but holds y-1
    with sa.create_engine(url).connect() as db:
        failed = db.execute(
            sa.text("SELECT detail FROM operations WHERE kind = 'move' AND status = 'failed'")
        ).all()
    assert failed == []
    assert violations(cloud) == []


def test_a_host_another_session_disabled_is_no_target(
    core: Factory, cloud: SimulatedCloud, clock: SimClock
) -> None:
    """Session B took its view of the hosts before session A disabled h0 to
    maintain it; when B drains h2 later, h0 (the most free, first by name)
    is not its target: B follows A's disable through the inventory, as
    today's engine never targeted another session's host in maintenance."""
    for host in ("h0", "h1", "h2", "h3"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-1", "p1", "h1", vcpus=6)
    cloud.add_instance("vm-2", "p2", "h2", vcpus=6)
    engine = core(TimedAction("upgrade", 300))
    upgrade = [ActionSpec(plugin="upgrade", type="host")]
    start = clock.now()
    later = engine.create_session(
        SessionRequest(
            hosts=("h2",),
            actions=upgrade,
            maintenance_at=start + timedelta(seconds=120),
        )
    )
    first = engine.create_session(SessionRequest(hosts=("h0", "h1"), actions=upgrade))
    for _ in range(2000):
        if not engine.step():
            wake = engine.next_wake()
            if wake is None:
                break
            clock.advance_to(max(wake, clock.now()))
    for sid in (first, later):
        assert engine.get_session(sid).state == "MAINTENANCE_DONE", engine.get_session(sid).reason
    refused = [e for e in cloud.events if e.kind == "migration_failed"]
    assert refused == []
    assert cloud.host_of("vm-2") == "h3"


def test_a_session_follows_another_sessions_disable_without_rewriting_its_rows(
    url: str, core: Factory, cloud: SimulatedCloud, clock: SimClock
) -> None:
    """Session B holds h0 as a target; session A disables h0 to maintain it.
    B follows the inventory in memory and does not rewrite its stored row
    for h0 (with sessions over one cloud, every session holding a host
    rewrote its row each time another switched it: most of a step's rows on
    PostgreSQL). An engine that takes B over after a restart follows the
    inventory again: h0 is still no target."""
    for host in ("h0", "h1", "h2", "h3"):
        cloud.add_host(host, vcpus=8)
    cloud.add_instance("vm-1", "p1", "h1", vcpus=6)
    cloud.add_instance("vm-2", "p2", "h2", vcpus=6)
    upgrade = [ActionSpec(plugin="upgrade", type="host")]
    action = TimedAction("upgrade", 300)  # one, so that the second engine sees its runs
    engine = core(action)
    start = clock.now()
    later = engine.create_session(
        SessionRequest(
            hosts=("h2",), actions=upgrade, maintenance_at=start + timedelta(seconds=120)
        )
    )
    first = engine.create_session(SessionRequest(hosts=("h0", "h1"), actions=upgrade))

    def run(engine: Engine, until: datetime | None) -> None:
        for _ in range(2000):
            if not engine.step():
                wake = engine.next_wake()
                if wake is None or (until is not None and wake > until):
                    break
                clock.advance_to(max(wake, clock.now()))

    run(engine, start + timedelta(seconds=125))  # B has stepped since A disabled h0

    def stored(session_id: str) -> bool:
        with sa.create_engine(url).connect() as db:
            return bool(
                db.execute(
                    sa.text(
                        "SELECT enabled FROM session_hosts WHERE session_id = :s AND name = 'h0'"
                    ),
                    {"s": session_id},
                ).scalar_one()
            )

    assert engine.get_session(later).state != "MAINTENANCE_DONE"
    assert stored(first) is False  # A's own host: its disable is stored
    assert stored(later) is True  # B's row was not rewritten
    engine.close()
    again = core(action)
    run(again, None)
    for sid in (first, later):
        assert again.get_session(sid).state == "MAINTENANCE_DONE", again.get_session(sid).reason
    assert [e for e in cloud.events if e.kind == "migration_failed"] == []
    assert cloud.host_of("vm-2") == "h3"


# --------------------------------------------------------------------------- simulated cloud


def test_simulated_cloud_removes_hosts_at_run_time(tmp_path: Path) -> None:
    clock = SimClock()
    path = tmp_path / "cloud.json"
    cloud = SimulatedCloud(state_path=path, clock=clock)
    fill(cloud, {"cmp-0": [("vm-1", "p", 2), ("vm-2", "p", 2)], "cmp-1": [], "cmp-2": []})
    handle = cloud.start_move("vm-1", "MIGRATE", "cmp-2", "k1")
    with pytest.raises(InvalidInput):
        cloud.remove_host("cmp-7")
    with pytest.raises(InvalidInput):
        cloud.remove_host("cmp-0", evacuate_to="cmp-0")
    clock.advance(5)
    cloud.remove_host("cmp-0", evacuate_to="cmp-1")
    assert cloud.poll_move(handle).detail == "host cmp-0 was removed"
    assert cloud.instances_on("cmp-1") == ["vm-1", "vm-2"]
    cloud.remove_host("cmp-1")  # without evacuate_to its instances go with it
    assert cloud.host_of("vm-1") is None
    assert [h.name for h in cloud.list_hosts()] == ["cmp-2"]
    kinds = [(e.kind, e.host) for e in cloud.events if e.kind != "instance_added"]
    assert kinds[-7:] == [
        ("migration_failed", "cmp-0"),
        ("instance_relocated", "cmp-1"),
        ("instance_relocated", "cmp-1"),
        ("host_removed", "cmp-0"),
        ("instance_removed", "cmp-1"),
        ("instance_removed", "cmp-1"),
        ("host_removed", "cmp-1"),
    ]
    # The file is the cloud: another SimulatedCloud on it sees the same.
    again = SimulatedCloud(state_path=path, clock=clock)
    assert [h.name for h in again.list_hosts()] == ["cmp-2"]
    assert again.events == cloud.events
    assert again.host_capacity("cmp-0") == 8  # events of removed hosts still replay
    assert violations(again) == []
    cloud.add_host("cmp-0", vcpus=4)  # the name may come back
    assert again.host_of("vm-2") is None
