"""Disruption budgets on both engines: percent caps, topology caps and windows
with their own budgets hold at every instant under today's Engine and under
Engine (the shared host pipeline), with hypothesis over fleets, zones,
racks and caps (tests/test_budgets.py's property, run on both). On Engine
two workflows run: the v2 rolling workflow, and a contract workflow that
takes every host the pipeline admits at once, so the caps are what holds it
back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from test_budgets import _cloud, _engine, _most_domains_at_once
from test_lifecycle_controls import drive, most_at_once, spans

from fenix_core import ActionSpec, Engine, SessionRequest
from fenix_core.budgets import Percent, resolve_cap
from fenix_core.clock import SimClock
from fenix_core.contract import (
    ComponentState,
    OpResult,
    OpStatus,
    RunAction,
    SessionContext,
    Workflow,
)
from fenix_core.states import HostState, SessionState
from fenix_core.store.schema import HostRow
from fenix_core.testing import SimulatedCloud, TimedAction
from fenix_core.workflows.rolling import RollingWorkflow

Span = tuple[datetime, datetime]


@attrs.define(slots=True)
class BatchState(ComponentState):
    component = "batch"
    running: dict[str, str] = attrs.field(factory=dict)  # operation key -> host


class Batch(Workflow):
    """Every pending host the pipeline admits starts at once (one host action
    each): only the session's caps and windows limit how many run."""

    name = "batch"
    action_types = ("host",)
    state = BatchState

    def start(self, ctx: SessionContext) -> None:
        ctx.transition(SessionState.START_MAINTENANCE)

    def advance(self, ctx: SessionContext) -> None:
        me = ctx.state_of(BatchState)
        if ctx.session.state is not SessionState.START_MAINTENANCE:
            return
        pending = list(ctx.hosts.in_state(HostState.PENDING))
        if not pending and not me.running:
            ctx.transition(SessionState.MAINTENANCE_COMPLETE)
            ctx.transition(SessionState.MAINTENANCE_DONE)
            return
        for host in pending:  # a host refused (its zone) does not stop the others
            if not ctx.admit(host.name).admitted:
                continue
            ctx.set_host_state(host.name, HostState.IN_MAINTENANCE)
            for spec in ctx.request.actions:
                key = ctx.submit(RunAction(spec, "host", host.name)).key
                me.running = {**me.running, key: host.name}

    def on_operation(self, ctx: SessionContext, result: OpResult) -> None:
        me = ctx.state_of(BatchState)
        host = me.running.get(result.ref.key)
        if host is None:
            return
        me.running = {k: h for k, h in me.running.items() if k != result.ref.key}
        if result.status is not OpStatus.DONE:
            ctx.fail(f"{host}: {result.detail}")
            return
        ctx.host_done(host)
        ctx.set_host_state(host, HostState.MAINTAINED)


WORKFLOWS: dict[str, type[Workflow]] = {"rolling": RollingWorkflow, "batch": Batch}


@pytest.fixture
def core_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    return tmp_path_factory.mktemp("core")


def _core(path: Path, cloud: SimulatedCloud, clock: SimClock) -> Engine:
    return Engine(
        f"sqlite:///{path}",
        clock=clock,
        plugins=[cloud, TimedAction("upgrade", 900)],
        workflows=WORKFLOWS,
    )


def host_spans(engine: Engine, sid: str) -> dict[str, Span]:
    """Per host, from its admission to the end of its work, as stored."""
    with engine.database.connect() as db:
        rows = db.execute(
            select(HostRow.name, HostRow.started_at, HostRow.finished_at).where(
                HostRow.session_id == sid
            )
        ).all()
    return {name: (start, end) for name, start, end in rows if start is not None}


def touched_spans(cloud: SimulatedCloud, stored: dict[str, Span]) -> dict[str, Span]:
    """Per host, from the cloud's first change on it (a migration off it,
    its disable, an action's start) to its stored end: what the cloud saw."""
    first: dict[str, datetime] = {}
    for e in cloud.events:
        touch = e.kind in ("migration_started", "disable_host")
        if touch and e.host is not None and e.host not in first:
            first[str(e.host)] = e.time
    return {h: (min(first.get(h, a), a), b) for h, (a, b) in stored.items()}


def run_core(
    path: Path, cloud: SimulatedCloud, clock: SimClock, request: SessionRequest
) -> tuple[str, dict[str, Span]]:
    engine = _core(path, cloud, clock)
    try:
        sid = engine.create_session(request)
        view = engine.run_until_done(sid)
        assert view.state == "MAINTENANCE_DONE", view.reason
        assert {h.state for h in view.hosts} <= {"MAINTAINED", "OUT_OF_SCOPE"}
        return sid, touched_spans(cloud, host_spans(engine, sid))
    finally:
        engine.close()


@pytest.mark.no_cover
@pytest.mark.slow
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(
    run=st.sampled_from(["engine:rolling", "engine:constrained", "core:rolling", "core:batch"]),
    hosts=st.integers(3, 10),
    zones=st.integers(1, 4),
    sizes=st.lists(st.integers(0, 3), min_size=1, max_size=4),
    share=st.sampled_from([None, "10%", "25%", "34%", "50%", "100%", 2]),
    zone_max=st.sampled_from([None, 1, 2]),
    rack_max=st.sampled_from([None, 1, 3]),
)
def test_percent_and_topology_caps_hold_at_every_instant_on_both_engines(
    core_dir: Path,
    run: str,
    hosts: int,
    zones: int,
    sizes: list[int],
    share: str | int | None,
    zone_max: int | None,
    rack_max: int | None,
) -> None:
    kind, workflow = run.split(":")
    clock = SimClock()
    # The batch workflow moves no instance: its hosts are empty.
    cloud = _cloud(hosts, zones, [0] if workflow == "batch" else sizes)
    topology = [
        {"key": key, "max": limit}
        for key, limit in (("zone", zone_max), ("rack", rack_max))
        if limit is not None
    ]
    request = SessionRequest(
        workflow=workflow,
        actions=[ActionSpec("upgrade", "host")],
        controls={"max_hosts_in_maintenance": share, "max_topology_in_maintenance": topology},
    )
    if kind == "engine":
        engine = _engine(cloud, clock)
        try:
            view, _ = drive(engine, clock, engine.create_session(request))
            assert view.state == "MAINTENANCE_DONE", view.reason
            worked = spans(cloud, view)
        finally:
            engine.close()
    else:
        path = core_dir / f"{len(list(core_dir.iterdir()))}.db"
        _, worked = run_core(path, cloud, clock, request)
    assert set(worked) == {f"cmp-{i}" for i in range(hosts)}
    at_once = most_at_once(list(worked.values()))
    # The batch workflow takes all the caps allow: with one kind of cap, exactly that.
    tight = workflow == "batch" and (share is None) + (zone_max is None) + (rack_max is None) >= 2
    if share is not None:
        cap = share if isinstance(share, int) else Percent(float(share.rstrip("%")))
        assert at_once <= resolve_cap(cap, hosts)
        if tight:
            assert at_once == min(resolve_cap(cap, hosts), hosts)
    elif workflow == "batch" and not topology:
        assert at_once == hosts  # nothing held it back
    if zone_max is not None:
        zone = {f"cmp-{i}": f"az{i % zones}" for i in range(hosts)}
        assert _most_domains_at_once(worked, zone) <= zone_max
        if tight:
            assert _most_domains_at_once(worked, zone) == min(zone_max, zones, hosts)
    if rack_max is not None:
        rack = {f"cmp-{i}": f"r{i // 2}" for i in range(hosts)}
        assert _most_domains_at_once(worked, rack) <= rack_max


def test_a_percent_cap_lets_that_share_of_the_hosts_go_together(core_dir: Path) -> None:
    # 10 hosts to maintain, 30 targets out of scope: 40% is 4 hosts at once,
    # and the targets do not count (today's engine's budget_hosts).
    clock = SimClock()
    cloud = _cloud(40, 1, [0])
    request = SessionRequest(
        workflow="batch",
        hosts=[f"cmp-{i}" for i in range(10)],
        actions=[ActionSpec("upgrade", "host")],
        controls={"max_hosts_in_maintenance": "40%"},
    )
    _, worked = run_core(core_dir / "pct.db", cloud, clock, request)
    assert most_at_once(list(worked.values())) == 4


def test_a_zone_cap_takes_one_zone_at_a_time_and_all_its_hosts_together(core_dir: Path) -> None:
    clock = SimClock()
    cloud = _cloud(9, 3, [0])
    request = SessionRequest(
        workflow="batch",
        actions=[ActionSpec("upgrade", "host")],
        controls={"max_topology_in_maintenance": [{"key": "zone", "max": 1}]},
    )
    _, worked = run_core(core_dir / "zone.db", cloud, clock, request)
    zone = {f"cmp-{i}": f"az{i % 3}" for i in range(9)}
    assert _most_domains_at_once(worked, zone) == 1
    assert most_at_once(list(worked.values())) == 3  # a zone's three hosts at once


def test_a_scheduled_window_with_its_own_percent_budget(core_dir: Path) -> None:
    # Every day at 01:00 UTC for 4 hours, at most half the 6 hosts at once.
    clock = SimClock()
    cloud = _cloud(6, 1, [0])
    request = SessionRequest(
        workflow="batch",
        actions=[ActionSpec("upgrade", "host")],
        controls={
            "windows": [{"cron": "0 1 * * *", "duration": "4h", "max_hosts_in_maintenance": "50%"}],
            "host_seconds": 900,
        },
    )
    start = clock.now()
    _, worked = run_core(core_dir / "window.db", cloud, clock, request)
    assert most_at_once(list(worked.values())) == 3
    for begin, end in worked.values():
        assert begin.hour in (1, 2, 3, 4)
        assert begin >= start
        assert end - begin == timedelta(seconds=900)
