"""Engine (fenix_core.engine): the redesigned core running whole
rolling sessions end to end on a SQLite file, with the SimulatedCloud, the
scripted managers (replies from inside the notification handlers) and the
notifications of today's signals. The expectations are today's engine's
(tests/test_rolling.py) wherever the v2 rolling workflow implements the
feature; plus what the core promises: one commit per step, every
notification delivered once in seq order."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill
from sqlalchemy import event

from fenix_core import ActionSpec, Engine, SessionRequest, signals
from fenix_core.clock import SimClock
from fenix_core.contract import SessionContext
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
WORKFLOWS = {"rolling": RollingWorkflow}

Factory = Callable[..., Engine]


def timed_actions() -> dict[str, TimedAction]:
    return {
        "prep": TimedAction("prep", 60),
        "upgrade": TimedAction("upgrade", 600),
        "firmware": TimedAction("firmware", 300),
        "bios": TimedAction("bios", 120),
        "ctlpatch": TimedAction("ctlpatch", 200),
        "report": TimedAction("report", 30),
    }


@pytest.fixture
def clock() -> SimClock:
    return SimClock()


@pytest.fixture
def cloud(clock: SimClock) -> SimulatedCloud:
    return SimulatedCloud(clock=clock)


@pytest.fixture
def core(tmp_path: Path, clock: SimClock, cloud: SimulatedCloud) -> Iterator[Factory]:
    made: list[Engine] = []

    def make(*plugins: object, workflows: Any = WORKFLOWS, **kwargs: Any) -> Engine:
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=clock,
            plugins=[cloud, *plugins],
            workflows=workflows,
            **kwargs,
        )
        made.append(engine)
        return engine

    yield make
    for engine in made:
        engine.close()


class Commits:
    """Commits sent to the engine's database, and the steps' fenced writes
    among the statements (the UPDATE of session_clock that opens each)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.step_writes = 0
        event.listen(engine.database, "commit", self._commit)
        event.listen(engine.database, "before_cursor_execute", self._statement)

    def _commit(self, *_: Any) -> None:
        self.count += 1

    def _statement(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.startswith("UPDATE session_clock SET version"):
            self.step_writes += 1


@pytest.fixture
def full_run(cloud: SimulatedCloud, core: Factory) -> Any:
    fill(cloud, LAYOUT, controllers=1)
    actions = timed_actions()
    engine = core(*actions.values())
    recorder = Recorder(engine)  # type: ignore[arg-type]
    managers = {
        "pa": ScriptedManager(engine, "pa", cloud=cloud, action="LIVE_MIGRATE"),  # type: ignore[arg-type]
        "pb": ScriptedManager(engine, "pb", cloud=cloud, action="MIGRATE"),  # type: ignore[arg-type]
    }
    sid = engine.create_session(
        SessionRequest(actions=ACTIONS, metadata={"openstack_version": "2026.2"})
    )
    view = engine.run_until_done(sid)
    yield view, recorder, actions, managers, cloud
    recorder.close()


def test_session_completes_with_every_host_maintained(full_run: Any) -> None:
    view, recorder, *_ = full_run
    assert (view.state, view.reason, view.percent_done) == ("MAINTENANCE_DONE", None, 100)
    assert {h.name: h.state for h in view.hosts} == dict.fromkeys(
        ["ctl-0", "cmp-0", "cmp-1", "cmp-2", "cmp-3"], "MAINTAINED"
    )
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


def test_each_project_gets_the_exact_notification_sequence(full_run: Any) -> None:
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
    assert recorder.project_states("pc") == []  # no manager: moved without a word
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
    for manager in managers.values():
        assert manager.errors == []


def effects(cloud: SimulatedCloud) -> list[Any]:
    """What the session did to the cloud (the fleet's setup left out)."""
    return [e for e in cloud.events if e.kind not in ("host_added", "instance_added")]


def test_no_instance_lands_on_a_disabled_or_full_host(full_run: Any) -> None:
    *_, cloud = full_run
    assert violations(cloud) == []
    toggles = [(e.kind, e.host) for e in cloud.events if e.kind in ("disable_host", "enable_host")]
    for host in ("cmp-0", "cmp-1", "cmp-2", "cmp-3"):
        assert toggles.count(("disable_host", host)) == 1
        assert toggles.count(("enable_host", host)) == 1
        assert toggles.index(("disable_host", host)) < toggles.index(("enable_host", host))
    assert ("disable_host", "ctl-0") not in toggles


def test_every_instance_moves_exactly_once_when_a_spare_host_exists(full_run: Any) -> None:
    *_, cloud = full_run
    moved = migrations_per_instance(cloud)
    assert dict(moved) == {i: 1 for host in LAYOUT.values() for i, _, _ in host}


def test_actions_run_once_per_host_in_type_then_order_then_name_order(full_run: Any) -> None:
    _, _, actions, _, _ = full_run
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
    assert actions["upgrade"].hosts == ["ctl-0", "cmp-3", "cmp-0", "cmp-1", "cmp-2"]


def test_maintenance_host_brackets_every_host(full_run: Any) -> None:
    _, recorder, *_ = full_run
    hosts = ["ctl-0", "cmp-3", "cmp-0", "cmp-1", "cmp-2"]
    assert [(h, s) for _, h, s in recorder.host_log()] == [
        (h, s) for h in hosts for s in ("IN_MAINTENANCE", "MAINTENANCE_COMPLETE")
    ]
    for payload in recorder.of("maintenance_host"):
        assert set(payload) == {"service", "session_id", "host", "state", "project_id", "seq"}


# --------------------------------------------------------------------------- the core's promises


def test_each_step_is_one_commit(cloud: SimulatedCloud, core: Factory) -> None:
    """A step commits once; the only other commits are the lease's claim,
    once, the final delivery watermark, and the replies (each its own
    transaction here: one sender at a time). The cloud and the action say when their operations end
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
    assert commits.count == commits.step_writes + len(manager.sent) + 1
    # ... and, once the session has ended, the watermark of what its last
    # step delivered (no later step carries it).
    assert commits.step_writes == steps + 1


def test_a_failed_migration_is_retried_and_the_session_completes(
    cloud: SimulatedCloud, core: Factory
) -> None:
    fill(cloud, LAYOUT)
    engine = core()
    ScriptedManager(engine, "pa", cloud=cloud)  # type: ignore[arg-type]
    cloud.fail_next_migration("vm-a1", error="no valid host was found")
    view = engine.run_until_done(engine.create_session(SessionRequest()))
    assert view.state == "MAINTENANCE_DONE"
    failed = [e for e in cloud.events if e.kind == "migration_failed"]
    assert [(e.instance_id, e.detail) for e in failed] == [("vm-a1", "no valid host was found")]
    assert migrations_per_instance(cloud)["vm-a1"] == 1
    assert violations(cloud) == []


def test_nack_maintenance_fails_the_session_naming_project_and_state(
    cloud: SimulatedCloud, core: Factory
) -> None:
    fill(cloud, LAYOUT)
    engine = core()
    ScriptedManager(engine, "pa", cloud=cloud, nack={"MAINTENANCE"})  # type: ignore[arg-type]
    view = engine.run_until_done(engine.create_session(SessionRequest(reply_policy="fail")))
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "project pa answered NACK_MAINTENANCE"
    assert effects(cloud) == []
    assert view.projects["pa"] == "NACK_MAINTENANCE"


def test_action_plugin_failure_fails_the_session(cloud: SimulatedCloud, core: Factory) -> None:
    fill(cloud, LAYOUT)
    upgrade = TimedAction("upgrade", 300, fail_on={"cmp-3"})
    engine = core(upgrade)
    view = engine.run_until_done(
        engine.create_session(SessionRequest(actions=[ActionSpec("upgrade", "host")]))
    )
    assert view.state == "MAINTENANCE_FAILED"
    assert view.reason == "host action 'upgrade' failed on cmp-3: upgrade failed on cmp-3"
    assert view.host("cmp-3").state == "FAILED"


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


def test_a_receiver_may_reply_from_inside_its_handler(cloud: SimulatedCloud, core: Factory) -> None:
    fill(cloud, LAYOUT)
    engine = core()
    engine.subscribe("pa")
    seen: list[str] = []

    def manager(sender: Engine, payload: dict[str, Any]) -> None:
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
    assert (seen[0], seen[-1]) == ("MAINTENANCE", "MAINTENANCE_COMPLETE")
    assert Counter(seen)["PLANNED_MAINTENANCE"] == 3


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
