"""The host inventory and host changes on Engine (issue 18): what
``Inventory`` / ``ListHosts`` / ``Locate`` find is applied to the records
before the workflow hears of it, HOST_ADDED / HOST_REMOVED are announced
once each, and ``refresh_inventory()`` works as on today's Engine. The
expectations are today's (tests/test_lifecycle.py, test_lifecycle_controls.py)
wherever the v2 rolling workflow has the feature; plus the inventory cache's
own promise: a session follows only the hosts that changed."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill
from core_records import StoredSession

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.clock import SimClock
from fenix_core.core.inventory import InventoryCache
from fenix_core.model import Host
from fenix_core.store.database import migrate, open_database
from fenix_core.testing import (
    ScriptedManager,
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
    return SimulatedCloud(clock=clock)


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fenix.db'}"


@pytest.fixture
def core(url: str, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Factory]:
    made: list[Engine] = []

    def make(*plugins: object, **kwargs: Any) -> Engine:
        engine = Engine(url, clock=clock, plugins=[cloud, *plugins], workflows=WORKFLOWS, **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


def host_changes(recorder: Recorder) -> list[tuple[str, str]]:
    return [
        (p["host"], p["state"])
        for p in recorder.of("maintenance_host")
        if p["state"] in ("HOST_ADDED", "HOST_REMOVED")
    ]


def targets(cloud: SimulatedCloud) -> list[str]:
    return [e.detail or "" for e in cloud.events if e.kind == "migration_started"]


def managers(engine: Engine, cloud: SimulatedCloud, *projects: str, **kw: Any) -> list[Any]:
    return [ScriptedManager(engine, p, cloud=cloud, **kw) for p in projects]  # type: ignore[arg-type]


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


# --------------------------------------------------------------------------- refresh_inventory


def test_refresh_inventory_announces_each_change_once(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    fill(cloud, {"cmp-0": [], "cmp-1": [("vm-1", "p", 2)], "cmp-2": []})
    engine = core()
    recorder = Recorder(engine)  # type: ignore[arg-type]
    assert engine.refresh_inventory() == []  # the baseline: nothing is new
    cloud.add_host("cmp-9", vcpus=16)
    cloud.remove_host("cmp-1")
    changes = engine.refresh_inventory()
    assert [(c.host, c.state, c.session_id) for c in changes] == [
        ("cmp-9", "HOST_ADDED", None),
        ("cmp-1", "HOST_REMOVED", None),
    ]
    assert host_changes(recorder) == [("cmp-9", "HOST_ADDED"), ("cmp-1", "HOST_REMOVED")]
    assert recorder.of("maintenance_host")[0] == {
        "service": "fenix",
        "session_id": None,
        "host": "cmp-9",
        "state": "HOST_ADDED",
        "project_id": None,
        "seq": changes[0].seq,
    }
    assert engine.refresh_inventory() == []
    engine.run_until_idle()
    assert len(recorder.of("maintenance_host")) == 2
    recorder.close()
    engine.close()
    # The inventory is stored: another engine on the database has nothing new to say.
    again = core()
    recorder = Recorder(again)  # type: ignore[arg-type]
    again.run_until_idle()
    assert again.refresh_inventory() == []
    cloud.add_host("cmp-1", vcpus=8)  # the same name, back again
    assert [(c.host, c.state) for c in again.refresh_inventory()] == [("cmp-1", "HOST_ADDED")]
    assert host_changes(recorder) == [("cmp-1", "HOST_ADDED")]
    recorder.close()


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


# --------------------------------------------------------------------------- hosts that come


def test_a_host_added_during_a_session_is_announced_once_and_used_as_a_target(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    # Two full hosts: without a third one, someone would have to scale in.
    fill(cloud, {"cmp-0": [("vm-a1", "pa", 4)], "cmp-1": [("vm-a2", "pa", 4)]}, vcpus=4)
    engine = core(TimedAction("upgrade", 300))
    recorder = Recorder(engine)  # type: ignore[arg-type]
    (manager,) = managers(engine, cloud, "pa", delay=120)
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    clock.call_later(60, lambda: cloud.add_host("cmp-9", vcpus=4))
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert "SCALE_IN" not in recorder.session_states()
    assert host_changes(recorder) == [("cmp-9", "HOST_ADDED")]
    added = next(p for p in recorder.of("maintenance_host") if p["state"] == "HOST_ADDED")
    assert added["session_id"] == sid
    assert StoredSession(engine, sid).hosts["cmp-9"] == "ADDED"
    assert StoredSession(engine, sid).reasons["cmp-9"] == "appeared in the cloud during the session"
    assert targets(cloud)[0] == "cmp-9"
    assert (
        StoredSession(engine, sid).hosts["cmp-0"],
        StoredSession(engine, sid).hosts["cmp-1"],
    ) == ("MAINTAINED", "MAINTAINED")
    assert engine.refresh_inventory() == []
    assert violations(cloud) == []
    recorder.close()


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


@pytest.mark.parametrize("spare", ["disabled", "listed_late"])
def test_a_spare_host_of_add_hosts_is_announced_and_filled_first(
    spare: str, cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    layout = {"cmp-0": [("vm-a1", "pa", 4)], "cmp-1": [("vm-a2", "pa", 4)]}
    fill(cloud, layout, vcpus=4)  # every host is full
    if spare == "disabled":  # racked and registered, not in service yet
        cloud.add_host("cmp-new", vcpus=4, enabled=False)
    else:
        clock.call_later(10, lambda: cloud.add_host("cmp-new", vcpus=4))
    engine = core(TimedAction("upgrade", 300))
    recorder = Recorder(engine)  # type: ignore[arg-type]
    (manager,) = managers(engine, cloud, "pa", scale_in=1)
    sid = engine.create_session(
        SessionRequest(actions=[ActionSpec("upgrade", "host")], add_hosts=["cmp-new"])
    )
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert "SCALE_IN" not in recorder.session_states()
    # Announced once, by the session that brought it into service.
    assert host_changes(recorder) == [("cmp-new", "HOST_ADDED")]
    added = next(p for p in recorder.of("maintenance_host") if p["state"] == "HOST_ADDED")
    assert added["session_id"] == sid
    assert StoredSession(engine, sid).hosts["cmp-new"] == "ADDED"
    assert targets(cloud)[0] == "cmp-new"
    assert cloud.is_enabled("cmp-new")
    assert set(migrations_per_instance(cloud)) == {"vm-a1", "vm-a2"}
    assert engine.refresh_inventory() == []  # the inventory has it already
    assert violations(cloud) == []
    recorder.close()


# --------------------------------------------------------------------------- hosts that go


@pytest.mark.parametrize("evacuate", [True, False])
def test_hosts_removed_during_a_session_do_not_fail_it(
    evacuate: bool, cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    layout = {
        "cmp-0": [("vm-a1", "pa", 2)],
        "cmp-1": [("vm-a2", "pa", 2)],
        "cmp-2": [("vm-b1", "pb", 2)],
        "cmp-3": [],
        "cmp-4": [],
    }
    fill(cloud, layout)
    engine = core(TimedAction("upgrade", 600))
    recorder = Recorder(engine)  # type: ignore[arg-type]
    found = managers(engine, cloud, "pa", "pb")
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))

    def lose_hosts() -> None:  # while cmp-3, the first empty host, is maintained
        cloud.remove_host("cmp-2", evacuate_to="cmp-1" if evacuate else None)
        cloud.remove_host("cmp-4")  # empty, waiting for its turn

    clock.call_later(300, lose_hosts)
    view = engine.run_until_done(sid)
    for manager in found:
        manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.percent_done == 100
    assert StoredSession(engine, sid).hosts == {
        "cmp-0": "MAINTAINED",
        "cmp-1": "MAINTAINED",
        "cmp-2": "REMOVED",
        "cmp-3": "MAINTAINED",
        "cmp-4": "REMOVED",
    }
    for name in ("cmp-2", "cmp-4"):
        reason = StoredSession(engine, sid).reasons[name] or ""
        assert reason.startswith("removed from the cloud (noticed "), reason
    assert sorted(host_changes(recorder)) == [("cmp-2", "HOST_REMOVED"), ("cmp-4", "HOST_REMOVED")]
    # No work was done on the lost hosts after they went. (Today's engine also
    # lists the cloud's hosts in every host's inventory and so notices cmp-4
    # before announcing its maintenance; the core lists them when work on a
    # host fails: cmp-4's IN_MAINTENANCE goes out, its disabling fails, and it
    # is REMOVED, not failed.)
    lost = [(h, s) for _, h, s in recorder.host_log() if h in ("cmp-2", "cmp-4")]
    assert ("cmp-2", "HOST_REMOVED") in lost
    assert lost[-1] == ("cmp-4", "HOST_REMOVED")
    assert not any(s == "MAINTENANCE_COMPLETE" for _, s in lost)
    worked = {"disable_host", "enable_host", "host_up_checked"}
    assert not [e for e in cloud.events if e.kind in worked and e.host in ("cmp-2", "cmp-4")]
    host, state = StoredSession(engine, sid).instances["vm-b1"]
    if evacuate:  # the cloud re-created it on cmp-1: followed, and moved with cmp-1
        assert state == "DONE"
        assert host == cloud.host_of("vm-b1") != "cmp-1"
    else:
        assert state == "GONE"
    assert violations(cloud) == []
    recorder.close()


@pytest.mark.parametrize(("lost", "evacuate"), [("source", True), ("source", False)])
def test_a_host_disappears_mid_migration(
    lost: str, evacuate: bool, clock: SimClock, url: str
) -> None:
    cloud = SimulatedCloud(clock=clock, live_migration_seconds=600)
    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2), ("vm-a2", "pa", 2)], "cmp-1": [], "cmp-2": []})
    engine = Engine(
        url, clock=clock, plugins=[cloud, TimedAction("upgrade", 100)], workflows=WORKFLOWS
    )
    recorder = Recorder(engine)  # type: ignore[arg-type]
    (manager,) = managers(engine, cloud, "pa")
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

    clock.call_later(400, pull_the_plug)
    try:
        view = engine.run_until_done(sid)
    finally:
        manager.close()
        engine.close()
    assert seen["moves"][0][0] == "vm-a1"  # the plug was pulled during the first move
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert StoredSession(engine, sid).hosts[gone] == "REMOVED"
    assert host_changes(recorder) == [(gone, "HOST_REMOVED")]
    assert manager.errors == []
    where = {i: StoredSession(engine, sid).instances[i] for i in ("vm-a1", "vm-a2")}
    if evacuate:  # followed to where the cloud re-created them
        assert StoredSession(engine, sid).hosts["cmp-1"] == "MAINTAINED"
        assert where == {"vm-a1": ("cmp-2", "DONE"), "vm-a2": ("cmp-2", "DONE")}
    else:  # lost with their host
        assert cloud.host_of("vm-a1") is None
        assert {i: s for i, (_, s) in where.items()} == {"vm-a1": "GONE", "vm-a2": "GONE"}
    assert violations(cloud) == []
    recorder.close()


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


def test_a_decommissioned_host_is_announced_removed_once(
    cloud: SimulatedCloud, core: Factory
) -> None:
    fill(
        cloud,
        {
            "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 2)],
            "cmp-1": [("vm-a2", "pa", 2)],
            "cmp-2": [],
        },
    )
    engine = core(TimedAction("wipe", 300))
    recorder = Recorder(engine)  # type: ignore[arg-type]
    found = managers(engine, cloud, "pa", "pb")
    sid = engine.create_session(
        SessionRequest(
            workflow="decommission", hosts=["cmp-0"], actions=[ActionSpec("wipe", "host")]
        )
    )
    view = engine.run_until_done(sid)
    for manager in found:
        manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert StoredSession(engine, sid).hosts["cmp-0"] == "DECOMMISSIONED"
    assert host_changes(recorder) == [("cmp-0", "HOST_REMOVED")]
    removed = next(p for p in recorder.of("maintenance_host") if p["state"] == "HOST_REMOVED")
    assert removed["session_id"] == sid
    # The host is still listed (disabled): the inventory keeps it retired, quietly.
    assert engine.refresh_inventory() == []
    recorder.close()


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


@pytest.mark.parametrize("policy", [None, "wait_and_notify", "skip_host", "fail"])
def test_a_host_removed_during_its_action_is_a_removal_not_a_failure(
    policy: str | None, cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    fill(cloud, {"cmp-0": [], "cmp-1": [("vm-1", "web", 2)], "cmp-2": []})
    engine = core(TimedAction("upgrade", 600))
    (manager,) = managers(engine, cloud, "web")
    escalation = {"host_up": policy, "action": policy} if policy else {}
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0", "cmp-1"],
            actions=[ActionSpec("upgrade", "host")],
            controls={"escalation": escalation, "max_hosts_in_maintenance": 1},
        )
    )
    clock.call_later(300, lambda: cloud.remove_host("cmp-0"))  # no refresh
    view = engine.run_until_done(sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert StoredSession(engine, sid).hosts["cmp-0"] == "REMOVED"
    assert (StoredSession(engine, sid).reasons["cmp-0"] or "").startswith("removed from the cloud")
    assert StoredSession(engine, sid).hosts["cmp-1"] == "MAINTAINED"
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
