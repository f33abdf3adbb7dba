"""The public Engine API: creating, reading, updating and deleting sessions,
subscriptions, signal delivery, the production loop and crash-resume."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import RealClock
from fenix_core.errors import Conflict, InvalidInput, NotFound, PluginError
from fenix_core.model import SessionUpdate
from fenix_core.store.schema import (
    HostRow,
    InboxRow,
    InstanceRow,
    OperationRow,
    OutboxRow,
    ProjectRow,
    SessionRow,
    TimerRow,
)
from fenix_core.testing import ScriptedManager, SimClock, SimulatedCloud, TimedAction

# cmp-2 is empty, so it is maintained first (at the start time, with no
# migration before it); then cmp-0 and cmp-1 are drained one after the other.
LAYOUT = {
    "cmp-0": [("a-1", "pa", 2)],
    "cmp-1": [("b-1", "pb", 2)],
    "cmp-2": [],
}
HOSTS = list(LAYOUT)
UPGRADE = [ActionSpec("upgrade", "host")]
SESSION_TABLES = (HostRow, InstanceRow, ProjectRow, OutboxRow, InboxRow, TimerRow, OperationRow)
Factory = Callable[..., Engine]


def fill(cloud: SimulatedCloud, layout: dict[str, list[tuple[str, str, int]]]) -> None:
    for host, instances in layout.items():
        cloud.add_host(host, vcpus=8)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)


def count(engine: Engine, table: Any, session_id: str | None = None) -> int:
    query = select(func.count()).select_from(table)
    if session_id is not None:
        query = query.where(table.session_id == session_id)
    with Session(engine.database) as orm:
        return int(orm.scalar(query) or 0)


def nothing_stored(engine: Engine) -> bool:
    return engine.list_sessions() == [] and all(
        count(engine, table) == 0 for table in (SessionRow, *SESSION_TABLES)
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


def migrations(cloud: SimulatedCloud, kind: str = "migration_done") -> Counter[str]:
    return Counter(e.instance_id or "" for e in cloud.events if e.kind == kind)


@pytest.fixture
def cloud(fenix_cloud: SimulatedCloud) -> SimulatedCloud:
    fill(fenix_cloud, LAYOUT)
    return fenix_cloud


@pytest.fixture
def upgrade() -> TimedAction:
    return TimedAction("upgrade", seconds=60)


@pytest.fixture
def engine(cloud: SimulatedCloud, fenix_engine_factory: Factory, upgrade: TimedAction) -> Engine:
    return fenix_engine_factory(upgrade)


@pytest.fixture
def connect(engine: Engine) -> Iterator[Callable[[str, Callable[..., None]], None]]:
    """connect(signal name, receiver) for this engine, disconnected afterwards."""
    connected: list[tuple[str, Callable[..., None]]] = []

    def do(name: str, receiver: Callable[..., None]) -> None:
        signals.SIGNALS[name].connect(receiver, sender=engine)
        connected.append((name, receiver))

    yield do
    for name, receiver in connected:
        signals.SIGNALS[name].disconnect(receiver, sender=engine)


# --------------------------------------------------------------------------- create_session


@pytest.mark.parametrize(
    ("request_data", "field"),
    [
        ({"workflow": "weekly"}, "workflow"),
        ({"actions": [{"plugin": "upgrade", "type": "sometimes"}]}, "actions[0].type"),
        ({"actions": [{"plugin": "no-such-action", "type": "host"}]}, "actions[0].plugin"),
        ({"hosts": ["cmp-0", "cmp-9"]}, "hosts"),
    ],
)
def test_create_session_rejects_bad_requests_and_writes_nothing(
    engine: Engine, request_data: dict[str, Any], field: str
) -> None:
    for request in (request_data, SessionRequest.from_dict(request_data)):
        with pytest.raises(InvalidInput) as caught:
            engine.create_session(request)
        assert caught.value.field == field
        assert nothing_stored(engine)


def test_create_session_over_hosts_of_a_running_session_is_a_conflict(engine: Engine) -> None:
    first = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    for hosts in (["cmp-1", "cmp-0"], []):  # [] means every host
        with pytest.raises(Conflict) as caught:
            engine.create_session(SessionRequest(hosts=hosts))
        assert caught.value.session_id == first
        assert "cmp-0" in str(caught.value)
        assert [s.session_id for s in engine.list_sessions()] == [first]
        assert count(engine, SessionRow) == 1
    # cmp-0 is free again once the first session ended.
    assert engine.run_until_done(first).state == "MAINTENANCE_DONE"
    second = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    # Hosts outside a running session are free.
    third = engine.create_session(SessionRequest(hosts=["cmp-1", "cmp-2"]))
    assert [s.session_id for s in engine.list_sessions()] == [first, second, third]


def drive(engine: Engine, clock: SimClock, session_ids: list[str], wakeups: int) -> None:
    """run_until_done for several sessions, giving up after ``wakeups`` clock jumps."""
    for _ in range(wakeups):
        engine.run_until_idle()
        views = [engine.get_session(sid) for sid in session_ids]
        if all(v.state in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED") for v in views):
            return
        wake = engine.next_wake()
        assert wake is not None
        clock.advance_to(max(wake, clock.now()))


def test_concurrent_sessions_over_disjoint_hosts_both_finish(
    engine: Engine, cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    first = engine.create_session(SessionRequest(hosts=["cmp-0"], actions=UPGRADE))
    second = engine.create_session(SessionRequest(hosts=["cmp-1"], actions=UPGRADE))
    # Alone, either session needs 3 wake-ups; together, 20 are plenty.
    drive(engine, fenix_clock, [first, second], wakeups=20)
    assert engine.get_session(first).state == "MAINTENANCE_DONE"
    assert engine.get_session(second).state == "MAINTENANCE_DONE"
    # cmp-2 belongs to neither session: both instances go there, once.
    assert dict(migrations(cloud)) == {"a-1": 1, "b-1": 1}
    assert cloud.host_of("a-1") == cloud.host_of("b-1") == "cmp-2"


def test_create_session_without_a_cloud_plugin_is_a_plugin_error(
    fenix_clock: SimClock, upgrade: TimedAction
) -> None:
    with Engine(clock=fenix_clock, plugins=[upgrade], load_entry_points=False) as engine:
        with pytest.raises(PluginError):
            engine.create_session(SessionRequest(actions=UPGRADE))
        assert nothing_stored(engine)


def test_create_session_accepts_a_fenix_style_dict(
    engine: Engine, fenix_clock: SimClock, upgrade: TimedAction
) -> None:
    start = fenix_clock.now() + timedelta(hours=1)
    sid = engine.create_session(
        {
            "hosts": ["cmp-2", "cmp-0"],
            "state": "MAINTENANCE",
            "maintenance_at": start.strftime("%Y-%m-%d %H:%M:%S"),  # naive: UTC
            "metadata": {"change": "CHG-1"},
            "workflow": "rolling",
            "download": ["https://example.org/patch.tar"],
            "actions": [{"plugin": "upgrade", "type": "host", "metadata": {"version": "2"}}],
        }
    )
    view = engine.get_session(sid)
    assert view.state == "MAINTENANCE"
    assert view.maintenance_at == start
    assert [h.name for h in view.hosts] == ["cmp-2", "cmp-0"]
    assert view.request["metadata"] == {"change": "CHG-1"}
    assert view.request["actions"][0]["metadata"] == {"version": "2"}
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert sorted(upgrade.hosts, key=str) == ["cmp-0", "cmp-2"]
    assert min(when for when, _ in upgrade.runs) == start


# --------------------------------------------------------------------------- reading sessions


def test_get_session_describes_a_new_session(engine: Engine, fenix_clock: SimClock) -> None:
    sid = engine.create_session(SessionRequest(hosts=["cmp-1", "cmp-0"], actions=UPGRADE))
    view = engine.get_session(sid)
    assert view.session_id == sid
    assert view.workflow == "rolling"
    assert view.state == "MAINTENANCE"
    assert view.percent_done == 0
    assert view.reason is None
    assert view.maintenance_at is None
    assert [(h.name, h.type, h.state) for h in view.hosts] == [
        ("cmp-1", "compute", "PENDING"),
        ("cmp-0", "compute", "PENDING"),
    ]
    assert all(h.started_at is None and h.finished_at is None for h in view.hosts)
    assert view.created_at == fenix_clock.now()
    assert is_utc(view.created_at)
    assert is_utc(view.updated_at)
    assert engine.list_sessions() == [view]


def test_get_session_follows_progress_to_the_end(
    engine: Engine, fenix_clock: SimClock, connect: Callable[..., None]
) -> None:
    progress: list[int] = []

    def on_host(sender: Engine, payload: dict[str, Any]) -> None:
        if payload["state"] == "MAINTENANCE_COMPLETE":
            progress.append(sender.get_session(payload["session_id"]).percent_done)

    connect("maintenance_host", on_host)
    created = fenix_clock.now()
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    done = engine.run_until_done(sid)
    assert progress == [33, 66, 100]
    assert done.state == "MAINTENANCE_DONE"
    assert done.percent_done == 100
    assert done.reason is None
    assert {h.name: h.state for h in done.hosts} == dict.fromkeys(HOSTS, "MAINTAINED")
    for host in done.hosts:
        started, finished = host.started_at, host.finished_at
        assert started is not None
        assert finished is not None
        assert is_utc(started)
        assert is_utc(finished)
        assert created <= started < finished <= fenix_clock.now()
    assert done.created_at == created
    assert is_utc(done.updated_at)
    assert done.updated_at > done.created_at
    assert engine.list_sessions() == [done]


def test_list_sessions_oldest_first(engine: Engine, fenix_clock: SimClock) -> None:
    assert engine.list_sessions() == []
    ids = []
    for host in ("cmp-2", "cmp-0", "cmp-1"):
        ids.append(engine.create_session(SessionRequest(hosts=[host])))
        fenix_clock.advance(1)
    listed = engine.list_sessions()
    assert [s.session_id for s in listed] == ids
    assert [[h.name for h in s.hosts] for s in listed] == [["cmp-2"], ["cmp-0"], ["cmp-1"]]
    assert all(s.state == "MAINTENANCE" and s.reason is None for s in listed)


@pytest.mark.parametrize("session_id", ["no-such-session", ""])
def test_unknown_session_is_not_found(engine: Engine, session_id: str) -> None:
    engine.create_session(SessionRequest())
    for call in (
        engine.get_session,
        engine.delete_session,
        engine.run_until_done,
        lambda sid: engine.update_session(sid, retry=True),
        lambda sid: engine.project_view(sid, "pa"),
    ):
        with pytest.raises(NotFound) as caught:
            call(session_id)
        assert caught.value.kind == "session"


@pytest.mark.parametrize(
    "call",
    [
        "get_session",
        "delete_session",
        "run_until_done",
        "project_view",
        "reply",
        "update_session",
    ],
)
def test_non_string_session_id_is_invalid_input_everywhere(engine: Engine, call: str) -> None:
    calls: dict[str, Callable[[Any], Any]] = {
        "get_session": engine.get_session,
        "delete_session": engine.delete_session,
        "run_until_done": engine.run_until_done,
        "project_view": lambda sid: engine.project_view(sid, "pa"),
        "reply": lambda sid: engine.reply(sid, "pa", "ACK_MAINTENANCE"),
        "update_session": lambda sid: engine.update_session(sid, retry=True),
    }
    with pytest.raises(InvalidInput) as caught:
        calls[call](123)
    assert caught.value.field == "session_id"


# --------------------------------------------------------------------------- update_session


@pytest.mark.parametrize("hours", [2.0, 0.5])
def test_update_moves_the_start_while_the_session_waits_for_it(
    engine: Engine,
    cloud: SimulatedCloud,
    fenix_clock: SimClock,
    upgrade: TimedAction,
    hours: float,
) -> None:
    t0 = fenix_clock.now()
    sid = engine.create_session(
        SessionRequest(maintenance_at=t0 + timedelta(hours=1), actions=UPGRADE)
    )
    engine.run_until_idle()
    assert engine.get_session(sid).state == "MAINTENANCE"
    new_start = t0 + timedelta(hours=hours)
    view = engine.update_session(sid, maintenance_at=new_start)
    assert view.maintenance_at == new_start
    assert view.request["maintenance_at"] == new_start.isoformat()
    assert upgrade.runs == []
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert upgrade.runs[0] == (new_start, "cmp-2")
    assert min(e.time for e in cloud.events) == new_start


def test_update_start_while_waiting_for_the_maintenance_answer(
    engine: Engine,
    fenix_clock: SimClock,
    upgrade: TimedAction,
    managers: Callable[..., ScriptedManager],
) -> None:
    managers("pa", silent={"MAINTENANCE"})
    t0 = fenix_clock.now()
    sid = engine.create_session(
        SessionRequest(maintenance_at=t0 + timedelta(hours=1), actions=UPGRADE)
    )
    engine.run_until_idle()
    assert engine.project_view(sid, "pa").state == "MAINTENANCE"  # not answered yet
    new_start = t0 + timedelta(hours=3)
    # A dict with the Fenix field name works as well.
    engine.update_session(sid, {"maintenance_at": new_start.isoformat()})
    fenix_clock.advance(60)
    engine.reply(sid, "pa", "ACK_MAINTENANCE")
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert min(when for when, _ in upgrade.runs) == new_start


def test_update_start_once_host_work_started_is_a_conflict(
    engine: Engine, upgrade: TimedAction, fenix_clock: SimClock
) -> None:
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    engine.run_until_idle()
    assert upgrade.runs  # cmp-2 is in maintenance
    before = engine.get_session(sid)
    with pytest.raises(Conflict) as caught:
        engine.update_session(sid, maintenance_at=fenix_clock.now() + timedelta(hours=1))
    assert caught.value.session_id == sid
    after = engine.get_session(sid)
    assert after.maintenance_at is None
    assert after.request == before.request
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


@pytest.mark.parametrize(
    "retry",
    [
        pytest.param(lambda e, sid: e.update_session(sid, retry=True), id="kwarg"),
        pytest.param(lambda e, sid: e.update_session(sid, {"retry": True}), id="dict"),
        pytest.param(lambda e, sid: e.update_session(sid, {"state": "MAINTENANCE"}), id="fenix"),
    ],
)
def test_retry_of_a_failed_session_finishes_without_redoing_maintained_hosts(
    cloud: SimulatedCloud, fenix_engine_factory: Factory, retry: Callable[[Engine, str], Any]
) -> None:
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-1"})
    engine = fenix_engine_factory(upgrade)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    failed = engine.run_until_done(sid)
    assert failed.state == "MAINTENANCE_FAILED"
    assert failed.reason is not None
    assert "cmp-1" in failed.reason
    assert "upgrade" in failed.reason
    assert failed.host("cmp-1").state == "FAILED"
    maintained = [h.name for h in failed.hosts if h.state == "MAINTAINED"]
    assert maintained == ["cmp-0", "cmp-2"]
    assert all(cloud.is_enabled(host) for host in HOSTS)  # put back into service
    runs_before = list(upgrade.hosts)
    moved_before = migrations(cloud)
    assert moved_before == {"a-1": 1, "b-1": 1}

    upgrade.fail_on = set()
    view = retry(engine, sid)
    assert view.state == "MAINTENANCE"
    assert view.reason is None
    done = engine.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert done.reason is None
    assert {h.name: h.state for h in done.hosts} == dict.fromkeys(HOSTS, "MAINTAINED")
    assert upgrade.hosts[len(runs_before) :] == ["cmp-1"]
    assert migrations(cloud) == moved_before


def test_retry_with_a_session_update_object(
    cloud: SimulatedCloud, fenix_engine_factory: Factory
) -> None:
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-1"})
    engine = fenix_engine_factory(upgrade)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_FAILED"
    upgrade.fail_on = set()
    assert engine.update_session(sid, SessionUpdate(retry=True)).state == "MAINTENANCE"
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_retry_of_a_session_that_did_not_fail_is_a_conflict(engine: Engine) -> None:
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    engine.run_until_idle()
    with pytest.raises(Conflict):
        engine.update_session(sid, retry=True)
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    with pytest.raises(Conflict):
        engine.update_session(sid, retry=True)
    assert engine.get_session(sid).state == "MAINTENANCE_DONE"


def test_retry_while_another_session_holds_its_hosts_is_a_conflict(
    cloud: SimulatedCloud, fenix_engine_factory: Factory
) -> None:
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-1"})
    engine = fenix_engine_factory(upgrade)
    first = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(first).state == "MAINTENANCE_FAILED"
    engine.create_session(SessionRequest(hosts=["cmp-1"]))  # cmp-1 is free: first failed
    with pytest.raises(Conflict):
        engine.update_session(first, retry=True)
    assert engine.get_session(first).state == "MAINTENANCE_FAILED"


@pytest.mark.parametrize(
    "update",
    [None, {}, {"retry": False}],
    ids=["nothing", "empty-dict", "retry-false"],
)
def test_update_with_nothing_to_change_is_invalid(engine: Engine, update: Any) -> None:
    sid = engine.create_session(SessionRequest())
    before = engine.get_session(sid)
    with pytest.raises(InvalidInput) as caught:
        engine.update_session(sid, update)
    assert caught.value.field == "update"
    assert engine.get_session(sid) == before


def test_update_with_an_empty_session_update_object_is_invalid(engine: Engine) -> None:
    sid = engine.create_session(SessionRequest())
    before = engine.get_session(sid)
    with pytest.raises(InvalidInput) as caught:
        engine.update_session(sid, SessionUpdate())
    assert caught.value.field == "update"
    assert engine.get_session(sid) == before


# --------------------------------------------------------------------------- delete_session


def test_delete_of_a_running_session_is_a_conflict(engine: Engine) -> None:
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    engine.run_until_idle()
    with pytest.raises(Conflict) as caught:
        engine.delete_session(sid)
    assert caught.value.session_id == sid
    assert caught.value.state == "START_MAINTENANCE"
    assert engine.get_session(sid).state == "START_MAINTENANCE"  # still there, untouched
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"


def test_delete_session_removes_the_session_and_its_rows(
    engine: Engine, managers: Callable[..., ScriptedManager]
) -> None:
    managers("pa")
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert all(count(engine, table, sid) for table in (HostRow, InstanceRow, OutboxRow, InboxRow))
    engine.delete_session(sid)
    with pytest.raises(NotFound):
        engine.get_session(sid)
    with pytest.raises(NotFound):
        engine.project_view(sid, "pa")
    with pytest.raises(NotFound):
        engine.reply(sid, "pa", "ACK_MAINTENANCE_COMPLETE")
    assert engine.list_sessions() == []
    assert all(count(engine, table, sid) == 0 for table in SESSION_TABLES)
    with pytest.raises(NotFound):
        engine.delete_session(sid)


def test_delete_of_a_failed_session(cloud: SimulatedCloud, fenix_engine_factory: Factory) -> None:
    engine = fenix_engine_factory(TimedAction("upgrade", seconds=60, fail_on={"cmp-2"}))
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_FAILED"
    engine.delete_session(sid)
    assert engine.list_sessions() == []


# --------------------------------------------------------------------------- subscriptions


def test_subscribe_and_unsubscribe_are_idempotent(engine: Engine) -> None:
    assert engine.subscriptions() == []
    engine.subscribe("pb")
    engine.subscribe("pa")
    engine.subscribe("pb")
    assert engine.subscriptions() == ["pa", "pb"]
    engine.unsubscribe("pb")
    engine.unsubscribe("pb")
    engine.unsubscribe("never-subscribed")
    assert engine.subscriptions() == ["pa"]


@pytest.mark.parametrize("project_id", [None, 7, b"pa", ""])
def test_subscribe_rejects_a_bad_project_id(engine: Engine, project_id: Any) -> None:
    for call in (engine.subscribe, engine.unsubscribe):
        with pytest.raises(InvalidInput) as caught:
            call(project_id)
        assert caught.value.field == "project_id"
    assert engine.subscriptions() == []


def test_only_subscribed_projects_are_asked(engine: Engine, connect: Callable[..., None]) -> None:
    asked: list[str] = []
    connect("maintenance_planned", lambda sender, payload: asked.append(payload["project_id"]))
    engine.subscribe("pa")
    engine.subscribe("pb")
    engine.unsubscribe("pb")
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    engine.run_until_idle()
    assert asked == ["pa"]
    assert engine.get_session(sid).projects == {"pa": "MAINTENANCE", "pb": None}


# --------------------------------------------------------------------------- signals


def test_a_receiver_that_raises_stops_neither_the_others_nor_the_session(
    engine: Engine,
    connect: Callable[..., None],
    managers: Callable[..., ScriptedManager],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(sender: Engine, payload: dict[str, Any]) -> None:
        raise RuntimeError("receiver bug")

    got: dict[str, list[dict[str, Any]]] = {name: [] for name in signals.SIGNALS}
    for name in signals.SIGNALS:
        connect(name, broken)
        connect(name, lambda sender, payload, _name=name: got[_name].append(payload))
    manager = managers("pa")
    with caplog.at_level(logging.ERROR, logger="fenix_core"):
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert manager.errors == []
    assert "MAINTENANCE_COMPLETE" in manager.states
    assert all(got.values())
    assert got["maintenance_session"][-1]["state"] == "MAINTENANCE_DONE"
    delivered = sum(len(v) for v in got.values())
    failures = [r for r in caplog.records if "receiver of" in r.getMessage()]
    assert len(failures) == delivered


def test_notifications_are_numbered_without_gaps_per_session(
    fenix_cloud: SimulatedCloud, fenix_engine_factory: Factory
) -> None:
    # Two sessions at once that cannot get in each other's way: the second
    # maintains an empty host; the first moves a-1 to cmp-1, outside both.
    fill(fenix_cloud, {"cmp-0": [("a-1", "pa", 2)], "cmp-1": [], "cmp-9": []})
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-0"})
    engine = fenix_engine_factory(upgrade)
    seqs: dict[str, list[int]] = {}
    kinds: dict[str, set[str]] = {}
    receivers = []
    for name, signal in signals.SIGNALS.items():

        def receive(sender: Engine, payload: dict[str, Any], _name: str = name) -> None:
            seqs.setdefault(payload["session_id"], []).append(payload["seq"])
            kinds.setdefault(payload["session_id"], set()).add(_name)

        signal.connect(receive, sender=engine)
        receivers.append((signal, receive))
    manager = ScriptedManager(engine, "pa")
    try:
        first = engine.create_session(SessionRequest(hosts=["cmp-0"], actions=UPGRADE))
        second = engine.create_session(SessionRequest(hosts=["cmp-9"], actions=UPGRADE))
        assert engine.run_until_done(first).state == "MAINTENANCE_FAILED"
        upgrade.fail_on = set()
        engine.update_session(first, retry=True)  # numbering goes on after a retry
        assert engine.run_until_done(first).state == "MAINTENANCE_DONE"
        assert engine.run_until_done(second).state == "MAINTENANCE_DONE"
    finally:
        manager.close()
        for signal, receive in receivers:
            signal.disconnect(receive, sender=engine)
    assert set(seqs) == {first, second}
    for sid, numbers in seqs.items():
        assert numbers == list(range(1, len(numbers) + 1)), sid
    assert kinds[first] == set(signals.SIGNALS)
    assert kinds[second] >= {"maintenance_session", "maintenance_host"}
    assert len(seqs[first]) > 10


# --------------------------------------------------------------------------- run_forever


def test_run_forever_with_a_real_clock_runs_a_session_and_stops() -> None:
    cloud = SimulatedCloud(migration_seconds=0, live_migration_seconds=0)
    fill(cloud, LAYOUT)
    upgrade = TimedAction("upgrade", seconds=0)
    finished = threading.Event()
    states: list[str] = []

    def on_session(sender: Engine, payload: dict[str, Any]) -> None:
        states.append(payload["state"])
        if payload["state"] in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED"):
            finished.set()

    with Engine(clock=RealClock(), plugins=[cloud, upgrade], load_entry_points=False) as engine:
        signals.maintenance_session.connect(on_session, sender=engine)
        manager = ScriptedManager(engine, "pa")  # replies from inside the handler
        loop = threading.Thread(target=engine.run_forever, daemon=True)
        loop.start()
        try:
            sid = engine.create_session(SessionRequest(actions=UPGRADE))
            assert finished.wait(timeout=10)
        finally:
            engine.stop()
            loop.join(timeout=10)
            manager.close()
            signals.maintenance_session.disconnect(on_session, sender=engine)
        assert not loop.is_alive()
        view = engine.get_session(sid)
    assert view.state == "MAINTENANCE_DONE"
    assert states[-1] == "MAINTENANCE_DONE"
    assert sorted(upgrade.hosts, key=str) == HOSTS
    assert manager.errors == []
    assert is_utc(view.updated_at)
    assert view.updated_at - view.created_at < timedelta(seconds=10)


def test_stop_ends_an_idle_run_forever() -> None:
    cloud = SimulatedCloud()
    fill(cloud, LAYOUT)
    with Engine(clock=RealClock(), plugins=[cloud], load_entry_points=False) as engine:
        loop = threading.Thread(target=engine.run_forever, daemon=True)
        loop.start()
        engine.stop()
        loop.join(timeout=10)
        assert not loop.is_alive()


# --------------------------------------------------------------------------- resume


RESUME_LAYOUT = {
    "cmp-0": [("a-1", "pa", 2), ("b-1", "pb", 2)],
    "cmp-1": [("a-2", "pa", 2)],
    "cmp-2": [("b-2", "pb", 2)],
}


def reference_run() -> tuple[Counter[str], Counter[str], dict[str, str | None]]:
    """The same session without interruption: migrations and action runs."""
    clock = SimClock()
    cloud = SimulatedCloud()
    fill(cloud, RESUME_LAYOUT)
    upgrade = TimedAction("upgrade", seconds=60)
    with Engine(clock=clock, plugins=[cloud, upgrade], load_entry_points=False) as engine:
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    placement = {i: cloud.host_of(i) for hosts in RESUME_LAYOUT.values() for i, _, _ in hosts}
    return migrations(cloud), Counter(upgrade.hosts), placement


def migration_in_flight(engine: Engine, sid: str, cloud: SimulatedCloud) -> bool:
    return sum(migrations(cloud, "migration_started").values()) > sum(migrations(cloud).values())


def action_in_flight(engine: Engine, sid: str, cloud: SimulatedCloud) -> bool:
    hosts = engine.get_session(sid).hosts
    return any(h.state == "IN_MAINTENANCE" for h in hosts) and bool(migrations(cloud))


@pytest.mark.parametrize("stop_when", [migration_in_flight, action_in_flight])
def test_a_new_engine_on_the_same_database_resumes_the_session(
    fenix_cloud: SimulatedCloud,
    fenix_clock: SimClock,
    fenix_engine_factory: Factory,
    tmp_path: Path,
    stop_when: Callable[[Engine, str, SimulatedCloud], bool],
) -> None:
    fill(fenix_cloud, RESUME_LAYOUT)
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    upgrade = TimedAction("upgrade", seconds=60)
    first = fenix_engine_factory(upgrade, database_url=url)
    sid = first.create_session(SessionRequest(actions=UPGRADE))
    for _ in range(100):
        first.run_until_idle()
        if stop_when(first, sid, fenix_cloud):
            break
        wake = first.next_wake()
        assert wake is not None
        fenix_clock.advance_to(wake)
    else:
        pytest.fail("never reached the interruption point")
    assert first.get_session(sid).state not in ("MAINTENANCE_DONE", "MAINTENANCE_FAILED")
    first.close()

    second = fenix_engine_factory(upgrade, database_url=url)
    done = second.run_until_done(sid)
    assert done.state == "MAINTENANCE_DONE"
    assert {h.state for h in done.hosts} == {"MAINTAINED"}
    moved, runs, placement = reference_run()
    assert migrations(fenix_cloud) == moved
    assert migrations(fenix_cloud, "migration_started") == moved  # nothing started twice
    assert Counter(upgrade.hosts) == runs
    assert {i: fenix_cloud.host_of(i) for i in placement} == placement
    assert all(fenix_cloud.is_enabled(host) for host in RESUME_LAYOUT)


def test_sessions_and_subscriptions_persist_in_a_database_file(
    cloud: SimulatedCloud, fenix_engine_factory: Factory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    first = fenix_engine_factory(database_url=url)
    first.subscribe("pa")
    sid = first.create_session(SessionRequest(hosts=["cmp-0"]))
    first.close()
    second = fenix_engine_factory(database_url=url)
    assert second.subscriptions() == ["pa"]
    assert [s.session_id for s in second.list_sessions()] == [sid]
    assert second.get_session(sid).projects == {"pa": None}
