"""The public Engine API: creating, reading, updating and deleting sessions,
the admin controls (pause, resume, cancel; a control on a session another
worker holds is one write fenced by that worker's lease), subscriptions,
signal delivery, the production loop and crash-resume. The engines run on a
database file, as a deployment's do."""

from __future__ import annotations

import logging
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, drive
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl, signals
from fenix_core.clock import RealClock, SimClock
from fenix_core.errors import Conflict, InvalidInput, NotFound, PluginError
from fenix_core.hookspecs import GateContext, GateResult
from fenix_core.model import SessionUpdate, SessionView
from fenix_core.store.schema import (
    HostRow,
    InboxRow,
    InstanceRow,
    OperationRow,
    OutboxRow,
    ProjectRow,
    SessionClockRow,
    SessionRow,
    SessionStateRow,
    TimerRow,
)
from fenix_core.testing import (
    ScriptedManager,
    SimulatedCloud,
    TimedAction,
    migrations_per_instance,
    violations,
)
from fenix_core.workflows.rolling import RollingWorkflow

# cmp-2 is empty, so it is maintained first (at the start time, with no
# migration before it); then cmp-0 and cmp-1 are drained one after the other.
LAYOUT = {
    "cmp-0": [("a-1", "pa", 2)],
    "cmp-1": [("b-1", "pb", 2)],
    "cmp-2": [],
}
HOSTS = list(LAYOUT)
UPGRADE = [ActionSpec("upgrade", "host")]
FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED")
SESSION_TABLES = (
    HostRow,
    InstanceRow,
    ProjectRow,
    OutboxRow,
    InboxRow,
    TimerRow,
    OperationRow,
    SessionClockRow,
    SessionStateRow,
)
Factory = Callable[..., Engine]


def fill(cloud: SimulatedCloud, layout: dict[str, list[tuple[str, str, int]]]) -> None:
    for host, instances in layout.items():
        cloud.add_host(host, vcpus=8)
        for instance_id, project_id, vcpus in instances:
            cloud.add_instance(instance_id, project_id, host, vcpus=vcpus)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'fenix.db'}"


@pytest.fixture
def core(db_url: str, fenix_clock: SimClock, fenix_cloud: SimulatedCloud) -> Iterator[Factory]:
    """make(*plugins, cloud=None, **Engine options): an engine on the test's
    database file (``database_url`` to choose another), closed afterwards."""
    made: list[Engine] = []

    def make(*plugins: object, cloud: SimulatedCloud | None = None, **kwargs: Any) -> Engine:
        kwargs.setdefault("database_url", db_url)
        kwargs.setdefault("load_entry_points", False)
        engine = Engine(clock=fenix_clock, plugins=[cloud or fenix_cloud, *plugins], **kwargs)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


@pytest.fixture
def cloud(fenix_cloud: SimulatedCloud) -> SimulatedCloud:
    fill(fenix_cloud, LAYOUT)
    return fenix_cloud


@pytest.fixture
def upgrade() -> TimedAction:
    return TimedAction("upgrade", seconds=60)


@pytest.fixture
def engine(cloud: SimulatedCloud, core: Factory, upgrade: TimedAction) -> Engine:
    return core(upgrade)


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


def count(engine: Engine, table: Any, session_id: str | None = None) -> int:
    query = select(func.count()).select_from(table)
    if session_id is not None:
        query = query.where(table.session_id == session_id)
    with engine.database.connect() as db:
        return int(db.scalar(query) or 0)


def nothing_stored(engine: Engine) -> bool:
    return engine.list_sessions() == [] and all(
        count(engine, table) == 0 for table in (SessionRow, *SESSION_TABLES)
    )


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


def events(cloud: SimulatedCloud, kind: str) -> list[Any]:
    return [e for e in cloud.events if e.kind == kind]


def migrations(cloud: SimulatedCloud, kind: str = "migration_done") -> Counter[str]:
    return Counter(e.instance_id or "" for e in events(cloud, kind))


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
        assert str(caught.value) == f"host cmp-0 is already in running session {first}"
        assert [s.session_id for s in engine.list_sessions()] == [first]
        assert count(engine, SessionRow) == 1
        assert count(engine, SessionClockRow) == 1
    assert engine.run_until_done(first).state == "MAINTENANCE_DONE"
    second = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    third = engine.create_session(SessionRequest(hosts=["cmp-1", "cmp-2"]))
    assert [s.session_id for s in engine.list_sessions()] == [first, second, third]


def drive_all(engine: Engine, clock: SimClock, session_ids: list[str], wakeups: int) -> None:
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
    drive_all(engine, fenix_clock, [first, second], wakeups=20)
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
    assert isinstance(view, SessionView)
    assert (view.session_id, view.workflow, view.state) == (sid, "rolling", "MAINTENANCE")
    assert (view.percent_done, view.reason, view.maintenance_at) == (0, None, None)
    assert [(h.name, h.type, h.state) for h in view.hosts] == [
        ("cmp-1", "compute", "PENDING"),
        ("cmp-0", "compute", "PENDING"),
    ]
    assert all(h.started_at is None and h.finished_at is None for h in view.hosts)
    assert view.created_at == fenix_clock.now()
    assert is_utc(view.created_at)
    assert is_utc(view.updated_at)
    assert not view.paused
    assert view.progress is not None
    assert (view.progress.hosts_done, view.progress.hosts_waiting) == (0, 2)
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
    assert (done.state, done.percent_done, done.reason) == ("MAINTENANCE_DONE", 100, None)
    assert {h.name: h.state for h in done.hosts} == dict.fromkeys(HOSTS, "MAINTAINED")
    for host in done.hosts:
        started, finished = host.started_at, host.finished_at
        assert started is not None
        assert finished is not None
        assert is_utc(started)
        assert is_utc(finished)
        assert created <= started < finished <= fenix_clock.now()
    assert done.progress is not None
    assert done.progress.hosts_done == 3
    assert set(done.progress.durations) == set(HOSTS)
    assert done.progress.estimated_end == done.updated_at
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
        engine.list_operations,
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
        "list_operations",
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
        "list_operations": engine.list_operations,
    }
    with pytest.raises(InvalidInput) as caught:
        calls[call](123)
    assert caught.value.field == "session_id"


def test_a_scripted_manager_without_history_answers_alike_and_keeps_nothing(
    engine: Engine, cloud: SimulatedCloud, managers: Callable[..., ScriptedManager]
) -> None:
    # A benchmark's managers (benchmarks/scenarios.py) keep no history: it
    # held every notification of a long run (their RSS grew with the fleet).
    kept = managers("pa", action="MIGRATE")
    bare = managers("pb", action="MIGRATE", history=False)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert (bare.received, bare.sent, bare.states) == ([], [], [])
    assert kept.states[-1] == "MAINTENANCE_COMPLETE"
    for project in ("pa", "pb"):
        assert engine.project_view(sid, project).state == "ACK_MAINTENANCE_COMPLETE"


class NoEngine:
    """What a ScriptedManager needs of an engine to hear and answer: a
    sender to be subscribed for."""

    def subscribe(self, project_id: str) -> None:
        pass


@pytest.mark.parametrize("action", ["MIGRATE", "OWN_ACTION"])
def test_a_scripted_managers_one_action_answers_as_a_table_of_it_would(action: str) -> None:
    payload = {
        "session_id": "s",
        "project_id": "p",
        "state": "PLANNED_MAINTENANCE",
        "instance_ids": ["vm-b", "vm-a"],
        "metadata": {"proposed_actions": {"vm-a": "OWN_ACTION"}},
    }
    answers = []
    for kwargs in (
        {"action": action},
        {"action": None, "actions": dict.fromkeys(payload["instance_ids"], action)},
    ):
        sender, sent = NoEngine(), []  # type: ignore[var-annotated]
        cloud = SimulatedCloud(clock=SimClock())
        for host in ("cmp-0", "cmp-1"):
            cloud.add_host(host, vcpus=4)
        cloud.add_instance("vm-a", "p", "cmp-0")
        cloud.add_instance("vm-b", "p", "cmp-0")
        manager = ScriptedManager(
            sender,  # type: ignore[arg-type]
            "p",
            cloud=cloud,
            send=lambda *reply, sent=sent: sent.append(reply),
            **kwargs,
        )
        try:
            signals.maintenance_planned.send(sender, payload=dict(payload))
        finally:
            manager.close()
        answers.append((sent, cloud.instances_on("cmp-1")))
    assert answers[0] == answers[1]
    moved = ["vm-a", "vm-b"] if action == "OWN_ACTION" else []
    assert answers[0] == (
        [("s", "p", "ACK_PLANNED_MAINTENANCE", {"vm-b": action, "vm-a": action})],
        moved,
    )


def test_project_view_and_operations_of_a_finished_session(
    engine: Engine, cloud: SimulatedCloud, managers: Callable[..., ScriptedManager]
) -> None:
    managers("pa", action="MIGRATE")
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    pa = engine.project_view(sid, "pa")
    assert (pa.session_id, pa.project_id, pa.state) == (sid, "pa", "ACK_MAINTENANCE_COMPLETE")
    assert pa.instance_ids == ("a-1",)
    [a1] = pa.instances
    assert (a1.host, a1.state, a1.action, a1.moves) == (cloud.host_of("a-1"), "DONE", "MIGRATE", 1)
    assert pa.reply_at is None
    with pytest.raises(NotFound) as missing:
        engine.project_view(sid, "nobody")
    assert missing.value.kind == "project"
    ops = engine.list_operations(sid)
    moves = [(o.kind, o.instance_id, o.source, o.target) for o in ops if o.kind == "move"]
    assert moves == [
        ("move", "a-1", "cmp-0", cloud.host_of("a-1")),
        ("move", "b-1", "cmp-1", cloud.host_of("b-1")),
    ]
    assert all(o.status == "done" for o in ops)
    assert [o.host for o in ops if o.kind == "action"] == ["cmp-2", "cmp-0", "cmp-1"]
    assert [o.created_at for o in ops] == sorted(o.created_at for o in ops)


def test_outbox_backlog_is_what_was_written_above_the_delivery_watermark(
    engine: Engine,
) -> None:
    assert engine.outbox_backlog() == (0, None)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    written = count(engine, OutboxRow, sid)
    assert written > 0
    assert engine.outbox_backlog() == (0, None)  # the last step's rows too
    with engine.database.begin() as db:  # as a crash before delivering would leave it
        db.execute(
            SessionClockRow.__table__.update()
            .where(SessionClockRow.session_id == sid)
            .values(delivered_seq=written - 2)
        )
        oldest = db.scalar(
            select(OutboxRow.created_at).where(
                OutboxRow.session_id == sid, OutboxRow.seq == written - 1
            )
        )
    assert engine.outbox_backlog() == (2, oldest)


def test_next_wake_counts_stored_sessions_no_live_lease_covers(
    cloud: SimulatedCloud, core: Factory, fenix_clock: SimClock
) -> None:
    first = core(TimedAction("upgrade", seconds=60))
    # Nothing stored: nothing to do, before the first look too (as today's
    # Engine; an engine with only a session awaiting approval has none either).
    assert first.next_wake() is None
    first.run_until_idle()
    assert first.next_wake() is None
    start = fenix_clock.now() + timedelta(hours=2)
    sid = first.create_session(SessionRequest(maintenance_at=start, actions=UPGRADE))
    first.run_until_idle()
    assert first.next_wake() == start
    first.close()  # lets its lease go: a new engine on the database takes over
    second = core(TimedAction("upgrade", seconds=60))
    assert second.next_wake() == start  # what its first look will find
    second.run_until_idle()
    assert second.next_wake() == start
    assert second.run_until_done(sid).state == "MAINTENANCE_DONE"
    assert second.next_wake() is None


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
    assert str(caught.value) == (
        f"maintenance_at can only change before host work starts (session is {before.state})"
    )
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
        pytest.param(lambda e, sid: e.update_session(sid, SessionUpdate(retry=True)), id="object"),
    ],
)
def test_retry_of_a_failed_session_finishes_without_redoing_maintained_hosts(
    cloud: SimulatedCloud, core: Factory, retry: Callable[[Engine, str], Any]
) -> None:
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-1"})
    engine = core(upgrade)
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    failed = engine.run_until_done(sid)
    assert failed.state == "MAINTENANCE_FAILED"
    assert failed.reason is not None
    assert "cmp-1" in failed.reason
    assert "upgrade" in failed.reason
    assert failed.host("cmp-1").state == "FAILED"
    assert [h.name for h in failed.hosts if h.state == "MAINTAINED"] == ["cmp-0", "cmp-2"]
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


def test_retry_of_a_session_that_did_not_fail_is_a_conflict(engine: Engine) -> None:
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    engine.run_until_idle()
    with pytest.raises(Conflict) as caught:
        engine.update_session(sid, retry=True)
    state = engine.get_session(sid).state
    assert str(caught.value) == f"only a failed session can be retried; this one is {state}"
    assert engine.run_until_done(sid).state == "MAINTENANCE_DONE"
    with pytest.raises(Conflict):
        engine.update_session(sid, retry=True)
    assert engine.get_session(sid).state == "MAINTENANCE_DONE"


def test_retry_while_another_session_holds_its_hosts_is_a_conflict(
    cloud: SimulatedCloud, core: Factory
) -> None:
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-1"})
    engine = core(upgrade)
    first = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(first).state == "MAINTENANCE_FAILED"
    second = engine.create_session(SessionRequest(hosts=["cmp-1"]))  # free: first failed
    with pytest.raises(Conflict) as caught:
        engine.update_session(first, retry=True)
    assert str(caught.value) == f"host cmp-1 is already in running session {second}"
    assert engine.get_session(first).state == "MAINTENANCE_FAILED"


@pytest.mark.parametrize(
    "update",
    [None, {}, {"retry": False}, SessionUpdate()],
    ids=["nothing", "empty-dict", "retry-false", "empty-object"],
)
def test_update_with_nothing_to_change_is_invalid(engine: Engine, update: Any) -> None:
    sid = engine.create_session(SessionRequest())
    before = engine.get_session(sid)
    with pytest.raises(InvalidInput) as caught:
        engine.update_session(sid, update)
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
    assert str(caught.value) == "session is still running (START_MAINTENANCE); wait until it ends"
    assert engine.get_session(sid).state == "START_MAINTENANCE"
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


def test_delete_session_leaves_the_other_sessions_notifications(engine: Engine) -> None:
    """The outbox (0014) and the operations (0015) have no foreign key: the
    delete removes the session's range of ids of each, and no other
    session's rows."""
    first = engine.create_session(SessionRequest(hosts=["cmp-0"], actions=UPGRADE))
    assert engine.run_until_done(first).state == "MAINTENANCE_DONE"
    second = engine.create_session(SessionRequest(hosts=["cmp-1"], actions=UPGRADE))
    assert engine.run_until_done(second).state == "MAINTENANCE_DONE"
    kept = {table: count(engine, table, second) for table in (OutboxRow, OperationRow)}
    assert all(kept.values())
    assert count(engine, OutboxRow, first) > 0
    assert count(engine, OperationRow, first) > 0
    engine.delete_session(first)
    assert count(engine, OutboxRow, first) == 0
    assert count(engine, OperationRow, first) == 0
    assert {table: count(engine, table, second) for table in kept} == kept
    assert engine.outbox_backlog() == (0, None)


def test_delete_of_a_failed_session(cloud: SimulatedCloud, core: Factory) -> None:
    engine = core(TimedAction("upgrade", seconds=60, fail_on={"cmp-2"}))
    sid = engine.create_session(SessionRequest(actions=UPGRADE))
    assert engine.run_until_done(sid).state == "MAINTENANCE_FAILED"
    engine.delete_session(sid)
    assert engine.list_sessions() == []


# --------------------------------------------------------------------------- pause, resume, cancel


def test_pause_lets_the_migration_end_and_starts_nothing_new_until_resumed(
    fenix_clock: SimClock, core: Factory
) -> None:
    cloud = SimulatedCloud(live_migration_seconds=600, clock=fenix_clock)
    for name in ("cmp-0", "cmp-1", "cmp-2"):
        cloud.add_host(name, vcpus=8)
    for i in range(2):
        cloud.add_instance(f"vm-{i}", "p1", "cmp-0", vcpus=2)
    cloud.add_instance("vm-9", "p1", "cmp-1", vcpus=2)
    engine = core(cloud=cloud)
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    drive(engine, fenix_clock, sid, lambda _v: bool(events(cloud, "migration_started")))
    before = len(cloud.events)
    view = engine.pause(sid)
    assert view.paused
    with pytest.raises(Conflict) as info:
        engine.pause(sid)
    assert str(info.value) == "session is paused already (by the admin)"
    view = drive(engine, fenix_clock, sid)
    assert view.paused
    assert view.state not in FINAL
    assert [e.kind for e in cloud.events[before:]] == ["migration_done"]
    assert "paused" in str(view.waiting)
    assert not engine.resume(sid).paused
    with pytest.raises(Conflict) as info:
        engine.resume(sid)
    assert info.value.state == view.state
    assert str(info.value) == f"session is not paused ({view.state})"
    assert drive(engine, fenix_clock, sid).state == "MAINTENANCE_DONE"
    assert set(migrations_per_instance(cloud).values()) == {1}


def test_cancel_re_enables_only_the_hosts_this_session_disabled(
    fenix_cloud: SimulatedCloud, fenix_clock: SimClock, core: Factory
) -> None:
    hosts = []
    for i in range(3):
        fenix_cloud.add_host(f"cmp-{i}", vcpus=8)
        fenix_cloud.add_instance(f"vm-{i}", "p1", f"cmp-{i}", vcpus=2)
        hosts.append(f"cmp-{i}")
    fenix_cloud.add_host("spare-0", vcpus=8)
    hosts.append("spare-0")
    fenix_cloud.add_host("cmp-off", vcpus=8, enabled=False)  # someone else's decision
    engine = core(TimedAction("upgrade", seconds=900))
    recorder = Recorder(engine)  # type: ignore[arg-type]
    sid = engine.create_session(
        SessionRequest(hosts=["cmp-off", *hosts], actions=[ActionSpec("upgrade", "host")])
    )
    drive(
        engine,
        fenix_clock,
        sid,
        lambda v: (
            sum(h.state == "MAINTAINED" for h in v.hosts) >= 2
            and any(h.state == "IN_MAINTENANCE" for h in v.hosts)
        ),
    )
    assert [h for h in hosts if not fenix_cloud.is_enabled(h)]  # disabled by the session
    view = engine.cancel(sid)
    assert view.state == "MAINTENANCE_CANCELLED"
    view = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_CANCELLED"
    assert view.reason == "cancelled by the admin"
    for host in hosts:
        assert fenix_cloud.is_enabled(host), host
    assert not fenix_cloud.is_enabled("cmp-off")
    assert not [e for e in events(fenix_cloud, "enable_host") if e.host == "cmp-off"]
    assert recorder.session_states()[-1] == "MAINTENANCE_CANCELLED"
    for control, verb in (
        (engine.cancel, "cancelled"),
        (engine.pause, "paused"),
        (engine.resume, "resumed"),
    ):
        with pytest.raises(Conflict) as info:
            control(sid)
        assert info.value.state == "MAINTENANCE_CANCELLED"
        assert str(info.value) == f"session has ended (MAINTENANCE_CANCELLED) and cannot be {verb}"
    engine.delete_session(sid)
    recorder.close()


def test_a_cancel_mid_migration_follows_it_and_puts_the_host_back(
    fenix_clock: SimClock, core: Factory
) -> None:
    cloud = SimulatedCloud(live_migration_seconds=600, clock=fenix_clock)
    fill(cloud, {"cmp-0": [("a", "p1", 2), ("b", "p1", 2)], "cmp-1": []})
    engine = core(cloud=cloud)
    sid = engine.create_session(SessionRequest(hosts=["cmp-0", "cmp-1"]))
    drive(engine, fenix_clock, sid, lambda _v: bool(events(cloud, "migration_started")))
    assert not cloud.is_enabled("cmp-0")  # disabled before its drain
    engine.cancel(sid, "change freeze")
    view = drive(engine, fenix_clock, sid)
    assert (view.state, view.reason) == ("MAINTENANCE_CANCELLED", "change freeze")
    assert [e.kind for e in events(cloud, "migration_done")] == ["migration_done"]
    assert len(events(cloud, "migration_started")) == 1  # the one in flight, followed
    assert cloud.is_enabled("cmp-0")
    assert view.host("cmp-0").state == "PENDING"
    p1 = engine.project_view(sid, "p1")
    assert p1.reply_at is None
    moved = [i for i in p1.instances if i.moves]
    assert [(i.host, i.state) for i in moved] == [("cmp-1", "DONE")]
    assert [i.state for i in p1.instances if not i.moves] == ["PENDING"]  # never started
    assert count(engine, TimerRow, sid) == 0


class Breaker:
    """A plug-in gate: says stop while ``tripped``."""

    name = "breaker"

    def __init__(self) -> None:
        self.tripped = True

    @hookimpl
    def fenix_gates(self) -> list[Breaker]:
        return [self]

    def check(self, context: GateContext) -> GateResult:
        if self.tripped:
            return GateResult.stop(f"error budget exhausted (before {context.host})")
        return GateResult.ok()


def test_a_gate_that_says_stop_pauses_the_session_until_resumed(
    cloud: SimulatedCloud, core: Factory, fenix_clock: SimClock
) -> None:
    breaker = Breaker()
    engine = core(breaker)
    sid = engine.create_session(SessionRequest(controls={"gates": [{"name": "breaker"}]}))
    view = drive(engine, fenix_clock, sid)
    assert view.paused
    assert view.waiting == "paused: error budget exhausted (before cmp-2)"
    assert not events(cloud, "disable_host")
    with pytest.raises(Conflict):
        engine.pause(sid)
    breaker.tripped = False
    assert not engine.resume(sid).paused
    assert drive(engine, fenix_clock, sid).state == "MAINTENANCE_DONE"


def test_a_cancel_stops_waiting_for_a_managers_own_action(
    engine: Engine, cloud: SimulatedCloud, fenix_clock: SimClock
) -> None:
    """What only waits is abandoned (today's engine too): the manager said
    OWN_ACTION and never moves its instance; the cancelled session settles at
    once instead of watching it until the own_action deadline."""
    manager = ScriptedManager(engine, "pa", action="OWN_ACTION")  # type: ignore[arg-type]
    sid = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    drive(engine, fenix_clock, sid, lambda _v: any(o.kind == "watch" for o in ops(engine, sid)))
    cancelled_at = fenix_clock.now()
    engine.cancel(sid)
    view = drive(engine, fenix_clock, sid)
    manager.close()
    assert view.state == "MAINTENANCE_CANCELLED"
    [watch] = [o for o in engine.list_operations(sid) if o.kind == "watch"]
    assert (watch.status, watch.detail) == (
        "abandoned",
        "session cancelled: cancelled by the admin",
    )
    assert watch.finished_at == cancelled_at
    [a1] = engine.project_view(sid, "pa").instances
    assert (a1.host, a1.state) == ("cmp-0", "PENDING")
    assert cloud.is_enabled("cmp-0")
    with engine.database.connect() as db:
        wake = db.scalar(select(SessionClockRow.next_wake).where(SessionClockRow.session_id == sid))
    assert wake is None
    assert fenix_clock.now() - cancelled_at < timedelta(minutes=5)


def ops(engine: Engine, sid: str) -> list[Any]:
    return engine.list_operations(sid)


def test_controls_refuse_bad_input_and_unknown_sessions(engine: Engine) -> None:
    sid = engine.create_session(SessionRequest())
    for control in (engine.pause, engine.cancel):
        with pytest.raises(InvalidInput) as bad:
            control(sid, 42)  # type: ignore[operator]
        assert bad.value.field == "reason"
    for call in (engine.pause, engine.resume, engine.cancel):
        with pytest.raises(NotFound) as missing:
            call("no-such-session")
        assert (missing.value.kind, missing.value.session_id) == ("session", "no-such-session")
        with pytest.raises(InvalidInput) as wrong:
            call(123)  # type: ignore[arg-type]
        assert wrong.value.field == "session_id"
    assert engine.get_session(sid).state == "MAINTENANCE"


# --------------------------------------------------------------------------- another worker


Workers = tuple[Engine, Engine, SimClock, dict[str, list[dict[str, Any]]]]


@pytest.fixture
def two_workers(cloud: SimulatedCloud, core: Factory) -> Workers:
    """Engines ``a`` and ``b`` on one database, their leases on a clock of
    their own (moved by hand: 30 s leases, a poll every 7.5 s), and what
    each one delivered."""
    leases = SimClock()
    a = core(TimedAction("upgrade", seconds=60), worker_id="a", lease_clock=leases)
    b = core(TimedAction("upgrade", seconds=60), worker_id="b", lease_clock=leases)
    sent: dict[str, list[dict[str, Any]]] = {"a": [], "b": []}
    for name, engine in (("a", a), ("b", b)):

        def receive(sender: Any, payload: dict[str, Any], _name: str = name) -> None:
            sent[_name].append(payload)

        for signal in signals.SIGNALS.values():
            signal.connect(receive, sender=engine, weak=False)
    return a, b, leases, sent


def test_a_pause_of_a_session_another_worker_holds_is_one_fenced_write(
    two_workers: Workers, fenix_clock: SimClock
) -> None:
    a, b, leases, sent = two_workers
    sid = a.create_session(SessionRequest(actions=UPGRADE))
    a.run_until_idle()  # a holds the session: cmp-2 in maintenance
    assert a.get_session(sid).state == "START_MAINTENANCE"
    version = count_version(a, sid)
    view = b.pause(sid, "freeze")
    assert view.paused
    assert count_version(a, sid) == version + 1  # one write, on top of a's
    with pytest.raises(Conflict):  # needs the lease, as today
        b.update_session(sid, retry=True)
    assert b.get_session(sid).paused
    # a's next step is fenced out; it reloads and goes on from the pause.
    drive(a, fenix_clock, sid)
    paused = a.get_session(sid)
    assert paused.paused
    assert paused.waiting == "paused: freeze"
    assert [h.state for h in paused.hosts].count("MAINTAINED") == 1  # cmp-2 finished
    assert not [h for h in paused.hosts if h.state in ("DRAINING", "IN_MAINTENANCE")]
    # The notice the control wrote went out once, from the worker holding it.
    notices = [p for p in sent["a"] if p.get("reason") == "paused: freeze"]
    assert len(notices) == 1
    assert sent["b"] == []
    seqs = [p["seq"] for p in sent["a"]]
    assert seqs == sorted(set(seqs))
    # a holds the paused session, waiting for nothing; b resumes it, and a
    # finds it due at its next poll of the database.
    b.resume(sid)
    assert not a.get_session(sid).paused  # as committed
    leases.advance(10)
    assert drive(a, fenix_clock, sid).state == "MAINTENANCE_DONE"
    seqs = [p["seq"] for p in sent["a"]]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # none lost, none twice


def count_version(engine: Engine, sid: str) -> int:
    with engine.database.connect() as db:
        return int(
            db.scalar(select(SessionClockRow.version).where(SessionClockRow.session_id == sid))
        )


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
    fenix_cloud: SimulatedCloud, core: Factory
) -> None:
    # Two sessions at once that cannot get in each other's way: the second
    # maintains an empty host; the first moves a-1 to cmp-1, outside both.
    fill(fenix_cloud, {"cmp-0": [("a-1", "pa", 2)], "cmp-1": [], "cmp-9": []})
    upgrade = TimedAction("upgrade", seconds=60, fail_on={"cmp-0"})
    engine = core(upgrade)
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
    core: Factory,
    tmp_path: Path,
    stop_when: Callable[[Engine, str, SimulatedCloud], bool],
) -> None:
    fill(fenix_cloud, RESUME_LAYOUT)
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    upgrade = TimedAction("upgrade", seconds=60)
    first = core(upgrade, database_url=url)
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

    second = core(upgrade, database_url=url)
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
    cloud: SimulatedCloud, core: Factory, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'fenix.db'}"
    first = core(database_url=url)
    first.subscribe("pa")
    sid = first.create_session(SessionRequest(hosts=["cmp-0"]))
    first.close()
    second = core(database_url=url)
    assert second.subscriptions() == ["pa"]
    assert [s.session_id for s in second.list_sessions()] == [sid]
    assert second.get_session(sid).projects == {"pa": None}


# --------------------------------------------------------------------------- random controls

CONTROLS = st.lists(
    st.tuples(st.integers(0, 60), st.sampled_from(["pause", "resume", "cancel"])), max_size=5
)


@pytest.mark.no_cover
@pytest.mark.slow
@settings(max_examples=12, deadline=None)
@given(schedule=CONTROLS)
def test_random_controls_are_refused_exactly_when_today_refuses_and_leave_no_host_out(
    schedule: list[tuple[int, str]],
) -> None:
    """Pause, resume and cancel at random points of a session: each is
    refused (Conflict) exactly when the session is paused already / not
    paused / ended; while paused no host is disabled and no migration
    starts; the session ends DONE, or CANCELLED if a cancel went through,
    with every host back in service and no placement rule broken."""
    clock = SimClock()
    cloud = SimulatedCloud(live_migration_seconds=120, clock=clock)
    fill(cloud, {"cmp-0": [("a", "p1", 2), ("b", "p2", 2)], "cmp-1": [("c", "p1", 2)], "cmp-2": []})
    with tempfile.TemporaryDirectory() as where:
        engine = Engine(
            f"sqlite:///{where}/fenix.db",
            clock=clock,
            plugins=[cloud, TimedAction("upgrade", seconds=300)],
            workflows={"rolling": RollingWorkflow},
        )
        sid = engine.create_session(SessionRequest(actions=UPGRADE))
        paused_since: int | None = None
        cancelled = False
        ticks = 0
        pending = sorted(schedule)
        while True:
            while pending and pending[0][0] <= ticks:
                _, control = pending.pop(0)
                ended = engine.get_session(sid).state in FINAL
                refused = ended or (control == "pause" and paused_since is not None)
                refused = refused or (control == "resume" and paused_since is None)
                try:
                    if control == "cancel":
                        engine.cancel(sid)
                    else:
                        getattr(engine, control)(sid)
                except Conflict:
                    assert refused, (control, ticks)
                    continue
                assert not refused, (control, ticks)
                if control == "pause":
                    paused_since = len(cloud.events)
                elif control == "resume":
                    paused_since = None
                else:
                    cancelled = True
            if paused_since is not None:
                started = {e.kind for e in cloud.events[paused_since:]}
                assert not started & {"migration_started", "disable_host"}, ticks
            if not engine.run_until_idle():
                wake = engine.next_wake()
                if wake is None:
                    view = engine.get_session(sid)
                    if view.paused and not pending and view.state not in FINAL:
                        engine.resume(sid)  # the admin lets it finish
                        paused_since = None
                        continue
                    if not pending:
                        break
                else:
                    clock.advance_to(max(wake, clock.now()))
            ticks += 1
            assert ticks < 2_000
        view = engine.get_session(sid)
        engine.close()
    assert view.state == ("MAINTENANCE_CANCELLED" if cancelled else "MAINTENANCE_DONE")
    assert all(cloud.is_enabled(h) for h in ("cmp-0", "cmp-1", "cmp-2"))
    assert violations(cloud) == []
