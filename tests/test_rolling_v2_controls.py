"""Operational controls the v2 rolling workflow must respect, on the contract
driver: pause (tests/test_lifecycle_controls.py and the engine's rule in
core/context.py: while paused no host starts and no new move starts, work
under way on a host in maintenance goes on)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
from contract_driver import Driver, LoggingContext, start_time
from test_rolling_v2 import fleet

from fenix_core import ActionSpec, SessionRequest
from fenix_core.contract import DisableHost, EnableHost, Move, RunAction, Watch
from fenix_core.states import HostState, InstanceState, SessionState
from fenix_core.workflows import RollingState, RollingWorkflow


class Recording(LoggingContext):
    """Logs what it is sent with whether the session was paused then, and
    pauses itself on a chosen notice or question."""

    pause_on: tuple[str, str] | None = None  # (host or project, state)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeline: list[tuple[str, str, bool]] = []

    def _maybe_pause(self, who: str, state: str) -> None:
        if self.pause_on == (who, state) and self.paused is None:
            self.paused = "by the admin"
            self.pause_on = None

    def notify_host(self, host: str, state: str) -> None:
        super().notify_host(host, state)
        self.timeline.append((host, state, self.paused is not None))
        self._maybe_pause(host, state)

    def ask(self, state: str, instances: Mapping[str, Sequence[str]], **kwargs: Any) -> None:
        super().ask(state, instances, **kwargs)
        for p in instances:
            self._maybe_pause(p, state)

    def submit(self, op: Any) -> Any:
        ref = super().submit(op)
        name = type(op).__name__
        self.timeline.append(
            (name, getattr(op, "host", None) or getattr(op, "instance_id", ""), False)
        )
        return ref


def recording(ctx: LoggingContext) -> Recording:
    rec = Recording(
        now=ctx.now,
        request=ctx.request,
        hosts=list(ctx.hosts),
        instances=list(ctx._instances.values()),
        projects=list(ctx._projects.values()),
    )
    return rec


def test_a_pause_while_a_host_is_drained_starts_no_move_until_resumed() -> None:
    # c2 is empty and maintained first; c1 is drained in PLANNED_MAINTENANCE.
    ctx = recording(fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1), "b": ("p1", "c1", 1)}))
    ctx.pause_on = ("p1", "PLANNED_MAINTENANCE")
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert len(driver.resumed_at) == 1
    # The moves start only after the resume: FakeContext refuses one while
    # paused (ContractError), as the engine's context does.
    assert sorted(m[0] for m in driver.moves) == ["a", "b"]
    assert [m for m in ctx.submitted if isinstance(m[1], Watch)] == []


def test_a_host_in_maintenance_goes_on_while_paused_and_the_next_waits() -> None:
    upgrade = ActionSpec("upgrade", "host")
    ctx = recording(
        fleet(
            {"c1": 4, "c2": 4, "c3": 4},
            {},
            request=SessionRequest(hosts=("c1", "c2", "c3"), actions=[upgrade]),
        )
    )
    ctx.pause_on = ("c1", "IN_MAINTENANCE")
    driver = Driver(ctx, RollingWorkflow())
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert len(driver.resumed_at) == 1
    # c1's action, enable and MAINTENANCE_COMPLETE happen while paused ...
    # (c2's work begins with its disable, before its IN_MAINTENANCE)
    first_of_c2 = next(i for i, t in enumerate(ctx.timeline) if t[1] == "c2")
    paused_part = ctx.timeline[:first_of_c2]
    assert ("RunAction", "c1", False) in paused_part
    assert ("c1", "MAINTENANCE_COMPLETE", True) in paused_part
    # ... and nothing of c2 or c3 starts before the resume.
    assert not [t for t in ctx.timeline if t[1] in ("c2", "c3") and t[2]]
    assert {h.name for h in ctx.hosts.in_state(HostState.MAINTAINED)} == {"c1", "c2", "c3"}
    assert [type(op) for _, op in ctx.submitted].count(RunAction) == 3
    assert [op.host for _, op in ctx.submitted if isinstance(op, DisableHost)] == [
        "c1",
        "c2",
        "c3",
    ]


def test_host_work_waits_for_maintenance_at_and_follows_a_reschedule() -> None:
    start = start_time() + timedelta(hours=6)
    later = start + timedelta(hours=3)
    ctx = fleet(
        {"c1": 4, "c2": 4},
        {"a": ("p1", "c1", 1)},
        request=SessionRequest(hosts=("c1", "c2"), maintenance_at=start),
    )

    def reschedule(c: LoggingContext) -> None:  # the admin moves the start
        c._request = attrs.evolve(c.request, maintenance_at=later)

    def waiting(c: LoggingContext) -> bool:
        return c.state_of(RollingState).phase == "wait_start"

    driver = Driver(ctx, RollingWorkflow(), when=[(waiting, reschedule)])
    first: list[datetime] = []
    original = ctx.submit

    def submit(op: Any) -> Any:
        first.append(ctx.now)
        return original(op)

    ctx.submit = submit  # type: ignore[method-assign]
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_DONE, ctx.session.reason
    assert not driver.when  # the reschedule happened
    assert min(first) == later  # nothing at all before the new start


def test_a_cancel_mid_drain_follows_the_move_and_enables_the_host_again() -> None:
    def moving(c: LoggingContext) -> bool:  # a's move off c1 was started
        return any(isinstance(op, Move) for _, op in c.submitted)

    def cancel(c: LoggingContext) -> None:  # the engine cancels the session
        c.transition(SessionState.MAINTENANCE_CANCELLED, reason="by the admin")

    ctx = fleet({"c1": 4, "c2": 4}, {"a": ("p1", "c1", 1), "b": ("p1", "c1", 1)})
    driver = Driver(ctx, RollingWorkflow(), when=[(moving, cancel)])
    driver.run()
    assert ctx.session.state == SessionState.MAINTENANCE_CANCELLED
    # a's move was recorded; b's never started.
    assert [m[0] for m in driver.moves] == ["a"]
    assert ctx.instances.get("a").host == "c2"  # type: ignore[union-attr]
    assert ctx.instances.get("b").state == InstanceState.PENDING  # type: ignore[union-attr]
    assert ctx.hosts.get("c1").state == HostState.PENDING  # type: ignore[union-attr]
    assert EnableHost("c1") in [op for _, op in ctx.submitted]
    assert all(h.enabled for h in ctx.hosts)
    assert ctx.projects.awaiting_count() == 0
