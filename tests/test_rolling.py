"""End-to-end runs of the rolling workflow on the simulated cloud, the engine
on a SQLite file; and what the engine promises on the way: one commit per
step, every notification delivered once in seq order, a step that raised
dropped whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill
from sqlalchemy import event as sa_event
from sqlalchemy.exc import InterfaceError

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import SimClock
from fenix_core.contract import SessionContext
from fenix_core.errors import Conflict, InvalidInput
from fenix_core.testing import (
    ScriptedManager,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
    violations,
)
from fenix_core.workflows.rolling import RollingWorkflow

LAYOUT = {
    "cmp-0": [("vm-a1", "pa", 2), ("vm-b1", "pb", 2), ("vm-c1", "pc", 2)],
    "cmp-1": [("vm-a2", "pa", 2), ("vm-b2", "pb", 2)],
    "cmp-2": [("vm-a3", "pa", 2), ("vm-c2", "pc", 2)],
    "cmp-3": [],
}
ACTIONS = [
    ActionSpec("prep", "pre"),
    ActionSpec("upgrade", "host"),
    ActionSpec("firmware", "compute", order=1),
    ActionSpec("bios", "compute", order=0),
    ActionSpec("ctlpatch", "controller"),
    ActionSpec("report", "post"),
]


def timed_actions() -> dict[str, TimedAction]:
    return {
        "prep": TimedAction("prep", 60),
        "upgrade": TimedAction("upgrade", 600),
        "firmware": TimedAction("firmware", 300),
        "bios": TimedAction("bios", 120),
        "ctlpatch": TimedAction("ctlpatch", 200),
        "report": TimedAction("report", 30),
    }


Factory = Callable[..., Engine]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fenix.db'}"


@pytest.fixture
def core(fenix_engine_factory: Factory, db_url: str) -> Factory:
    """make(*plugins, **options): an engine on the test's database file."""

    def make(*plugins: object, **kwargs: Any) -> Engine:
        kwargs.setdefault("database_url", db_url)
        return fenix_engine_factory(*plugins, **kwargs)

    return make


@pytest.fixture
def cloud(fenix_cloud: SimulatedCloud) -> SimulatedCloud:
    return fenix_cloud


@pytest.fixture
def clock(fenix_clock: SimClock) -> SimClock:
    return fenix_clock


def effects(cloud: SimulatedCloud) -> list[Any]:
    """What the session did to the cloud (the fleet's setup left out)."""
    return [e for e in cloud.events if e.kind not in ("host_added", "instance_added")]


@pytest.fixture
def full_run(fenix_cloud, core, recorder_factory):
    """The reference run: 4 computes (one empty), a controller, two managed
    projects (live / cold migration) and one without a manager."""
    fill(fenix_cloud, LAYOUT, controllers=1)
    actions = timed_actions()
    engine = core(*actions.values())
    recorder = recorder_factory(engine)
    managers = {
        "pa": ScriptedManager(engine, "pa", cloud=fenix_cloud, action="LIVE_MIGRATE"),
        "pb": ScriptedManager(engine, "pb", cloud=fenix_cloud, action="MIGRATE"),
    }
    sid = engine.create_session(
        SessionRequest(actions=ACTIONS, metadata={"openstack_version": "2026.2"})
    )
    view = engine.run_until_done(sid)
    return view, recorder, actions, managers, fenix_cloud


def test_session_completes_with_every_host_maintained(full_run):
    view, recorder, *_ = full_run
    assert view.state == "MAINTENANCE_DONE"
    assert view.reason is None
    assert view.percent_done == 100
    assert [(h.name, h.state) for h in view.hosts] == [
        ("ctl-0", "MAINTAINED"),
        ("cmp-0", "MAINTAINED"),
        ("cmp-1", "MAINTAINED"),
        ("cmp-2", "MAINTAINED"),
        ("cmp-3", "MAINTAINED"),
    ]
    assert recorder.session_states() == [
        "MAINTENANCE",
        "START_MAINTENANCE",
        "PLANNED_MAINTENANCE",
        "START_MAINTENANCE",
        "PLANNED_MAINTENANCE",
        "START_MAINTENANCE",
        "PLANNED_MAINTENANCE",
        "START_MAINTENANCE",
        "MAINTENANCE_COMPLETE",
        "MAINTENANCE_DONE",
    ]
    percents = [p["percent_done"] for p in recorder.of("maintenance_session")]
    assert percents == sorted(percents)
    assert percents[-1] == 100


def test_every_notification_is_delivered_once_in_seq_order(full_run: Any) -> None:
    view, recorder, *_ = full_run
    seqs = [p["seq"] for _, _, p in recorder.log]
    assert seqs == list(range(1, len(seqs) + 1))
    assert all(p["session_id"] == view.session_id for _, _, p in recorder.log)
    assert all(p["service"] == "fenix" for _, _, p in recorder.log)


def test_each_project_gets_the_exact_notification_sequence(full_run):
    _, recorder, _, managers, _ = full_run
    per_host = ["PLANNED_MAINTENANCE", "INSTANCE_ACTION_DONE", "ADMIN_ACTION_DONE"]
    assert recorder.project_states("pa") == [
        "MAINTENANCE",
        *per_host,
        *per_host,
        *per_host,
        "MAINTENANCE_COMPLETE",
    ]
    assert recorder.project_states("pb") == [
        "MAINTENANCE",
        *per_host,
        *per_host,
        "MAINTENANCE_COMPLETE",
    ]
    # pc has no manager: the engine moved its instances without a word.
    assert recorder.project_states("pc") == []
    planned = [p for p in recorder.of("maintenance_planned") if p["state"] == "PLANNED_MAINTENANCE"]
    assert [(p["project_id"], p["instance_ids"]) for p in planned] == [
        ("pa", ["vm-a1"]),
        ("pb", ["vm-b1"]),
        ("pa", ["vm-a2"]),
        ("pb", ["vm-b2"]),
        ("pa", ["vm-a3"]),
    ]
    for payload in planned:
        assert payload["allowed_actions"] == ["MIGRATE", "LIVE_MIGRATE", "OWN_ACTION"]
        assert payload["metadata"] == {"openstack_version": "2026.2"}
        reply_at = datetime.fromisoformat(payload["reply_at"])
        assert reply_at.tzinfo is not None
        assert payload["actions_at"] == payload["reply_at"]
    done = [p for p in recorder.of("maintenance_planned") if p["state"] == "INSTANCE_ACTION_DONE"]
    assert sorted(i for p in done for i in p["instance_ids"]) == sorted(
        ["vm-a1", "vm-a2", "vm-a3", "vm-b1", "vm-b2"]
    )
    for manager in managers.values():
        assert manager.errors == []


def test_no_host_is_disabled_while_it_holds_an_instance(full_run):
    *_, cloud = full_run
    assert violations(cloud) == []
    toggles = [(e.kind, e.host) for e in cloud.events if e.kind in ("disable_host", "enable_host")]
    for host in ("cmp-0", "cmp-1", "cmp-2", "cmp-3"):
        assert toggles.count(("disable_host", host)) == 1
        assert toggles.count(("enable_host", host)) == 1
        assert toggles.index(("disable_host", host)) < toggles.index(("enable_host", host))
    # Controllers are maintained in place, never disabled.
    assert ("disable_host", "ctl-0") not in toggles


def test_every_instance_moves_exactly_once_when_a_spare_host_exists(full_run):
    *_, cloud = full_run
    moved = migrations_per_instance(cloud)
    assert dict(moved) == {i: 1 for host in LAYOUT.values() for i, _, _ in host}
    cold = {e.instance_id for e in cloud.events if e.kind == "migration_started"}
    assert cold == set(moved)


def test_actions_run_once_per_host_in_type_then_order_then_name_order(full_run):
    _, _recorder, actions, _, _ = full_run
    runs = sorted(
        (when, host, name) for name, action in actions.items() for when, host in action.runs
    )
    by_host: dict[str | None, list[str]] = {}
    for _, host, name in runs:
        by_host.setdefault(host, []).append(name)
    assert by_host["ctl-0"] == ["upgrade", "ctlpatch"]
    for host in ("cmp-0", "cmp-1", "cmp-2", "cmp-3"):
        assert by_host[host] == ["upgrade", "bios", "firmware"]
    assert by_host[None] == ["prep", "report"]
    # pre before every host, post after every host.
    first_host_work = min(when for when, host, _ in runs if host is not None)
    last_host_start = max(when for when, host, _ in runs if host is not None)
    assert actions["prep"].runs[0][0] < first_host_work
    assert actions["report"].runs[0][0] > last_host_start
    # Controllers first (Fenix), then the empty compute, then the rolling order.
    assert actions["upgrade"].hosts == ["ctl-0", "cmp-3", "cmp-0", "cmp-1", "cmp-2"]


def test_maintenance_host_brackets_every_host_and_its_actions(full_run):
    _, recorder, actions, _, cloud = full_run
    log = recorder.host_log()
    hosts = ["ctl-0", "cmp-3", "cmp-0", "cmp-1", "cmp-2"]
    assert [(h, s) for _, h, s in log] == [
        (h, s) for h in hosts for s in ("IN_MAINTENANCE", "MAINTENANCE_COMPLETE")
    ]
    for payload in recorder.of("maintenance_host"):
        assert set(payload) == {"service", "session_id", "host", "state", "project_id", "seq"}
    windows = {h: (log[2 * i][0], log[2 * i + 1][0]) for i, h in enumerate(hosts)}
    for action in actions.values():
        for when, host in action.runs:
            if host is None:
                continue
            start, end = windows[host]
            assert start <= when
            assert when + timedelta(seconds=action.seconds) <= end
    for event in cloud.events:
        start, end = windows[event.host or ""] if event.host in windows else (None, None)
        if event.kind == "enable_host":
            assert start <= event.time <= end
        elif event.kind == "disable_host":
            # Disabled before it goes in, and before anything leaves it.
            assert event.time <= start
            moves_off = [
                e.time
                for e in cloud.events
                if e.kind == "migration_started" and e.host == event.host
            ]
            assert all(event.time <= t for t in moves_off)


def test_unmanaged_project_instances_are_live_migrated_by_default(full_run):
    *_, cloud = full_run
    started = {e.instance_id: e for e in cloud.events if e.kind == "migration_started"}
    done = {e.instance_id: e for e in cloud.events if e.kind == "migration_done"}
    for instance_id in ("vm-c1", "vm-c2"):
        took = done[instance_id].time - started[instance_id].time
        assert took == timedelta(seconds=cloud.live_migration_seconds)
    took_b = done["vm-b1"].time - started["vm-b1"].time
    assert took_b == timedelta(seconds=cloud.migration_seconds)  # pb chose MIGRATE


def test_project_view_shows_final_placement(full_run):
    view, *_ = full_run
    # Reached through the engine the run used: the recorder knows it.
    engine = full_run[1].engine
    pa = engine.project_view(view.session_id, "pa")
    assert pa.state == "ACK_MAINTENANCE_COMPLETE"
    assert pa.instance_ids == ("vm-a1", "vm-a2", "vm-a3")
    assert all(i.state == "DONE" and i.moves == 1 for i in pa.instances)
    assert {i.action for i in pa.instances} == {"LIVE_MIGRATE"}


# --------------------------------------------------------------------------- policies


def test_fail_policy_fails_before_touching_any_host(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 60)
    engine = fenix_engine_factory(upgrade)
    recorder = recorder_factory(engine)
    ScriptedManager(engine, "pa", cloud=fenix_cloud)
    sid = engine.create_session(
        SessionRequest(actions=[ActionSpec("upgrade", "host")], project_policy="fail")
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "projects without an application manager: pb, pc (project_policy is 'fail')"
    )
    assert fenix_cloud.events == []
    assert upgrade.runs == []
    assert recorder.session_states() == ["MAINTENANCE", "MAINTENANCE_FAILED"]
    assert recorder.project_states("pa") == []
    assert all(h.state == "PENDING" for h in view.hosts)


@pytest.mark.parametrize("policy", [None, "fail"])
def test_nack_maintenance_fails_the_session_naming_project_and_state(
    fenix_cloud, fenix_engine_factory, policy
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    ScriptedManager(engine, "pa", cloud=fenix_cloud, nack={"MAINTENANCE"})
    sid = engine.create_session({"hosts": [], "reply_policy": policy})
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "project pa answered NACK_MAINTENANCE"
    assert fenix_cloud.events == []
    assert engine.project_view(sid, "pa").state == "NACK_MAINTENANCE"
    assert view.projects["pa"] == "NACK_MAINTENANCE"


def test_nack_planned_maintenance_mid_session_leaves_no_host_disabled(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 60)
    engine = fenix_engine_factory(upgrade)
    ScriptedManager(engine, "pa", cloud=fenix_cloud, nack={"PLANNED_MAINTENANCE"})
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "project pa answered NACK_PLANNED_MAINTENANCE"
    # The empty host was maintained before; nothing is left disabled.
    assert upgrade.hosts == ["cmp-3"]
    assert all(fenix_cloud.is_enabled(h) for h in LAYOUT)
    assert view.host("cmp-3").state == "MAINTAINED"
    assert view.host("cmp-0").state == "PENDING"


@pytest.mark.parametrize("policy", [None, "fail"])
def test_silent_manager_fails_at_its_deadline(
    fenix_cloud, fenix_engine_factory, fenix_clock, policy
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    start = fenix_clock.now()
    ScriptedManager(engine, "pb", cloud=fenix_cloud, silent={"MAINTENANCE"})
    sid = engine.create_session({"reply_windows": {"MAINTENANCE": 120}, "reply_policy": policy})
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    deadline = start + timedelta(seconds=120)
    assert view.reason == f"project pb did not answer MAINTENANCE by {deadline.isoformat()}"
    assert fenix_clock.now() == deadline
    assert fenix_cloud.events == []


def test_reply_policy_default_acts_for_a_silent_manager(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    recorder = recorder_factory(engine)
    silent = ScriptedManager(
        engine,
        "pa",
        cloud=fenix_cloud,
        silent={"MAINTENANCE", "PLANNED_MAINTENANCE", "MAINTENANCE_COMPLETE"},
    )
    sid = engine.create_session(SessionRequest(reply_policy="default"))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert silent.sent == []
    assert recorder.project_states("pa")[0] == "MAINTENANCE"
    assert migrations_per_instance(fenix_cloud)["vm-a1"] == 1
    assert engine.project_view(sid, "pa").state == "DEFAULT_MAINTENANCE_COMPLETE"


def test_late_reply_after_the_engine_acted_by_default_is_rejected(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    late = ScriptedManager(engine, "pa", cloud=fenix_cloud, delay=900)  # window is 600 s
    sid = engine.create_session(SessionRequest(reply_policy="default"))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    # Every late answer was refused: it no longer matched what was asked.
    assert len(late.errors) == len(late.sent) == 4
    assert all(isinstance(e, Conflict | InvalidInput) for e in late.errors)


# --------------------------------------------------------------------------- faults


def test_failed_migration_is_retried_and_the_session_completes(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    ScriptedManager(engine, "pa", cloud=fenix_cloud)
    fenix_cloud.fail_next_migration("vm-a1", error="no valid host was found")
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    failed = [e for e in fenix_cloud.events if e.kind == "migration_failed"]
    assert [(e.instance_id, e.detail) for e in failed] == [("vm-a1", "no valid host was found")]
    assert migrations_per_instance(fenix_cloud)["vm-a1"] == 1
    assert violations(fenix_cloud) == []


def test_migration_failing_past_its_retries_fails_the_session(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    recorder = recorder_factory(engine)
    ScriptedManager(engine, "pa", cloud=fenix_cloud)
    for _ in range(3):
        fenix_cloud.fail_next_migration("vm-a1", error="no valid host was found")
    sid = engine.create_session(SessionRequest(max_migration_retries=2))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "LIVE_MIGRATE of instance vm-a1 from cmp-0 failed after 3 attempt(s): "
        "no valid host was found"
    )
    assert fenix_cloud.host_of("vm-a1") == "cmp-0"
    assert all(fenix_cloud.is_enabled(h) for h in LAYOUT)
    assert view.host("cmp-0").state == "PENDING"
    assert recorder.session_states()[-1] == "MAINTENANCE_FAILED"
    assert engine.project_view(sid, "pa").instances[0].state == "FAILED"


def test_host_that_never_comes_back_fails_and_stays_disabled(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 300)
    engine = fenix_engine_factory(upgrade)
    fenix_cloud.host_stays_down("cmp-3")
    sid = engine.create_session(
        SessionRequest(actions=[ActionSpec("upgrade", "host")], timeouts={"host_up": 900})
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "host cmp-3 did not come back after maintenance" in view.reason
    assert view.host("cmp-3").state == "FAILED"
    assert "left disabled" in view.host("cmp-3").reason
    assert not fenix_cloud.is_enabled("cmp-3")
    # Nothing else was touched.
    assert upgrade.hosts == ["cmp-3"]
    assert all(fenix_cloud.is_enabled(h) for h in ("cmp-0", "cmp-1", "cmp-2"))
    assert [e.kind for e in fenix_cloud.events] == ["disable_host", "host_up_checked"]


def test_action_plugin_failure_fails_the_session_and_re_enables_the_host(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 300, fail_on={"cmp-3"})
    engine = fenix_engine_factory(upgrade)
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "host action 'upgrade' failed on cmp-3: upgrade failed on cmp-3"
    assert view.host("cmp-3").state == "FAILED"
    assert fenix_cloud.is_enabled("cmp-3")
    assert [e.kind for e in fenix_cloud.events] == ["disable_host", "enable_host"]


class _Raising:
    name = "broken"

    def start(self, context):
        raise RuntimeError("plug-in bug")

    def poll(self, context):  # pragma: no cover - never reached
        raise AssertionError

    from fenix_core import hookimpl as _hookimpl

    @_hookimpl
    def fenix_actions(self):
        return [self]


def test_action_plugin_that_raises_fails_the_session_with_its_error(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory(_Raising())
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("broken", "pre")]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "pre action 'broken' failed: RuntimeError: plug-in bug"
    assert fenix_cloud.events == []


# --------------------------------------------------------------------------- dialogue variants


def test_own_action_waits_for_the_manager_to_move_its_instance(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    recorder = recorder_factory(engine)
    ScriptedManager(engine, "pa", cloud=fenix_cloud, action="OWN_ACTION")
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    relocated = [e.instance_id for e in fenix_cloud.events if e.kind == "instance_relocated"]
    assert sorted(relocated) == ["vm-a1", "vm-a2", "vm-a3"]
    assert not any(
        e.instance_id.startswith("vm-a")
        for e in fenix_cloud.events
        if e.kind == "migration_started"
    )
    assert recorder.project_states("pa").count("INSTANCE_ACTION_DONE") == 3
    assert violations(fenix_cloud) == []
    states = {i.instance_id: i.action for i in engine.project_view(sid, "pa").instances}
    assert states == {"vm-a1": "OWN_ACTION", "vm-a2": "OWN_ACTION", "vm-a3": "OWN_ACTION"}


def test_manager_that_never_moves_its_own_action_instance_times_out(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    manager = ScriptedManager(engine, "pa", action="OWN_ACTION")  # no cloud: moves nothing
    sid = engine.create_session(SessionRequest(timeouts={"own_action": 600}))
    view = engine.run_until_done(sid)
    assert manager.errors == []
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason.startswith(
        "instance vm-a1 of project pa was not moved off cmp-0 by its manager (OWN_ACTION)"
    )
    assert all(fenix_cloud.is_enabled(h) for h in LAYOUT)


FULL = {
    "cmp-0": [("vm-s1", "ps", 4), ("vm-d1", "pd", 4)],
    "cmp-1": [("vm-s2", "ps", 4), ("vm-d2", "pd", 4)],
    "cmp-2": [("vm-s3", "ps", 4), ("vm-d3", "pd", 4)],
}


def test_full_cluster_asks_for_scale_in_and_scales_back_out(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, FULL)
    engine = fenix_engine_factory()
    recorder = recorder_factory(engine)
    scaler = ScriptedManager(engine, "ps", cloud=fenix_cloud, scale_in=2)
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    states = recorder.project_states("ps")
    assert states[:2] == ["MAINTENANCE", "SCALE_IN"]
    assert states[-1] == "MAINTENANCE_COMPLETE"
    assert recorder.session_states()[:3] == ["MAINTENANCE", "SCALE_IN", "PREPARE_MAINTENANCE"]
    assert ("ACK_SCALE_IN", {}) in scaler.sent
    # Two instances were deleted on SCALE_IN and re-created after the maintenance.
    removed = [e.instance_id for e in fenix_cloud.events if e.kind == "instance_removed"]
    added = [e.instance_id for e in fenix_cloud.events if e.kind == "instance_added"]
    assert sorted(removed) == sorted(added) == ["vm-s2", "vm-s3"]
    last_complete = max(t for t, _, s in recorder.host_log() if s == "MAINTENANCE_COMPLETE")
    added_at = [e.time for e in fenix_cloud.events if e.kind == "instance_added"]
    assert all(t >= last_complete for t in added_at)
    assert violations(fenix_cloud) == []


def test_full_cluster_without_a_manager_to_scale_in_fails_with_the_capacity_problem(
    fenix_cloud, fenix_engine_factory
):
    fill(fenix_cloud, FULL)
    engine = fenix_engine_factory()
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "cannot empty any host: the least loaded host cmp-0 has 8 vcpus of instances and "
        "the other hosts have 0 vcpus free; no project has an application manager to scale in"
    )
    assert fenix_cloud.events == []


def test_room_split_among_hosts_fails_naming_the_instance_no_host_can_take(
    fenix_cloud, fenix_engine_factory
):
    # 4 vcpus free in all, as much as cmp-0 holds, but 2 on each host: the
    # totals alone would read as if the session should have gone on.
    fill(
        fenix_cloud,
        {
            "cmp-0": [("vm-a", "pa", 4)],
            "cmp-1": [("vm-b", "pb", 6)],
            "cmp-2": [("vm-c", "pc", 6)],
        },
    )
    engine = fenix_engine_factory()
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == (
        "cannot empty any host: the least loaded host cmp-0 has 4 vcpus of instances and "
        "the other hosts have 4 vcpus free, but split: no one host has room for instance "
        "vm-a (4 vcpus) beside the instances placed before it (the most free on one host "
        "is 2 vcpus); no project has an application manager to scale in"
    )
    assert fenix_cloud.events == []


def test_scale_in_that_frees_nothing_fails(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, FULL)
    engine = fenix_engine_factory()
    ScriptedManager(engine, "ps", cloud=fenix_cloud, scale_in=0)
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason.startswith("SCALE_IN freed no capacity: ")


def test_prepare_maintenance_empties_a_host_when_none_is_empty(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    layout = {
        "cmp-0": [("vm-1", "pa", 2), ("vm-2", "pa", 2)],
        "cmp-1": [("vm-3", "pa", 4)],
        "cmp-2": [("vm-4", "pa", 6)],
    }
    fill(fenix_cloud, layout)
    engine = fenix_engine_factory()
    recorder = recorder_factory(engine)
    ScriptedManager(engine, "pa", cloud=fenix_cloud)
    sid = engine.create_session(SessionRequest())
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert recorder.session_states()[:3] == [
        "MAINTENANCE",
        "PREPARE_MAINTENANCE",
        "START_MAINTENANCE",
    ]
    assert recorder.project_states("pa")[1] == "PREPARE_MAINTENANCE"
    # The least loaded host (cmp-1, one 4-vcpu instance) is emptied first.
    first = next(
        p for p in recorder.of("maintenance_planned") if p["state"] == "PREPARE_MAINTENANCE"
    )
    assert first["instance_ids"] == ["vm-3"]
    assert violations(fenix_cloud) == []


def test_two_controllers_are_maintained_one_at_a_time_without_disabling(
    fenix_cloud, fenix_engine_factory, recorder_factory
):
    fill(fenix_cloud, {"cmp-0": [("vm-1", "pa", 2)], "cmp-1": []}, controllers=2)
    patch = TimedAction("ctlpatch", 500)
    upgrade = TimedAction("upgrade", 100)
    engine = fenix_engine_factory(patch, upgrade)
    recorder = recorder_factory(engine)
    sid = engine.create_session(
        SessionRequest(
            actions=[ActionSpec("upgrade", "host"), ActionSpec("ctlpatch", "controller")]
        )
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert patch.hosts == ["ctl-0", "ctl-1"]
    (start0, _), (start1, _) = patch.runs
    assert start1 >= start0 + timedelta(seconds=500)
    assert upgrade.hosts[:2] == ["ctl-0", "ctl-1"]
    assert not any(e.host.startswith("ctl") for e in fenix_cloud.events if e.kind == "disable_host")
    assert [h for _, h, s in recorder.host_log() if s == "IN_MAINTENANCE"][:2] == ["ctl-0", "ctl-1"]


def test_a_receiver_may_reply_from_inside_its_handler(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    engine.subscribe("pa")
    seen: list[str] = []

    def manager(sender, payload):
        if payload["project_id"] != "pa":
            return
        seen.append(payload["state"])
        state = payload["state"]
        if state in ("MAINTENANCE", "MAINTENANCE_COMPLETE"):
            sender.reply(payload["session_id"], "pa", f"ACK_{state}")
        elif state == "PLANNED_MAINTENANCE":
            sender.reply(
                payload["session_id"],
                "pa",
                "ACK_PLANNED_MAINTENANCE",
                dict.fromkeys(payload["instance_ids"], "MIGRATE"),
            )

    signals.maintenance_planned.connect(manager, sender=engine)
    try:
        view = engine.run_until_done(engine.create_session(SessionRequest()))
    finally:
        signals.maintenance_planned.disconnect(manager, sender=engine)
    assert view.state == "MAINTENANCE_DONE"
    assert seen[0] == "MAINTENANCE"
    assert seen[-1] == "MAINTENANCE_COMPLETE"
    assert Counter(seen)["PLANNED_MAINTENANCE"] == 3


def test_host_work_waits_for_maintenance_at(fenix_cloud, fenix_engine_factory, fenix_clock):
    fill(fenix_cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 60)
    engine = fenix_engine_factory(upgrade)
    start = fenix_clock.now() + timedelta(hours=3)
    sid = engine.create_session(
        SessionRequest(actions=[ActionSpec("upgrade", "host")], maintenance_at=start)
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert upgrade.runs[0][0] == start
    assert min(e.time for e in fenix_cloud.events) >= start


def test_instances_appearing_on_an_emptied_host_are_drained_before_disabling(
    fenix_cloud, fenix_engine_factory
):
    """An instance appears on the host right after it was emptied (forced onto
    it while it is disabled, as an admin could): the engine notices before the
    host goes into maintenance and drains it again."""
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    done = []

    def sneak_in(sender, payload):
        if payload["state"] == "ADMIN_ACTION_DONE" and payload["project_id"] == "pa" and not done:
            done.append(True)
            fenix_cloud.add_instance("vm-new", "pa", "cmp-0", vcpus=1)

    ScriptedManager(engine, "pa", cloud=fenix_cloud, on_payload=lambda p: sneak_in(engine, p))
    view = engine.run_until_done(engine.create_session(SessionRequest()))
    assert view.state == "MAINTENANCE_DONE"
    assert done
    # The only violation is the test's own: the host never went through its
    # maintenance holding vm-new.
    found = violations(fenix_cloud)
    assert len(found) == 1
    assert found[0].endswith("vm-new arrived on disabled host cmp-0")
    assert (
        fenix_cloud.host_of("vm-new") != "cmp-0" or migrations_per_instance(fenix_cloud)["vm-new"]
    )


def test_an_instance_placed_on_an_empty_host_just_before_it_is_disabled_is_drained(
    fenix_cloud, fenix_engine_factory, monkeypatch
):
    """The cloud's scheduler places an instance on the empty host cmp-3 just
    before the engine's disable reaches it (the host was still enabled): the
    engine lists the host once it is disabled, so it drains that instance
    before the host goes into maintenance."""
    fill(fenix_cloud, LAYOUT)
    engine = fenix_engine_factory()
    ScriptedManager(engine, "pa", cloud=fenix_cloud)
    disable = fenix_cloud.disable_host
    placed: list[str] = []

    def scheduler_first(host: str, reason: str) -> None:
        if host == "cmp-3" and not placed:
            placed.append(host)
            fenix_cloud.add_instance("vm-new", "pa", "cmp-3", vcpus=1)
        disable(host, reason)

    monkeypatch.setattr(fenix_cloud, "disable_host", scheduler_first)
    view = engine.run_until_done(engine.create_session(SessionRequest()))
    assert placed
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert violations(fenix_cloud) == []
    assert migrations_per_instance(fenix_cloud)["vm-new"]


def test_the_seed_spelling_ack_in_scale_is_accepted(fenix_cloud, fenix_engine_factory):
    fill(fenix_cloud, FULL)
    engine = fenix_engine_factory()
    engine.subscribe("ps")
    answered: list[str] = []

    def seed_era_manager(sender, payload):
        if payload["project_id"] != "ps":
            return
        state = payload["state"]
        sid = payload["session_id"]
        if state == "SCALE_IN":
            for instance_id in ("vm-s2", "vm-s3"):  # enough room to empty a host
                fenix_cloud.remove_instance(instance_id)
            sender.reply(sid, "ps", "ACK_IN_SCALE")
            answered.append("ACK_IN_SCALE")
        elif state in ("MAINTENANCE", "MAINTENANCE_COMPLETE"):
            sender.reply(sid, "ps", f"ACK_{state}")
        elif state in ("PREPARE_MAINTENANCE", "PLANNED_MAINTENANCE"):
            actions = dict.fromkeys(payload["instance_ids"], "LIVE_MIGRATE")
            sender.reply(sid, "ps", f"ACK_{state}", actions)

    signals.maintenance_planned.connect(seed_era_manager, sender=engine)
    try:
        view = engine.run_until_done(engine.create_session(SessionRequest()))
    finally:
        signals.maintenance_planned.disconnect(seed_era_manager, sender=engine)
    assert view.state == "MAINTENANCE_DONE"
    assert answered == ["ACK_IN_SCALE"]
    assert view.projects["ps"] == "ACK_MAINTENANCE_COMPLETE"
    assert violations(fenix_cloud) == []


# --------------------------------------------------------------------------- the engine's promises


def test_each_step_is_one_commit(cloud: SimulatedCloud, core: Factory) -> None:
    """A step commits once (the first one takes the lease in its write: no
    claim of its own); the only other commits are the final delivery
    watermark and the replies (each its own transaction here: one sender
    at a time). The cloud and the action say when their operations end
    (``retry_after``), so every poll finds its operation ended: every step
    has something to write, and none is spent finding nothing to do (an
    operation started after a commit does not bring a step at the same
    instant; its first poll is when it asked to be looked at)."""
    fill(cloud, LAYOUT)
    engine = core(TimedAction("upgrade", 60))
    manager = ScriptedManager(engine, "pa", cloud=cloud)  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    commits = Commits(engine)
    steps = 0
    original = engine.step

    def counted() -> int:
        nonlocal steps
        moved = original()
        steps += moved
        return moved

    engine.step = counted  # type: ignore[method-assign]
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert steps > 10
    assert commits.count == commits.step_writes + len(manager.sent)
    # ... and, once the session has ended, the watermark of what its last
    # step delivered (no later step carries it).
    assert commits.step_writes == steps + 1


class Commits:
    """Commits sent to the engine's database, and the steps' fenced writes
    among the statements (the UPDATE of session_clock that opens each)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.step_writes = 0
        sa_event.listen(engine.database, "commit", self._commit)
        sa_event.listen(engine.database, "before_cursor_execute", self._statement)

    def _commit(self, *_: Any) -> None:
        self.count += 1

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE session_clock SET version"):
            self.step_writes += 1


class _Broken(RollingWorkflow):
    """Raises in its hook once the first host is being maintained."""

    def advance(self, ctx: SessionContext) -> None:
        super().advance(ctx)
        if ctx.session.state == "START_MAINTENANCE":
            raise RuntimeError("workflow bug")


def test_a_hook_that_raises_fails_the_session_without_crashing_the_engine(
    cloud: SimulatedCloud, core: Factory
) -> None:
    """The step that raised is dropped (nothing it did is written or sent);
    the session fails with the error as its reason, as today's engine does."""
    fill(cloud, LAYOUT)
    engine = core(TimedAction("upgrade", 60), workflows={"rolling": _Broken})
    recorder = Recorder(engine)  # type: ignore[arg-type]
    ScriptedManager(engine, "pa", cloud=cloud)  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "internal error: RuntimeError: workflow bug"
    assert recorder.session_states() == ["MAINTENANCE", "MAINTENANCE_FAILED"]
    assert recorder.host_log() == []  # the broken step's IN_MAINTENANCE was never sent
    assert effects(cloud) == []
    seqs = [p["seq"] for _, _, p in recorder.log]
    assert seqs == list(range(1, len(seqs) + 1))
    recorder.close()


class _BrokenWhenArmed(RollingWorkflow):
    """Raises in its hook while ``armed``."""

    armed = False

    def advance(self, ctx: SessionContext) -> None:
        super().advance(ctx)
        if self.armed:
            raise RuntimeError("workflow bug")


def test_a_hook_that_raises_in_a_worker_that_lost_the_session_fails_nothing(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    """A stalled worker whose session another worker took over runs a hook
    that raises. Its step is dropped as fenced out: the session is let go
    as it is, not failed by that worker (it used to reload the other
    worker's newer version under its old fence and raise ValueError from
    its step)."""
    fill(cloud, LAYOUT)
    stalled_lease, lease = SimClock(), SimClock()
    options: dict[str, Any] = {"workflows": {"rolling": _BrokenWhenArmed}, "lease_seconds": 30}
    upgrade = TimedAction("upgrade", 60)
    a = core(upgrade, worker_id="a", lease_clock=stalled_lease, **options)
    b = core(upgrade, worker_id="b", lease_clock=lease, **options)
    sid = a.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    a.run_until_idle()
    assert a.held(sid) is not None
    lease.advance(31)  # a stalls: its lease runs out by everyone's clock but its own
    assert b.step() == 1
    wake = a.next_wake()
    assert wake is not None
    clock.advance_to(wake)
    _BrokenWhenArmed.armed = True
    try:
        assert a.step() == 0
    finally:
        _BrokenWhenArmed.armed = False
    assert a.held(sid) is None
    assert b.run_until_done(sid).state == "MAINTENANCE_DONE"


class _ConnectionClosedOnce(RollingWorkflow):
    """Its hook meets a connection the server closed, once (psycopg raises
    InterfaceError for it), while ``armed``."""

    armed = False

    def advance(self, ctx: SessionContext) -> None:
        super().advance(ctx)
        if _ConnectionClosedOnce.armed and ctx.session.state == "START_MAINTENANCE":
            _ConnectionClosedOnce.armed = False
            raise InterfaceError("SELECT 1", {}, Exception("the connection is closed"))


def test_a_lost_connection_in_a_hook_is_retried_not_a_failed_session(
    cloud: SimulatedCloud, core: Factory
) -> None:
    """A database fault other than OperationalError (psycopg's
    InterfaceError on a connection the server closed) used to count as a
    workflow error and fail the session; it is retried from the session's
    last commit, as an OperationalError is."""
    fill(cloud, LAYOUT)
    engine = core(
        TimedAction("upgrade", 60),
        workflows={"rolling": _ConnectionClosedOnce},
        db_retry_seconds=0.001,
    )
    ScriptedManager(engine, "pa", cloud=cloud)  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    _ConnectionClosedOnce.armed = True
    try:
        view = engine.run_until_done(sid)
    finally:
        armed, _ConnectionClosedOnce.armed = _ConnectionClosedOnce.armed, False
    assert not armed  # the fault happened
    assert (view.state, view.reason) == ("MAINTENANCE_DONE", None)


def test_replies_are_checked_on_the_held_session(cloud: SimulatedCloud, core: Factory) -> None:
    """A reply nobody asked for is refused as by today's engine."""
    from fenix_core.errors import Conflict, NotFound

    fill(cloud, LAYOUT)
    engine = core()
    engine.subscribe("pa")
    sid = engine.create_session(SessionRequest())
    engine.step()
    assert engine.held(sid) is not None
    with pytest.raises(Conflict, match="not asked for PLANNED_MAINTENANCE"):
        engine.reply(sid, "pa", "ACK_PLANNED_MAINTENANCE")
    with pytest.raises(NotFound):
        engine.reply(sid, "pz", "ACK_MAINTENANCE")
    engine.reply(sid, "pa", "ACK_MAINTENANCE")
    with pytest.raises(Conflict, match="already answered"):
        engine.reply(sid, "pa", "ACK_MAINTENANCE")


class _Slow:
    """A pre action that asks to be polled every second, 30 times."""

    name = "slow"

    def __init__(self) -> None:
        self.polls = 0

    def start(self, context: Any) -> Any:
        from fenix_core.model import OperationStatus

        return OperationStatus.running(1.0)

    def poll(self, context: Any) -> Any:
        from fenix_core.model import OperationStatus

        self.polls += 1
        return OperationStatus.done() if self.polls >= 30 else OperationStatus.running(1.0)

    from fenix_core import hookimpl as _hookimpl

    @_hookimpl
    def fenix_actions(self) -> list[Any]:
        return [self]


def test_a_poll_only_step_is_written_when_the_lease_would_run_short(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    """With a lease of 10 s on the engine's own (simulated) clock and an
    action polled every second, a step that only polled is left unwritten
    while the stored lease has more than half its time left, and written
    before it runs shorter: after every step, more than 5 s of it remain."""
    from datetime import timedelta

    from sqlalchemy import select

    from fenix_core.store.schema import SessionClockRow

    fill(cloud, {"cmp-0": []})
    slow = _Slow()
    engine = core(slow, lease_seconds=10, lease_clock=clock)
    sid = engine.create_session(SessionRequest(actions=[ActionSpec("slow", "pre")]))
    commits = Commits(engine)
    steps = 0
    left: list[timedelta] = []
    original = engine.step

    def counted() -> int:
        nonlocal steps
        moved = original()
        steps += moved
        if moved:
            with engine.database.connect() as db:
                expires = db.scalar(
                    select(SessionClockRow.lease_expires).where(SessionClockRow.session_id == sid)
                )
            left.append(expires - clock.now())
        return moved

    engine.step = counted  # type: ignore[method-assign]
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert slow.polls == 30
    assert commits.step_writes < steps - 20  # most polls were left unwritten ...
    assert min(left) > timedelta(seconds=5)  # ... never with the lease running short


# --------------------------------------------------------------------------- reply deadlines


def test_reply_deadline_is_the_workflows_timer_and_a_silent_project_gets_the_default(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    """The notice's reply_at is the deadline the workflow's timer has (asked
    at + request.reply_window); a project silent past it is acted for by
    default, and its reply after the deadline is refused as late."""
    from datetime import timedelta

    from fenix_core.errors import Conflict

    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2)], "cmp-1": []})
    engine = core()
    engine.subscribe("pa")  # subscribed, never answers
    recorder = Recorder(engine)  # type: ignore[arg-type]
    asked_at = clock.now()
    sid = engine.create_session(
        SessionRequest(reply_policy="default", reply_windows={"MAINTENANCE": 120})
    )
    engine.step()
    (first,) = [p for p in recorder.of("maintenance_planned") if p["state"] == "MAINTENANCE"]
    due = asked_at + timedelta(seconds=120)
    assert first["reply_at"] == first["actions_at"] == due.isoformat()
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    states = recorder.project_states("pa")
    assert states[0] == "MAINTENANCE"
    assert "PLANNED_MAINTENANCE" in states  # the default was taken: the session went on
    assert migrations_per_instance(cloud)["vm-a1"] == 1
    with pytest.raises(Conflict):
        engine.reply(sid, "pa", "ACK_MAINTENANCE")
    recorder.close()


def test_a_silent_project_fails_the_session_under_reply_policy_fail(
    cloud: SimulatedCloud, core: Factory, clock: SimClock
) -> None:
    from datetime import timedelta

    fill(cloud, {"cmp-0": [("vm-a1", "pa", 2)], "cmp-1": []})
    engine = core()
    engine.subscribe("pa")
    asked_at = clock.now()
    sid = engine.create_session(
        SessionRequest(reply_policy="fail", reply_windows={"MAINTENANCE": 90})
    )
    view = engine.run_until_done(sid)
    due = asked_at + timedelta(seconds=90)
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == f"project pa did not answer MAINTENANCE by {due.isoformat()}"
    assert effects(cloud) == []


def test_an_inventory_result_holds_its_hosts_instances_not_the_cloud_host_list(
    cloud: SimulatedCloud, core: Factory, tmp_path: Path
) -> None:
    """Each compute host is inventoried before its maintenance: its result
    is that host's instances, not every host of the cloud again (a
    fleet-sized JSON per host, hosts^2 bytes and driver calls per session)."""
    import sqlite3

    fill(cloud, LAYOUT)
    engine = core()
    ScriptedManager(engine, "pa", cloud=cloud)  # type: ignore[arg-type]
    assert engine.run_until_done(engine.create_session(SessionRequest())).state == (
        "MAINTENANCE_DONE"
    )
    import json

    with sqlite3.connect(tmp_path / "fenix.db") as db:
        rows = db.execute("SELECT params, result FROM operations WHERE kind = 'inventory'")
        found = [(json.loads(p), json.loads(r)) for p, r in rows]
    per_host = [(p, r) for p, r in found if len(p.get("hosts") or ()) == 1]
    assert len(per_host) >= 4
    assert all("hosts" not in r and "instances" in r for _, r in per_host)
