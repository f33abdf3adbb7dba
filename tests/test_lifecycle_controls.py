"""Host lifecycle and operational controls together: retired, removed and
added hosts under caps, settle delays and windows; the decommission capacity
check by placement; polling and escalation over waits of days (SimClock)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Recorder, fill
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fenix_core import ActionSpec, Engine, SessionRequest, hookimpl
from fenix_core.clock import Clock, SimClock
from fenix_core.constraints import ConstraintSet, GroupConstraints, InstanceConstraints
from fenix_core.controls import Controls, window_occurrences
from fenix_core.errors import InvalidInput
from fenix_core.hookspecs import Action, ActionContext
from fenix_core.model import Host, Instance, OperationStatus, SessionView
from fenix_core.operations import poll_interval, record_status
from fenix_core.planner import capacity_shortfall
from fenix_core.store.schema import OperationRow
from fenix_core.testing import ScriptedManager, SimulatedCloud, TimedAction, violations

FINAL = ("MAINTENANCE_DONE", "MAINTENANCE_FAILED", "MAINTENANCE_CANCELLED")
TARGETS = ("ADDING", "ADDED")


def drive(
    engine: Engine, clock: SimClock, sid: str, *, until: datetime | None = None
) -> tuple[SessionView, int]:
    """Run on simulated time until the session ended and settled (or ``until``);
    return the view and the number of session steps taken."""
    steps = 0
    while True:
        steps += engine.run_until_idle(max_steps=10_000)
        view = engine.get_session(sid)
        wake = engine.next_wake()
        if wake is None or (until is not None and wake > until):
            return view, steps
        clock.wait(wake, threading.Event())


def spans(cloud: SimulatedCloud, view: SessionView) -> dict[str, tuple[datetime, datetime]]:
    """Per host that was worked on: from its first touch (a migration off it,
    or its disable) to when its work ended (maintained, retired, removed) or,
    for a host whose drain the session gave up (it failed), to when the
    session put it back in service."""
    touched: dict[str, datetime] = {}
    enabled: dict[str, datetime] = {}
    for e in cloud.events:
        if e.kind in ("migration_started", "disable_host") and e.host not in touched:
            touched[str(e.host)] = e.time
        elif e.kind == "enable_host":
            enabled[str(e.host)] = e.time
    out = {}
    for host in view.hosts:
        if host.name in touched:
            end = host.finished_at
            if end is None:
                assert view.state == "MAINTENANCE_FAILED", host
                end = enabled.get(host.name, view.updated_at)
            out[host.name] = (touched[host.name], end)
    return out


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    edges = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals])
    now = top = 0
    for _, delta in edges:  # an end at t sorts before a start at t
        now += delta
        top = max(top, now)
    return top


def assert_counted_once(view: SessionView) -> None:
    """Every host of the session's work in exactly one count of the progress."""
    progress = view.progress
    assert progress is not None
    work = [h for h in view.hosts if h.state not in TARGETS]
    states = [h.state for h in work]
    counts = (
        progress.hosts_done,
        progress.hosts_in_progress,
        progress.hosts_waiting,
        progress.hosts_skipped,
        progress.hosts_removed,
        progress.hosts_failed,
    )
    assert sum(counts) == len(work), (counts, states)
    assert progress.hosts_done == states.count("MAINTAINED") + states.count("DECOMMISSIONED")
    assert progress.hosts_removed == states.count("REMOVED")
    assert progress.hosts_skipped == states.count("SKIPPED")
    if view.state in FINAL:
        assert progress.hosts_in_progress == 0
    done = {h.name for h in work if h.state in ("MAINTAINED", "DECOMMISSIONED")}
    assert set(progress.durations) <= done | {h.name for h in work if h.state == "SKIPPED"}


# --------------------------------------------------------------------------- finished work


def test_a_paced_decommission_of_two_hosts_ends_and_settles(fenix_cloud, fenix_clock):
    fill(
        fenix_cloud,
        {"cmp-0": [("vm-1", "web", 2)], "cmp-1": [("vm-2", "web", 2)], "cmp-2": [], "cmp-3": []},
    )
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, TimedAction("wipe", 600)])
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0", "cmp-1"],
            workflow="decommission",
            actions=[ActionSpec("wipe", "host")],
            controls={"max_hosts_in_maintenance": 1, "settle_seconds": 300},
        )
    )
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert [h.state for h in view.hosts] == ["DECOMMISSIONED", "DECOMMISSIONED"]
    progress = view.progress
    assert progress is not None
    assert (progress.hosts_done, progress.hosts_in_progress, progress.hosts_waiting) == (2, 0, 0)
    assert set(progress.durations) == {"cmp-0", "cmp-1"}
    assert all(d >= 600 for d in progress.durations.values())
    worked = sorted(spans(fenix_cloud, view).values())
    assert len(worked) == 2
    assert most_at_once(worked) == 1
    assert worked[1][0] >= worked[0][1] + timedelta(seconds=300)  # settled after a retirement
    assert_counted_once(view)


def test_a_host_removed_in_maintenance_frees_its_place_and_the_next_settles(
    fenix_cloud, fenix_clock
):
    fill(fenix_cloud, {f"cmp-{i}": [] for i in range(4)})
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 600)])
    sid = engine.create_session(
        SessionRequest(
            actions=[ActionSpec("upgrade", "host")],
            controls={"max_hosts_in_maintenance": 1, "settle_seconds": 120},
        )
    )
    removed_at: list[datetime] = []

    def pull_the_plug() -> None:  # cmp-0, the first host, is in its upgrade
        fenix_cloud.remove_host("cmp-0")
        engine.refresh_inventory()
        removed_at.append(fenix_clock.now())

    fenix_clock.call_later(300, pull_the_plug)
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert {h.name: h.state for h in view.hosts} == {
        "cmp-0": "REMOVED",
        "cmp-1": "MAINTAINED",
        "cmp-2": "MAINTAINED",
        "cmp-3": "MAINTAINED",
    }
    progress = view.progress
    assert progress is not None
    assert (progress.hosts_done, progress.hosts_removed, progress.hosts_in_progress) == (3, 1, 0)
    assert set(progress.durations) == {"cmp-1", "cmp-2", "cmp-3"}  # the lost one is not measured
    worked = spans(fenix_cloud, view)
    assert worked["cmp-1"][0] >= removed_at[0] + timedelta(seconds=120)
    assert most_at_once(list(worked.values())) == 1
    assert_counted_once(view)


@pytest.mark.parametrize("managed", [False, True])
@pytest.mark.parametrize("policy", [None, "wait_and_notify", "skip_host", "fail"])
def test_a_host_removed_during_its_action_is_a_removal_not_a_failure(
    policy, managed, fenix_cloud, fenix_clock
):
    fill(fenix_cloud, {"cmp-0": [], "cmp-1": [("vm-1", "web", 2)], "cmp-2": []})
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 600)])
    manager = ScriptedManager(engine, "web", cloud=fenix_cloud) if managed else None
    escalation = {"host_up": policy, "action": policy} if policy else {}
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0", "cmp-1"],
            actions=[ActionSpec("upgrade", "host")],
            controls={"escalation": escalation, "max_hosts_in_maintenance": 1},
        )
    )
    fenix_clock.call_later(300, lambda: fenix_cloud.remove_host("cmp-0"))  # no refresh
    view = engine.run_until_done(sid)
    if manager is not None:
        manager.close()
        assert manager.errors == []
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.host("cmp-0").state == "REMOVED"
    assert (view.host("cmp-0").reason or "").startswith("removed from the cloud")
    assert view.host("cmp-1").state == "MAINTAINED"
    assert view.stuck == ()
    assert_counted_once(view)
    assert violations(fenix_cloud) == []


def test_a_host_added_before_a_scale_in_spares_the_round(
    fenix_cloud, fenix_clock, recorder_factory
):
    # cmp-0 is empty but too small for vm-1: once it is maintained, nothing can
    # take vm-1, unless the host racked during cmp-0's upgrade is seen first.
    fenix_cloud.add_host("cmp-0", vcpus=2)
    fenix_cloud.add_host("cmp-1", vcpus=4)
    fenix_cloud.add_instance("vm-1", "web", "cmp-1", vcpus=4)
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 600)])
    recorder = recorder_factory(engine)
    web = ScriptedManager(engine, "web", cloud=fenix_cloud)
    sid = engine.create_session(
        SessionRequest(hosts=["cmp-0", "cmp-1"], actions=[ActionSpec("upgrade", "host")])
    )
    fenix_clock.call_later(300, lambda: fenix_cloud.add_host("cmp-9", vcpus=4))
    view = engine.run_until_done(sid)
    web.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert "SCALE_IN" not in recorder.session_states()
    assert "SCALE_IN" not in web.states
    assert fenix_cloud.host_of("vm-1") == "cmp-9"
    assert view.host("cmp-9").state == "ADDED"


# --------------------------------------------------------------------------- capacity


def test_decommission_capacity_is_checked_by_placement_not_by_sums(fenix_cloud, fenix_clock):
    fenix_cloud.add_host("big", vcpus=8)
    for name in ("s-0", "s-1", "s-2"):
        fenix_cloud.add_host(name, vcpus=4)
    fenix_cloud.add_instance("vm-big", "web", "big", vcpus=6)
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud])
    before = list(fenix_cloud.events)
    with pytest.raises(InvalidInput) as info:
        engine.create_session(SessionRequest(decommission_hosts=["big"]))
    assert info.value.field == "decommission_hosts"
    assert str(info.value.reason) == (
        "retiring big leaves no host with room for instance vm-big (6 vcpus): "
        "the most free on one host that stays is 4 vcpus"
    )
    with pytest.raises(InvalidInput) as info:
        engine.create_session(SessionRequest(hosts=["big"], workflow="decommission"))
    assert info.value.field == "hosts"
    assert engine.list_sessions() == []
    assert fenix_cloud.events == before  # nothing touched
    # A spare host with room makes it possible.
    fenix_cloud.add_host("s-9", vcpus=8, enabled=False)
    sid = engine.create_session(SessionRequest(decommission_hosts=["big"], add_hosts=["s-9"]))
    view = engine.run_until_done(sid)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert fenix_cloud.host_of("vm-big") == "s-9"


def test_decommission_capacity_keeps_anti_affinity(fenix_cloud, fenix_clock):
    fill(fenix_cloud, {f"cmp-{i}": [(f"db-{i}", "db", 1)] for i in range(3)})
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud])
    # Plenty of vcpus: without constraints, retiring one host is fine.
    free = engine.create_session(SessionRequest(decommission_hosts=["cmp-0"]))
    engine.cancel(free)
    assert engine.run_until_done(free).state == "MAINTENANCE_CANCELLED"
    group = {"group_id": "db-ring", "project_id": "db", "anti_affinity_group": True}
    for i in range(3):
        engine.set_instance_constraints(
            {"instance_id": f"db-{i}", "project_id": "db", "group_id": "db-ring"}, group=group
        )
    with pytest.raises(InvalidInput) as info:
        engine.create_session(SessionRequest(decommission_hosts=["cmp-0"]))
    assert info.value.field == "decommission_hosts"
    assert "instance db-0 (1 vcpus)" in info.value.reason
    assert "group db-ring" in info.value.reason


def _hosts(**vcpus: int) -> list[Host]:
    return [Host(name, vcpus=v) for name, v in vcpus.items()]


def test_capacity_shortfall_places_the_largest_first() -> None:
    hosts = _hosts(old=8, a=4, b=4)
    # 3 + 3 vcpus leave the retired host; a and b have 3 free each: one on each.
    instances = [
        Instance("x", "p", "old", 3),
        Instance("y", "p", "old", 3),
        Instance("z", "p", "a", 1),
        Instance("w", "p", "b", 1),
    ]
    assert capacity_shortfall(hosts, instances, ["old"], ConstraintSet()) is None
    too_big = [*instances, Instance("v", "p", "old", 1)]  # 9 vcpus of load on 8: totals
    assert capacity_shortfall(hosts, too_big, ["old"], ConstraintSet()) == (
        "retiring old leaves 8 vcpus on the other compute hosts for 9 vcpus of instances"
    )
    fragmented = [Instance("x", "p", "old", 4), Instance("z", "p", "a", 1)]
    why = capacity_shortfall(_hosts(old=8, a=4, b=2, c=2), fragmented, ["old"], ConstraintSet())
    assert why is not None
    assert "instance x (4 vcpus)" in why
    assert "is 3 vcpus" in why
    # Capacity unknown somewhere: cannot tell, so no refusal.
    unknown = [*_hosts(old=8, a=1), Host("u", vcpus=0)]
    assert capacity_shortfall(unknown, fragmented, ["old"], ConstraintSet()) is None
    # A host out of service takes nothing.
    disabled = [Host("old", vcpus=8), Host("a", vcpus=8, enabled=False), Host("b", vcpus=2)]
    assert capacity_shortfall(disabled, fragmented, ["old"], ConstraintSet()) is not None


def test_capacity_shortfall_keeps_per_host_limits() -> None:
    group = GroupConstraints(group_id="g", project_id="p", max_instances_per_host=2)
    members = [
        InstanceConstraints(instance_id=i, project_id="p", group_id="g")
        for i in ("m1", "m2", "m3", "m4", "m5")
    ]
    cs = ConstraintSet.of(groups=[group], instances=members)
    hosts = _hosts(old=8, a=8, b=8)
    placed = [
        Instance("m1", "p", "old", 1),
        Instance("m2", "p", "a", 1),
        Instance("m3", "p", "a", 1),
        Instance("m4", "p", "b", 1),
    ]
    assert capacity_shortfall(hosts, placed, ["old"], cs) is None  # b has room for one more
    crowded = [*placed, Instance("m5", "p", "b", 1)]
    why = capacity_shortfall(hosts, crowded, ["old"], cs)
    assert why is not None
    assert "2 member(s) of its group g" in why


# --------------------------------------------------------------------------- waits of days


class Firmware:
    """A host action that takes ``days`` and says to look again in an hour;
    counts how often it is asked."""

    def __init__(self, days: float) -> None:
        self.name = "firmware"
        self.seconds = days * 86400
        self.polls = 0
        self.starts = 0
        self.started: dict[str, datetime] = {}

    @hookimpl
    def fenix_actions(self, clock: Clock) -> list[Action]:
        return [self]

    def start(self, context: ActionContext) -> OperationStatus:
        self.starts += 1
        self.started.setdefault(context.key, context.now)
        return self.poll(context)

    def poll(self, context: ActionContext) -> OperationStatus:
        self.polls += 1
        if context.now >= self.started[context.key] + timedelta(seconds=self.seconds):
            return OperationStatus.done(context.host)
        return OperationStatus.running(retry_after=3600, detail="flashing")


@given(polls=st.integers(min_value=0, max_value=10**12))
def test_the_poll_interval_is_bounded_for_any_number_of_polls(polls: int) -> None:
    wait = poll_interval(polls)
    assert 5.0 <= wait <= 60.0
    assert poll_interval(polls + 1) >= wait


@given(
    days=st.integers(min_value=1, max_value=60),
    hint=st.one_of(
        st.none(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.floats(min_value=0, max_value=1e300),
    ),
)
def test_polling_over_a_long_span_costs_one_poll_a_minute_at_most(
    days: int, hint: float | None
) -> None:
    """Jump to the poll number a long wait reaches: the next poll is always
    set, in the future (no spin), and at most a day away even if a plug-in
    asks for more (or for nonsense)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    op = OperationRow(kind="watch", status="running", polls=days * 1440, params={}, result={})
    now = start + timedelta(days=days)
    record_status(op, OperationStatus.running(retry_after=hint), now)
    assert op.next_poll is not None
    wait = (op.next_poll - now).total_seconds()
    assert 0 <= wait <= 86400
    if hint is None or hint != hint or hint in (float("inf"), float("-inf")):
        assert wait == 60.0  # at the cap: a day costs 1,440 polls


def test_a_session_that_keeps_raising_after_it_failed_stops_instead_of_spinning(
    fenix_cloud, fenix_clock, monkeypatch
):
    """Defence in depth: an operation whose every poll breaks the engine
    fails the session once, then is no longer followed. The break is in the
    core's bookkeeping of an operation's status (core/operations.record,
    where today's engine had record_status)."""
    import fenix_core.core.operations as operations_module

    real = operations_module.record

    def broken(ws: Any, key: str, status: Any, now: datetime, **also: Any) -> None:
        op = ws.ops[key]
        if op.kind == "host_up" and op.status == "running":  # its polls, not its start
            raise RuntimeError("broken bookkeeping")
        real(ws, key, status, now, **also)

    monkeypatch.setattr(operations_module, "record", broken)
    fill(fenix_cloud, {"cmp-0": [], "cmp-1": []})
    fenix_cloud.host_stays_down("cmp-0")
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud])
    sid = engine.create_session(SessionRequest(hosts=["cmp-0"]))
    view, steps = drive(engine, fenix_clock, sid)
    assert view.state == "MAINTENANCE_FAILED"
    assert "broken bookkeeping" in str(view.reason)
    assert steps < 20
    assert engine.next_wake() is None


@pytest.mark.no_cover
@pytest.mark.parametrize("policy", [None, "wait_and_notify", "skip_host", "fail"])
def test_a_thirty_day_wait_under_each_escalation_policy(policy, fenix_cloud, fenix_clock):
    """A host action that takes 30 days: waited for with wait_and_notify (a
    one-day deadline, renewed), or escalated at a 30-day deadline. Each poll
    costs one step; nothing spins, nothing overflows."""
    fill(fenix_cloud, {"cmp-0": [], "cmp-1": []})
    firmware = Firmware(days=30)
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, firmware])
    recorder = Recorder(engine)
    deadline = 86400 if policy == "wait_and_notify" else 30 * 86400 - 3600
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0"],
            actions=[ActionSpec("firmware", "host")],
            timeouts={"action": deadline},
            controls={"escalation": {"action": policy} if policy else {}},
        )
    )
    start = fenix_clock.now()
    view, steps = drive(engine, fenix_clock, sid)
    recorder.close()
    waited = fenix_clock.now() - start
    assert timedelta(days=29) < waited <= timedelta(days=30, hours=2)
    hours = waited.total_seconds() / 3600
    assert firmware.polls <= hours + 2  # one poll an hour, as the plug-in asked
    assert steps <= firmware.polls + 30 + 20  # a step per poll, per renewal, a few more
    notices = [p for p in recorder.of("maintenance_session") if "is stuck" in str(p.get("reason"))]
    if policy == "wait_and_notify":
        assert view.state == "MAINTENANCE_DONE", view.reason
        assert view.host("cmp-0").state == "MAINTAINED"
        assert 28 <= len(notices) <= 30  # one a day
        assert view.stuck == ()
    elif policy == "skip_host":
        assert view.state == "MAINTENANCE_DONE", view.reason
        assert view.host("cmp-0").state == "SKIPPED"
        assert not fenix_cloud.is_enabled("cmp-0")
    else:
        assert view.state == "MAINTENANCE_FAILED"
        assert "firmware" in str(view.reason)
    assert_counted_once(view)


DAY = 86400


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[Engine, Recorder]] = []

    def go(policy: str | None, days: float = 3.5) -> tuple[Any, Recorder, Firmware, timedelta]:
        clock = SimClock()
        cloud = SimulatedCloud(clock=clock)
        fill(cloud, {"cmp-0": [], "cmp-1": []})
        firmware = Firmware(days)
        engine = Engine(
            f"sqlite:///{tmp_path / 'fenix.db'}",
            clock=clock,
            plugins=[cloud, firmware],
            load_entry_points=False,
        )
        recorder = Recorder(engine)  # type: ignore[arg-type]
        made.append((engine, recorder))
        sid = engine.create_session(
            SessionRequest(
                hosts=["cmp-0"],
                actions=[ActionSpec("firmware", "host")],
                timeouts={"action": DAY},
                controls={"escalation": {"action": policy} if policy else {}},
            )
        )
        start = clock.now()
        view = engine.run_until_done(sid)
        return view, recorder, firmware, clock.now() - start

    yield go
    for engine, recorder in made:
        recorder.close()
        engine.close()


def stuck_notices(recorder: Recorder) -> list[str]:
    return [
        str(p["reason"])
        for p in recorder.of("maintenance_session")
        if "is stuck" in str(p.get("reason"))
    ]


def test_wait_and_notify_renews_the_deadline_and_tells_the_admin_each_time(run: Any) -> None:
    view, recorder, firmware, waited = run("wait_and_notify")
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.host("cmp-0").state == "MAINTAINED"
    assert timedelta(days=3.5) <= waited <= timedelta(days=3.5, hours=2)
    notices = stuck_notices(recorder)
    assert len(notices) == 3  # a day, two days, three days: then it is done
    assert notices[0] == (
        f"action 'firmware' on cmp-0 is stuck: timed out after {DAY} s (flashing); still waiting"
    )
    assert firmware.starts == 1  # followed on, never started again
    assert firmware.polls <= 3.5 * 24 + 6  # about one poll an hour, as the plug-in asked


@pytest.mark.parametrize("policy", [None, "fail"])
def test_without_wait_and_notify_the_deadline_ends_the_work(run: Any, policy: str | None) -> None:
    view, recorder, _firmware, waited = run(policy)
    assert view.state == "MAINTENANCE_FAILED"
    assert "firmware" in str(view.reason)
    assert waited < timedelta(days=1, hours=2)
    assert not any(n.endswith("still waiting") for n in stuck_notices(recorder))


def test_work_that_ends_before_its_deadline_is_not_stuck(run: Any) -> None:
    view, recorder, _firmware, _ = run("wait_and_notify", days=0.5)
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert stuck_notices(recorder) == []


@pytest.mark.no_cover
@pytest.mark.parametrize("kind", ["own_action", "host_up"])
def test_waiting_past_the_back_off_overflow_at_the_60_s_cap(kind, fenix_cloud, fenix_clock):
    """About 1,750 polls (29 h at 60 s) once overflowed the back-off: an
    OWN_ACTION never carried out, a host that stays down, both waited for
    (wait_and_notify) for 31 hours at one poll a minute, then resolved."""
    fill(fenix_cloud, {"cmp-0": [("vm-1", "web", 2)] if kind == "own_action" else [], "cmp-1": []})
    if kind == "host_up":
        fenix_cloud.host_stays_down("cmp-0")
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud])
    # cloud=None: the manager chooses OWN_ACTION and never moves its instance.
    manager = ScriptedManager(engine, "web", cloud=None, action="OWN_ACTION")
    sid = engine.create_session(
        SessionRequest(
            hosts=["cmp-0"],
            timeouts={kind: 6 * 3600},
            controls={"escalation": {kind: "wait_and_notify"}},
        )
    )
    start = fenix_clock.now()
    hours = 31
    view, steps = drive(engine, fenix_clock, sid, until=start + timedelta(hours=hours))
    assert view.state not in FINAL, view.reason
    assert [s.kind for s in view.stuck] == [kind]
    assert steps <= hours * 60 + 60  # at most one step a minute, and a few more
    if kind == "own_action":
        fenix_cloud.relocate("vm-1", "cmp-1")  # the manager did it after all
    else:
        fenix_cloud.remove_host("cmp-0")  # the host never came back: written off
    view, _ = drive(engine, fenix_clock, sid)
    manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    assert view.stuck == ()
    assert_counted_once(view)


# --------------------------------------------------------------------------- everything at once


def test_decommission_removal_and_addition_with_caps_settle_and_windows(
    fenix_cloud, fenix_clock, recorder_factory
):
    layout = {f"cmp-{i}": [(f"vm-{i}", "web" if i % 2 else "db", 2)] for i in range(6)}
    fill(fenix_cloud, layout)
    engine = Engine(clock=fenix_clock, plugins=[fenix_cloud, TimedAction("upgrade", 1800)])
    recorder = recorder_factory(engine)
    managers = [ScriptedManager(engine, p, cloud=fenix_cloud) for p in ("web", "db")]
    controls = {
        "windows": [{"start": "22:00", "end": "04:00"}],
        "max_hosts_in_maintenance": 2,
        "settle_seconds": 600,
        "host_seconds": 2400,
    }
    sid = engine.create_session(
        SessionRequest(
            decommission_hosts=["cmp-1", "cmp-4"],
            actions=[ActionSpec("upgrade", "host")],
            controls=controls,
            maintenance_at=fenix_clock.now() + timedelta(hours=22),  # 22:00, a window opens
        )
    )
    begin = fenix_clock.now() + timedelta(hours=22)
    fenix_clock.call_at(begin + timedelta(minutes=50), lambda: fenix_cloud.remove_host("cmp-3"))
    fenix_clock.call_at(begin + timedelta(hours=1), lambda: fenix_cloud.add_host("cmp-9", vcpus=8))
    view, _ = drive(engine, fenix_clock, sid)
    for manager in managers:
        manager.close()
    assert view.state == "MAINTENANCE_DONE", view.reason
    states = {h.name: h.state for h in view.hosts}
    assert states["cmp-1"] == states["cmp-4"] == "DECOMMISSIONED"
    assert states["cmp-3"] == "REMOVED"
    assert states["cmp-9"] == "ADDED"
    assert {states[h] for h in ("cmp-0", "cmp-2", "cmp-5")} == {"MAINTAINED"}
    worked = spans(fenix_cloud, view)
    assert most_at_once(list(worked.values())) <= 2
    finishes = sorted(end for _, end in worked.values())
    parsed = Controls.from_dict(controls)
    for host, (start, end) in worked.items():
        if states[host] == "REMOVED":
            continue
        # Started inside a window that the host's work fits in.
        assert any(
            opens <= start and end <= closes
            for opens, closes in window_occurrences(parsed, start - timedelta(days=1), end)
        ), (host, start, end)
        before = [f for f in finishes if f <= start]
        if before:
            assert start >= before[-1] + timedelta(seconds=600), host
    assert_counted_once(view)
    removed = [(h, s) for _, h, s in recorder.host_log() if s == "HOST_REMOVED"]
    assert sorted(removed) == [
        ("cmp-1", "HOST_REMOVED"),
        ("cmp-3", "HOST_REMOVED"),
        ("cmp-4", "HOST_REMOVED"),
    ]
    assert violations(fenix_cloud) == []


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    hosts=st.integers(min_value=3, max_value=6),
    sizes=st.lists(st.integers(min_value=0, max_value=3), min_size=6, max_size=6),
    cap=st.sampled_from([None, 1, 2, 3]),
    settle=st.sampled_from([0, 300]),
    retire=st.sets(st.integers(min_value=0, max_value=5), max_size=2),
    removals=st.lists(
        st.tuples(st.integers(min_value=0, max_value=5), st.integers(0, 4000), st.booleans()),
        max_size=2,
    ),
)
def test_pacing_with_lifecycle_property(
    hosts: int,
    sizes: list[int],
    cap: int | None,
    settle: int,
    retire: set[int],
    removals: list[tuple[int, int, bool]],
) -> None:
    """Random caps, retirements and removals: every session ends, the cap is
    never exceeded, every host is counted exactly once in the final view."""
    clock = SimClock()
    cloud = SimulatedCloud()
    names = [f"cmp-{i}" for i in range(hosts)]
    for i, name in enumerate(names):
        cloud.add_host(name, vcpus=8)
        if sizes[i]:
            cloud.add_instance(f"vm-{i}", f"p{i % 2}", name, vcpus=sizes[i])
    engine = Engine(
        clock=clock, plugins=[cloud, TimedAction("upgrade", 900)], load_entry_points=False
    )
    managers = [ScriptedManager(engine, p, cloud=cloud) for p in ("p0", "p1")]
    try:
        try:
            sid = engine.create_session(
                SessionRequest(
                    decommission_hosts=[names[i] for i in sorted(retire) if i < hosts],
                    actions=[ActionSpec("upgrade", "host")],
                    controls={"max_hosts_in_maintenance": cap, "settle_seconds": settle},
                )
            )
        except InvalidInput:
            assume(False)  # no room for the instances of the retired hosts
        doomed: set[str] = set()
        for index, at, evacuate in removals:
            name = names[index % hosts]
            if name in doomed:
                continue
            doomed.add(name)

            def remove(name: str = name, evacuate: bool = evacuate) -> None:
                alive = [h.name for h in cloud.list_hosts() if h.name != name]
                if name in {h.name for h in cloud.list_hosts()} and alive:
                    cloud.remove_host(name, evacuate_to=alive[0] if evacuate else None)

            clock.call_later(at, remove)
        view, steps = drive(engine, clock, sid)
        assert view.state in FINAL
        assert engine.next_wake() is None
        assert steps < 5000
        if cap is not None:
            assert most_at_once(list(spans(cloud, view).values())) <= cap
        assert_counted_once(view)
        if view.state == "MAINTENANCE_DONE":
            assert {h.state for h in view.hosts} <= {
                "MAINTAINED",
                "DECOMMISSIONED",
                "REMOVED",
                "ADDED",
            }
    finally:
        for manager in managers:
            manager.close()
        engine.close()
